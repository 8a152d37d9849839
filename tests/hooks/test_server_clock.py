"""When a cache ended: the worker's clock while the server's ``Date`` agrees with it, else the server's.

The helpers first, on headers written out by hand; then ``ContextCacheHook.remove_cache`` on both
backends against the emulator, whose clock tests move ahead of the worker's.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest

from airflow_provider_ctxcache.emulator.process import EmulatorProcess
from airflow_provider_ctxcache.emulator.tokens import text_of_tokens
from airflow_provider_ctxcache.hooks import CacheRemoval, ContextCacheHook
from airflow_provider_ctxcache.hooks.server_clock import server_date, server_now

UTC = dt.timezone.utc
MODEL = "gemini-2.5-flash"
# The second a Date header names, and that header as a server sends it.
DATE = dt.datetime(2026, 3, 10, 14, 30, 5, tzinfo=UTC)
DATE_HEADER = "Tue, 10 Mar 2026 14:30:05 GMT"
_RFC3339 = re.compile(r"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?Z$")


def at(seconds: float) -> dt.datetime:
    """``seconds`` after the start of the second DATE names."""
    return DATE + dt.timedelta(seconds=seconds)


def rfc3339(stamp: str) -> dt.datetime:
    """An emulator event time (UTC, up to nanoseconds) as a datetime, to the microsecond."""
    match = _RFC3339.match(stamp)
    assert match, stamp
    *whole, fraction = match.groups()
    micros = int((fraction or "0").ljust(9, "0")[:6])
    year, month, day, hour, minute, second = (int(x) for x in whole)
    return dt.datetime(year, month, day, hour, minute, second, micros, tzinfo=UTC)


def deletion_time(emulator: EmulatorProcess, name: str) -> dt.datetime:
    (event,) = [e for e in emulator.admin.usage() if e["type"] == "cache_deleted" and e["cache"] == name]
    return rfc3339(event["time"])


def create(hook: ContextCacheHook, ttl: str = "1h") -> str:
    cache = hook.create_cache(model=MODEL, contents=[text_of_tokens(2100)], ttl=ttl)
    assert cache.name
    return cache.name


# ---------------------------------------------------------------------------- server_date


def test_server_date_reads_the_date_header_as_utc() -> None:
    assert server_date({"Date": DATE_HEADER}) == DATE
    assert server_date({"Date": DATE_HEADER}).tzinfo == UTC  # type: ignore[union-attr]


def test_server_date_converts_an_offset_date_to_utc() -> None:
    assert server_date({"Date": "Tue, 10 Mar 2026 16:30:05 +0200"}) == DATE


@pytest.mark.parametrize("name", ["date", "DATE", "dAtE"])
def test_server_date_matches_the_header_name_case_insensitively(name: str) -> None:
    assert server_date({name: DATE_HEADER}) == DATE


@pytest.mark.parametrize(
    "headers",
    [None, {}, {"Content-Type": "application/json"}],
    ids=["no headers", "empty", "no date"],
)
def test_server_date_is_none_without_a_date_header(headers: dict[str, Any] | None) -> None:
    assert server_date(headers) is None


@pytest.mark.parametrize("value", ["yesterday", "", "Tue, 99 Foo 2026 25:61:00 GMT"])
def test_server_date_is_none_for_an_unreadable_date(value: str) -> None:
    assert server_date({"Date": value}) is None


@pytest.mark.parametrize("value", [DATE_HEADER.encode(), 1773153005, None, [DATE_HEADER]])
def test_server_date_is_none_for_a_date_that_is_not_a_string(value: object) -> None:
    assert server_date({"Date": value}) is None


# ---------------------------------------------------------------------------- server_now


@pytest.mark.parametrize("offset", [0.0, 0.5, 0.999, -1.0, 2.0])
def test_server_now_keeps_the_local_time_when_the_date_agrees(offset: float) -> None:
    # Agreeing: within the second the header names, widened by 1.5 s each side of its middle.
    local = at(offset)

    assert server_now({"Date": DATE_HEADER}, local) is local


@pytest.mark.parametrize("offset", [-1.001, 2.001, 1800.0, -1800.0])
def test_server_now_takes_the_middle_of_the_date_second_when_it_disagrees(offset: float) -> None:
    assert server_now({"Date": DATE_HEADER}, at(offset)) == at(0.5)


def test_server_now_follows_a_server_half_an_hour_ahead() -> None:
    local = dt.datetime(2026, 3, 10, 14, 0, 5, 250_000, tzinfo=UTC)

    assert server_now({"date": DATE_HEADER}, local) == at(0.5)


@pytest.mark.parametrize(
    "headers",
    [None, {}, {"Date": "not a date"}, {"Date": 1773153005}, {"Date": DATE_HEADER.encode()}],
    ids=["no headers", "no date", "unparseable", "a number", "bytes"],
)
def test_server_now_keeps_the_local_time_without_a_usable_date(headers: dict[str, Any] | None) -> None:
    local = at(3600)

    assert server_now(headers, local) is local


# ---------------------------------------------------------------------------- remove_cache


def test_remove_cache_deletes_and_returns_the_cache_as_read_before(
    hook: ContextCacheHook, emulator: EmulatorProcess
) -> None:
    name = create(hook)
    before = hook.get_cache(name)

    removal = hook.remove_cache(name)

    assert isinstance(removal, CacheRemoval)
    assert removal.deleted is True
    assert removal.cache == before
    assert removal.ended_at is not None
    assert emulator.admin.state()["caches"] == []


def test_remove_cache_ends_on_the_server_clock_when_it_is_ahead_of_the_worker(
    hook: ContextCacheHook, emulator: EmulatorProcess
) -> None:
    name = create(hook, ttl="2h")  # still live an hour on
    emulator.admin.advance_clock(3600)

    started = dt.datetime.now(UTC)
    removal = hook.remove_cache(name)
    call = dt.datetime.now(UTC) - started

    assert removal.ended_at is not None
    assert removal.ended_at.tzinfo is not None
    # The server's Date header has whole seconds; the deletion happened during the call.
    assert abs(removal.ended_at - deletion_time(emulator, name)) <= call + dt.timedelta(seconds=1)
    assert removal.ended_at - dt.datetime.now(UTC) > dt.timedelta(minutes=59)


def test_remove_cache_ends_on_the_worker_clock_when_the_server_agrees(
    hook: ContextCacheHook, emulator: EmulatorProcess
) -> None:
    name = create(hook)

    started = dt.datetime.now(UTC)
    removal = hook.remove_cache(name)
    finished = dt.datetime.now(UTC)

    assert removal.ended_at is not None
    assert started <= removal.ended_at <= finished
    # The deletion happened during the call, however slow a busy machine made it.
    assert abs(removal.ended_at - deletion_time(emulator, name)) <= finished - started


def test_remove_cache_of_a_cache_already_gone_deletes_nothing(
    hook: ContextCacheHook, emulator: EmulatorProcess
) -> None:
    name = create(hook)
    assert hook.remove_cache(name).deleted
    counts = emulator.admin.state()["counts"]

    removal = hook.remove_cache(name)

    assert removal == CacheRemoval(deleted=False, cache=None, ended_at=None)
    after = emulator.admin.state()["counts"]
    assert after["delete_cache"] == counts["delete_cache"] == 1
    assert after["get_cache"] == counts["get_cache"] + 1
