"""Per-model generateContent quotas (requests and input tokens per window), seen through the SDK.

The prompt "abcdefgh" is 2 input tokens; with no cache and no tools that is the request's
whole input.
"""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from google.genai import errors, types

from airflow_provider_ctxcache.emulator.process import EmulatorProcess

from .conftest import CACHE_TOKENS, LOCATION, MODEL, Backend

PROMPT = "abcdefgh"  # 2 tokens
QUOTA_FAILURE = "type.googleapis.com/google.rpc.QuotaFailure"
RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"

REQUESTS_QUOTA = {
    "gemini_api": (
        "generativelanguage.googleapis.com/generate_content_paid_tier_requests",
        "GenerateRequestsPerMinutePerProjectPerModel-PaidTier",
    ),
    "vertex_ai": (
        "aiplatform.googleapis.com/generate_content_requests_per_minute_per_project_per_base_model",
        "GenerateContentRequestsPerMinutePerProjectPerBaseModel",
    ),
}
INPUT_TOKENS_QUOTA = {
    "gemini_api": (
        "generativelanguage.googleapis.com/generate_content_paid_tier_input_token_count",
        "GenerateContentPaidTierInputTokensPerModelPerMinute",
    ),
    "vertex_ai": (
        "aiplatform.googleapis.com/generate_content_input_tokens_per_minute_per_base_model",
        "GenerateContentInputTokensPerMinutePerBaseModel",
    ),
}


def _generate(
    backend: Backend, contents: Any = PROMPT, model: str = MODEL, **config: Any
) -> types.GenerateContentResponse:
    return backend.client.models.generate_content(
        model=model, contents=contents, config=types.GenerateContentConfig(**config)
    )


def _status(backend: Backend, contents: Any = PROMPT, model: str = MODEL, **config: Any) -> int:
    try:
        _generate(backend, contents, model, **config)
    except errors.APIError as error:
        return error.code
    return 200


def _refusal(backend: Backend, contents: Any = PROMPT, **config: Any) -> errors.ClientError:
    with pytest.raises(errors.ClientError) as caught:
        _generate(backend, contents, **config)
    assert (caught.value.code, caught.value.status) == (429, "RESOURCE_EXHAUSTED")
    return caught.value


def _violations(error: errors.ClientError) -> list[dict[str, Any]]:
    details = error.details["error"]["details"]
    violations: list[dict[str, Any]] = next(d for d in details if d["@type"] == QUOTA_FAILURE)["violations"]
    return violations


def _retry_delay(error: errors.ClientError) -> str:
    details = error.details["error"]["details"]
    delay: str = next(d for d in details if d["@type"] == RETRY_INFO)["retryDelay"]
    return delay


def _seconds(delay: str) -> float:
    assert delay.endswith("s")
    return float(delay[:-1])


def _location(backend: Backend) -> str:
    return LOCATION if backend.is_vertex else "global"


def test_the_rpm_limit_refuses_generate_requests_over_it(backend: Backend, emulator: EmulatorProcess) -> None:
    emulator.admin.faults(rpm_limit=2)

    assert [_status(backend) for _ in range(3)] == [200, 200, 429]


def test_a_request_quota_refusal_names_the_requests_metric(
    backend: Backend, emulator: EmulatorProcess
) -> None:
    emulator.admin.faults(rpm_limit=2)
    _generate(backend)
    _generate(backend)

    error = _refusal(backend)

    metric, quota_id = REQUESTS_QUOTA[backend.name]
    assert _violations(error) == [
        {
            "quotaMetric": metric,
            "quotaId": quota_id,
            "quotaDimensions": {"model": MODEL, "location": _location(backend)},
            "quotaValue": "2",
        }
    ]


def test_an_input_token_quota_refusal_names_the_input_tokens_metric(
    backend: Backend, emulator: EmulatorProcess
) -> None:
    emulator.admin.faults(tpm_limit=3)
    _generate(backend)  # 2 of 3 tokens

    error = _refusal(backend)  # 2 more would make 4

    metric, quota_id = INPUT_TOKENS_QUOTA[backend.name]
    assert _violations(error) == [
        {
            "quotaMetric": metric,
            "quotaId": quota_id,
            "quotaDimensions": {"model": MODEL, "location": _location(backend)},
            "quotaValue": "3",
        }
    ]


def test_a_request_over_both_limits_names_both_metrics(backend: Backend, emulator: EmulatorProcess) -> None:
    emulator.admin.faults(rpm_limit=1, tpm_limit=3)
    _generate(backend)

    error = _refusal(backend)

    assert [v["quotaMetric"] for v in _violations(error)] == [
        REQUESTS_QUOTA[backend.name][0],
        INPUT_TOKENS_QUOTA[backend.name][0],
    ]


def test_the_developer_api_message_names_the_metric_limit_and_model(
    developer: Backend, emulator: EmulatorProcess
) -> None:
    emulator.admin.faults(rpm_limit=1)
    _generate(developer)

    message = str(_refusal(developer).message)

    assert message.startswith("You exceeded your current quota")
    assert f"{REQUESTS_QUOTA['gemini_api'][0]}, limit: 1, model: {MODEL}" in message


def test_vertex_message_names_the_metric_and_base_model(vertex: Backend, emulator: EmulatorProcess) -> None:
    emulator.admin.faults(rpm_limit=1)
    _generate(vertex)

    message = str(_refusal(vertex).message)

    assert message.startswith(
        f"Quota exceeded for {REQUESTS_QUOTA['vertex_ai'][0]} with base model: {MODEL}."
    )


