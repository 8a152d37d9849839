"""``GET /_emulator/usage``: the emulator as a billing oracle, through the SDK on both backends."""

from __future__ import annotations

import datetime as dt
import threading
import time
from typing import Any

import pytest
from google.genai import errors, types

from airflow_provider_ctxcache.emulator.clock import parse_timestamp
from airflow_provider_ctxcache.emulator.process import EmulatorProcess

from .conftest import CACHE_TOKENS, LOCATION, MODEL, PROJECT, Backend

NO_THINKING = types.ThinkingConfig(thinking_budget=0)


def _micros(value: str | dt.datetime | None) -> int:
    """Microseconds since the epoch of an event timestamp or an SDK datetime (the SDK keeps micros)."""
    assert value is not None
    if isinstance(value, dt.datetime):
        return round(value.timestamp() * 1_000_000)
    return parse_timestamp(value) // 1000


def _generate(backend: Backend, cache: str | None = None) -> types.GenerateContentResponse:
    return backend.client.models.generate_content(
        model=MODEL,
        contents="abcdefgh",
        config=types.GenerateContentConfig(cached_content=cache, thinking_config=NO_THINKING),
    )


def _scope(backend: Backend) -> dict[str, Any]:
    if backend.is_vertex:
        return {"backend": "vertex_ai", "project": PROJECT, "location": LOCATION}
    return {"backend": "gemini_api", "project": None, "location": None}


def test_a_cache_lifecycle_yields_exactly_its_events(backend: Backend, emulator: EmulatorProcess) -> None:
    created = backend.create_cache(ttl="3600s")
    name = str(created.name)
    updated = backend.client.caches.update(name=name, config=types.UpdateCachedContentConfig(ttl="7200s"))
    _generate(backend, name)
    backend.client.caches.delete(name=name)

    usage = emulator.admin.usage_summary()
    events = usage["events"]

    assert [e["type"] for e in events] == ["cache_created", "cache_ttl_changed", "generate", "cache_deleted"]
    assert all({k: e[k] for k in ("backend", "project", "location")} == _scope(backend) for e in events)
    assert [e["cache"] for e in events] == [name] * 4
    create, change, generate, delete = events
    assert create["model"] == MODEL
    assert generate["model"] == MODEL
    assert create["totalTokenCount"] == CACHE_TOKENS
    assert _micros(create["createTime"]) == _micros(created.create_time) == _micros(create["time"])
    assert _micros(create["expireTime"]) == _micros(created.expire_time)
    assert _micros(change["expireTime"]) == _micros(updated.expire_time)
    assert _micros(change["updateTime"]) == _micros(updated.update_time) == _micros(change["time"])
    assert create["time"] <= change["time"] <= generate["time"] <= delete["time"]
    assert usage["caches"] == {
        name: {
            "backend": backend.name,
            "model": MODEL,
            "tokens": CACHE_TOKENS,
            "created": create["time"],
            "ended": delete["time"],
            "ended_by": "deleted",
        }
    }


def test_an_expiry_is_one_event_at_the_expire_time(backend: Backend, emulator: EmulatorProcess) -> None:
    name = str(backend.create_cache(ttl="60s").name)
    emulator.admin.advance_clock(120)
    backend.client.caches.list()  # the store notices the expiry here, a minute late
    first = emulator.admin.usage()
    second = emulator.admin.usage()  # asking again files nothing twice

    assert first == second
    assert [e["type"] for e in first] == ["cache_created", "cache_expired"]
    created, expired = first
    assert expired["cache"] == name
    assert expired["time"] == expired["expireTime"] == created["expireTime"]
    summary = emulator.admin.usage_summary()["caches"][name]
    assert (summary["ended"], summary["ended_by"]) == (created["expireTime"], "expired")


def test_a_live_cache_has_not_ended(backend: Backend, emulator: EmulatorProcess) -> None:
    name = str(backend.create_cache().name)

    summary = emulator.admin.usage_summary()["caches"][name]

    assert (summary["ended"], summary["ended_by"]) == (None, None)


