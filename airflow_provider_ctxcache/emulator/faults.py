"""Injected latency, errors and connection resets, plus the quota and expiry settings.

Configured through ``POST /_emulator/faults`` (one :class:`FaultConfig`; each POST replaces
the whole config). For each request whose op is in ``ops``: first the latency
(``asyncio.sleep``, never blocking the loop), then one seeded random draw: below
``error_rate_429`` -> 429 (RetryInfo ``retry_delay_s``), below ``error_rate_429 +
error_rate_503`` -> 503, below that plus ``error_rate_reset`` -> the connection is reset (RST)
with no response at all, counted under the status ``"reset"``. A faulted request reaches no
handler, so it creates nothing. The latency is not a fault: the handler runs after it whether
or not the client is still waiting, so a create the client gave up on (its timeout shorter
than the latency) still creates the cache.

The same config carries settings the handlers apply, whatever ``ops`` says: the per-model
generateContent quotas ``rpm_limit`` and ``tpm_limit`` over a sliding window of
``quota_window_s`` seconds (checked after the latency, see :mod:`.quota`), and
``expired_grace_s``, how long Vertex answers "Cache content N is expired." for a cache that
expired before it answers 404 like for one that never existed, and ``deleted_state_s``
(default 0: off), how long Vertex answers 400 "Invalid resource state for cache content." for
a cache that was deleted, as it sometimes does while a deletion completes.

``after_requests`` and ``for_requests`` bound the faults by count, so a test can say which
requests are hit instead of racing a timer: the latency and errors apply from the request after
the first ``after_requests`` of the ops in ``ops`` (0: from the first), to ``for_requests`` of
them (0: all that follow). E.g. ``latency_ms=1500, for_requests=8``: only the first 8 calls are
slow; ``latency_ms=60000, after_requests=40``: the first 40 are answered, every later one hangs.

``clock_skip_s`` moves the emulator's clock forward by that many seconds before each request
whose op is in ``ops``, as if that long had passed since the previous one: with
``ops=["delete_cache"]`` a cache a test holds for seconds has lived for hours when it is deleted,
which is how tests check storage bills to 0.1% without waiting (the server's ``Date`` header
follows the clock).
"""

from __future__ import annotations

import asyncio
import math
import random
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import ApiError, invalid_argument, retry_info
from .quota import QUOTA_MESSAGE, QuotaLimits, QuotaWindows

API_OPS: tuple[str, ...] = (
    "create_cache",
    "get_cache",
    "list_caches",
    "update_cache",
    "delete_cache",
    "generate_content",
    "count_tokens",
    "batch",
    "upload_file",
    "get_file",
    "list_files",
    "delete_file",
)

DEFAULT_QUOTA_WINDOW_S = 60.0
DEFAULT_EXPIRED_GRACE_S = 300.0

OVERLOADED_MESSAGE = "The model is overloaded. Please try again later."
RESET_STATUS = "reset"


class ConnectionReset(Exception):
    """The fault of a request whose connection is dropped without any response."""


