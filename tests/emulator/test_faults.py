"""Injected latency, 429/503 errors and connection resets, seen through the real SDK (quotas: test_quota)."""

from __future__ import annotations

import asyncio
import time

import httpx
import httpx2
import pytest
from google import genai
from google.genai import errors, types

from airflow_provider_ctxcache.emulator.process import EmulatorProcess
from airflow_provider_ctxcache.emulator.tokens import text_of_tokens

from .conftest import CACHE_TOKENS, MODEL, Backend, developer_client, vertex_client

# What a dropped connection raises, whichever HTTP stack the SDK picked: httpx (google-genai 2.x),
# httpx2 (3.x), or aiohttp for async calls when it is installed, as beside
# apache-airflow-providers-google (make test-compat).
TRANSPORT_ERRORS: tuple[type[Exception], ...] = (httpx.TransportError, httpx2.TransportError)
try:
    import aiohttp

    TRANSPORT_ERRORS = (*TRANSPORT_ERRORS, aiohttp.ClientConnectionError)
except ImportError:
    pass


def _count(backend: Backend) -> int | None:
    return backend.client.models.count_tokens(model=MODEL, contents="abcd").total_tokens


def _status_of(backend: Backend) -> int:
    try:
        _count(backend)
    except errors.APIError as error:
        return error.code
    return 200


def test_latency_delays_every_selected_request(backend: Backend, emulator: EmulatorProcess) -> None:
    emulator.admin.faults(latency_ms=200, ops=["count_tokens"])

    started = time.perf_counter()
    _count(backend)

    assert time.perf_counter() - started >= 0.2


def test_latency_spares_the_ops_not_selected(backend: Backend, emulator: EmulatorProcess) -> None:
    emulator.admin.faults(latency_ms=600_000, ops=["count_tokens"])  # a count would hang the test

    assert list(backend.client.caches.list()) == []


def test_latency_does_not_block_other_requests(developer: Backend, emulator: EmulatorProcess) -> None:
    emulator.admin.faults(latency_ms=3000, for_requests=1, ops=["count_tokens"])
    aio = developer.client.aio.models

    async def both() -> bool:
        slow = asyncio.ensure_future(aio.count_tokens(model=MODEL, contents="abcd"))
        while emulator_in_flight(emulator) == 0:  # noqa: ASYNC110 (another process's state)
            await asyncio.sleep(0.01)
        await aio.count_tokens(model=MODEL, contents="abcd")  # not delayed: the 2nd request
        answered_first = not slow.done()
        await slow
        return answered_first

    assert asyncio.run(both())


def emulator_in_flight(emulator: EmulatorProcess) -> int:
    return int(emulator.admin.state()["in_flight"])


def test_for_requests_delays_only_the_first_n(developer: Backend, emulator: EmulatorProcess) -> None:
    emulator.admin.faults(error_rate_503=1.0, for_requests=2, ops=["count_tokens"])

    assert [_status_of(developer) for _ in range(4)] == [503, 503, 200, 200]


def test_after_requests_spares_the_first_n(developer: Backend, emulator: EmulatorProcess) -> None:
    emulator.admin.faults(error_rate_503=1.0, after_requests=2, ops=["count_tokens"])

    assert [_status_of(developer) for _ in range(4)] == [200, 200, 503, 503]


def test_after_and_for_requests_pick_a_stretch_in_the_middle(
    developer: Backend, emulator: EmulatorProcess
) -> None:
    emulator.admin.faults(error_rate_503=1.0, after_requests=1, for_requests=2, ops=["count_tokens"])

    assert [_status_of(developer) for _ in range(5)] == [200, 503, 503, 200, 200]


