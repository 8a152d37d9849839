"""When a failed call is worth another try, and how long to wait first.

One policy for the two places that retry on their own rather than in the SDK: the cache create
(sync, in the hook) and the fan-out engine (async). Both wait the server's ``RetryInfo`` delay
when a 429 gives one (the SDK ignores it), else a doubling backoff with jitter, so workers that
failed together do not come back together.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from airflow_provider_ctxcache.exceptions import (
    REFUSED,
    CtxCacheApiError,
    EndpointUnreachableError,
    QuotaExceededError,
)

TRANSIENT_STATUS_CODES = frozenset({408, 500, 502, 503, 504})
# Answers that prove the service made nothing, so sending a create again cannot make a second cache.
NOTHING_MADE_STATUS_CODES = frozenset({429, 503})
_TRANSPORT_MODULES = ("httpx", "httpx2", "httpcore", "httpcore2", "aiohttp")


def is_transient(error: BaseException) -> bool:
    """Worth another try: 408/5xx from the API, or the transport failing (timeouts, resets).

    An unreachable endpoint counts too (on a real network a blip heals within a few tries),
    unless it :func:`will_not_heal`.
    """
    if isinstance(error, EndpointUnreachableError):
        return not will_not_heal(error)
    if isinstance(error, CtxCacheApiError):
        return error.code in TRANSIENT_STATUS_CODES
    if isinstance(error, (TimeoutError, ConnectionError, OSError)):
        return True
    return type(error).__module__.split(".")[0] in _TRANSPORT_MODULES


def nothing_made(error: BaseException) -> bool:
    """Whether a failed create surely made no cache: a 429, a 503 refusing the request, or a
    connection never made (the request was not sent).

    A timeout or a reset is not: the service may have made the cache and lost the answer.
    """
    if isinstance(error, (QuotaExceededError, EndpointUnreachableError)):
        return True
    return isinstance(error, CtxCacheApiError) and error.code in NOTHING_MADE_STATUS_CODES


def will_not_heal(error: BaseException) -> bool:
    """A connection refused on this machine: the emulator is not running, and waiting will not start it."""
    return isinstance(error, EndpointUnreachableError) and error.local and error.kind == REFUSED


def server_hint(error: BaseException) -> float | None:
    """The server's ``retryDelay`` (seconds) on a 429, if it sent one."""
    return error.retry_delay if isinstance(error, QuotaExceededError) else None


@dataclass(frozen=True)
class Backoff:
    """Waits that double from ``initial`` up to ``maximum``; the server's hint wins, capped."""

    initial: float
    maximum: float

    def delay(self, attempt: int, hint: float | None = None) -> float:
        """Seconds to wait before try ``attempt + 1`` (``attempt`` counts from 1).

        Full jitter over the upper half of the doubling step; a hint from the server is taken
        as given, up to ``maximum``.
        """
        if hint is not None:
            return min(max(hint, 0.0), self.maximum)
        ceiling = min(self.maximum, self.initial * 2 ** max(attempt - 1, 0))
        return random.uniform(ceiling / 2, ceiling)


__all__ = [
    "TRANSIENT_STATUS_CODES",
    "Backoff",
    "is_transient",
    "nothing_made",
    "server_hint",
    "will_not_heal",
]
