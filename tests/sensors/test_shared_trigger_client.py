"""Triggers of one connection share one connection lookup and one client per event loop.

Counted by real outcomes where there is one: the emulator's OAuth token grants (each Vertex
client built from a service-account key asks for its own token), the TCP sockets this process
holds to the emulator, and whether a rotated key's calls pass. The registry's own counters
(``hooks.shared.STATS``) count lookups and clients built and closed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from airflow_provider_ctxcache.connection_defaults import SHARED_CLIENT_MAX_CALLS
from airflow_provider_ctxcache.emulator.process import EmulatorProcess
from airflow_provider_ctxcache.exceptions import CtxCacheConfigError
from airflow_provider_ctxcache.hooks import ContextCacheHook, SharedHook
from airflow_provider_ctxcache.hooks.shared import STATS, SharedStats, max_calls, refresh_seconds
from airflow_provider_ctxcache.triggers import CacheExpiryTrigger
from tests.hooks.conftest import API_KEY, ConnFactory, backend_extra
from tests.hooks.test_credentials import service_account_info
from tests.sensors.conftest import create_cache, first_event

GONE = {"status": "gone", "expire_time": None, "seconds_left": None}


def stats_since(before: SharedStats) -> dict[str, int]:
    now, then = dataclasses.asdict(STATS), dataclasses.asdict(before)
    return {key: now[key] - then[key] for key in now}


def snapshot() -> SharedStats:
    return dataclasses.replace(STATS)


def sockets_to(port: int) -> int:
    """TCP sockets of this process connected to ``port`` on loopback (from /proc)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        with open(table, encoding="ascii") as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                remote_port = int(fields[2].rsplit(":", 1)[1], 16)
                if remote_port == port and fields[3] == "01" and fields[9] in inodes:  # ESTABLISHED
                    count += 1
    return count


