"""Argument rules shared by the hook and the operators: each failure names the field and the fix.

Cache names are a backend rule: tests/hooks/test_backend.py.
"""

from __future__ import annotations

import datetime as dt

import pytest

from airflow_provider_ctxcache.exceptions import CtxCacheConfigError
from airflow_provider_ctxcache.validation import api_duration, one_expiry, parse_expire_time, parse_ttl

UTC = dt.timezone.utc


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("3600s", 3600),
        ("90m", 5400),
        ("2h", 7200),
        ("1d", 86400),
        ("1.5h", 5400),
        (" 45 min ", 2700),
        (600, 600),
        (0.5, 0.5),
        (dt.timedelta(minutes=5), 300),
        ("120", 120),
    ],
)
def test_ttl_accepts_the_forms_users_write(value: object, seconds: float) -> None:
    assert parse_ttl(value).total_seconds() == seconds


@pytest.mark.parametrize(
    "value", ["0s", 0, -5, "-1h", dt.timedelta(0), "soon", "1 fortnight", None, True, [60]]
)
def test_ttl_rejects_what_is_not_a_positive_duration(value: object) -> None:
    with pytest.raises(CtxCacheConfigError, match=r"^ttl: .*use '3600s'"):
        parse_ttl(value)


def test_api_duration_is_whole_seconds_when_it_can_be() -> None:
    assert api_duration(dt.timedelta(hours=1)) == "3600s"
    assert api_duration(dt.timedelta(seconds=1.25)) == "1.250s"


def test_expire_time_must_carry_a_timezone() -> None:
    with pytest.raises(CtxCacheConfigError, match=r"^expire_time: .* has no timezone"):
        parse_expire_time(dt.datetime(2099, 1, 1))
    with pytest.raises(CtxCacheConfigError, match=r"^expire_time: .* has no timezone"):
        parse_expire_time("2099-01-01T00:00:00")


def test_expire_time_must_be_in_the_future() -> None:
    with pytest.raises(CtxCacheConfigError, match=r"^expire_time: .* is not in the future"):
        parse_expire_time(dt.datetime(2000, 1, 1, tzinfo=UTC))


def test_expire_time_accepts_iso_strings_with_z() -> None:
    assert parse_expire_time("2099-01-02T03:04:05Z") == dt.datetime(2099, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_expire_time_rejects_garbage_and_other_types() -> None:
    with pytest.raises(CtxCacheConfigError, match=r"^expire_time: 'tomorrow' is not an ISO 8601"):
        parse_expire_time("tomorrow")
    with pytest.raises(CtxCacheConfigError, match=r"^expire_time: a int is not a timestamp"):
        parse_expire_time(12)


def test_ttl_and_expire_time_together_are_refused() -> None:
    with pytest.raises(CtxCacheConfigError, match=r"^ttl, expire_time: set one of them, not both"):
        one_expiry("1h", "2099-01-01T00:00:00Z")