def test_a_429_carries_quota_failure_and_retry_info(backend: Backend, emulator: EmulatorProcess) -> None:
    emulator.admin.faults(error_rate_429=1.0, retry_delay_s=7)

    with pytest.raises(errors.ClientError) as caught:
        _count(backend)

    assert (caught.value.code, caught.value.status) == (429, "RESOURCE_EXHAUSTED")
    details = caught.value.details["error"]["details"]
    by_type = {d["@type"]: d for d in details}
    assert by_type["type.googleapis.com/google.rpc.RetryInfo"]["retryDelay"] == "7s"
    assert "type.googleapis.com/google.rpc.QuotaFailure" in by_type
    if backend.is_vertex:
        assert caught.value.message == "Resource exhausted. Please try again later."


def test_a_503_says_the_model_is_overloaded(backend: Backend, emulator: EmulatorProcess) -> None:
    emulator.admin.faults(error_rate_503=1.0)

    with pytest.raises(errors.ServerError) as caught:
        _count(backend)

    assert (caught.value.code, caught.value.status) == (503, "UNAVAILABLE")
    assert caught.value.message == "The model is overloaded. Please try again later."


def test_error_rates_are_deterministic_for_a_seed(developer: Backend, emulator: EmulatorProcess) -> None:
    emulator.admin.faults(error_rate_429=0.3, error_rate_503=0.3, seed=7)
    first = [_status_of(developer) for _ in range(30)]
    emulator.admin.faults(error_rate_429=0.3, error_rate_503=0.3, seed=7)
    second = [_status_of(developer) for _ in range(30)]

    assert first == second
    assert {200, 429, 503} == set(first)


def test_a_faulted_create_creates_nothing(backend: Backend, emulator: EmulatorProcess) -> None:
    emulator.admin.faults(error_rate_429=1.0, ops=["create_cache"])

    with pytest.raises(errors.ClientError):
        backend.create_cache()

    state = emulator.admin.state()
    assert state["caches"] == []
    assert state["status_counts"]["create_cache"] == {"429": 1}


def test_faults_apply_only_to_the_selected_ops(backend: Backend, emulator: EmulatorProcess) -> None:
    emulator.admin.faults(error_rate_503=1.0, ops=["generate_content"])

    assert _count(backend) == 1
    with pytest.raises(errors.ServerError):
        backend.client.models.generate_content(model=MODEL, contents="hi")


def test_the_sdk_retries_through_injected_errors_when_told_to(emulator: EmulatorProcess) -> None:
    emulator.admin.faults(error_rate_503=0.5, seed=1)
    retrying = genai.Client(
        api_key="k",
        http_options=types.HttpOptions(
            base_url=emulator.url,
            api_version="v1beta",
            retry_options=types.HttpRetryOptions(attempts=10, initial_delay=0.01, max_delay=0.02),
        ),
    )

    for _ in range(5):
        assert retrying.models.count_tokens(model=MODEL, contents="abcd").total_tokens == 1

    counts = emulator.admin.state()["status_counts"]["count_tokens"]
    assert counts["200"] == 5
    assert counts.get("503", 0) > 0


def test_clearing_faults_restores_normal_service(backend: Backend, emulator: EmulatorProcess) -> None:
    emulator.admin.faults(error_rate_503=1.0)
    emulator.admin.faults()

    assert _count(backend) == 1


def test_an_invalid_fault_config_is_refused(emulator: EmulatorProcess) -> None:
    for body in (
        {"error_rate_429": 1.5},
        {"error_rate_reset": -0.1},
        {"error_rate_503": 0.6, "error_rate_reset": 0.6},
        {"ops": ["no_such_op"]},
        {"latency": 5},
        {"rpm_limit": -1},
        {"tpm_limit": -1},
        {"quota_window_s": 0},
        {"expired_grace_s": -1},
    ):
        response = httpx.post(f"{emulator.url}/_emulator/faults", json=body)
        assert (response.status_code, response.json()["error"]["status"]) == (400, "INVALID_ARGUMENT")


