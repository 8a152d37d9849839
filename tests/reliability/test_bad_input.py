"""The bad-input table: every operator, the sensor, the trigger and the connection, fed what users get wrong.

Each case is one row of the "Bad input" table in docs/reliability.md and checks three things:

- the exception's message starts with the field's name (a nested field by its full path, e.g.
  ``prompts[1].request.systemInstruction``) and says the fix;
- no billable call was made: the emulator's ``create_cache`` and ``generate_content`` counts
  did not move (a cache the test itself made beforehand is the only one);
- nothing already produced is lost: where an output exists, its lines are untouched.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_ctxcache.emulator.process import EmulatorProcess
from airflow_provider_ctxcache.exceptions import CtxCacheConfigError
from airflow_provider_ctxcache.operators import (
    CreateCacheOperator,
    DeleteCacheOperator,
    ExtendCacheTTLOperator,
    GenerateWithCacheOperator,
)
from airflow_provider_ctxcache.sensors import CacheExpirySensor
from airflow_provider_ctxcache.triggers import CacheExpiryTrigger
from tests.hooks.conftest import ConnFactory, backend_extra
from tests.operators.context import task_context
from tests.reliability.conftest import (
    CONTEXT,
    MODEL,
    billable,
    new_cache,
    output_lines,
    raw_output,
    write_input,
)


@dataclass
class Env:
    """What a case may use: a good connection, a live cache, a sandbox folder, a connection factory."""

    conn: str
    cache: str
    root: Path
    make_conn: ConnFactory
    emulator: EmulatorProcess

    def conn_with(self, *, password: str | None = "k", **extra: Any) -> str:
        """A connection whose extra is exactly ``extra`` (plus the emulator's base_url unless given)."""
        extra.setdefault("base_url", self.emulator.url)
        return self.make_conn("ctxcache_bad", password=password, **extra)


@dataclass(frozen=True)
class Case:
    id: str
    run: Callable[[Env], Any]
    field: str
    fix: str
    error: type[BaseException] = CtxCacheConfigError
    xfail: str | None = None


def create(env: Env, conn: str | None = None, **kwargs: Any) -> Any:
    arguments: dict[str, Any] = {"model": MODEL, "contents": [CONTEXT], "allowed_roots": [str(env.root)]}
    arguments.update(kwargs)
    op = CreateCacheOperator(task_id="create_cache", ctxcache_conn_id=conn or env.conn, **arguments)
    return op.execute(task_context())


def generate(env: Env, **kwargs: Any) -> Any:
    arguments: dict[str, Any] = {
        "cache_name": env.cache,
        "prompts": ["What is the notice period?"],
        "allowed_roots": [str(env.root)],
        "progress_interval": 0,
    }
    arguments.update(kwargs)
    return GenerateWithCacheOperator(task_id="ask", ctxcache_conn_id=env.conn, **arguments).execute(
        task_context()
    )


def extend(env: Env, **kwargs: Any) -> Any:
    arguments: dict[str, Any] = {"cache_name": env.cache}
    arguments.update(kwargs)
    return ExtendCacheTTLOperator(task_id="extend", ctxcache_conn_id=env.conn, **arguments).execute(
        task_context()
    )


def delete(env: Env, cache_name: Any) -> Any:
    op = DeleteCacheOperator(task_id="delete", ctxcache_conn_id=env.conn, cache_name=cache_name)
    return op.execute(task_context())


def sense(env: Env, **kwargs: Any) -> Any:
    arguments: dict[str, Any] = {"cache_name": env.cache, "deferrable": True, "poll_interval": 1}
    arguments.update(kwargs)
    return CacheExpirySensor(task_id="wait", ctxcache_conn_id=env.conn, **arguments).execute(task_context())


def request(text: str, key: str | None = None, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"contents": [{"role": "user", "parts": [{"text": text}]}], **fields}
    return {"key": key, "request": body} if key else {"request": body}


def outside_file(env: Env) -> str:
    secret = env.root.parent / "outside.txt"
    secret.write_text(CONTEXT)
    return str(secret)


def symlink_out(env: Env) -> str:
    link = env.root / "innocent.txt"
    link.symlink_to(outside_file(env))
    return str(link)


def jsonl(env: Env, name: str, lines: list[Any]) -> str:
    path = env.root / name
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return str(path)


PAST = dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)

