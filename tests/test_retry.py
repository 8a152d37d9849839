"""One retry policy for the create and the fan-out: what is worth another try, and how long to wait."""

from __future__ import annotations

import pytest

from airflow_provider_ctxcache.exceptions import CtxCacheApiError, QuotaExceededError
from airflow_provider_ctxcache.retry import Backoff, is_transient, nothing_made, server_hint


def quota(retry_delay: float | None) -> QuotaExceededError:
    return QuotaExceededError("quota", retry_delay)


@pytest.mark.parametrize("attempt", [1, 2, 3, 4])
def test_the_wait_doubles_each_attempt_within_its_upper_half(attempt: int) -> None:
    ceiling = 0.5 * 2 ** (attempt - 1)
    waits = [Backoff(initial=0.5, maximum=100).delay(attempt) for _ in range(200)]
    assert all(ceiling / 2 <= w <= ceiling for w in waits)
    assert len(set(waits)) > 1  # jittered, so workers that failed together spread out


def test_the_wait_never_passes_the_maximum() -> None:
    assert all(5 <= Backoff(initial=1, maximum=10).delay(30) <= 10 for _ in range(50))


def test_the_servers_retry_delay_is_taken_as_given_up_to_the_maximum() -> None:
    backoff = Backoff(initial=1, maximum=10)
    assert backoff.delay(1, server_hint(quota(7.5))) == 7.5
    assert backoff.delay(1, server_hint(quota(600))) == 10


def test_a_429_without_a_delay_gives_no_hint() -> None:
    assert server_hint(quota(None)) is None
    assert server_hint(CtxCacheApiError(503, "UNAVAILABLE", "busy")) is None


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (quota(1.0), True),
        (CtxCacheApiError(503, "UNAVAILABLE", "busy"), True),
        (CtxCacheApiError(500, "INTERNAL", "oops"), False),
        (CtxCacheApiError(504, "DEADLINE_EXCEEDED", "slow"), False),
        (TimeoutError("read timed out"), False),
    ],
)
def test_a_create_is_sent_again_only_after_an_answer_that_proves_nothing_was_made(
    error: Exception, expected: bool
) -> None:
    assert nothing_made(error) is expected


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (CtxCacheApiError(503, "UNAVAILABLE", "busy"), True),
        (CtxCacheApiError(408, "TIMEOUT", "slow"), True),
        (TimeoutError("read timed out"), True),
        (ConnectionResetError("reset"), True),
        (CtxCacheApiError(400, "INVALID_ARGUMENT", "bad"), False),
        (ValueError("bad"), False),
    ],
)
def test_transient_errors_are_server_hiccups_and_transport_failures(error: Exception, expected: bool) -> None:
    assert is_transient(error) is expected
