"""GenerateWithCacheOperator: answers keyed by prompt, input checked before any call, errors, mapping."""

from __future__ import annotations

import json
from typing import Any

import pytest
from airflow.sdk import DAG, task

from airflow_provider_ctxcache.emulator.process import EmulatorProcess
from airflow_provider_ctxcache.emulator.tokens import text_of_tokens
from airflow_provider_ctxcache.exceptions import CacheNotFoundError, CtxCacheConfigError
from airflow_provider_ctxcache.fanout import FanoutFailedError
from airflow_provider_ctxcache.hooks import ContextCacheHook
from airflow_provider_ctxcache.operators.generate import GenerateWithCacheOperator
from tests.hooks.conftest import ConnFactory, backend_extra
from tests.operators.context import task_context

MODEL = "gemini-2.5-flash"
CACHE_TOKENS = 2100


def create_cache(conn_id: str) -> str:
    hook = ContextCacheHook(conn_id)
    try:
        cache = hook.create_cache(model=MODEL, contents=[text_of_tokens(CACHE_TOKENS)], ttl="30m")
    finally:
        hook.close()
    assert cache.name
    return cache.name


# Every error recorded at its first try, and the run never stopped early for failing.
NO_RETRIES: dict[str, Any] = {"max_attempts": 1, "max_failure_ratio": 1.0}


def ask(conn_id: str, cache_name: str, prompts: Any, **kwargs: Any) -> GenerateWithCacheOperator:
    return GenerateWithCacheOperator(
        task_id="ask", ctxcache_conn_id=conn_id, cache_name=cache_name, prompts=prompts, **kwargs
    )


def run(op: GenerateWithCacheOperator) -> dict[str, Any]:
    return op.execute(task_context())  # type: ignore[arg-type]


def counts(emulator: EmulatorProcess) -> dict[str, int]:
    result: dict[str, int] = emulator.admin.state()["counts"]
    return result


def forum_line(key: str, cache_name: str) -> dict[str, Any]:
    """The shape from the forum thread where batch prediction refused ``cachedContent``."""
    return {
        "key": key,
        "request": {
            "contents": [{"parts": [{"text": "Which port does record 3 name?"}], "role": "user"}],
            "generationConfig": {"temperature": 0.2, "thinking_config": {"thinking_budget": 0}},
            "cachedContent": cache_name,
        },
    }


@pytest.fixture
def no_retry_conn(emulator: EmulatorProcess, make_conn: ConnFactory) -> str:
    return make_conn("ctxcache_gen_no_retry", **backend_extra("gemini_api", emulator), retry_attempts=1)


# -- answers ----------------------------------------------------------------------------------------


def test_results_are_keyed_by_prompt_with_text_and_cached_usage(
    conn_id: str, emulator: EmulatorProcess
) -> None:
    name = create_cache(conn_id)
    prompts = ["Which captain sailed?", {"key": "weather", "request": {"contents": "What was the weather?"}}]
    output = run(ask(conn_id, name, prompts, max_concurrency=2))
    assert list(output["results"]) == ["prompt-00000", "weather"]
    for answer in output["results"].values():
        assert answer["text"]
        assert answer["finish_reason"] == "STOP"
        assert answer["usage"]["cached_content_token_count"] == CACHE_TOKENS
    assert output["cache_name"] == name
    assert output["summary"]["succeeded"] == 2
    assert output["summary"]["cached_content_token_count"] == 2 * CACHE_TOKENS
    assert counts(emulator)["generate_content"] == 2
    assert json.loads(json.dumps(output)) == output


def test_forum_format_input_runs_unchanged(conn_id: str, emulator: EmulatorProcess) -> None:
    name = create_cache(conn_id)
    output = run(ask(conn_id, name, [forum_line("request-1", name), forum_line("request-2", name)]))
    assert set(output["results"]) == {"request-1", "request-2"}
    assert all(a["text"] for a in output["results"].values())
    (sent, *_) = [r["body"] for r in emulator.admin.requests() if r["op"] == "generate_content"]
    assert sent["generationConfig"]["temperature"] == 0.2
    # The SDK sends the nested fields snake_case; the API accepts both spellings.
    assert sent["generationConfig"]["thinkingConfig"] in ({"thinkingBudget": 0}, {"thinking_budget": 0})


