"""The server's time: every API answer's ``Date`` on the emulator clock, and the ``clock_skip_s`` fault."""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime

import httpx
import pytest

from airflow_provider_ctxcache.emulator.process import EmulatorProcess

from .conftest import LOCATION, PROJECT, Backend

UTC = dt.timezone.utc
_RFC3339 = re.compile(r"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?Z$")


def epoch_of(stamp: str) -> float:
    """An emulator timestamp (RFC 3339 UTC, up to nanoseconds) as seconds since the epoch."""
    match = _RFC3339.match(stamp)
    assert match, stamp
    *whole, fraction = match.groups()
    year, month, day, hour, minute, second = (int(x) for x in whole)
    base = dt.datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()
    return base + int((fraction or "0").ljust(9, "0")) / 1e9


def date_of(headers: httpx.Headers | dict[str, str] | None) -> float:
    """The one ``Date`` header, as seconds since the epoch."""
    assert headers is not None
    if isinstance(headers, httpx.Headers):
        (value,) = headers.get_list("date")
    else:
        (value,) = [v for k, v in headers.items() if k.lower() == "date"]
    return parsedate_to_datetime(value).timestamp()


def caches_url(emulator: EmulatorProcess, backend: Backend) -> str:
    if backend.is_vertex:
        return f"{emulator.url}/v1beta1/projects/{PROJECT}/locations/{LOCATION}/cachedContents"
    return f"{emulator.url}/v1beta/cachedContents"


def life_of(emulator: EmulatorProcess, name: str) -> float:
    """Seconds from a cache's creation to its end, on the emulator's clock."""
    summary = emulator.admin.usage_summary()["caches"][name]
    return epoch_of(summary["ended"]) - epoch_of(summary["created"])


# ---------------------------------------------------------------------------- the Date header


def test_an_api_answer_carries_exactly_one_date_header(
    backend: Backend, emulator: EmulatorProcess, raw_headers: Callable[[str], dict[str, str]]
) -> None:
    response = httpx.get(caches_url(emulator, backend), headers=raw_headers(backend.name))

    assert response.status_code == 200
    assert len(response.headers.get_list("date")) == 1


def test_an_error_answer_carries_exactly_one_date_header(
    backend: Backend, emulator: EmulatorProcess, raw_headers: Callable[[str], dict[str, str]]
) -> None:
    url = f"{caches_url(emulator, backend)}/doesnotexist"
    response = httpx.get(url, headers=raw_headers(backend.name))

    assert response.status_code == backend.missing_code
    assert len(response.headers.get_list("date")) == 1


def test_the_date_is_real_time_by_default(
    backend: Backend, emulator: EmulatorProcess, raw_headers: Callable[[str], dict[str, str]]
) -> None:
    response = httpx.get(caches_url(emulator, backend), headers=raw_headers(backend.name))

    assert abs(date_of(response.headers) - time.time()) <= 2


def test_the_date_follows_the_emulator_clock_when_it_is_moved_on(
    backend: Backend, emulator: EmulatorProcess, raw_headers: Callable[[str], dict[str, str]]
) -> None:
    emulator.admin.advance_clock(7200)

    response = httpx.get(caches_url(emulator, backend), headers=raw_headers(backend.name))

    assert abs(date_of(response.headers) - time.time() - 7200) <= 2


def test_the_sdk_sees_the_date_of_a_delete(backend: Backend, emulator: EmulatorProcess) -> None:
    name = str(backend.create_cache().name)
    emulator.admin.advance_clock(600)

    answer = backend.client.caches.delete(name=name)

    assert answer.sdk_http_response is not None
    assert abs(date_of(answer.sdk_http_response.headers) - time.time() - 600) <= 2


# ---------------------------------------------------------------------------- clock_skip_s


def test_clock_skip_before_a_delete_lengthens_the_cache_life_by_that_much(
    backend: Backend, emulator: EmulatorProcess
) -> None:
    emulator.admin.faults(clock_skip_s=1800, ops=["delete_cache"])
    name = str(backend.create_cache(ttl="7200s").name)

    backend.client.caches.delete(name=name)

    assert 1800 <= life_of(emulator, name) < 1800 + 60
    assert emulator.admin.usage_summary()["caches"][name]["ended_by"] == "deleted"


def test_clock_skip_leaves_the_clock_alone_on_other_ops(backend: Backend, emulator: EmulatorProcess) -> None:
    emulator.admin.faults(clock_skip_s=1800, ops=["delete_cache"])
    name = str(backend.create_cache(ttl="7200s").name)

    got = backend.client.caches.get(name=name)
    backend.client.caches.get(name=name)
    now = epoch_of(emulator.admin.state()["now"])
    backend.client.caches.delete(name=name)

    assert got.name == name
    assert abs(now - time.time()) <= 2
    assert life_of(emulator, name) < 1800 + 60  # neither get added its 30 minutes


def test_clock_skip_moves_the_clock_before_every_request_of_the_op(
    backend: Backend, emulator: EmulatorProcess, raw_headers: Callable[[str], dict[str, str]]
) -> None:
    emulator.admin.faults(clock_skip_s=1800, ops=["delete_cache"])
    url = f"{caches_url(emulator, backend)}/doesnotexist"

    first = httpx.delete(url, headers=raw_headers(backend.name))
    second = httpx.delete(url, headers=raw_headers(backend.name))

    assert abs(date_of(first.headers) - time.time() - 1800) <= 2
    assert abs(date_of(second.headers) - time.time() - 3600) <= 2


def test_a_negative_clock_skip_is_refused_naming_it(emulator: EmulatorProcess) -> None:
    emulator.admin.faults(clock_skip_s=60)

    with pytest.raises(httpx.HTTPStatusError) as caught:
        emulator.admin.faults(clock_skip_s=-1)

    assert caught.value.response.status_code == 400
    error = caught.value.response.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT"
    assert "clock_skip_s" in error["message"]
    assert emulator.admin.state()["faults"]["clock_skip_s"] == 60
