"""CacheExpirySensor: deferrable and poke mode, with connections from AIRFLOW_CONN_* and no DB."""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib
import json
import socket
from collections.abc import Callable
from typing import Any, cast

import pytest
from airflow.sdk import Context, PokeReturnValue
from airflow.sdk.exceptions import AirflowSkipException, TaskDeferred

from airflow_provider_ctxcache.emulator.process import EmulatorProcess
from airflow_provider_ctxcache.exceptions import CtxCacheConfigError, CtxCacheError, EndpointUnreachableError
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


async def event_after_its_first_read(
    trigger: CacheExpiryTrigger, emulator: EmulatorProcess, change: Callable[[], None]
) -> dict[str, Any]:
    """Runs the trigger, makes ``change`` once its first read of the cache is answered, returns its event."""
    reads_before = await asyncio.to_thread(cache_reads, emulator)

    def unread() -> bool:
        return cache_reads(emulator) == reads_before

    waiting = asyncio.ensure_future(first_event(trigger))
    # The emulator's counts are the state waited on: no asyncio.Event can stand in for them.
    while await asyncio.to_thread(unread) and not waiting.done():  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    await asyncio.to_thread(change)
    payload, _ = await waiting
    return payload


def cache_reads(emulator: EmulatorProcess) -> int:
    return int(emulator.admin.state()["counts"].get("get_cache", 0))


def rebuilt(deferral: TaskDeferred) -> CacheExpiryTrigger:
    """What Airflow does with a deferral: store the trigger's kwargs, rebuild it in the triggerer."""
    path, kwargs = deferral.trigger.serialize()
    module, _, class_name = path.rpartition(".")
    trigger: CacheExpiryTrigger = getattr(importlib.import_module(module), class_name)(**kwargs)
    return trigger


# -- deferrable mode ------------------------------------------------------------------------------