def test_a_reset_drops_the_connection_without_a_response(backend: Backend, emulator: EmulatorProcess) -> None:
    emulator.admin.faults(error_rate_reset=1.0, ops=["count_tokens"])

    with pytest.raises(TRANSPORT_ERRORS):
        _count(backend)

    assert emulator.admin.state()["status_counts"]["count_tokens"] == {"reset": 1}
    assert emulator.admin.requests()[-1]["status"] == "reset"


def test_a_reset_reaches_the_async_client_too(developer: Backend, emulator: EmulatorProcess) -> None:
    emulator.admin.faults(error_rate_reset=1.0, ops=["count_tokens"])

    async def count() -> None:
        await developer.client.aio.models.count_tokens(model=MODEL, contents="abcd")

    with pytest.raises(TRANSPORT_ERRORS):
        asyncio.run(count())


def test_a_reset_create_creates_nothing(backend: Backend, emulator: EmulatorProcess) -> None:
    emulator.admin.faults(error_rate_reset=1.0, ops=["create_cache"])

    with pytest.raises(TRANSPORT_ERRORS):
        backend.create_cache()

    assert emulator.admin.state()["caches"] == []


def test_resets_are_deterministic_for_a_seed(developer: Backend, emulator: EmulatorProcess) -> None:
    def outcomes() -> list[str]:
        emulator.admin.faults(error_rate_503=0.3, error_rate_reset=0.3, seed=11)
        seen = []
        for _ in range(30):
            try:
                seen.append(str(_status_of(developer)))
            except TRANSPORT_ERRORS:
                seen.append("reset")
        return seen

    first = outcomes()

    assert outcomes() == first
    assert {"200", "503", "reset"} == set(first)


def test_sdk_retry_options_do_not_retry_a_reset(emulator: EmulatorProcess) -> None:
    # The SDK retries only timeouts, connect errors and listed HTTP codes; a reset after the
    # request was sent (a read error) reaches the caller on the first attempt.
    emulator.admin.faults(error_rate_reset=1.0, ops=["count_tokens"])
    retrying = genai.Client(
        api_key="k",
        http_options=types.HttpOptions(
            base_url=emulator.url,
            api_version="v1beta",
            retry_options=types.HttpRetryOptions(attempts=5, initial_delay=0.01, max_delay=0.02),
        ),
    )

    with pytest.raises(TRANSPORT_ERRORS):
        retrying.models.count_tokens(model=MODEL, contents="abcd")

    assert emulator.admin.state()["status_counts"]["count_tokens"] == {"reset": 1}


def test_a_caller_retrying_transport_errors_gets_through_resets(
    developer: Backend, emulator: EmulatorProcess
) -> None:
    emulator.admin.faults(error_rate_reset=0.5, seed=2, ops=["count_tokens"])

    def count_with_retries() -> int | None:
        for _ in range(20):
            try:
                return _count(developer)
            except TRANSPORT_ERRORS:
                continue
        raise AssertionError("20 resets in a row")

    assert [count_with_retries() for _ in range(5)] == [1] * 5

    counts = emulator.admin.state()["status_counts"]["count_tokens"]
    assert counts["200"] == 5
    assert counts["reset"] > 0


def test_a_create_the_client_gave_up_on_still_creates_the_cache(
    backend: Backend, emulator: EmulatorProcess
) -> None:
    emulator.admin.faults(latency_ms=800, ops=["create_cache"])
    make_client = vertex_client if backend.is_vertex else developer_client
    impatient = make_client(emulator.url, timeout_ms=200)

    with pytest.raises((httpx.TimeoutException, httpx2.TimeoutException)):
        impatient.caches.create(
            model=MODEL, config=types.CreateCachedContentConfig(contents=[text_of_tokens(CACHE_TOKENS)])
        )

    assert emulator.admin.state()["caches"] == []  # the handler is still in its injected delay
    deadline = time.monotonic() + 5
    while not emulator.admin.state()["caches"] and time.monotonic() < deadline:
        time.sleep(0.05)
    state = emulator.admin.state()
    assert len(state["caches"]) == 1
    assert state["status_counts"]["create_cache"] == {"200": 1}