def test_an_expiry_is_filed_at_its_time_among_later_events(
    backend: Backend, emulator: EmulatorProcess
) -> None:
    backend.create_cache(ttl="60s")
    emulator.admin.advance_clock(120)
    _generate(backend)  # served after the expiry, which nobody has looked at yet

    assert [e["type"] for e in emulator.admin.usage()] == ["cache_created", "cache_expired", "generate"]


def test_a_ttl_extension_carries_both_expire_times_and_moves_the_end(
    backend: Backend, emulator: EmulatorProcess
) -> None:
    created = backend.create_cache(ttl="60s")
    name = str(created.name)
    backend.client.caches.update(name=name, config=types.UpdateCachedContentConfig(ttl="600s"))
    emulator.admin.advance_clock(700)

    events = emulator.admin.usage()
    change = next(e for e in events if e["type"] == "cache_ttl_changed")
    assert _micros(change["oldExpireTime"]) == _micros(created.expire_time)
    assert parse_timestamp(change["expireTime"]) == parse_timestamp(change["updateTime"]) + 600 * 10**9
    expired = [e for e in events if e["type"] == "cache_expired"]
    assert [e["time"] for e in expired] == [change["expireTime"]]
    summary = emulator.admin.usage_summary()["caches"][name]
    assert (summary["ended"], summary["ended_by"]) == (change["expireTime"], "expired")


def test_refused_calls_are_not_events(backend: Backend, emulator: EmulatorProcess) -> None:
    emulator.admin.faults(rpm_limit=1)
    _generate(backend)
    with pytest.raises(errors.ClientError) as over_quota:
        _generate(backend)
    with pytest.raises(errors.ClientError) as too_small:
        backend.create_cache(tokens=10)
    with pytest.raises(errors.ClientError) as missing:
        backend.client.caches.delete(name=f"{backend.cache_prefix()}doesnotexist")

    assert over_quota.value.code == 429
    assert too_small.value.code == 400
    assert missing.value.code == backend.missing_code
    assert [e["type"] for e in emulator.admin.usage()] == ["generate"]


def test_a_generate_event_holds_the_usage_metadata_the_sdk_received(
    backend: Backend, emulator: EmulatorProcess
) -> None:
    name = str(backend.create_cache().name)
    with_cache = _generate(backend, name)
    without_cache = _generate(backend)

    events = [e for e in emulator.admin.usage() if e["type"] == "generate"]

    assert [e["cache"] for e in events] == [name, None]
    model = types.GenerateContentResponseUsageMetadata
    known = {field.alias or name for name, field in model.model_fields.items()}
    for event, response in zip(events, (with_cache, without_cache), strict=True):
        usage = event["usageMetadata"]
        # The SDK drops the one field it has no attribute for; everything else must match.
        assert set(usage) - known == (set() if backend.is_vertex else {"serviceTier"})
        sent = model.model_validate({k: v for k, v in usage.items() if k in known})
        assert sent == response.usage_metadata
    assert events[0]["usageMetadata"]["cachedContentTokenCount"] == CACHE_TOKENS


def test_a_reset_empties_the_usage(backend: Backend, emulator: EmulatorProcess) -> None:
    backend.create_cache()
    _generate(backend)

    emulator.admin.reset()

    assert emulator.admin.usage_summary() == {"events": [], "caches": {}}


def test_a_call_that_began_before_a_reset_is_not_recorded(
    developer: Backend, emulator: EmulatorProcess
) -> None:
    emulator.admin.faults(latency_ms=800)
    done: list[types.GenerateContentResponse] = []
    call = threading.Thread(target=lambda: done.append(_generate(developer)))
    call.start()
    time.sleep(0.3)
    emulator.admin.reset()
    call.join(10)

    assert len(done) == 1  # it succeeded, after the reset
    assert emulator.admin.usage() == []
