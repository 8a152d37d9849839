"""The fan-out under the emulator's real quotas, and against today's service shapes.

The emulator enforces requests and input tokens per sliding window (cached tokens counted) and
answers 429 with RetryInfo and QuotaFailure as the service does; the window is compressed to
QUOTA_WINDOW seconds, and the connection tells the engine the same. Nothing here waits on the
clock: each test asserts what the emulator answered and what the run reported.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from google.genai import types

from airflow_provider_ctxcache.emulator.process import EmulatorProcess
from airflow_provider_ctxcache.emulator.tokens import text_of_tokens
from airflow_provider_ctxcache.fanout import FanoutCacheNotFoundError, FanoutOptions, run_fanout
from airflow_provider_ctxcache.hooks import ContextCacheHook
from airflow_provider_ctxcache.operators.generate import GenerateWithCacheOperator
from airflow_provider_ctxcache.prompts import normalize_prompts
from tests.fanout.conftest import CACHE_TOKENS, MODEL, create_cache
from tests.hooks.conftest import ConnFactory, backend_extra
from tests.operators.context import task_context

QUOTA_WINDOW = 2.0
PER_WINDOW = 60  # requests a window the token quota admits
PROMPT = "What does record {} of the context say?"


def generate_statuses(emulator: EmulatorProcess) -> dict[str, int]:
    statuses: dict[str, int] = emulator.admin.state()["status_counts"]["generate_content"]
    return statuses


def quota_conn(make_conn: ConnFactory, emulator: EmulatorProcess, backend: str = "gemini_api") -> str:
    return make_conn(
        f"ctxcache_quota_{backend}",
        **backend_extra(backend, emulator),
        quota_window_seconds=QUOTA_WINDOW,
    )


def ask(conn_id: str, cache_name: str, n: int, **kwargs: Any) -> dict[str, Any]:
    op = GenerateWithCacheOperator(
        task_id="ask",
        ctxcache_conn_id=conn_id,
        cache_name=cache_name,
        prompts=[PROMPT.format(i) for i in range(n)],
        progress_interval=0,
        **kwargs,
    )
    return op.execute(task_context())  # type: ignore[arg-type]


def test_a_run_given_the_token_quota_gets_no_429_at_all(
    emulator: EmulatorProcess, make_conn: ConnFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    conn_id = quota_conn(make_conn, emulator)
    cache_name = create_cache(ContextCacheHook(conn_id))
    tokens_per_request = CACHE_TOKENS + 12  # the cache plus a prompt of ~40 characters
    tpm_limit = PER_WINDOW * tokens_per_request
    emulator.admin.faults(tpm_limit=tpm_limit, quota_window_s=QUOTA_WINDOW)

    output = ask(conn_id, cache_name, 300, max_concurrency=32, tpm_limit=tpm_limit)

    assert output["summary"]["succeeded"] == 300
    statuses = generate_statuses(emulator)
    assert statuses == {"200": 300}  # not one 429
    pacing = output["summary"]["pacing"]
    assert (pacing["mode"], pacing["tpm_limit"], pacing["binding"]) == ("given", tpm_limit, "tpm")
    assert pacing["waited_seconds"] > 0  # the quota bound: the pacer held requests back
    # The task log's last progress line names the binding limit and the achieved rate.
    finished = [line for line in capsys.readouterr().out.splitlines() if "Fan-out finished" in line]
    assert f"binding tpm limit {tpm_limit:,} (given)" in finished[-1]
    assert "req/2s" in finished[-1]


def test_the_connections_limits_apply_when_the_operator_gives_none(
    emulator: EmulatorProcess, make_conn: ConnFactory
) -> None:
    conn_id = make_conn(
        "ctxcache_quota_extra",
        **backend_extra("gemini_api", emulator),
        quota_window_seconds=QUOTA_WINDOW,
        rpm_limit=PER_WINDOW,
    )
    cache_name = create_cache(ContextCacheHook(conn_id))
    emulator.admin.faults(rpm_limit=PER_WINDOW, quota_window_s=QUOTA_WINDOW)

    output = ask(conn_id, cache_name, 150, max_concurrency=32)

    assert generate_statuses(emulator) == {"200": 150}
    assert output["summary"]["pacing"]["rpm_limit"] == PER_WINDOW


def test_without_limits_the_run_learns_the_quota_and_stops_collecting_429s(
    emulator: EmulatorProcess, make_conn: ConnFactory
) -> None:
    conn_id = quota_conn(make_conn, emulator)
    cache_name = create_cache(ContextCacheHook(conn_id))
    emulator.admin.faults(rpm_limit=40, quota_window_s=QUOTA_WINDOW)
    concurrency = 16

    output = ask(conn_id, cache_name, 200, max_concurrency=concurrency)

    assert output["summary"]["succeeded"] == 200
    pacing = output["summary"]["pacing"]
    assert pacing["mode"] == "adaptive"
    assert pacing["rpm_limit"] <= 40  # never above the limit the QuotaFailure named
    assert pacing["tpm_limit"] is None  # the 429s named the request quota only
    refused = generate_statuses(emulator).get("429", 0)
    # The first burst's requests in flight come back 429; once learned, the quota is kept.
    assert 0 < refused <= 2 * concurrency


def test_a_vertex_cache_expiring_mid_run_stops_the_run_naming_it(
    emulator: EmulatorProcess, make_conn: ConnFactory
) -> None:
    conn_id = make_conn("ctxcache_expiring_vertex", **backend_extra("vertex_ai", emulator))
    cache_name = create_cache(ContextCacheHook(conn_id), ttl="60s")
    concurrency = 8
    answered: list[str] = []

    def expire_after_five(result: Any) -> None:
        answered.append(result.key)
        if len(answered) == 5:  # the cache expires under running work (within Vertex's grace)
            emulator.admin.advance_clock(61)

    requests = normalize_prompts([PROMPT.format(i) for i in range(200)], cache_name=cache_name)
    with pytest.raises(FanoutCacheNotFoundError) as raised:
        asyncio.run(
            run_fanout(
                ContextCacheHook(conn_id),
                model=MODEL,
                cache_name=cache_name,
                requests=requests,
                max_concurrency=concurrency,
                on_result=expire_after_five,
                options=FanoutOptions(keep_alive=False, progress_interval=0),
            )
        )

    assert raised.value.cache_name == cache_name
    assert cache_name in str(raised.value)
    statuses = generate_statuses(emulator)
    assert 1 <= statuses.get("400", 0) <= concurrency  # "Cache content N is expired.", then it stopped
    assert raised.value.result.summary.succeeded >= 5


def test_a_thinking_models_thoughts_are_reported_and_priced_as_output(
    emulator: EmulatorProcess, make_conn: ConnFactory
) -> None:
    conn_id = quota_conn(make_conn, emulator)
    cache_name = create_cache(ContextCacheHook(conn_id))  # gemini-2.5-flash thinks by default

    output = ask(conn_id, cache_name, 5)

    usages = [answer["usage"] for answer in output["results"].values()]
    assert all(u["thoughts_token_count"] > 0 for u in usages)
    cost = output["cost"]
    output_tokens = sum(u["candidates_token_count"] + u["thoughts_token_count"] for u in usages)
    assert cost["tokens"]["output_tokens"] == output_tokens
    assert cost["tokens"]["thoughts_tokens"] == sum(u["thoughts_token_count"] for u in usages)
    assert cost["charged"]["output"] == pytest.approx(
        output_tokens * cost["price"]["output_per_million"] / 1e6, rel=1e-6
    )


def test_tool_use_prompt_tokens_are_counted_and_priced_as_input(
    emulator: EmulatorProcess, make_conn: ConnFactory
) -> None:
    conn_id = quota_conn(make_conn, emulator)
    hook = ContextCacheHook(conn_id)
    cache = hook.create_cache(
        model=MODEL,
        contents=[text_of_tokens(CACHE_TOKENS)],
        tools=[types.Tool(google_search=types.GoogleSearch())],
        ttl="30m",
    )
    assert cache.name

    output = ask(conn_id, cache.name, 5)

    usages = [answer["usage"] for answer in output["results"].values()]
    assert all(u["tool_use_prompt_token_count"] > 0 for u in usages)
    cost = output["cost"]
    assert cost["tokens"]["tool_use_prompt_tokens"] == sum(u["tool_use_prompt_token_count"] for u in usages)
    uncached = sum(
        u["prompt_token_count"] - u["cached_content_token_count"] + u["tool_use_prompt_token_count"]
        for u in usages
    )
    assert cost["charged"]["uncached_input"] == pytest.approx(
        uncached * cost["price"]["input_per_million"] / 1e6, rel=1e-6
    )
