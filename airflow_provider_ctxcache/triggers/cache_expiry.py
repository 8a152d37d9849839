"""CacheExpiryTrigger: waits in the triggerer until a cache reaches its expiry, minus a margin.

The expiry is a moving target: anyone may extend the TTL while we wait. So the trigger never
trusts an old reading: it sleeps at most ``poll_interval`` between reads, and it fires only on a
reading taken at or after the moment the event was due, which re-arms it if the TTL moved.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import math
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_ctxcache.exceptions import CacheNotFoundError
from airflow_provider_ctxcache.hooks import ContextCacheHook, SharedHook

DEFAULT_POLL_INTERVAL = 60.0
MARGIN_REACHED, EXPIRED, GONE = "margin_reached", "expired", "gone"


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _seconds(value: Any, field: str, *, positive: bool) -> float:
    """A finite number of seconds; the trigger is rebuilt from the DB, so check it here too."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{field}: {value!r} is not a finite number of seconds.")
    if value < 0 or (positive and value == 0):
        raise ValueError(f"{field}: {value!r} must be {'above' if positive else 'at least'} zero seconds.")
    return float(value)


def _event(payload: dict[str, Any]) -> TriggerEvent:
    return TriggerEvent(payload)  # type: ignore[no-untyped-call]  # Airflow's TriggerEvent is untyped


def _safe_message(hook: ContextCacheHook, error: Exception) -> str:
    """The error without the connection's secrets: the event lands in the metadata DB.

    With settings already read, the hook scrubs them (each PEM line too; a short key only as a
    whole token). Without, Airflow's masker replaces every secret this process registered:
    settings that failed to parse (a ``private_key`` given as a list, say) registered every string
    in them before refusing. Loading the settings here would be a blocking connection lookup
    inside the triggerer's loop, so it is never done.
    """
    text = f"{type(error).__name__}: {error}"
    if "settings" in hook.__dict__:
        return hook.scrub(text)
    from airflow.sdk._shared.secrets_masker import redact  # what the task runner itself uses

    return str(redact(text))