def test_operator_generation_config_reaches_every_request(conn_id: str, emulator: EmulatorProcess) -> None:
    name = create_cache(conn_id)
    output = run(ask(conn_id, name, ["Tell me everything."], generation_config={"maxOutputTokens": 3}))
    assert output["results"]["prompt-00000"]["finish_reason"] == "MAX_TOKENS"


def test_model_is_read_from_the_cache_when_not_given(conn_id: str, emulator: EmulatorProcess) -> None:
    name = create_cache(conn_id)
    output = run(ask(conn_id, name, ["q"]))
    assert output["model"] == MODEL
    assert counts(emulator)["get_cache"] == 1
    assert output["results"]["prompt-00000"]["text"]


def test_a_given_model_is_used_as_given(conn_id: str, emulator: EmulatorProcess) -> None:
    name = create_cache(conn_id)
    output = run(ask(conn_id, name, ["q"], model=f"models/{MODEL}"))
    assert output["model"] == MODEL
    (sent,) = [r["path"] for r in emulator.admin.requests() if r["op"] == "generate_content"]
    assert MODEL in sent


def test_the_same_operator_can_execute_twice(conn_id: str, emulator: EmulatorProcess) -> None:
    name = create_cache(conn_id)
    op = ask(conn_id, name, ["q"], model=MODEL)
    assert run(op)["results"] == run(op)["results"]
    assert counts(emulator)["generate_content"] == 2


# -- bad input, refused before any call ------------------------------------------------------------

