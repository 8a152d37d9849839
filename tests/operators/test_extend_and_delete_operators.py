"""ExtendCacheTTLOperator and DeleteCacheOperator: thin, templated, safe to retry."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from airflow_provider_ctxcache.emulator.process import EmulatorProcess
from airflow_provider_ctxcache.emulator.tokens import text_of_tokens
from airflow_provider_ctxcache.exceptions import CacheNotFoundError, CtxCacheConfigError
from airflow_provider_ctxcache.hooks import ContextCacheHook
from airflow_provider_ctxcache.operators import DeleteCacheOperator, ExtendCacheTTLOperator
from tests.operators.context import task_context


def new_cache(conn_id: str, ttl: str = "60s") -> str:
    cache = ContextCacheHook(conn_id).create_cache(
        model="gemini-2.5-flash", contents=[text_of_tokens(2100)], ttl=ttl
    )
    assert cache.name
    return cache.name


def extend(conn_id: str, cache_name: str, **kwargs: Any) -> dict[str, Any]:
    op = ExtendCacheTTLOperator(task_id="extend", ctxcache_conn_id=conn_id, cache_name=cache_name, **kwargs)
    return op.execute(task_context())


def test_extend_sets_a_new_ttl_from_now(conn_id: str, emulator: EmulatorProcess) -> None:
    name = new_cache(conn_id)
    result = extend(conn_id, name, ttl="2h")
    remaining = dt.datetime.fromisoformat(result["expire_time"]) - dt.datetime.now(dt.timezone.utc)
    assert result["cache_name"] == name
    assert dt.timedelta(minutes=119) < remaining <= dt.timedelta(hours=2)
    (cache,) = emulator.admin.state()["caches"]
    assert dt.datetime.fromisoformat(cache["expireTime"].replace("Z", "+00:00")) == dt.datetime.fromisoformat(
        result["expire_time"]
    )


def test_extend_to_an_absolute_expire_time(conn_id: str) -> None:
    when = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=5)).replace(microsecond=0)
    result = extend(conn_id, new_cache(conn_id), expire_time=when.isoformat())
    assert dt.datetime.fromisoformat(result["expire_time"]) == when


def test_extend_of_an_expired_cache_fails_naming_it(conn_id: str, emulator: EmulatorProcess) -> None:
    name = new_cache(conn_id, ttl="10s")
    emulator.admin.advance_clock(11)
    with pytest.raises(CacheNotFoundError, match=name):
        extend(conn_id, name, ttl="1h")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({}, "ttl, expire_time"),
        ({"ttl": "1h", "expire_time": "2099-01-01T00:00:00+00:00"}, "ttl, expire_time"),
        ({"ttl": "0s"}, "ttl"),
        ({"expire_time": "2099-01-01T00:00:00"}, "expire_time"),
        ({"expire_time": "2000-01-01T00:00:00Z"}, "expire_time"),
    ],
    ids=["neither", "both", "zero", "naive", "past"],
)
def test_extend_refuses_bad_lifetimes_before_calling(
    conn_id: str, emulator: EmulatorProcess, kwargs: dict[str, Any], field: str
) -> None:
    name = new_cache(conn_id)
    with pytest.raises(CtxCacheConfigError) as raised:
        extend(conn_id, name, **kwargs)
    assert str(raised.value).startswith(f"{field}:")
    assert emulator.admin.state()["counts"]["update_cache"] == 0


def test_delete_removes_the_cache(conn_id: str, emulator: EmulatorProcess) -> None:
    name = new_cache(conn_id)
    assert DeleteCacheOperator(task_id="d", ctxcache_conn_id=conn_id, cache_name=name).execute(task_context())
    assert emulator.admin.state()["caches"] == []


def test_delete_of_a_cache_already_gone_succeeds(conn_id: str, emulator: EmulatorProcess) -> None:
    name = new_cache(conn_id, ttl="10s")
    emulator.admin.advance_clock(11)
    assert (
        DeleteCacheOperator(task_id="d", ctxcache_conn_id=conn_id, cache_name=name).execute(task_context())
        is False
    )


@pytest.mark.parametrize(
    ("operator", "extra"),
    [(DeleteCacheOperator, {}), (ExtendCacheTTLOperator, {"ttl": "1h"})],
    ids=["delete", "extend"],
)
def test_malformed_cache_name_is_refused_before_calling(
    conn_id: str, emulator: EmulatorProcess, operator: type[Any], extra: dict[str, Any]
) -> None:
    op = operator(task_id="t", ctxcache_conn_id=conn_id, cache_name="models/gemini-2.5-flash", **extra)
    with pytest.raises(
        CtxCacheConfigError, match=r"^cache_name: 'models/gemini-2.5-flash' is not a cache name"
    ):
        op.execute(task_context())
    assert sum(emulator.admin.state()["counts"].values()) == 0


def test_every_operator_templates_its_arguments() -> None:
    from airflow_provider_ctxcache.operators import CreateCacheOperator

    assert {"model", "contents", "ttl", "expire_time", "display_name", "reuse"} <= set(
        CreateCacheOperator.template_fields
    )
    assert set(ExtendCacheTTLOperator.template_fields) == {"cache_name", "ttl", "expire_time"}
    assert set(DeleteCacheOperator.template_fields) == {"cache_name"}