class CacheExpiryTrigger(BaseTrigger):
    """Fires when ``now >= expireTime - margin_seconds``, or at once when the cache is gone.

    Events (one per run): ``{"status", "cache_name", "expire_time", "seconds_left"}`` with status
    ``margin_reached`` (alive, inside the margin, ``seconds_left`` > 0 at that reading),
    ``expired`` (its expiry has passed; with ``lapsed``, the cache's create time, expiry, model
    and size when it was seen to lapse) or ``gone`` (missing before its expiry was seen:
    deleted, or expired unseen; ``expire_time`` and ``seconds_left`` None); and
    ``{"status": "error", "cache_name", "message"}`` for anything else (no secrets in it).

    :param cache_name: the cache's full name, as ``CreateCacheOperator`` returns it.
    :param ctxcache_conn_id: the connection to read it with; only its id is stored, never a key.
    :param margin_seconds: fire this long before the expiry (default 0).
    :param poll_interval: the longest sleep between two reads, so an extension is seen in time.
    """

    def __init__(
        self,
        *,
        cache_name: str,
        ctxcache_conn_id: str = ContextCacheHook.default_conn_name,
        margin_seconds: float = 0.0,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # Airflow's BaseTrigger is untyped
        self.cache_name = cache_name
        self.ctxcache_conn_id = ctxcache_conn_id
        self.margin_seconds = _seconds(margin_seconds, "margin_seconds", positive=False)
        self.poll_interval = _seconds(poll_interval, "poll_interval", positive=True)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Only ids and numbers: these kwargs land in the metadata DB."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "cache_name": self.cache_name,
                "ctxcache_conn_id": self.ctxcache_conn_id,
                "margin_seconds": self.margin_seconds,
                "poll_interval": self.poll_interval,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Read, sleep until due (at most ``poll_interval``), read again; fire on a due reading.

        The hook (one connection lookup, one client) is shared with every other trigger of this
        connection in this event loop (:class:`~airflow_provider_ctxcache.hooks.SharedHook`); the
        last one to finish closes the client. A read refused for its credentials is made once more
        if the connection changed (a rotated key).
        """
        lease = SharedHook(self.ctxcache_conn_id)
        try:
            yield _event(await self._wait(lease))
        except Exception as error:
            hook = lease.last_hook or ContextCacheHook(self.ctxcache_conn_id)
            yield _event(
                {"status": "error", "cache_name": self.cache_name, "message": _safe_message(hook, error)}
            )
        finally:
            try:
                await lease.aclose()
            except Exception:  # closing must never hide the event
                self.log.debug("closing the Gemini client failed", exc_info=True)

    async def _wait(self, lease: SharedHook) -> dict[str, Any]:
        """The event payload for expired or gone; other errors propagate to ``run``."""
        known: dt.datetime | None = None
        seen: Any = None
        while True:
            read_at = _utcnow()
            try:
                cache = await lease.call(lambda hook: hook.aget_cache(self.cache_name))
                expire_time: dt.datetime | None = _expire_time_of(cache, self.cache_name)
                seen = cache
            except CacheNotFoundError:
                expire_time = None
            outcome = expiry_outcome(
                expire_time,
                known=known,
                read_at=read_at,
                margin_seconds=self.margin_seconds,
                answered_at=_utcnow(),
            )
            if outcome is not None:
                self.log.info("Cache %s: %s", self.cache_name, outcome.describe(self.margin_seconds))
                payload = outcome.result(self.cache_name)
                if outcome.status == EXPIRED and expire_time is None and seen is not None:
                    payload["lapsed"] = lapsed_facts(seen)
                return payload
            assert expire_time is not None  # no outcome means a live cache not yet due
            known = expire_time
            remaining = (expire_time - dt.timedelta(seconds=self.margin_seconds) - _utcnow()).total_seconds()
            delay = max(0.0, min(remaining, self.poll_interval))
            self.log.info(
                "Cache %s expires %s; due in %.1fs, reading it again in %.1fs",
                self.cache_name,
                expire_time,
                remaining,
                delay,
            )
            await asyncio.sleep(delay)


def lapsed_facts(cache: Any) -> dict[str, Any]:
    """What prices the storage of a cache seen to lapse: its life, size and model (no secrets)."""
    created = getattr(cache, "create_time", None)
    expired = getattr(cache, "expire_time", None)
    usage = getattr(cache, "usage_metadata", None)
    return {
        "create_time": created.isoformat() if isinstance(created, dt.datetime) else None,
        "expire_time": expired.isoformat() if isinstance(expired, dt.datetime) else None,
        "model": getattr(cache, "model", None) or "",
        "cache_tokens": int(getattr(usage, "total_token_count", None) or 0),
    }


def _expire_time_of(cache: Any, cache_name: str) -> dt.datetime:
    expire_time = getattr(cache, "expire_time", None)
    if not isinstance(expire_time, dt.datetime):
        raise ValueError(f"the API returned no expireTime for cache {cache_name!r}")
    return expire_time.astimezone(dt.timezone.utc)


@dataclasses.dataclass(frozen=True)
class ExpiryOutcome:
    """How a wait on a cache ended: one status for the sensor's poke, the trigger and XCom.

    ``margin_reached``: alive, with ``seconds_left`` (> 0) before ``expire_time`` at the reading;
    ``expired``: the expiry has passed (``seconds_left`` 0); ``gone``: missing before its expiry
    was seen (deleted, or expired unseen), with neither time known.
    """

    status: str
    expire_time: dt.datetime | None = None
    seconds_left: float | None = None

    def result(self, cache_name: str) -> dict[str, Any]:
        """The sensor's return value (its XCom) and the trigger's event: names and numbers only."""
        return {
            "cache_name": cache_name,
            "status": self.status,
            "expire_time": self.expire_time.isoformat() if self.expire_time else None,
            "seconds_left": self.seconds_left,
        }

    def describe(self, margin_seconds: float) -> str:
        """The log line's text, e.g. ``margin reached: 110s left before it expires at ...``."""
        if self.status == MARGIN_REACHED:
            return (
                f"margin reached: {self.seconds_left:.0f}s left before it expires at "
                f"{_iso(self.expire_time)} (margin {margin_seconds:.0f}s)"
            )
        if self.status == EXPIRED:
            return f"expired at {_iso(self.expire_time)}"
        return "gone: not found before its expiry was seen (deleted, or expired unseen)"


def _iso(when: dt.datetime | None) -> str:
    return when.isoformat() if when else "an unknown time"


def expiry_outcome(
    expire_time: dt.datetime | None,
    *,
    known: dt.datetime | None,
    read_at: dt.datetime,
    margin_seconds: float,
    answered_at: dt.datetime | None = None,
) -> ExpiryOutcome | None:
    """How the wait ended, or None while it goes on; shared with the sensor's poke.

    ``expire_time`` is None when the read found no cache. ``read_at`` is taken just before the
    read: an outcome needs a reading from no earlier than the due moment, so any TTL extension
    made before then is in it and re-arms the wait instead of firing on a stale expiry.
    ``known`` is the expiry from an earlier reading: a cache that vanished once that moment had
    passed simply expired as announced (with no margin the due read always finds it gone), while
    one that vanished earlier was deleted (or lost) and is reported as ``gone``. Which of the two
    is decided by ``answered_at``, when the answer came: the service looked at some moment
    between the read and its answer, so a read sent just before the expiry and answered just
    after it found a cache that expired as announced. A live cache inside its margin is
    ``margin_reached`` with the seconds it has left, not ``expired``.
    """
    if expire_time is None:
        if known is not None and (answered_at or read_at) >= known:
            return ExpiryOutcome(EXPIRED, known, 0.0)
        return ExpiryOutcome(GONE)
    left = (expire_time - read_at).total_seconds()
    if left <= 0:
        return ExpiryOutcome(EXPIRED, expire_time, 0.0)
    if left <= margin_seconds:
        return ExpiryOutcome(MARGIN_REACHED, expire_time, left)
    return None
