"""CacheExpirySensor: deferrable and poke mode, with connections from AIRFLOW_CONN_* and no DB."""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib
import json
from typing import Any, cast

import pytest
from airflow.sdk import Context, PokeReturnValue
from airflow.sdk.exceptions import TaskDeferred

from airflow_provider_ctxcache.emulator.process import EmulatorProcess
from airflow_provider_ctxcache.exceptions import CtxCacheConfigError, CtxCacheError
from airflow_provider_ctxcache.hooks import ContextCacheHook
from airflow_provider_ctxcache.sensors import CacheExpirySensor
from airflow_provider_ctxcache.sensors.cache_expiry import parse_margin
from airflow_provider_ctxcache.triggers import CacheExpiryTrigger
from tests.hooks.conftest import API_KEY, ConnFactory, backend_extra
from tests.operators.context import task_context
from tests.sensors.conftest import api_calls, create_cache, first_event, utcnow

CONTEXT = cast(Context, task_context())


def sensor(conn_id: str, cache_name: str, **kwargs: Any) -> CacheExpirySensor:
    return CacheExpirySensor(
        task_id="wait_for_expiry", cache_name=cache_name, ctxcache_conn_id=conn_id, **kwargs
    )


def deferred(task: CacheExpirySensor) -> TaskDeferred:
    with pytest.raises(TaskDeferred) as caught:
        task.execute(CONTEXT)
    return caught.value


def resume_through_the_trigger(task: CacheExpirySensor) -> dict[str, Any]:
    """What Airflow does: defer, store the trigger's kwargs, rebuild it in the triggerer, resume."""
    deferral = deferred(task)
    path, kwargs = deferral.trigger.serialize()
    module, _, class_name = path.rpartition(".")
    trigger = getattr(importlib.import_module(module), class_name)(**kwargs)
    payload, _ = asyncio.run(first_event(trigger))
    result: dict[str, Any] = getattr(task, deferral.method_name)(CONTEXT, payload)
    return result


# -- deferrable mode ------------------------------------------------------------------------------


def test_deferrable_execute_defers_at_once_to_a_trigger_holding_no_secret(
    hook: ContextCacheHook, conn_id: str, emulator: EmulatorProcess
) -> None:
    name, _ = create_cache(hook, ttl="1h")
    calls_before = api_calls(emulator)
    task = sensor(conn_id, name, deferrable=True, margin="5m", poll_interval=7, timeout=600)

    deferral = deferred(task)

    assert isinstance(deferral.trigger, CacheExpiryTrigger)
    assert deferral.method_name == "execute_complete"
    assert deferral.timeout == dt.timedelta(seconds=600)
    _, kwargs = deferral.trigger.serialize()
    assert kwargs == {
        "cache_name": name,
        "ctxcache_conn_id": conn_id,
        "margin_seconds": 300.0,
        "poll_interval": 7.0,
    }
    assert API_KEY not in json.dumps(kwargs)
    assert api_calls(emulator) == calls_before  # deferred without reading the cache in the worker


def test_deferred_sensor_returns_expired_with_the_expire_time(hook: ContextCacheHook, conn_id: str) -> None:
    name, expire_time = create_cache(hook, ttl="1h")
    task = sensor(conn_id, name, deferrable=True, margin="2h")

    assert resume_through_the_trigger(task) == {
        "cache_name": name,
        "status": "expired",
        "expire_time": expire_time.isoformat(),
    }


def test_deferred_sensor_returns_gone_for_a_deleted_cache(hook: ContextCacheHook, conn_id: str) -> None:
    name, _ = create_cache(hook, ttl="1h")
    hook.delete_cache(name)
    task = sensor(conn_id, name, deferrable=True)

    assert resume_through_the_trigger(task) == {"cache_name": name, "status": "gone", "expire_time": None}


def test_execute_complete_raises_on_an_error_event(conn_id: str) -> None:
    task = sensor(conn_id, "cachedContents/abc", deferrable=True)
    event = {
        "status": "error",
        "cache_name": "cachedContents/abc",
        "message": "CtxCacheApiError: 503 UNAVAILABLE",
    }

    with pytest.raises(CtxCacheError, match=r"could not watch cache 'cachedContents/abc': .*503 UNAVAILABLE"):
        task.execute_complete(CONTEXT, event)


# -- poke mode ------------------------------------------------------------------------------------


def test_poke_is_false_before_the_expiry_mark(hook: ContextCacheHook, conn_id: str) -> None:
    name, _ = create_cache(hook, ttl="1h")

    assert sensor(conn_id, name, margin="5m").poke(CONTEXT) is False


def test_poke_is_done_with_expired_once_within_the_margin(hook: ContextCacheHook, conn_id: str) -> None:
    name, expire_time = create_cache(hook, ttl="1h")

    result = sensor(conn_id, name, margin="2h").poke(CONTEXT)

    assert isinstance(result, PokeReturnValue)
    assert result.is_done
    assert result.xcom_value == {
        "cache_name": name,
        "status": "expired",
        "expire_time": expire_time.isoformat(),
    }