async def until(condition: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:
    """Waits for a state, checking it between short yields of the loop."""
    async with asyncio.timeout(timeout):
        while not await condition():  # noqa: ASYNC110 (another process's state)
            await asyncio.sleep(0.05)


def gets(emulator: EmulatorProcess, status: str = "200") -> int:
    return int(emulator.admin.state()["status_counts"]["get_cache"].get(status, 0))


async def gets_async(emulator: EmulatorProcess, status: str = "200") -> int:
    return await asyncio.to_thread(gets, emulator, status)


def port_of(emulator: EmulatorProcess) -> int:
    return int(emulator.url.rsplit(":", 1)[1].split("/")[0])


@pytest.fixture
def vertex_conn(emulator: EmulatorProcess, make_conn: ConnFactory) -> str:
    """Vertex with a service-account key: every client built asks the emulator for a token."""
    extra = {**backend_extra("vertex_ai", emulator), "service_account_json": service_account_info(emulator)}
    return make_conn("ctxcache_shared_vertex", password=None, **extra)


def test_many_triggers_of_one_connection_in_one_loop_make_one_lookup_one_client_and_one_token(
    vertex_conn: str, emulator: EmulatorProcess
) -> None:
    triggers_n = 40
    name, _ = create_cache(ContextCacheHook(vertex_conn), ttl="1h")
    tokens_before = emulator.admin.state()["tokens_issued"]
    baseline = sockets_to(port_of(emulator))  # the admin client's and the sync hook's
    before = snapshot()

    async def scenario() -> tuple[list[dict[str, Any]], int]:
        triggers = [
            CacheExpiryTrigger(cache_name=name, ctxcache_conn_id=vertex_conn, poll_interval=0.2)
            for _ in range(triggers_n)
        ]
        runs = [asyncio.create_task(first_event(t)) for t in triggers]
        start = await gets_async(emulator)

        async def each_read_twice() -> bool:
            return await gets_async(emulator) >= start + 2 * triggers_n

        await until(each_read_twice)
        held = sockets_to(port_of(emulator))
        await asyncio.to_thread(ContextCacheHook(vertex_conn).delete_cache, name)
        return [payload for payload, _ in await asyncio.gather(*runs)], held

    payloads, held = asyncio.run(scenario())

    assert payloads == [{**GONE, "cache_name": name}] * triggers_n
    assert stats_since(before) == {"lookups": 1, "clients_built": 1, "clients_closed": 1}
    # One client, one token: the sync hook above deleted with a token of its own.
    assert emulator.admin.state()["tokens_issued"] - tokens_before == 2
    # At most the bound on calls in flight per shared client, whatever the number of triggers.
    assert held - baseline <= SHARED_CLIENT_MAX_CALLS, f"{triggers_n} triggers held {held - baseline} sockets"


def test_the_last_trigger_to_finish_closes_the_shared_client(conn_id: str, emulator: EmulatorProcess) -> None:
    hook = ContextCacheHook(conn_id)
    first, _ = create_cache(hook, ttl="1h")
    second, _ = create_cache(hook, ttl="1h")
    port = port_of(emulator)
    hook.close()
    emulator.admin.state()
    baseline = sockets_to(port)  # the admin client's
    before = snapshot()

    async def scenario() -> None:
        early = asyncio.create_task(
            first_event(CacheExpiryTrigger(cache_name=first, ctxcache_conn_id=conn_id, poll_interval=0.1))
        )
        late = asyncio.create_task(
            first_event(CacheExpiryTrigger(cache_name=second, ctxcache_conn_id=conn_id, poll_interval=0.1))
        )
        await until(lambda: _true_after(gets_async(emulator), 2))
        await asyncio.to_thread(hook.delete_cache, first)
        assert (await early)[0] == {**GONE, "cache_name": first}
        assert stats_since(before)["clients_closed"] == 0  # the other trigger still uses it
        reads = await gets_async(emulator)
        await until(lambda: _true_after(gets_async(emulator), reads + 2))  # and still reads with it
        assert sockets_to(port) > baseline
        await asyncio.to_thread(hook.delete_cache, second)
        assert (await late)[0] == {**GONE, "cache_name": second}
        assert stats_since(before) == {"lookups": 1, "clients_built": 1, "clients_closed": 1}
        hook.close()  # the sync hook's own connection, so only the triggers' could remain
        assert sockets_to(port) == baseline

    asyncio.run(scenario())


async def _true_after(count: Awaitable[int], at_least: int) -> bool:
    return await count >= at_least


def test_a_trigger_in_a_new_event_loop_gets_a_new_client(conn_id: str, emulator: EmulatorProcess) -> None:
    name, _ = create_cache(ContextCacheHook(conn_id), ttl="1h")
    before = snapshot()

    async def leave_a_lease_open() -> ContextCacheHook:
        lease = SharedHook(conn_id)  # never closed: its loop ends with the client still leased
        hook = await lease.hook()
        await hook.aget_cache(name)
        return hook

    old = asyncio.run(leave_a_lease_open())

    async def in_a_new_loop() -> tuple[dict[str, Any], ContextCacheHook]:
        lease = SharedHook(conn_id)
        async with lease:
            hook = await lease.hook()
            trigger = CacheExpiryTrigger(cache_name=name, ctxcache_conn_id=conn_id, margin_seconds=7200)
            payload, _ = await first_event(trigger)
        return payload, hook

    payload, new = asyncio.run(in_a_new_loop())

    assert payload["status"] == "margin_reached"
    assert new is not old
    assert stats_since(before)["lookups"] == 2
    assert stats_since(before)["clients_built"] == 2
    assert gets(emulator, "200") == 2  # both loops' reads went through, each on its own client


def test_two_connections_get_two_clients(
    emulator: EmulatorProcess, make_conn: ConnFactory, conn_id: str
) -> None:
    other = make_conn("ctxcache_sensor_other", **backend_extra("gemini_api", emulator))
    name, _ = create_cache(ContextCacheHook(conn_id), ttl="1h")
    before = snapshot()

    async def scenario() -> list[tuple[dict[str, Any], Any]]:
        triggers = [
            CacheExpiryTrigger(cache_name=name, ctxcache_conn_id=c, margin_seconds=7200)
            for c in (conn_id, other, conn_id, other)
        ]
        return list(await asyncio.gather(*(first_event(t) for t in triggers)))

    results = asyncio.run(scenario())

    assert [payload["status"] for payload, _ in results] == ["margin_reached"] * 4
    assert stats_since(before) == {"lookups": 2, "clients_built": 2, "clients_closed": 2}


def test_a_rotated_key_is_picked_up_after_the_old_one_is_refused(
    conn_id: str, emulator: EmulatorProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    old_key, new_key = API_KEY, "rotated-key-9876543210"
    emulator.admin.set_api_key(old_key)
    name, _ = create_cache(ContextCacheHook(conn_id), ttl="1h")
    before = snapshot()

    async def scenario() -> list[dict[str, Any]]:
        runs = [
            asyncio.create_task(
                first_event(CacheExpiryTrigger(cache_name=name, ctxcache_conn_id=conn_id, poll_interval=0.1))
            )
            for _ in range(5)
        ]
        await until(lambda: _true_after(gets_async(emulator), 5))
        # The key is rotated: the server refuses the old one, the connection now holds the new one.
        conn = json.loads(os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"])
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({**conn, "password": new_key}))
        await asyncio.to_thread(emulator.admin.set_api_key, new_key)
        refused = await gets_async(emulator, "400")
        reads = await gets_async(emulator)
        await until(lambda: _true_after(gets_async(emulator), reads + 10))  # reading again, new key
        assert await gets_async(emulator, "400") <= refused + 5  # at most each trigger's one refused read
        await asyncio.to_thread(ContextCacheHook(conn_id).delete_cache, name)
        return [payload for payload, _ in await asyncio.gather(*runs)]

    payloads = asyncio.run(scenario())

    assert payloads == [{**GONE, "cache_name": name}] * 5
    # The first lookup, then one more for the refusals (shared): two clients, both closed.
    assert stats_since(before) == {"lookups": 2, "clients_built": 2, "clients_closed": 2}
    assert new_key not in json.dumps(payloads)


def test_the_connection_is_read_again_when_its_reading_is_older_than_the_refresh_interval(
    conn_id: str, emulator: EmulatorProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW__CTXCACHE__CONNECTION_REFRESH_SECONDS", "0")
    name, _ = create_cache(ContextCacheHook(conn_id), ttl="1h")
    before = snapshot()
    trigger = CacheExpiryTrigger(cache_name=name, ctxcache_conn_id=conn_id, poll_interval=0.05)

    async def scenario() -> dict[str, Any]:
        run = asyncio.create_task(first_event(trigger))
        await until(lambda: _true_after(gets_async(emulator), 3))
        await asyncio.to_thread(ContextCacheHook(conn_id).delete_cache, name)
        return (await run)[0]

    payload = asyncio.run(scenario())

    assert payload == {**GONE, "cache_name": name}
    seen = stats_since(before)
    assert seen["lookups"] >= 3  # read before every call: the interval is 0
    assert (seen["clients_built"], seen["clients_closed"]) == (1, 1)  # unchanged: the same client


def test_socket_helper_sees_a_socket(emulator: EmulatorProcess) -> None:
    port = port_of(emulator)
    before = sockets_to(port)
    with socket.create_connection(("127.0.0.1", port)):
        assert sockets_to(port) == before + 1
    assert sockets_to(port) == before


@pytest.mark.parametrize(
    ("key", "value", "read"),
    [
        ("CONNECTION_REFRESH_SECONDS", "soon", refresh_seconds),
        ("CONNECTION_REFRESH_SECONDS", "-1", refresh_seconds),
        ("SHARED_CLIENT_MAX_CALLS", "0", max_calls),
        ("SHARED_CLIENT_MAX_CALLS", "many", max_calls),
    ],
)
def test_a_bad_shared_client_setting_is_a_config_error_naming_it(
    monkeypatch: pytest.MonkeyPatch, key: str, value: str, read: Any
) -> None:
    monkeypatch.setenv(f"AIRFLOW__CTXCACHE__{key}", value)
    with pytest.raises(CtxCacheConfigError) as raised:
        read()
    assert f"[ctxcache] {key.lower()}: {value!r}" in str(raised.value)
    assert f"AIRFLOW__CTXCACHE__{key}" in str(raised.value)
