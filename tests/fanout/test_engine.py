"""run_fanout against the emulator: every key once, bounded concurrency, and the error policy."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from google.genai import types

from airflow_provider_ctxcache.emulator.process import EmulatorProcess
from airflow_provider_ctxcache.exceptions import (
    CacheNotFoundError,
    CtxCacheConfigError,
    ForbiddenWithCacheError,
)
from airflow_provider_ctxcache.fanout import (
    FanoutCacheNotFoundError,
    FanoutFailedError,
    FanoutOptions,
    FanoutResult,
    KeyResult,
    check_max_concurrency,
    run_fanout,
)
from airflow_provider_ctxcache.hooks import ContextCacheHook, async_connections_cap
from airflow_provider_ctxcache.prompts import PromptRequest, normalize_prompts
from tests.fanout.conftest import CACHE_TOKENS, MODEL, create_cache
from tests.hooks.conftest import ConnFactory, backend_extra
from tests.in_flight import peak_in_flight, wait_until_idle


def questions(n: int) -> list[PromptRequest]:
    return normalize_prompts([f"What does record {i} carry?" for i in range(n)])


def fan_out(
    hook: ContextCacheHook, cache_name: str, requests: Any, max_concurrency: int, **kwargs: Any
) -> FanoutResult:
    return asyncio.run(
        run_fanout(
            hook,
            model=MODEL,
            cache_name=cache_name,
            requests=requests,
            max_concurrency=max_concurrency,
            **kwargs,
        )
    )


def generate_calls(emulator: EmulatorProcess) -> int:
    return int(emulator.admin.state()["counts"]["generate_content"])


def completion_times(emulator: EmulatorProcess) -> list[dt.datetime]:
    return sorted(
        dt.datetime.fromisoformat(r["time"].replace("Z", "+00:00"))
        for r in emulator.admin.requests()
        if r["op"] == "generate_content"
    )


def test_every_key_is_answered_once_with_cached_usage(
    hook: ContextCacheHook, emulator: EmulatorProcess
) -> None:
    name = create_cache(hook)
    requests = questions(12)
    result = fan_out(hook, name, requests, max_concurrency=4)
    assert generate_calls(emulator) == 12
    assert set(result.results) == {r.key for r in requests}
    for answer in result.results.values():
        assert answer.ok
        assert answer.text
        assert answer.finish_reason == "STOP"
        assert answer.usage is not None
        assert answer.usage.cached_content_token_count == CACHE_TOKENS
        assert answer.usage.prompt_token_count > CACHE_TOKENS
    assert result.summary.requests == result.summary.succeeded == 12
    assert result.summary.failed == 0
    assert result.summary.usage.cached_content_token_count == 12 * CACHE_TOKENS


def test_summary_token_totals_are_the_sums_of_the_keys(
    gemini_hook: ContextCacheHook, emulator: EmulatorProcess
) -> None:
    name = create_cache(gemini_hook)
    result = fan_out(gemini_hook, name, questions(5), max_concurrency=2)
    usages = [r.usage for r in result.results.values() if r.usage]
    totals = result.summary.usage
    assert totals.prompt_token_count == sum(u.prompt_token_count for u in usages)
    assert totals.candidates_token_count == sum(u.candidates_token_count for u in usages)
    assert totals.total_token_count == sum(u.total_token_count for u in usages)


def test_answers_depend_on_the_prompt(gemini_hook: ContextCacheHook) -> None:
    name = create_cache(gemini_hook)
    result = fan_out(gemini_hook, name, questions(6), max_concurrency=3)
    assert len({r.text for r in result.results.values()}) == 6


def test_thinking_tokens_are_recorded_from_the_request_config(gemini_hook: ContextCacheHook) -> None:
    name = create_cache(gemini_hook)
    requests = normalize_prompts(
        [
            {
                "key": "think",
                "request": {"contents": "q", "generationConfig": {"thinkingConfig": {"thinkingBudget": 512}}},
            }
        ]
    )
    usage = fan_out(gemini_hook, name, requests, max_concurrency=1).results["think"].usage
    assert usage is not None
    assert usage.thoughts_token_count > 0
    assert usage.total_token_count == (
        usage.prompt_token_count + usage.candidates_token_count + usage.thoughts_token_count
    )


def test_concurrency_is_bounded_by_max_concurrency(
    gemini_hook: ContextCacheHook, emulator: EmulatorProcess
) -> None:
    name = create_cache(gemini_hook)
    emulator.admin.faults(latency_ms=200, ops=["generate_content"])
    result = fan_out(gemini_hook, name, questions(20), max_concurrency=5)
    assert result.summary.peak_in_flight == 5
    assert generate_calls(emulator) == 20
    # With at most 5 of 20 calls in flight and each held 200 ms by the server, the 15 calls that
    # start after the first answer need at least 3 more rounds: the emulator's completion times
    # spread over >= 600 ms (all at once would finish within a few ms of each other).
    times = completion_times(emulator)
    assert (times[-1] - times[0]).total_seconds() >= 0.59


def test_requests_are_read_lazily_from_an_iterator(
    gemini_hook: ContextCacheHook, emulator: EmulatorProcess
) -> None:
    name = create_cache(gemini_hook)
    taken: list[str] = []

    def stream() -> Iterator[PromptRequest]:
        for request in questions(8):
            taken.append(request.key)
            yield request

    result = fan_out(gemini_hook, name, stream(), max_concurrency=3)
    assert len(result.results) == len(taken) == 8
    assert generate_calls(emulator) == 8


def test_each_result_is_reported_as_it_completes(gemini_hook: ContextCacheHook) -> None:
    name = create_cache(gemini_hook)
    seen: list[str] = []

    async def on_result(answer: KeyResult) -> None:
        seen.append(answer.key)

    result = fan_out(gemini_hook, name, questions(6), max_concurrency=2, on_result=on_result)
    assert seen == list(result.results)
    assert len(seen) == 6


def test_a_missing_cache_stops_the_run_with_its_name(
    gemini_hook: ContextCacheHook, emulator: EmulatorProcess
) -> None:
    with pytest.raises(CacheNotFoundError, match="cachedContents/gone") as caught:
        fan_out(gemini_hook, "cachedContents/gone", questions(30), max_concurrency=3)
    assert isinstance(caught.value, FanoutCacheNotFoundError)
    assert caught.value.result.summary.requests == 0
    assert generate_calls(emulator) <= 3


def test_a_cache_expiring_mid_run_stops_it_and_keeps_the_answers_so_far(
    gemini_hook: ContextCacheHook, emulator: EmulatorProcess
) -> None:
    name = create_cache(gemini_hook, ttl="10m")
    emulator.admin.faults(latency_ms=30, ops=["generate_content"])

    done: list[str] = []

    def expire_after_four(answer: KeyResult) -> None:
        done.append(answer.key)
        if len(done) == 4:
            emulator.admin.advance_clock(3600)

    with pytest.raises(FanoutCacheNotFoundError) as caught:
        fan_out(gemini_hook, name, questions(40), max_concurrency=2, on_result=expire_after_four)
    kept = caught.value.result
    assert kept.summary.succeeded >= 4
    assert all(r.ok for r in kept.results.values())
    assert name in str(caught.value)
    assert generate_calls(emulator) < 40


FAST = FanoutOptions(backoff_initial=0.01, backoff_max=0.05, progress_interval=0)


def test_transient_errors_are_retried_until_every_key_is_answered(
    gemini_hook: ContextCacheHook, emulator: EmulatorProcess
) -> None:
    name = create_cache(gemini_hook)
    emulator.admin.faults(error_rate_503=0.3, seed=7, ops=["generate_content"])
    result = fan_out(gemini_hook, name, questions(20), max_concurrency=4, options=FAST)
    assert result.summary.succeeded == 20
    assert result.summary.retries == generate_calls(emulator) - 20 > 0
    statuses = emulator.admin.state()["status_counts"]["generate_content"]
    assert statuses["200"] == 20


def test_errors_that_outlast_the_attempts_are_recorded_per_key(
    gemini_hook: ContextCacheHook, emulator: EmulatorProcess
) -> None:
    name = create_cache(gemini_hook)
    emulator.admin.faults(error_rate_503=0.5, seed=7, ops=["generate_content"])
    options = FanoutOptions(max_attempts=1, max_failure_ratio=1.0, progress_interval=0)
    result = fan_out(gemini_hook, name, questions(20), max_concurrency=4, options=options)
    assert generate_calls(emulator) == 20
    summary = result.summary
    assert 0 < summary.failed < 20
    assert summary.succeeded + summary.failed == 20
    for failed in result.failures:
        assert failed.error is not None
        assert failed.error.startswith("CtxCacheApiError: Gemini API error 503")
        assert failed.to_batch_line()["error"]["code"] == 503
        assert failed.to_batch_line()["error"]["status"] == "UNAVAILABLE"


def test_quota_errors_pause_every_worker_for_the_servers_retry_delay(
    gemini_hook: ContextCacheHook, emulator: EmulatorProcess
) -> None:
    name = create_cache(gemini_hook)
    emulator.admin.faults(error_rate_429=0.2, retry_delay_s=0.3, seed=11, ops=["generate_content"])
    result = fan_out(gemini_hook, name, questions(30), max_concurrency=6, options=FAST)
    assert result.summary.succeeded == 30
    assert result.summary.quota_waits > 0
    # Every worker paused at least one retryDelay: the run cannot be faster than that.
    assert result.summary.elapsed_seconds >= 0.3
    statuses = emulator.admin.state()["status_counts"]["generate_content"]
    assert statuses["200"] == 30
    assert statuses["429"] == result.summary.quota_waits


def test_too_many_failures_stop_the_run_early(
    gemini_hook: ContextCacheHook, emulator: EmulatorProcess
) -> None:
    name = create_cache(gemini_hook)
    emulator.admin.faults(error_rate_503=1.0, ops=["generate_content"])
    options = FanoutOptions(max_attempts=1, max_failure_ratio=0.1, total=40, progress_interval=0)
    with pytest.raises(FanoutFailedError, match="stopped early: 5 of 5 prompts failed") as caught:
        fan_out(gemini_hook, name, questions(40), max_concurrency=1, options=options)
    assert caught.value.result.summary.failed == 5
    assert generate_calls(emulator) == 5


def test_keep_alive_carries_a_short_ttl_cache_through_a_longer_run(
    gemini_hook: ContextCacheHook, emulator: EmulatorProcess
) -> None:
    name = create_cache(gemini_hook, ttl="3s")
    emulator.admin.faults(latency_ms=250, ops=["generate_content"])
    options = FanoutOptions(keep_alive_margin=1.5, keep_alive_ttl=3, progress_interval=0)
    result = fan_out(gemini_hook, name, questions(40), max_concurrency=2, options=options)
    assert result.summary.elapsed_seconds > 4.5  # longer than the cache's first TTL
    assert result.summary.succeeded == 40
    assert result.summary.keep_alive_extensions >= 2
    assert emulator.admin.state()["counts"]["update_cache"] == result.summary.keep_alive_extensions


def test_streaming_runs_keep_only_totals_and_pass_responses_on(
    gemini_hook: ContextCacheHook, emulator: EmulatorProcess
) -> None:
    name = create_cache(gemini_hook)
    lines: list[dict[str, Any]] = []
    options = FanoutOptions(keep_results=False, progress_interval=0)
    result = fan_out(
        gemini_hook,
        name,
        questions(8),
        max_concurrency=3,
        options=options,
        on_result=lambda r: lines.append(r.to_batch_line()),
    )
    assert result.results == {}
    assert result.summary.succeeded == 8
    assert sorted(line["key"] for line in lines) == [f"prompt-{i:05d}" for i in range(8)]
    usage = lines[0]["response"]["usageMetadata"]
    assert usage["cachedContentTokenCount"] == CACHE_TOKENS
    assert lines[0]["response"]["candidates"][0]["content"]["parts"][0]["text"]


def test_a_config_error_stops_the_run_at_once(
    gemini_hook: ContextCacheHook, emulator: EmulatorProcess
) -> None:
    name = create_cache(gemini_hook)
    bad = PromptRequest(
        key="bad", contents="q", config=types.GenerateContentConfig(system_instruction="Be brief.")
    )
    with pytest.raises(ForbiddenWithCacheError):
        fan_out(gemini_hook, name, [bad, *questions(5)], max_concurrency=1)
    assert generate_calls(emulator) == 0


@pytest.mark.parametrize("value", [0, 1025, -3, True, "16", 2.0, None])
def test_max_concurrency_outside_1_to_1024_is_refused(value: Any) -> None:
    with pytest.raises(CtxCacheConfigError, match=r"^max_concurrency:"):
        check_max_concurrency(value)


def test_keep_alive_leaves_alone_a_cache_that_outlives_the_work(
    gemini_hook: ContextCacheHook, emulator: EmulatorProcess
) -> None:
    name = create_cache(gemini_hook, ttl="60s")  # inside the 5-minute margin from the start
    options = FanoutOptions(total=6, progress_interval=0)
    result = fan_out(gemini_hook, name, questions(6), max_concurrency=2, options=options)
    assert result.summary.succeeded == 6
    assert result.summary.keep_alive_extensions == 0
    assert emulator.admin.state()["counts"]["update_cache"] == 0


OVER_HTTPX = async_connections_cap() is not None


@pytest.mark.skipif(not OVER_HTTPX, reason="the SDK sends async calls over aiohttp here (no cap)")
def test_over_httpx_the_run_makes_no_more_calls_at_once_than_the_pool_of_100_and_says_so(
    gemini_hook: ContextCacheHook, emulator: EmulatorProcess, caplog: pytest.LogCaptureFixture
) -> None:
    name = create_cache(gemini_hook)
    emulator.admin.faults(latency_ms=1500, ops=["generate_content"])
    with caplog.at_level(logging.WARNING), peak_in_flight(emulator, every=0.02) as peak:
        result = fan_out(gemini_hook, name, questions(130), max_concurrency=130)
    assert result.summary.succeeded == 130
    assert result.summary.peak_in_flight == 100  # the other 30 stayed unread until a worker was free
    assert result.summary.max_concurrency == 130  # what was asked is still reported
    assert 0 < peak.value <= 100
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        "max_concurrency=130" in w and "at most 100 connections" in w and "100 calls at once" in w
        for w in warnings
    ), warnings


def test_a_run_within_the_clients_connections_gives_no_cap_warning(
    gemini_hook: ContextCacheHook, caplog: pytest.LogCaptureFixture
) -> None:
    name = create_cache(gemini_hook)
    with caplog.at_level(logging.WARNING):
        result = fan_out(gemini_hook, name, questions(5), max_concurrency=1024)
    assert result.summary.succeeded == 5
    assert not [r for r in caplog.records if "connections" in r.getMessage()]


def test_a_call_that_outlives_the_connections_timeout_is_asked_again(
    emulator: EmulatorProcess, make_conn: ConnFactory
) -> None:
    hook = ContextCacheHook(make_conn("fanout_deadline", timeout=3, **backend_extra("gemini_api", emulator)))
    name = create_cache(hook)
    # Only the first call is held (past the deadline): its attempt ends at the 3 s deadline, and
    # the second, not held, has all of 3 s to be answered even on a busy machine.
    emulator.admin.faults(latency_ms=5000, ops=["generate_content"], for_requests=1)

    result = fan_out(hook, name, questions(1), max_concurrency=1, options=FanoutOptions(backoff_initial=0.01))

    [answer] = result.results.values()
    assert (answer.ok, answer.attempts) == (True, 2)
    assert result.summary.retries == 1
    wait_until_idle(emulator)  # the abandoned call, still held by the emulator


def test_a_call_that_never_answers_in_time_fails_its_key_naming_the_timeout(
    emulator: EmulatorProcess, make_conn: ConnFactory
) -> None:
    hook = ContextCacheHook(make_conn("fanout_no_time", timeout=1, **backend_extra("gemini_api", emulator)))
    name = create_cache(hook)
    emulator.admin.faults(latency_ms=3000, ops=["generate_content"])  # past the 1 s deadline

    result = fan_out(
        hook,
        name,
        questions(1),
        max_concurrency=1,
        options=FanoutOptions(max_attempts=2, backoff_initial=0.01, max_failure_ratio=1.0),
    )

    [answer] = result.results.values()
    assert answer.attempts == 2
    assert answer.error is not None
    assert "no answer within 1 s (the connection's extra.timeout)" in answer.error
    wait_until_idle(emulator)  # the abandoned calls, still held by the emulator


def test_a_batch_line_reaches_the_service_as_written(
    gemini_hook: ContextCacheHook, emulator: EmulatorProcess
) -> None:
    name = create_cache(gemini_hook)
    turn = {"role": "user", "parts": [{"text": "Which port does record 3 name?"}]}
    requests = normalize_prompts([{"key": "k", "request": {"contents": [turn]}}], cache_name=name)

    result = fan_out(gemini_hook, name, requests, max_concurrency=1)

    assert result.summary.succeeded == 1
    [call] = [r for r in emulator.admin.requests() if r["op"] == "generate_content"]
    assert call["body"]["contents"] == [turn]