def test_poke_is_done_with_gone_once_the_cache_expired_on_the_server(
    hook: ContextCacheHook, conn_id: str, emulator: EmulatorProcess
) -> None:
    name, _ = create_cache(hook, ttl="60s")
    emulator.admin.advance_clock(61)

    result = sensor(conn_id, name).poke(CONTEXT)

    assert isinstance(result, PokeReturnValue)
    assert result.is_done
    assert result.xcom_value == {"cache_name": name, "status": "gone", "expire_time": None}


def test_poke_mode_execute_waits_until_expire_time(hook: ContextCacheHook, conn_id: str) -> None:
    name, expire_time = create_cache(hook, ttl="2s")
    task = sensor(conn_id, name, deferrable=False, poke_interval=0.25, timeout=10)

    result = task.execute(CONTEXT)
    done = utcnow()

    assert result == {"cache_name": name, "status": "expired", "expire_time": expire_time.isoformat()}
    assert done >= expire_time  # it waited for the expiry, however busy the machine


@pytest.mark.parametrize("case", ["expired", "gone"])
def test_poke_mode_and_deferrable_mode_give_the_same_answer(
    hook: ContextCacheHook, conn_id: str, case: str
) -> None:
    name, _ = create_cache(hook, ttl="1h")
    if case == "gone":
        hook.delete_cache(name)
    margin = "2h" if case == "expired" else 0

    poked = sensor(conn_id, name, margin=margin, deferrable=False, poke_interval=0.1, timeout=5).execute(
        CONTEXT
    )
    resumed = resume_through_the_trigger(sensor(conn_id, name, margin=margin, deferrable=True))

    assert poked == resumed
    assert poked["status"] == case


# -- input checks before any call -----------------------------------------------------------------


@pytest.mark.parametrize("deferrable", [True, False], ids=["deferrable", "poke"])
@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"cache_name": "not a cache name!"}, "cache_name"),
        ({"cache_name": ""}, "cache_name"),
        ({"margin": -5}, "margin"),
        ({"margin": "-5m"}, "margin"),
        ({"margin": "soon"}, "margin"),
    ],
)
def test_bad_input_fails_naming_the_field_before_any_call(
    conn_id: str, emulator: EmulatorProcess, deferrable: bool, arguments: dict[str, Any], field: str
) -> None:
    arguments = {"cache_name": "cachedContents/abc", **arguments}
    task = CacheExpirySensor(
        task_id="wait_for_expiry", ctxcache_conn_id=conn_id, deferrable=deferrable, timeout=1, **arguments
    )

    with pytest.raises(CtxCacheConfigError, match=f"^{field}:"):
        task.execute(CONTEXT)
    assert api_calls(emulator) == 0


def test_cache_name_is_checked_for_the_connections_backend(
    emulator: EmulatorProcess, make_conn: ConnFactory
) -> None:
    developer = make_conn("ctxcache_sensor_developer", **backend_extra("gemini_api", emulator))
    task = sensor(developer, "projects/p/locations/us-central1/cachedContents/abc", deferrable=True)

    with pytest.raises(CtxCacheConfigError, match=r"^cache_name: .*gemini_api backend"):
        task.execute(CONTEXT)
    assert api_calls(emulator) == 0


def test_a_short_name_on_vertex_is_watched_under_its_full_name(
    emulator: EmulatorProcess, make_conn: ConnFactory
) -> None:
    vertex = make_conn("ctxcache_sensor_vertex", **backend_extra("vertex_ai", emulator))
    task = sensor(vertex, "cachedContents/abc", deferrable=True)

    with pytest.raises(TaskDeferred) as deferred:
        task.execute(CONTEXT)
    trigger = deferred.value.trigger
    assert isinstance(trigger, CacheExpiryTrigger)
    assert trigger.cache_name == "projects/test-project/locations/us-central1/cachedContents/abc"
    assert api_calls(emulator) == 0


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (0, 0.0),
        ("0", 0.0),
        ("0s", 0.0),
        (None, 0.0),
        (90, 90.0),
        ("10m", 600.0),
        ("2h", 7200.0),
        (dt.timedelta(minutes=1), 60.0),
    ],
)
def test_margin_takes_every_ttl_form_and_zero(value: Any, seconds: float) -> None:
    assert parse_margin(value) == seconds


def test_cache_name_and_margin_are_templated(hook: ContextCacheHook, conn_id: str) -> None:
    name, _ = create_cache(hook, ttl="1h")
    task = sensor(conn_id, "{{ params.cache }}", margin="{{ params.margin }}", deferrable=True)

    task.render_template_fields(cast(Context, {"params": {"cache": name, "margin": "15m"}}))

    _, kwargs = deferred(task).trigger.serialize()
    assert (kwargs["cache_name"], kwargs["margin_seconds"]) == (name, 900.0)


def test_poke_mode_keeps_no_worker_waiting_past_its_timeout(hook: ContextCacheHook, conn_id: str) -> None:
    """The normal sensor arguments still apply: a cache far from expiry times the poke loop out."""
    from airflow.sdk.exceptions import AirflowSensorTimeout

    name, _ = create_cache(hook, ttl="1h")
    task = sensor(conn_id, name, deferrable=False, poke_interval=0.1, timeout=0.3)

    with pytest.raises(AirflowSensorTimeout):
        task.execute(CONTEXT)
