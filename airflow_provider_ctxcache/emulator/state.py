"""All one emulator holds: config, model table, clock, caches, files, faults, counters, log and usage.

Kept in memory only (no per-request disk I/O); ``POST /_emulator/reset`` empties it all.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Mapping
from typing import Any

from .clock import Clock, format_timestamp
from .faults import API_OPS, FaultInjector
from .filestore import FileStore
from .ledger import UsageLedger
from .model_facts import MODEL_FACTS, ModelFacts, with_min_tokens
from .store import CacheStore

REQUEST_LOG_SIZE = 1000
# Bodies larger than this are logged as a size only, so the log stays small.
LOGGED_BODY_LIMIT = 64 * 1024


class EmulatorState:
    """The state behind one app instance."""

    def __init__(self, *, api_key: str | None = None, min_tokens: Mapping[str, int] | None = None) -> None:
        self.api_key = api_key
        self.startup_api_key = api_key
        """The key given at start; ``POST /_emulator/api_key`` rotates ``api_key``, a reset restores it."""
        self.min_tokens: dict[str, int] = dict(min_tokens or {})
        """Minimum cache sizes overriding the table's, per model id, on every backend serving it."""
        self.clock = Clock()
        self.epoch = 0
        """Bumped by every reset: a request that began before one is not counted after it."""
        self.in_flight = 0
        """API requests being handled now (shown by ``GET /_emulator/state``)."""
        self.usage = UsageLedger()
        """Billable events (``GET /_emulator/usage``)."""
        self.store = CacheStore(self.clock, on_expired=self.usage.expired)
        self.files = FileStore(self.clock)
        self.faults = FaultInjector()
        self.counts: Counter[str] = Counter()
        self.status_counts: dict[str, Counter[str]] = {op: Counter() for op in API_OPS}
        self.request_log: deque[dict[str, Any]] = deque(maxlen=REQUEST_LOG_SIZE)
        self.tokens_issued = 0

    @property
    def models(self) -> dict[str, ModelFacts]:
        """The model table with :attr:`min_tokens` applied (read on every call, so edits apply)."""
        return with_min_tokens(MODEL_FACTS, self.min_tokens)

    def record(
        self,
        *,
        op: str,
        method: str,
        path: str,
        status: int | str,
        body: Any,
        body_size: int,
        server_timeout: str | None = None,
    ) -> None:
        """Count one API request and append it to the log (headers are never kept, but for the
        deadline the client sent in ``X-Server-Timeout``, a number of seconds).

        ``status`` is the HTTP status, or ``"reset"`` for a connection dropped without one.
        """
        self.counts[op] += 1
        self.status_counts[op][str(status)] += 1
        if body_size > LOGGED_BODY_LIMIT and not (isinstance(body, dict) and body.get("_binary")):
            body = {"_truncated": True, "bytes": body_size}
        self.request_log.append(
            {
                "time": format_timestamp(self.clock.now_ns()),
                "method": method,
                "path": path,
                "op": op,
                "status": status,
                "body": body,
                "server_timeout": server_timeout,
            }
        )

    def snapshot(self) -> dict[str, Any]:
        """The body of ``GET /_emulator/state``."""
        caches = []
        for cache in self.store.live():
            resource = cache.resource()
            resource["backend"] = cache.backend
            caches.append(resource)
        open_uploads, open_upload_bytes = self.files.open_uploads()
        return {
            "now": format_timestamp(self.clock.now_ns()),
            "caches": caches,
            "files": [f.resource() for f in self.files.live()],
            "open_uploads": open_uploads,
            "open_upload_bytes": open_upload_bytes,
            "counts": {op: self.counts[op] for op in API_OPS},
            "status_counts": {op: dict(self.status_counts[op]) for op in API_OPS},
            "tokens_issued": self.tokens_issued,
            "faults": self.faults.config.to_json(),
            "in_flight": self.in_flight,
        }

    def usage_snapshot(self) -> dict[str, Any]:
        """The body of ``GET /_emulator/usage``, after dropping (and so filing) expired caches."""
        self.store.live()
        return self.usage.snapshot()

    def reset(self) -> None:
        """Empty caches, files, counts, log, usage and faults; the clock back to real time."""
        self.epoch += 1
        self.store.clear()
        self.usage.clear()
        self.files.clear()
        self.counts.clear()
        for counter in self.status_counts.values():
            counter.clear()
        self.request_log.clear()
        self.faults.reset()
        self.clock.reset()
        self.tokens_issued = 0
        self.api_key = self.startup_api_key