CASES = [
    # -- CreateCacheOperator ---------------------------------------------------------------------
    Case("create-model-empty", lambda e: create(e, model=""), "model:", "name a Gemini model"),
    Case("create-model-wrong-type", lambda e: create(e, model=42), "model:", "name a Gemini model"),
    Case(
        "create-model-unknown",
        lambda e: create(e, model="gemini-9-ultra"),
        "model:",
        "gemini-9-ultra",
    ),
    Case("create-ttl-zero", lambda e: create(e, ttl="0s"), "ttl:", "must be longer than zero"),
    Case("create-ttl-negative", lambda e: create(e, ttl="-5m"), "ttl:", "use '3600s', '90m'"),
    Case("create-ttl-words", lambda e: create(e, ttl="forever"), "ttl:", "use '3600s', '90m'"),
    Case("create-ttl-wrong-type", lambda e: create(e, ttl=["1h"]), "ttl:", "use '3600s', '90m'"),
    Case(
        "create-expire-time-past", lambda e: create(e, expire_time=PAST), "expire_time:", "pick a later time"
    ),
    Case(
        "create-expire-time-naive",
        lambda e: create(e, expire_time="2031-01-01T00:00:00"),
        "expire_time:",
        "give it an offset",
    ),
    Case(
        "create-ttl-and-expire-time",
        lambda e: create(e, ttl="1h", expire_time="2031-01-01T00:00:00+00:00"),
        "ttl, expire_time:",
        "set one of them",
    ),
    Case("create-reuse-unknown", lambda e: create(e, reuse="sometimes"), "reuse:", "run, content, never"),
    Case(
        "create-min-remaining-ttl-words",
        lambda e: create(e, reuse="content", min_remaining_ttl="a while"),
        "min_remaining_ttl:",
        "use '3600s'",
    ),
    Case("create-contents-empty", lambda e: create(e, contents=[]), "contents:", "give a list of strings"),
    Case(
        "create-contents-item-wrong-shape",
        lambda e: create(e, contents=[{"path": "/data/x.pdf"}]),
        "contents[0]:",
        "{'file': PATH}",
    ),
    Case(
        "create-contents-oversized-inline",
        lambda e: create(e, contents=["x" * (10 * 1024 * 1024 + 1)]),
        "contents:",
        "put the text in files",
    ),
    Case(
        "create-file-outside-allowed-roots",
        lambda e: create(e, contents=[{"file": outside_file(e)}]),
        "contents[0].file:",
        "outside the allowed roots",
    ),
    Case(
        "create-file-dotdot-traversal",
        lambda e: create(e, contents=[{"file": f"{e.root}/../{Path(outside_file(e)).name}"}]),
        "contents[0].file:",
        "outside the allowed roots",
    ),
    Case(
        "create-file-symlink-out-of-root",
        lambda e: create(e, contents=[{"file": symlink_out(e)}]),
        "contents[0].file:",
        "outside the allowed roots",
    ),
    Case(
        "create-file-without-allowed-roots",
        lambda e: create(e, contents=[{"file": outside_file(e)}], allowed_roots=[]),
        "contents[0].file:",
        "allow their folder with the operator's allowed_roots",
    ),
    Case(
        "create-gs-uri-on-developer-api",
        lambda e: create(e, contents=[{"uri": "gs://bucket/contract.pdf"}]),
        "contents[0].uri:",
        "{'file': PATH}",
    ),
    Case(
        "create-kms-key-on-developer-api",
        lambda e: create(e, kms_key_name="projects/p/locations/l/keyRings/r/cryptoKeys/k"),
        "kms_key_name:",
        "vertex_ai backend",
    ),
    # -- GenerateWithCacheOperator -----------------------------------------------------------------
    Case(
        "generate-cache-name-malformed",
        lambda e: generate(e, cache_name="my cache!"),
        "cache_name:",
        "as CreateCacheOperator returns it",
    ),
    Case(
        "generate-cache-name-empty",
        lambda e: generate(e, cache_name=""),
        "cache_name:",
        "cache_name=create_cache.output",
    ),
    Case(
        "generate-model-unknown",
        lambda e: generate(e, model="gemini-9-ultra"),
        "model:",
        "gemini-9-ultra",
    ),
    Case(
        "generate-model-not-the-caches",
        lambda e: generate(e, model="gemini-2.5-pro"),
        "model:",
        "gemini-2.5-flash",
    ),
    Case("generate-prompts-empty", lambda e: generate(e, prompts=[]), "prompts:", "give at least one prompt"),
    Case(
        "generate-prompts-a-string",
        lambda e: generate(e, prompts="What is the notice period?"),
        "prompts:",
        "pass a list of strings",
    ),
    Case(
        "generate-prompt-empty-string",
        lambda e: generate(e, prompts=["fine", "  "]),
        "prompts[1]:",
        "give the question's text",
    ),
    Case(
        "generate-prompt-unknown-field",
        lambda e: generate(e, prompts=[{"question": "x", "request": {}}]),
        "prompts[0].question:",
        'holds only "key" and "request"',
    ),
    Case(
        "generate-forbidden-system-instruction",
        lambda e: generate(
            e, prompts=["fine", request("x", systemInstruction={"parts": [{"text": "be terse"}]})]
        ),
        "prompts[1].request.systemInstruction:",
        "Move them into the cache",
    ),
    Case(
        "generate-forbidden-tools-in-generation-config",
        lambda e: generate(e, generation_config={"tools": [{"code_execution": {}}]}),
        "generation_config.tools:",
        "Move them into the cache",
    ),
    Case(
        "generate-cached-content-names-another-cache",
        lambda e: generate(e, prompts=[request("x", cachedContent="cachedContents/someoneelse")]),
        "prompts[0].request.cachedContent:",
        "remove it (the task sets it)",
    ),
    Case(
        "generate-duplicate-keys",
        lambda e: generate(e, prompts=[request("a", key="q1"), request("b", key="q1")]),
        "prompts[1].key:",
        "keys must be unique",
    ),
    Case(
        "generate-generation-config-wrong-type",
        lambda e: generate(e, generation_config={"temperature": "hot"}),
        "generation_config:",
        "use the fields of google.genai.types.GenerateContentConfig",
    ),
    Case(
        "generate-max-concurrency-zero",
        lambda e: generate(e, max_concurrency=0),
        "max_concurrency:",
        "keep it near your requests-per-minute quota",
    ),
    Case(
        "generate-max-concurrency-a-string",
        lambda e: generate(e, max_concurrency="8"),
        "max_concurrency:",
        "use 1..1024",
    ),
    Case(
        "generate-max-failure-ratio-above-one",
        lambda e: generate(e, max_failure_ratio=2),
        "max_failure_ratio:",
        "between 0 and 1",
    ),
    Case(
        "generate-keep-alive-ttl-below-margin",
        lambda e: generate(e, keep_alive_ttl="2m", keep_alive_margin="5m"),
        "keep_alive_ttl:",
        "must be longer than keep_alive_margin",
    ),
    Case(
        "generate-prices-negative",
        lambda e: generate(e, prices={"input_per_million": -1}),
        "prices.input_per_million:",
        "must be a finite number >= 0",
    ),
    Case(
        "generate-input-outside-allowed-roots",
        lambda e: generate(e, prompts=None, input_uri="/etc/hostname"),
        "input_uri:",
        "outside the allowed roots",
    ),
    Case(
        "generate-input-dotdot-traversal",
        lambda e: generate(e, prompts=None, input_uri=f"{e.root}/../outside.txt"),
        "input_uri:",
        "outside the allowed roots",
    ),
    Case(
        "generate-input-unsupported-scheme",
        lambda e: generate(e, prompts=None, input_uri="https://example.com/in.jsonl"),
        "input_uri:",
        "give a local path or a gs://bucket/path URI",
    ),
    Case(
        "generate-output-outside-allowed-roots",
        lambda e: generate(
            e, prompts=None, input_uri=jsonl(e, "in.jsonl", [request("a")]), output_uri="/var/out"
        ),
        "output_uri:",
        "outside the allowed roots",
    ),
    Case(
        "generate-prompts-and-input-uri",
        lambda e: generate(e, input_uri=jsonl(e, "in.jsonl", [request("a")])),
        "prompts, input_uri:",
        "give exactly one of them",
    ),
    Case(
        "generate-input-line-a-list",
        lambda e: generate(
            e, prompts=None, input_uri=jsonl(e, "in.jsonl", [request("a"), ["not", "a", "dict"]])
        ),
        "input_uri line 2:",
        '{"key": "...", "request": {"contents": [...]}}',
    ),
    # -- ExtendCacheTTLOperator, DeleteCacheOperator ---------------------------------------------------
    Case("extend-ttl-zero", lambda e: extend(e, ttl="0"), "ttl:", "must be longer than zero"),
    Case("extend-no-ttl-nor-expire-time", lambda e: extend(e), "ttl, expire_time:", "give one of them"),
    Case(
        "extend-expire-time-past", lambda e: extend(e, expire_time=PAST), "expire_time:", "pick a later time"
    ),
    Case(
        "extend-cache-name-malformed",
        lambda e: extend(e, cache_name="cachedContents/../../models", ttl="1h"),
        "cache_name:",
        "expected 'cachedContents/ID'",
    ),
    Case(
        "delete-cache-name-of-the-other-backend",
        lambda e: delete(e, "projects/p/locations/us-central1/cachedContents/123"),
        "cache_name:",
        "expected 'cachedContents/ID'",
    ),
    Case(
        "delete-cache-name-none", lambda e: delete(e, None), "cache_name:", "cache_name=create_cache.output"
    ),
    # -- CacheExpirySensor, CacheExpiryTrigger ---------------------------------------------------------
    Case("sensor-margin-negative", lambda e: sense(e, margin="-5m"), "margin:", "use zero or a positive"),
    Case("sensor-margin-words", lambda e: sense(e, margin="soon"), "margin:", "use '3600s'"),
    Case("sensor-cache-name-malformed", lambda e: sense(e, cache_name="a b"), "cache_name:", "expected"),
    Case(
        "trigger-margin-seconds-a-string",
        lambda e: CacheExpiryTrigger(cache_name=e.cache, margin_seconds="ten"),
        "margin_seconds:",
        "finite number of seconds",
        error=ValueError,
    ),
    Case(
        "trigger-poll-interval-zero",
        lambda e: CacheExpiryTrigger(cache_name=e.cache, poll_interval=0),
        "poll_interval:",
        "must be above zero seconds",
        error=ValueError,
    ),
    # -- the connection ------------------------------------------------------------------------------
    Case(
        "conn-backend-unknown",
        lambda e: create(e, e.conn_with(backend="openai")),
        "extra.backend:",
        "use one of gemini_api, vertex_ai",
    ),
    Case(
        "conn-vertex-without-project",
        lambda e: create(e, e.conn_with(password=None, backend="vertex_ai")),
        "extra.project:",
        "needs a Google Cloud project id",
    ),
    Case(
        "conn-developer-api-without-key",
        lambda e: create(e, e.conn_with(password=None)),
        "password:",
        "needs an API key in its password field",
    ),
    Case(
        "conn-base-url-not-http",
        lambda e: create(e, e.conn_with(base_url="ftp://127.0.0.1:1")),
        "extra.base_url:",
        "e.g. http://127.0.0.1:8765",
    ),
    Case(
        "conn-timeout-words",
        lambda e: create(e, e.conn_with(timeout="fast")),
        "extra.timeout:",
        "remove it to use 300",
    ),
    Case(
        "conn-retry-attempts-zero",
        lambda e: create(e, e.conn_with(retry_attempts=0)),
        "extra.retry_attempts:",
        "remove it to use 5",
    ),
    Case(
        "conn-service-account-json-not-json",
        lambda e: create(e, e.conn_with(password=None, backend="vertex_ai", service_account_json="{oops")),
        "extra.service_account_json:",
        "paste the whole key file",
    ),
    Case(
        "conn-service-account-on-developer-api",
        lambda e: create(e, e.conn_with(service_account_json=json.dumps({"type": "service_account"}))),
        "extra.service_account_json, extra.key_path:",
        "set extra.backend to vertex_ai or remove them",
    ),
    Case(
        "conn-prices-not-an-object",
        lambda e: create(e, e.conn_with(prices="[1, 2]")),
        "extra.prices:",
        "is not a JSON object",
    ),
]


