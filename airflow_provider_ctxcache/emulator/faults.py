"""Injected latency, errors, connection resets and a requests-per-minute quota.

Configured through ``POST /_emulator/faults``. For each request whose op is selected:
first the latency (``asyncio.sleep``, never blocking the loop), then the quota (more than
``rpm_limit`` admitted requests in a sliding 60 s window -> 429 with a RetryInfo saying when a
slot frees), then one seeded random draw: below ``error_rate_429`` -> 429, below
``error_rate_429 + error_rate_503`` -> 503, below that plus ``error_rate_reset`` -> the
connection is reset (RST) with no response at all, counted under the status ``"reset"``.
A faulted request reaches no handler, so it creates nothing. The latency is not a fault:
the handler runs after it whether or not the client is still waiting, so a create the client
gave up on (its timeout shorter than the latency) still creates the cache.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import ApiError, invalid_argument, retry_info

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

WINDOW_SECONDS = 60.0

QUOTA_MESSAGE = {
    "gemini_api": (
        "You exceeded your current quota, please check your plan and billing details. "
        "For more information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits."
    ),
    "vertex_ai": "Resource exhausted. Please try again later.",
}
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
        if config.latency_ms < 0 or config.retry_delay_s < 0 or config.rpm_limit < 0:
            raise invalid_argument("faults: latency_ms, retry_delay_s and rpm_limit must be >= 0")
        bad_ops = set(config.ops) - set(API_OPS)
        if bad_ops:
            raise invalid_argument(f"faults: unknown ops {sorted(bad_ops)}; known: {list(API_OPS)}")
        return config

    def to_json(self) -> dict[str, Any]:
        """The config as ``GET/POST /_emulator/faults`` show it."""
        body = asdict(self)
        body["ops"] = list(self.ops)
        return body


@dataclass
class FaultInjector:
    """Applies a :class:`FaultConfig` to requests, deterministically for a given seed."""

    config: FaultConfig = field(default_factory=FaultConfig)
    _rng: random.Random = field(default_factory=random.Random)
    _window: deque[float] = field(default_factory=deque)

    def configure(self, config: FaultConfig) -> None:
        """Replace the config; restarts the random sequence and the quota window."""
        self.config = config
        self._rng = random.Random(config.seed)
        self._window.clear()

    def reset(self) -> None:
        """No faults."""
        self.configure(FaultConfig())

    @property
    def active(self) -> bool:
        """Whether anything at all is injected (the fast path skips everything when not)."""
        c = self.config
        return bool(c.latency_ms or c.error_rate_429 or c.error_rate_503 or c.error_rate_reset or c.rpm_limit)

    async def apply(self, op: str, backend: str) -> ApiError | ConnectionReset | None:
        """Delay the request and return the error to answer with (or the reset), if any."""
        c = self.config
        if op not in c.ops:
            return None
        if c.latency_ms:
            await asyncio.sleep(c.latency_ms / 1000)
        if c.rpm_limit:
            now = time.monotonic()
            while self._window and self._window[0] <= now - WINDOW_SECONDS:
                self._window.popleft()
            if len(self._window) >= c.rpm_limit:
                wait = max(1, math.ceil(self._window[0] + WINDOW_SECONDS - now))
                return _quota_error(backend, wait, c.rpm_limit)
            self._window.append(now)
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