@dataclass(frozen=True)
class FaultConfig:
    """What to inject; the all-zero default injects nothing."""

    latency_ms: float = 0.0
    error_rate_429: float = 0.0
    error_rate_503: float = 0.0
    error_rate_reset: float = 0.0
    retry_delay_s: float = 15.0
    rpm_limit: int = 0
    tpm_limit: int = 0
    quota_window_s: float = DEFAULT_QUOTA_WINDOW_S
    expired_grace_s: float = DEFAULT_EXPIRED_GRACE_S
    deleted_state_s: float = 0.0
    clock_skip_s: float = 0.0
    after_requests: int = 0
    for_requests: int = 0
    seed: int | None = None
    ops: tuple[str, ...] = API_OPS

    @classmethod
    def from_json(cls, body: Any) -> FaultConfig:
        """Validate the body of ``POST /_emulator/faults``."""
        if not isinstance(body, dict):
            raise invalid_argument("faults: expected a JSON object")
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(body) - known
        if unknown:
            raise invalid_argument(f"faults: unknown fields {sorted(unknown)}")
        try:
            config = cls(
                latency_ms=float(body.get("latency_ms") or 0),
                error_rate_429=float(body.get("error_rate_429") or 0),
                error_rate_503=float(body.get("error_rate_503") or 0),
                error_rate_reset=float(body.get("error_rate_reset") or 0),
                retry_delay_s=float(body.get("retry_delay_s", 15.0)),
                rpm_limit=int(body.get("rpm_limit") or 0),
                tpm_limit=int(body.get("tpm_limit") or 0),
                quota_window_s=float(body.get("quota_window_s", DEFAULT_QUOTA_WINDOW_S)),
                expired_grace_s=float(body.get("expired_grace_s", DEFAULT_EXPIRED_GRACE_S)),
                deleted_state_s=float(body.get("deleted_state_s") or 0),
                clock_skip_s=float(body.get("clock_skip_s") or 0),
                after_requests=int(body.get("after_requests") or 0),
                for_requests=int(body.get("for_requests") or 0),
                seed=None if body.get("seed") is None else int(body["seed"]),
                ops=tuple(body.get("ops") or API_OPS),
            )
        except (TypeError, ValueError) as exc:
            raise invalid_argument(f"faults: {exc}") from exc
        rates = (config.error_rate_429, config.error_rate_503, config.error_rate_reset)
        if not all(0 <= r <= 1 for r in rates):
            raise invalid_argument("faults: error rates must be between 0 and 1")
        if sum(rates) > 1 + 1e-9:
            raise invalid_argument(
                "faults: error_rate_429 + error_rate_503 + error_rate_reset must not exceed 1"
            )
        non_negative = (
            config.latency_ms,
            config.retry_delay_s,
            config.rpm_limit,
            config.tpm_limit,
            config.expired_grace_s,
            config.deleted_state_s,
            config.clock_skip_s,
        )
        if not all(math.isfinite(value) for value in (*non_negative, config.quota_window_s)):
            raise invalid_argument("faults: every number must be finite")
        if min(*non_negative, config.after_requests, config.for_requests) < 0:
            raise invalid_argument(
                "faults: latency_ms, retry_delay_s, rpm_limit, tpm_limit, expired_grace_s, "
                "deleted_state_s, clock_skip_s, after_requests and for_requests must be >= 0"
            )
        if not config.quota_window_s > 0:
            raise invalid_argument("faults: quota_window_s must be > 0")
        bad_ops = set(config.ops) - set(API_OPS)
        if bad_ops:
            raise invalid_argument(f"faults: unknown ops {sorted(bad_ops)}; known: {list(API_OPS)}")
        return config

    def to_json(self) -> dict[str, Any]:
        """The config as ``GET/POST /_emulator/faults`` show it."""
        body = asdict(self)
        body["ops"] = list(self.ops)
        return body

    @property
    def quota(self) -> QuotaLimits:
        """The generateContent quota limits of this config."""
        return QuotaLimits(self.rpm_limit, self.tpm_limit, self.quota_window_s)


@dataclass
class FaultInjector:
    """Applies a :class:`FaultConfig` to requests, deterministically for a given seed."""

    config: FaultConfig = field(default_factory=FaultConfig)
    windows: QuotaWindows = field(default_factory=QuotaWindows)
    """The quota windows of generateContent (applied by its handler, see :mod:`.quota`)."""
    _rng: random.Random = field(default_factory=random.Random)
    _seen: int = 0  # requests of the config's ops so far, for after_requests and for_requests

    def configure(self, config: FaultConfig) -> None:
        """Replace the config; restarts the random sequence and the request count, and empties
        the quota windows."""
        self.config = config
        self._rng = random.Random(config.seed)
        self._seen = 0
        self.windows.clear()

    def reset(self) -> None:
        """No faults."""
        self.configure(FaultConfig())

    @property
    def active(self) -> bool:
        """Whether anything at all is injected (the fast path skips everything when not)."""
        c = self.config
        return bool(
            c.latency_ms or c.error_rate_429 or c.error_rate_503 or c.error_rate_reset or c.clock_skip_s
        )

    def clock_skip(self, op: str) -> float:
        """Seconds the clock moves forward before this request (0: none)."""
        return self.config.clock_skip_s if op in self.config.ops else 0.0

    async def apply(self, op: str, backend: str) -> ApiError | ConnectionReset | None:
        """Delay the request and return the error to answer with (or the reset), if any."""
        c = self.config
        if op not in c.ops:
            return None
        self._seen += 1
        if self._seen <= c.after_requests:
            return None
        if c.for_requests and self._seen > c.after_requests + c.for_requests:
            return None
        if c.latency_ms:
            await asyncio.sleep(c.latency_ms / 1000)
        if c.error_rate_429 or c.error_rate_503 or c.error_rate_reset:
            draw = self._rng.random()
            if draw < c.error_rate_429:
                return _quota_error(backend, c.retry_delay_s, c.rpm_limit)
            if draw < c.error_rate_429 + c.error_rate_503:
                return ApiError(503, OVERLOADED_MESSAGE)
            if draw < c.error_rate_429 + c.error_rate_503 + c.error_rate_reset:
                return ConnectionReset(op)
        return None


def _quota_error(backend: str, delay_s: float, limit: int) -> ApiError:
    quota_failure = {
        "@type": "type.googleapis.com/google.rpc.QuotaFailure",
        "violations": [
            {
                "quotaMetric": "generativelanguage.googleapis.com/generate_content_requests",
                "quotaId": "GenerateRequestsPerMinutePerProjectPerModel",
                "quotaValue": str(limit) if limit else "0",
            }
        ],
    }
    return ApiError(429, QUOTA_MESSAGE[backend], details=[quota_failure, retry_info(delay_s)])