@pytest.fixture
def env(emulator: EmulatorProcess, make_conn: ConnFactory, tmp_path: Path) -> Env:
    conn = make_conn("ctxcache_good", **backend_extra("gemini_api", emulator))
    root = tmp_path / "allowed"
    root.mkdir()
    return Env(conn=conn, cache=new_cache(conn), root=root, make_conn=make_conn, emulator=emulator)


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(
            case, id=case.id, marks=[pytest.mark.xfail(strict=True, reason=case.xfail)] if case.xfail else []
        )
        for case in CASES
    ],
)
def test_bad_input_is_refused_naming_the_field_and_the_fix_before_any_billable_call(
    case: Case, env: Env
) -> None:
    before = billable(env.emulator)
    with pytest.raises(case.error) as refused:
        case.run(env)
    message = str(refused.value)
    assert message.startswith(case.field), message
    assert case.fix in message, message
    assert billable(env.emulator) == before  # no cache made, no prompt sent
    assert [c["name"] for c in env.emulator.admin.state()["caches"]] == [env.cache]


# ---------------------------------------------------------------- nothing already produced is lost


@pytest.mark.parametrize(
    ("bad_line", "field", "fix"),
    [
        pytest.param(
            '{"key": "q00012", "request": {"contents": "x"', "input_uri line 11:", "not JSON", id="not-json"
        ),
        pytest.param(
            json.dumps(request("again", key="q00002")),
            "input_uri line 11.key:",
            "keys must be unique",
            id="duplicate-key",
        ),
    ],
)
def test_a_bad_line_appended_to_a_half_answered_input_leaves_the_answers_in_place(
    bad_line: str, field: str, fix: str, env: Env
) -> None:
    inputs, out = env.root / "in.jsonl", env.root / "out"
    write_input(inputs, 5)
    generate(env, prompts=None, input_uri=str(inputs), output_uri=str(out))
    answered = raw_output(out)
    assert len(output_lines(out)) == 5

    write_input(env.root / "more.jsonl", 10)
    second_half = (env.root / "more.jsonl").read_text().splitlines(keepends=True)[5:]
    with inputs.open("a") as stream:
        stream.writelines(second_half)
        stream.write(bad_line + "\n")
    before = billable(env.emulator)
    with pytest.raises(CtxCacheConfigError) as refused:
        generate(env, prompts=None, input_uri=str(inputs), output_uri=str(out))
    assert str(refused.value).startswith(field), str(refused.value)
    assert fix in str(refused.value)
    assert billable(env.emulator) == before
    now = raw_output(out)
    assert {name: now[name] for name in answered} == answered  # the first half's answers, byte for byte
    assert sorted(line["key"] for line in output_lines(out)) == [f"q{i:05d}" for i in range(5)]


def test_the_table_has_at_least_25_cases_and_unique_ids() -> None:
    ids = [case.id for case in CASES]
    assert len(ids) >= 25
    assert len(ids) == len(set(ids))
