"""CacheExpiryTrigger against the emulator, driven under asyncio the way the triggerer runs it."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from typing import Any

import pytest

from airflow_provider_ctxcache.emulator.process import EmulatorProcess
from airflow_provider_ctxcache.hooks import ContextCacheHook
from airflow_provider_ctxcache.triggers import CacheExpiryTrigger
from airflow_provider_ctxcache.triggers.cache_expiry import EXPIRED, GONE, ExpiryOutcome, expiry_outcome
from tests.hooks.conftest import API_KEY
from tests.sensors.conftest import create_cache, first_event, utcnow

# The event may come a little after its due moment: one HTTP read plus the loop's wake-up.
LATE = dt.timedelta(seconds=1)


def test_trigger_serializes_only_ids_and_numbers_and_rebuilds_from_them(conn_id: str) -> None:
    trigger = CacheExpiryTrigger(
        cache_name="cachedContents/abc", ctxcache_conn_id=conn_id, margin_seconds=30, poll_interval=5
    )
    path, kwargs = trigger.serialize()
    assert path == "airflow_provider_ctxcache.triggers.cache_expiry.CacheExpiryTrigger"
    assert kwargs == {
        "cache_name": "cachedContents/abc",
        "ctxcache_conn_id": conn_id,
        "margin_seconds": 30.0,
        "poll_interval": 5.0,
    }
    assert API_KEY not in json.dumps(kwargs)
    assert CacheExpiryTrigger(**kwargs).serialize() == (path, kwargs)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"margin_seconds": -1}, "margin_seconds"), ({"poll_interval": 0}, "poll_interval")],
)
def test_trigger_rejects_bad_numbers_naming_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field}:"):
        CacheExpiryTrigger(cache_name="cachedContents/abc", **kwargs)


def test_trigger_fires_at_expire_time(hook: ContextCacheHook, conn_id: str) -> None:
    name, expire_time = create_cache(hook, ttl="2s")
    trigger = CacheExpiryTrigger(cache_name=name, ctxcache_conn_id=conn_id, poll_interval=0.5)

    payload, fired = asyncio.run(first_event(trigger))

    lapsed = payload.pop("lapsed")
    assert payload == {
        "status": "expired",
        "cache_name": name,
        "expire_time": expire_time.isoformat(),
        "seconds_left": 0.0,
    }
    assert expire_time <= fired < expire_time + LATE
    assert lapsed["expire_time"] == expire_time.isoformat()
    assert lapsed["cache_tokens"] > 0


def test_a_cache_seen_to_lapse_is_reported_with_what_prices_its_storage(
    hook: ContextCacheHook, conn_id: str, emulator: EmulatorProcess
) -> None:
    name, expire_time = create_cache(hook, ttl="2s")
    cache = hook.get_cache(name)
    assert cache.create_time is not None
    assert cache.usage_metadata is not None
    trigger = CacheExpiryTrigger(cache_name=name, ctxcache_conn_id=conn_id, poll_interval=0.5)

    payload, _ = asyncio.run(first_event(trigger))

    assert payload["lapsed"] == {
        "create_time": cache.create_time.isoformat(),
        "expire_time": expire_time.isoformat(),
        "model": cache.model,
        "cache_tokens": cache.usage_metadata.total_token_count,
    }


def test_trigger_fires_margin_reached_margin_seconds_before_expire_time_with_the_seconds_left(
    hook: ContextCacheHook, conn_id: str, emulator: EmulatorProcess
) -> None:
    name, expire_time = create_cache(hook, ttl="3s")
    trigger = CacheExpiryTrigger(
        cache_name=name, ctxcache_conn_id=conn_id, margin_seconds=2, poll_interval=30
    )

    payload, fired = asyncio.run(first_event(trigger))

    due = expire_time - dt.timedelta(seconds=2)
    left = payload.pop("seconds_left")
    assert payload == {"status": "margin_reached", "cache_name": name, "expire_time": expire_time.isoformat()}
    assert 0 < left <= 2
    assert due <= fired < due + LATE
    assert [c["name"] for c in emulator.admin.state()["caches"]] == [name]  # fired while still alive


def test_trigger_rearms_when_the_ttl_is_extended_while_it_sleeps(
    hook: ContextCacheHook, conn_id: str, emulator: EmulatorProcess
) -> None:
    name, old_expire_time = create_cache(hook, ttl="2s")
    # A long poll interval: the trigger sleeps straight to the old expiry, so only the re-read
    # it makes before firing can notice the extension.
    trigger = CacheExpiryTrigger(cache_name=name, ctxcache_conn_id=conn_id, poll_interval=30)

    async def extend_meanwhile() -> dt.datetime:
        other = ContextCacheHook(conn_id)
        await asyncio.sleep(0.5)
        cache = await other.aupdate_cache_ttl(name, ttl="3s")
        await other.aclose()
        assert cache.expire_time is not None
        return cache.expire_time

    async def scenario() -> tuple[dict[str, Any], dt.datetime, dt.datetime]:
        extension = asyncio.create_task(extend_meanwhile())
        payload, fired = await first_event(trigger)
        return payload, fired, await extension

    payload, fired, new_expire_time = asyncio.run(scenario())

    assert new_expire_time > old_expire_time + dt.timedelta(seconds=1)
    assert payload.pop("lapsed")["expire_time"] == new_expire_time.isoformat()
    assert payload == {
        "status": "expired",
        "cache_name": name,
        "expire_time": new_expire_time.isoformat(),
        "seconds_left": 0.0,
    }
    assert new_expire_time <= fired < new_expire_time + LATE
    assert emulator.admin.state()["counts"]["get_cache"] >= 3  # first read, re-read at the old expiry, last


def test_trigger_fires_gone_at_once_when_the_cache_is_deleted_while_it_waits(
    hook: ContextCacheHook, conn_id: str
) -> None:
    name, _ = create_cache(hook, ttl="1h")
    trigger = CacheExpiryTrigger(cache_name=name, ctxcache_conn_id=conn_id, poll_interval=0.2)

    async def scenario() -> tuple[dict[str, Any], dt.datetime, dt.datetime]:
        other = ContextCacheHook(conn_id)

        async def delete_soon() -> dt.datetime:
            await asyncio.sleep(0.3)
            assert await other.adelete_cache(name)
            await other.aclose()
            return utcnow()

        deletion = asyncio.create_task(delete_soon())
        payload, fired = await first_event(trigger)
        return payload, fired, await deletion

    payload, fired, deleted_at = asyncio.run(scenario())

    assert payload == {"status": "gone", "cache_name": name, "expire_time": None, "seconds_left": None}
    assert deleted_at <= fired < deleted_at + dt.timedelta(seconds=0.2) + LATE


def test_trigger_fires_gone_at_once_when_the_cache_expired_on_the_server(
    hook: ContextCacheHook, conn_id: str, emulator: EmulatorProcess
) -> None:
    name, _ = create_cache(hook, ttl="60s")
    emulator.admin.advance_clock(61)
    trigger = CacheExpiryTrigger(cache_name=name, ctxcache_conn_id=conn_id, poll_interval=60)

    started = utcnow()
    payload, fired = asyncio.run(first_event(trigger))

    assert payload == {"status": "gone", "cache_name": name, "expire_time": None, "seconds_left": None}
    assert fired - started < LATE
    assert emulator.admin.state()["counts"]["get_cache"] == 1


def test_trigger_fires_error_without_secrets_when_the_api_fails(
    hook: ContextCacheHook, conn_id: str, emulator: EmulatorProcess
) -> None:
    name, _ = create_cache(hook, ttl="1h")
    emulator.admin.faults(error_rate_503=1.0)
    trigger = CacheExpiryTrigger(cache_name=name, ctxcache_conn_id=conn_id, poll_interval=1)

    payload, _ = asyncio.run(first_event(trigger))

    assert payload["status"] == "error"
    assert payload["cache_name"] == name
    assert "503" in payload["message"]
    assert API_KEY not in json.dumps(payload)


def test_trigger_reads_the_connection_with_aget_connection(
    hook: ContextCacheHook, conn_id: str, emulator: EmulatorProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    name, expire_time = create_cache(hook, ttl="1h")

    def blocking_lookup(cls: type, conn_id: str) -> None:
        raise AssertionError("the trigger made a blocking connection lookup inside the event loop")

    # A tripwire, not a stand-in: the connection still comes from AIRFLOW_CONN_* via aget_connection.
    monkeypatch.setattr(ContextCacheHook, "get_connection", classmethod(blocking_lookup))
    trigger = CacheExpiryTrigger(cache_name=name, ctxcache_conn_id=conn_id, margin_seconds=7200)

    payload, _ = asyncio.run(first_event(trigger))

    assert (payload["status"], payload["expire_time"]) == ("margin_reached", expire_time.isoformat())
    assert emulator.admin.state()["counts"]["get_cache"] == 1


def test_a_read_sent_before_the_expiry_and_answered_after_it_finding_no_cache_is_expired() -> None:
    expiry = dt.datetime(2026, 11, 30, 1, 58, 31, 786846, tzinfo=dt.timezone.utc)
    sent = expiry - dt.timedelta(milliseconds=1)
    outcome = expiry_outcome(
        None, known=expiry, read_at=sent, margin_seconds=0, answered_at=expiry + dt.timedelta(milliseconds=1)
    )
    assert outcome == ExpiryOutcome(EXPIRED, expiry, 0.0)


def test_a_read_answered_before_the_expiry_finding_no_cache_is_gone() -> None:
    expiry = dt.datetime(2026, 11, 30, 1, 58, 31, 786846, tzinfo=dt.timezone.utc)
    sent = expiry - dt.timedelta(seconds=2)
    outcome = expiry_outcome(
        None, known=expiry, read_at=sent, margin_seconds=0, answered_at=sent + dt.timedelta(milliseconds=5)
    )
    assert outcome == ExpiryOutcome(GONE)