def test_quotas_are_per_model(backend: Backend, emulator: EmulatorProcess) -> None:
    emulator.admin.faults(rpm_limit=1)

    statuses = [_status(backend), _status(backend), _status(backend, model="gemini-2.5-pro")]

    assert statuses == [200, 429, 200]


def test_quotas_apply_to_generate_content_only(backend: Backend, emulator: EmulatorProcess) -> None:
    emulator.admin.faults(rpm_limit=1)

    counts = [backend.client.models.count_tokens(model=MODEL, contents=PROMPT).total_tokens for _ in range(3)]

    assert counts == [2, 2, 2]
    assert _status(backend) == 200


def test_cached_tokens_count_toward_the_input_token_quota(
    backend: Backend, emulator: EmulatorProcess
) -> None:
    cache = backend.create_cache()
    per_request = CACHE_TOKENS + 2
    emulator.admin.faults(tpm_limit=2 * per_request - 1)

    statuses = [_status(backend, cached_content=cache.name) for _ in range(2)]

    assert statuses == [200, 429]


def test_tool_use_tokens_count_toward_the_input_token_quota(
    backend: Backend, emulator: EmulatorProcess
) -> None:
    tools = [types.Tool(google_search=types.GoogleSearch())]
    usage = _generate(backend, tools=tools).usage_metadata
    assert usage is not None
    input_tokens = (usage.prompt_token_count or 0) + (usage.tool_use_prompt_token_count or 0)

    emulator.admin.faults(tpm_limit=input_tokens - 1)
    short_by_one = _status(backend, tools=tools)
    emulator.admin.faults(tpm_limit=input_tokens)
    just_enough = _status(backend, tools=tools)

    assert (short_by_one, just_enough) == (429, 200)


def test_refused_requests_do_not_use_up_quota(backend: Backend, emulator: EmulatorProcess) -> None:
    emulator.admin.faults(tpm_limit=5)

    statuses = [
        _status(backend, PROMPT),
        _status(backend, "x" * 16),
        _status(backend, PROMPT),
    ]  # 2, 4, 2 tokens

    assert statuses == [200, 429, 200]


def test_a_request_larger_than_the_tpm_limit_waits_the_whole_window(
    backend: Backend, emulator: EmulatorProcess
) -> None:
    emulator.admin.faults(tpm_limit=1)

    error = _refusal(backend)

    assert _retry_delay(error) == "60s"


def test_the_retry_delay_is_whole_seconds_for_a_minute_long_window(
    backend: Backend, emulator: EmulatorProcess
) -> None:
    emulator.admin.faults(rpm_limit=1)
    _generate(backend)

    delay = _retry_delay(_refusal(backend))

    assert re.fullmatch(r"\d+s", delay)
    assert 58 <= _seconds(delay) <= 60


def test_the_retry_delay_is_milliseconds_for_a_compressed_window(
    backend: Backend, emulator: EmulatorProcess
) -> None:
    emulator.admin.faults(rpm_limit=1, quota_window_s=2)
    _generate(backend)

    delay = _retry_delay(_refusal(backend))

    assert re.fullmatch(r"\d+(\.\d{1,3})?s", delay)
    assert 1.0 < _seconds(delay) <= 2.0


def test_waiting_the_retry_delay_is_enough_to_be_admitted(
    backend: Backend, emulator: EmulatorProcess
) -> None:
    emulator.admin.faults(rpm_limit=1, quota_window_s=1)
    _generate(backend)
    delay = _seconds(_retry_delay(_refusal(backend)))

    time.sleep(delay)

    assert _status(backend) == 200


def test_advancing_the_emulator_clock_frees_the_window(backend: Backend, emulator: EmulatorProcess) -> None:
    emulator.admin.faults(rpm_limit=1)
    _generate(backend)
    assert _status(backend) == 429

    emulator.admin.advance_clock(60)

    assert _status(backend) == 200


def test_setting_the_faults_again_empties_the_windows(backend: Backend, emulator: EmulatorProcess) -> None:
    emulator.admin.faults(rpm_limit=1)
    _generate(backend)
    assert _status(backend) == 429

    emulator.admin.faults(rpm_limit=1)

    assert _status(backend) == 200


def test_the_latency_is_applied_before_the_quota_check(backend: Backend, emulator: EmulatorProcess) -> None:
    emulator.admin.faults(rpm_limit=1, latency_ms=300, ops=["generate_content"])
    _generate(backend)

    started = time.perf_counter()
    status = _status(backend)

    assert status == 429
    assert time.perf_counter() - started >= 0.3


def test_quota_refusals_show_in_the_state_counts(backend: Backend, emulator: EmulatorProcess) -> None:
    emulator.admin.faults(rpm_limit=1)
    _status(backend)
    _status(backend)

    assert emulator.admin.state()["status_counts"]["generate_content"] == {"200": 1, "429": 1}


def test_the_faults_endpoint_shows_the_quota_settings_and_their_defaults(emulator: EmulatorProcess) -> None:
    shown = emulator.admin.faults(tpm_limit=1000)

    assert (shown["rpm_limit"], shown["tpm_limit"], shown["quota_window_s"], shown["expired_grace_s"]) == (
        0,
        1000,
        60.0,
        300.0,
    )