BAD_INPUT: dict[str, tuple[list[Any], dict[str, Any], str]] = {
    "system_instruction": (
        [{"key": "k", "request": {"contents": "q", "systemInstruction": {"parts": [{"text": "x"}]}}}],
        {},
        "prompts[0].request.systemInstruction:",
    ),
    "tools": (
        ["fine", {"key": "k", "request": {"contents": "q", "tools": [{"functionDeclarations": []}]}}],
        {},
        "prompts[1].request.tools:",
    ),
    "other_cache": (
        [{"key": "k", "request": {"contents": "q", "cachedContent": "cachedContents/someone-else"}}],
        {},
        "prompts[0].request.cachedContent:",
    ),
    "empty_prompts": ([], {}, "prompts: the list is empty"),
    "config_system_instruction": (
        ["q"],
        {"generation_config": {"system_instruction": "x"}},
        "generation_config.",
    ),
    "malformed_cache_name": (["q"], {"cache_name": "not a cache name!"}, "cache_name:"),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_refused_before_any_call(conn_id: str, emulator: EmulatorProcess, case: str) -> None:
    name = create_cache(conn_id)
    prompts, overrides, prefix = BAD_INPUT[case]
    arguments: dict[str, Any] = {"cache_name": name, **overrides}
    op = ask(conn_id, arguments.pop("cache_name"), prompts, **arguments)
    with pytest.raises(CtxCacheConfigError) as caught:
        run(op)
    assert str(caught.value).startswith(prefix)
    seen = counts(emulator)
    assert seen["generate_content"] == 0
    assert seen["get_cache"] == 0


@pytest.mark.parametrize("value", [0, 1025, "32"])
def test_bad_max_concurrency_is_refused_when_the_dag_is_built(value: Any) -> None:
    with pytest.raises(CtxCacheConfigError, match=r"^max_concurrency:"):
        GenerateWithCacheOperator(
            task_id="ask", cache_name="cachedContents/x", prompts=["q"], max_concurrency=value
        )


def test_bad_max_concurrency_is_refused_at_execute_before_any_call(
    conn_id: str, emulator: EmulatorProcess
) -> None:
    op = ask(conn_id, create_cache(conn_id), ["q"])
    op.max_concurrency = 0
    with pytest.raises(CtxCacheConfigError, match=r"^max_concurrency:"):
        run(op)
    assert counts(emulator)["generate_content"] == 0


def test_a_deleted_cache_fails_the_task_naming_it(conn_id: str, emulator: EmulatorProcess) -> None:
    name = create_cache(conn_id)
    ContextCacheHook(conn_id).delete_cache(name)
    with pytest.raises(CacheNotFoundError, match=name):
        run(ask(conn_id, name, ["a", "b"], model=MODEL))


def test_a_cache_gone_before_any_prompt_says_to_clear_the_task_with_its_creator(
    conn_id: str, emulator: EmulatorProcess
) -> None:
    """A shard cleared after its run's teardown deleted the cache: the fix is in the message."""
    name = create_cache(conn_id)
    ContextCacheHook(conn_id).delete_cache(name)

    with pytest.raises(CacheNotFoundError) as gone:
        run(ask(conn_id, name, ["a", "b"], model=MODEL))

    assert "clear it together with the task that creates the cache" in str(gone.value)
    assert counts(emulator)["generate_content"] == 0


# -- per-key failures ------------------------------------------------------------------------------


def test_failed_keys_fail_the_task_listing_them(no_retry_conn: str, emulator: EmulatorProcess) -> None:
    name = create_cache(no_retry_conn)
    emulator.admin.faults(error_rate_503=0.5, seed=3, ops=["generate_content"])
    with pytest.raises(FanoutFailedError) as caught:
        run(ask(no_retry_conn, name, [f"question {i}" for i in range(10)], model=MODEL, **NO_RETRIES))
    result = caught.value.result
    failed = [r.key for r in result.failures]
    assert 0 < len(failed) < 10
    message = str(caught.value)
    assert message.startswith(f"{len(failed)} of 10 prompts failed")
    assert repr(failed[0]) in message
    assert "503" in message
    assert counts(emulator)["generate_content"] == 10


def test_with_fail_on_error_false_errors_are_returned_next_to_answers(
    no_retry_conn: str, emulator: EmulatorProcess
) -> None:
    name = create_cache(no_retry_conn)
    emulator.admin.faults(error_rate_503=0.5, seed=3, ops=["generate_content"])
    output = run(
        ask(
            no_retry_conn,
            name,
            [f"question {i}" for i in range(10)],
            model=MODEL,
            fail_on_error=False,
            **NO_RETRIES,
        )
    )
    results = output["results"]
    errors = [a for a in results.values() if "error" in a]
    answers = [a for a in results.values() if "text" in a]
    assert len(results) == 10
    assert errors
    assert answers
    assert output["summary"]["failed"] == len(errors)


# -- mapping -----------------------------------------------------------------------------------------


def test_template_fields_cover_the_rendered_arguments() -> None:
    assert set(GenerateWithCacheOperator.template_fields) == {
        "cache_name",
        "prompts",
        "input_uri",
        "output_uri",
        "model",
        "generation_config",
    }


def test_partial_expand_over_chunks_builds_inside_a_dag() -> None:
    with DAG("generate_mapping_check", schedule=None):
        mapped = GenerateWithCacheOperator.partial(task_id="ask", cache_name="cachedContents/x").expand(
            prompts=[["a"], ["b"]]
        )
    assert mapped.task_id == "ask"
    assert mapped.expand_input.value == {"prompts": [["a"], ["b"]]}
    assert mapped.partial_kwargs["cache_name"] == "cachedContents/x"


def test_partial_takes_an_upstream_output_as_the_cache_name() -> None:
    with DAG("generate_mapping_output", schedule=None):

        @task
        def create() -> str:
            return "cachedContents/x"

        cache = create()
        mapped = GenerateWithCacheOperator.partial(
            task_id="ask", cache_name=cache, max_concurrency=32
        ).expand(prompts=[["a", "b"], ["c"]])
    assert mapped.partial_kwargs["max_concurrency"] == 32
    assert mapped.upstream_task_ids == {"create"}


def test_mapped_instances_key_their_plain_prompts_apart(conn_id: str, emulator: EmulatorProcess) -> None:
    name = (
        ContextCacheHook(conn_id).create_cache(model="gemini-2.5-flash", contents=[text_of_tokens(2100)]).name
    )
    op = GenerateWithCacheOperator(
        task_id="ask", ctxcache_conn_id=conn_id, cache_name=name, prompts=["a?", "b?"]
    )
    keys = {key for index in (0, 1) for key in op.execute(task_context(map_index=index))["results"]}
    assert keys == {"prompt-0000-00000", "prompt-0000-00001", "prompt-0001-00000", "prompt-0001-00001"}


# -- no upstream XCom: the task run alone (`airflow tasks test`), or its upstream's XCom cleared -----
# What Airflow renders in that case is set by hand here: an XComArg of a missing return value
# resolves to None, and a string template around ti.xcom_pull to "None" (tests/dags/test_single_task.py
# runs the real `airflow tasks test`).


def test_a_cache_name_from_an_absent_upstream_xcom_says_so_and_how_to_pass_one(
    conn_id: str, emulator: EmulatorProcess
) -> None:
    with DAG("generate_alone", schedule=None):

        @task
        def create_cache() -> str:
            return "cachedContents/x"

        op = GenerateWithCacheOperator(
            task_id="ask", ctxcache_conn_id=conn_id, cache_name=create_cache(), prompts=["a?"]
        )
    op.cache_name = None  # what create_cache.output renders to when that task has not run

    with pytest.raises(CtxCacheConfigError) as raised:
        run(op)

    assert str(raised.value) == (
        "cache_name: is None: it comes from the XCom of task 'create_cache', and this run has none "
        "(that task did not run in this run, as under `airflow tasks test`, or its XCom was cleared). "
        "Run the whole DAG (`airflow dags test generate_alone`), or name an existing cache as a param: "
        """`airflow tasks test generate_alone ask -t '{"cache_name": "cachedContents/ID"}'`."""
    )
    assert sum(counts(emulator).values()) == 0


def test_a_mapped_ask_and_a_string_template_get_the_same_message(conn_id: str) -> None:
    with DAG("generate_alone_mapped", schedule=None):

        @task
        def create_cache() -> str:
            return "cachedContents/x"

        mapped = GenerateWithCacheOperator.partial(
            task_id="ask", ctxcache_conn_id=conn_id, cache_name=create_cache()
        ).expand(prompts=[["a?"]])
        templated = GenerateWithCacheOperator(
            task_id="ask_templated",
            ctxcache_conn_id=conn_id,
            cache_name="{{ ti.xcom_pull(task_ids='create_cache') }}",
            prompts=["a?"],
        )
    unmapped = mapped.unmap({"prompts": ["a?"]})  # what the task runner runs for one mapped instance
    assert isinstance(unmapped, GenerateWithCacheOperator)
    unmapped.cache_name = None
    templated.cache_name = "None"  # a string template renders a missing XCom as "None"

    with pytest.raises(CtxCacheConfigError, match=r"^cache_name: is None: it comes from the XCom of task"):
        run(unmapped)
    with pytest.raises(CtxCacheConfigError, match=r"^cache_name: is 'None': it comes from an upstream XCom"):
        run(templated)


def test_the_cache_name_param_stands_in_for_an_absent_upstream_xcom(
    conn_id: str, emulator: EmulatorProcess
) -> None:
    name = create_cache(conn_id)
    with DAG("generate_alone_param", schedule=None):

        @task
        def create_cache_task() -> str:
            return "cachedContents/x"

        op = GenerateWithCacheOperator(
            task_id="ask", ctxcache_conn_id=conn_id, cache_name=create_cache_task(), prompts=["a?"]
        )
    op.cache_name = None
    context = {**task_context(), "params": {"cache_name": name}}  # `airflow tasks test ... -t`

    result = op.execute(context)  # type: ignore[arg-type]

    assert result["cache_name"] == name
    assert counts(emulator)["generate_content"] == 1


def test_a_none_cache_name_not_from_an_xcom_keeps_the_plain_message(conn_id: str) -> None:
    with pytest.raises(CtxCacheConfigError, match=r"^cache_name: None is not a cache name; pass the name"):
        run(ask(conn_id, None, ["a?"]))  # type: ignore[arg-type]
