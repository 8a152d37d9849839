"""Sensor and trigger tests reuse the hook tests' real connections (``AIRFLOW_CONN_*``) and emulator."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncGenerator
from typing import Any, cast

import pytest
from airflow.triggers.base import TriggerEvent

from airflow_provider_ctxcache.emulator.process import EmulatorProcess
from airflow_provider_ctxcache.emulator.tokens import text_of_tokens
from airflow_provider_ctxcache.hooks import ContextCacheHook
from airflow_provider_ctxcache.triggers import CacheExpiryTrigger
from tests.hooks.conftest import ConnFactory, backend_extra, make_conn

__all__ = ["make_conn"]  # a fixture, re-exported so pytest finds it here

MODEL = "gemini-2.5-flash"
CONTEXT = text_of_tokens(2100)


@pytest.fixture
def conn_id(emulator: EmulatorProcess, make_conn: ConnFactory) -> str:
    """A Developer-API connection to the emulator; the waiting tests need only one backend."""
    return make_conn("ctxcache_sensor", **backend_extra("gemini_api", emulator))


@pytest.fixture
def hook(conn_id: str) -> ContextCacheHook:
    return ContextCacheHook(conn_id)


def create_cache(hook: ContextCacheHook, ttl: str) -> tuple[str, dt.datetime]:
    """A real cache on the emulator: its name and expire time."""
    cache = hook.create_cache(model=MODEL, contents=[CONTEXT], ttl=ttl)
    assert cache.name
    assert cache.expire_time is not None
    return cache.name, cache.expire_time


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


async def first_event(
    trigger: CacheExpiryTrigger, timeout: float = 15.0
) -> tuple[dict[str, Any], dt.datetime]:
    """Drive ``run()`` as the triggerer does: the first event's payload and the moment it came."""
    events = cast(AsyncGenerator[TriggerEvent, None], trigger.run())  # run() is an async generator
    try:
        event = await asyncio.wait_for(anext(events), timeout)
        fired = utcnow()
    finally:
        await events.aclose()
    payload: dict[str, Any] = event.payload
    return payload, fired


def api_calls(emulator: EmulatorProcess) -> int:
    """Every Gemini API request the emulator has answered since the test's reset."""
    return sum(emulator.admin.state()["counts"].values())
