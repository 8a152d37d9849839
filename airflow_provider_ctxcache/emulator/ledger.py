"""The usage ledger: every billable event the emulator served, for ``GET /_emulator/usage``.

Tests use it as a billing oracle: from these events and a price table they compute the bill
on their own and compare it with what the provider reported. Events are kept in emulator-clock
order (an expiry is noticed late but is filed at its expire time). Only successful requests
add events (the dispatcher commits a request's events on a 2xx answer, and not at all when a
reset came in between); expiries are added when the store drops the cache.

Memory is bounded: the last :data:`EVENT_LIMIT` events and the last :data:`EVENT_LIMIT` caches
of the summary are kept, older ones are forgotten.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .clock import format_timestamp
from .model_facts import GEMINI_API, model_id
from .store import CachedContent, Scope

EVENT_LIMIT = 100_000

CACHE_CREATED = "cache_created"
CACHE_TTL_CHANGED = "cache_ttl_changed"
CACHE_DELETED = "cache_deleted"
CACHE_EXPIRED = "cache_expired"
GENERATE = "generate"


def _ts(ns: int) -> str:
    return format_timestamp(ns, nanos=True)


@dataclass(frozen=True)
class UsageEvent:
    """One billable event: its type, emulator-clock time, scope and type-specific fields."""

    kind: str
    time_ns: int
    scope: Scope
    fields: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The event as ``GET /_emulator/usage`` lists it."""
        backend, project, location = self.scope
        developer = backend == GEMINI_API
        return {
            "type": self.kind,
            "time": _ts(self.time_ns),
            "backend": backend,
            "project": None if developer else project,
            "location": None if developer else location,
            **self.fields,
        }


def cache_created(cache: CachedContent) -> UsageEvent:
    """A cache was stored (storage is billed from its createTime)."""
    return UsageEvent(
        CACHE_CREATED,
        cache.create_ns,
        cache.scope,
        {
            "cache": cache.name,
            "model": model_id(cache.model),
            "totalTokenCount": cache.total_tokens,
            "createTime": _ts(cache.create_ns),
            "expireTime": _ts(cache.expire_ns),
        },
    )


def cache_ttl_changed(cache: CachedContent, old_expire_ns: int) -> UsageEvent:
    """A cache's expiration moved (after the update was applied to ``cache``)."""
    return UsageEvent(
        CACHE_TTL_CHANGED,
        cache.update_ns,
        cache.scope,
        {
            "cache": cache.name,
            "oldExpireTime": _ts(old_expire_ns),
            "expireTime": _ts(cache.expire_ns),
            "updateTime": _ts(cache.update_ns),
        },
    )


def cache_deleted(cache: CachedContent, when_ns: int) -> UsageEvent:
    """A cache was deleted (its storage stops being billed then)."""
    return UsageEvent(CACHE_DELETED, when_ns, cache.scope, {"cache": cache.name})


def cache_expired(cache: CachedContent) -> UsageEvent:
    """A cache expired: filed at its expire time, whenever the store noticed."""
    return UsageEvent(
        CACHE_EXPIRED, cache.expire_ns, cache.scope, {"cache": cache.name, "expireTime": _ts(cache.expire_ns)}
    )


def generate(
    scope: Scope, when_ns: int, model: str, cache: str | None, usage: Mapping[str, Any]
) -> UsageEvent:
    """A generateContent answer, with its ``usageMetadata`` exactly as returned."""
    return UsageEvent(GENERATE, when_ns, scope, {"model": model, "cache": cache, "usageMetadata": usage})


@dataclass
class _Lifetime:
    """One cache's life, for the summary."""

    backend: str
    model: str
    tokens: int
    created_ns: int
    ended_ns: int | None = None
    ended_by: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "model": self.model,
            "tokens": self.tokens,
            "created": _ts(self.created_ns),
            "ended": None if self.ended_ns is None else _ts(self.ended_ns),
            "ended_by": self.ended_by,
        }


class UsageLedger:
    """The events in time order and each cache's lifetime, both bounded by ``limit``."""

    def __init__(self, limit: int = EVENT_LIMIT) -> None:
        self.limit = limit
        self._events: list[UsageEvent] = []
        self._caches: OrderedDict[str, _Lifetime] = OrderedDict()

    def add(self, event: UsageEvent) -> None:
        """File an event at its time (after any of the same time) and update the summary."""
        bisect.insort_right(self._events, event, key=lambda e: e.time_ns)
        if len(self._events) > self.limit:
            del self._events[0]
        name = event.fields.get("cache")
        if event.kind == CACHE_CREATED:
            self._caches[event.fields["cache"]] = _Lifetime(
                event.scope[0], event.fields["model"], event.fields["totalTokenCount"], event.time_ns
            )
            while len(self._caches) > self.limit:
                self._caches.popitem(last=False)
        elif event.kind in (CACHE_DELETED, CACHE_EXPIRED) and isinstance(name, str) and name in self._caches:
            life = self._caches[name]
            life.ended_ns = event.time_ns
            life.ended_by = "deleted" if event.kind == CACHE_DELETED else "expired"

    def expired(self, cache: CachedContent) -> None:
        """The store dropped an expired cache: record it once, if its creation was recorded.

        A cache created by a request that outlived a reset was never recorded, so neither is
        its expiry.
        """
        life = self._caches.get(cache.name)
        if life is not None and life.ended_by is None:
            self.add(cache_expired(cache))

    def snapshot(self) -> dict[str, Any]:
        """The body of ``GET /_emulator/usage``."""
        return {
            "events": [e.to_json() for e in self._events],
            "caches": {name: life.to_json() for name, life in self._caches.items()},
        }

    def clear(self) -> None:
        """Forget every event and cache."""
        self._events.clear()
        self._caches.clear()