def test_deferrable_execute_reads_the_cache_once_then_defers_to_a_trigger_holding_no_secret(
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
    assert api_calls(emulator) == calls_before + 1  # the one read before deferring
    assert emulator.admin.state()["counts"]["get_cache"] == 1


def test_deferrable_sensor_inside_the_margin_returns_margin_reached_at_once_without_deferring(
    hook: ContextCacheHook, conn_id: str, emulator: EmulatorProcess
) -> None:
    name, expire_time = create_cache(hook, ttl="1h")
    calls_before = api_calls(emulator)
    task = sensor(conn_id, name, deferrable=True, margin="2h")

    result = task.execute(CONTEXT)  # a TaskDeferred raised here fails the test
    left = (expire_time - utcnow()).total_seconds()

    assert result["status"] == "margin_reached"
    assert result["expire_time"] == expire_time.isoformat()
    assert left < result["seconds_left"] <= 3600
    assert api_calls(emulator) == calls_before + 1


def test_deferrable_sensor_for_a_deleted_cache_returns_gone_at_once_without_deferring(
    hook: ContextCacheHook, conn_id: str, emulator: EmulatorProcess
) -> None:
    name, _ = create_cache(hook, ttl="1h")
    hook.delete_cache(name)

    result = sensor(conn_id, name, deferrable=True).execute(CONTEXT)

    assert result == {"cache_name": name, "status": "gone", "expire_time": None, "seconds_left": None}


def test_deferred_sensor_reports_margin_reached_when_the_ttl_is_shortened_into_the_margin(
    hook: ContextCacheHook, conn_id: str
) -> None:
    name, _ = create_cache(hook, ttl="1h")
    task = sensor(conn_id, name, deferrable=True, margin="10m", poll_interval=0.2)
    deferral = deferred(task)
    shortened = hook.update_cache_ttl(name, ttl="5m").expire_time
    assert shortened is not None

    payload, _ = asyncio.run(first_event(rebuilt(deferral)))
    result = task.execute_complete(CONTEXT, payload)

    assert result["status"] == "margin_reached"
    assert result["expire_time"] == shortened.isoformat()
    assert 0 < result["seconds_left"] <= 300


def test_deferred_sensor_reports_expired_once_a_watched_cache_lapses(
    hook: ContextCacheHook, conn_id: str, emulator: EmulatorProcess
) -> None:
    name, _ = create_cache(hook, ttl="1h")
    task = sensor(conn_id, name, deferrable=True, poll_interval=0.2)
    deferral = deferred(task)
    shortened: list[dt.datetime | None] = []

    def shorten() -> None:  # once the trigger has seen the cache alive, so it knows it lapsed
        shortened.append(hook.update_cache_ttl(name, ttl="2s").expire_time)

    payload = asyncio.run(event_after_its_first_read(rebuilt(deferral), emulator, shorten))
    result = task.execute_complete(CONTEXT, payload)
    assert shortened[0] is not None

    assert result == {
        "cache_name": name,
        "status": "expired",
        "expire_time": shortened[0].isoformat(),
        "seconds_left": 0.0,
    }


def test_deferred_sensor_returns_gone_for_a_cache_deleted_while_deferred(
    hook: ContextCacheHook, conn_id: str
) -> None:
    name, _ = create_cache(hook, ttl="1h")
    task = sensor(conn_id, name, deferrable=True)
    deferral = deferred(task)
    hook.delete_cache(name)

    payload, _ = asyncio.run(first_event(rebuilt(deferral)))

    assert task.execute_complete(CONTEXT, payload) == {
        "cache_name": name,
        "status": "gone",
        "expire_time": None,
        "seconds_left": None,
    }


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


def test_poke_is_done_with_margin_reached_and_the_seconds_left_once_within_the_margin(
    hook: ContextCacheHook, conn_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    name, expire_time = create_cache(hook, ttl="1h")
    capsys.readouterr()

    result = sensor(conn_id, name, margin="2h").poke(CONTEXT)
    logged = capsys.readouterr().out

    assert isinstance(result, PokeReturnValue)
    assert result.is_done
    value = result.xcom_value
    assert (value["cache_name"], value["status"], value["expire_time"]) == (
        name,
        "margin_reached",
        expire_time.isoformat(),
    )
    assert 3500 < value["seconds_left"] <= 3600
    assert f"Cache {name}: margin reached: " in logged
    assert f"s left before it expires at {expire_time.isoformat()} (margin 7200s)" in logged
    assert "expired" not in logged


def test_poke_is_done_with_gone_once_the_cache_expired_on_the_server(
    hook: ContextCacheHook, conn_id: str, emulator: EmulatorProcess
) -> None:
    name, _ = create_cache(hook, ttl="60s")
    emulator.admin.advance_clock(61)

    result = sensor(conn_id, name).poke(CONTEXT)

    assert isinstance(result, PokeReturnValue)
    assert result.is_done
    assert result.xcom_value == {
        "cache_name": name,
        "status": "gone",
        "expire_time": None,
        "seconds_left": None,
    }


def test_poke_mode_execute_waits_until_expire_time(hook: ContextCacheHook, conn_id: str) -> None:
    name, expire_time = create_cache(hook, ttl="2s")
    task = sensor(conn_id, name, deferrable=False, poke_interval=0.25, timeout=10)

    result = task.execute(CONTEXT)
    done = utcnow()

    assert result == {
        "cache_name": name,
        "status": "expired",
        "expire_time": expire_time.isoformat(),
        "seconds_left": 0.0,
    }
    assert done >= expire_time  # it waited for the expiry, however busy the machine


@pytest.mark.parametrize("case", ["margin_reached", "gone"])
def test_poke_mode_and_deferrable_mode_give_the_same_answer(
    hook: ContextCacheHook, conn_id: str, case: str
) -> None:
    name, _ = create_cache(hook, ttl="1h")
    if case == "gone":
        hook.delete_cache(name)
    margin = "2h" if case == "margin_reached" else 0

    poked = sensor(conn_id, name, margin=margin, deferrable=False).execute(CONTEXT)
    at_once = sensor(conn_id, name, margin=margin, deferrable=True).execute(CONTEXT)

    assert poked["status"] == at_once["status"] == case
    assert {**poked, "seconds_left": None} == {**at_once, "seconds_left": None}  # read a moment apart


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
    full_name, _ = create_cache(ContextCacheHook(vertex), ttl="1h")
    short_name = "cachedContents/" + full_name.rpartition("/")[2]
    task = sensor(vertex, short_name, deferrable=True)

    trigger = deferred(task).trigger

    assert isinstance(trigger, CacheExpiryTrigger)
    assert trigger.cache_name == full_name
    assert full_name.startswith("projects/test-project/locations/us-central1/cachedContents/")


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


# -- the read before deferring fails -------------------------------------------------------------


@pytest.fixture
def emulator_down(make_conn: ConnFactory) -> str:
    """A connection to a loopback port where nothing listens."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return make_conn("ctxcache_sensor_down", base_url=f"http://127.0.0.1:{port}")


def test_deferrable_sensor_with_the_emulator_down_fails_in_the_worker_naming_the_endpoint(
    emulator_down: str,
) -> None:
    task = sensor(emulator_down, "cachedContents/abc", deferrable=True)

    with pytest.raises(
        EndpointUnreachableError, match=r"^connection 'ctxcache_sensor_down' \(backend gemini_api\)"
    ):
        task.execute(CONTEXT)


def test_soft_fail_skips_a_deferrable_sensor_whose_first_read_fails_as_a_failed_trigger_would(
    emulator_down: str,
) -> None:
    task = sensor(emulator_down, "cachedContents/abc", deferrable=True, soft_fail=True)

    with pytest.raises(AirflowSkipException, match="soft_fail"):
        task.execute(CONTEXT)
