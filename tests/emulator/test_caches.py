"""The cachedContents lifecycle through the real SDK, on both backends, sync and async."""

from __future__ import annotations

import asyncio
import datetime as dt
import re

import httpx
import pytest
from google.genai import errors, types

from airflow_provider_ctxcache.emulator.process import EmulatorProcess

from .conftest import CACHE_TOKENS, LOCATION, MODEL, PROJECT, Backend, contents_of


def test_create_returns_the_resource_with_a_server_assigned_name(backend: Backend) -> None:
    cache = backend.create_cache(tokens=CACHE_TOKENS, display_name="contracts")

    assert cache.name is not None
    if backend.is_vertex:
        assert re.fullmatch(rf"projects/{PROJECT}/locations/{LOCATION}/cachedContents/\d+", cache.name)
    else:
        assert re.fullmatch(r"cachedContents/[a-z0-9]+", cache.name)
    assert cache.display_name == "contracts"
    assert cache.model == backend.full_model()
    assert cache.usage_metadata is not None
    assert cache.usage_metadata.total_token_count == CACHE_TOKENS


def test_create_without_ttl_expires_in_one_hour(backend: Backend) -> None:
    cache = backend.create_cache()

    assert cache.create_time is not None
    assert cache.expire_time is not None
    assert cache.update_time == cache.create_time
    assert cache.expire_time - cache.create_time == dt.timedelta(hours=1)


def test_create_with_ttl_sets_the_expire_time(backend: Backend) -> None:
    cache = backend.create_cache(ttl="7200.5s")

    assert cache.create_time is not None
    assert cache.expire_time is not None
    assert cache.expire_time - cache.create_time == dt.timedelta(seconds=7200.5)


def test_create_with_expire_time_keeps_it(backend: Backend) -> None:
    expire = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) + dt.timedelta(hours=5)

    cache = backend.create_cache(expire_time=expire)

    assert cache.expire_time == expire


def test_system_instruction_and_tools_count_toward_the_cache_size(backend: Backend) -> None:
    tool = types.Tool(function_declarations=[types.FunctionDeclaration(name="lookup", description="d")])
    without = backend.create_cache(tokens=CACHE_TOKENS)
    with_extras = backend.create_cache(
        tokens=CACHE_TOKENS, system_instruction="Answer briefly.", tools=[tool]
    )

    assert without.usage_metadata is not None
    assert with_extras.usage_metadata is not None
    assert (with_extras.usage_metadata.total_token_count or 0) > (
        without.usage_metadata.total_token_count or 0
    )


def test_get_returns_the_same_resource_without_contents(backend: Backend, emulator: EmulatorProcess) -> None:
    created = backend.create_cache(display_name="corpus")
    assert created.name is not None

    fetched = backend.client.caches.get(name=created.name)

    assert fetched == created
    shown = httpx.get(
        f"{emulator.url}/{'v1beta1/' if backend.is_vertex else 'v1beta/'}{created.name}",
        headers={"Authorization": "Bearer t"} if backend.is_vertex else {"x-goog-api-key": "k"},
    ).json()
    assert "contents" not in shown
    assert "systemInstruction" not in shown


def test_vertex_timestamps_have_nanosecond_precision_and_parse(
    vertex: Backend, emulator: EmulatorProcess
) -> None:
    created = vertex.create_cache()
    assert created.name is not None

    raw = httpx.get(f"{emulator.url}/v1beta1/{created.name}", headers={"Authorization": "Bearer t"}).json()

    for field in ("createTime", "updateTime", "expireTime"):
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", raw[field])
    assert created.expire_time is not None
    assert created.expire_time.tzinfo is not None


def test_developer_timestamps_are_rfc3339_utc(developer: Backend, emulator: EmulatorProcess) -> None:
    created = developer.create_cache()
    assert created.name is not None

    raw = httpx.get(f"{emulator.url}/v1beta/{created.name}", headers={"x-goog-api-key": "k"}).json()

    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", raw["expireTime"])


def test_list_pages_through_every_cache_in_creation_order(backend: Backend) -> None:
    names = [backend.create_cache(display_name=f"c{i}").name for i in range(7)]

    pager = backend.client.caches.list(config=types.ListCachedContentsConfig(page_size=3))
    pages = [[c.name for c in pager.page]]
    while pager.config.get("page_token"):
        pages.append([c.name for c in pager.next_page()])

    assert pages == [names[0:3], names[3:6], names[6:7]]


def test_list_iterates_across_pages(backend: Backend) -> None:
    names = [backend.create_cache().name for _ in range(5)]

    listed = [c.name for c in backend.client.caches.list(config=types.ListCachedContentsConfig(page_size=2))]

    assert listed == names


def test_list_of_nothing_is_empty(backend: Backend) -> None:
    assert list(backend.client.caches.list()) == []


def test_list_last_page_has_no_next_token(backend: Backend, emulator: EmulatorProcess) -> None:
    backend.create_cache()
    backend.create_cache()
    prefix = f"v1beta1/projects/{PROJECT}/locations/{LOCATION}" if backend.is_vertex else "v1beta"
    headers = {"Authorization": "Bearer t"} if backend.is_vertex else {"x-goog-api-key": "k"}

    first = httpx.get(f"{emulator.url}/{prefix}/cachedContents?pageSize=1", headers=headers).json()
    last = httpx.get(
        f"{emulator.url}/{prefix}/cachedContents",
        params={"pageSize": 1, "pageToken": first["nextPageToken"]},
        headers=headers,
    ).json()

    assert len(first["cachedContents"]) == 1
    assert "nextPageToken" in first
    assert len(last["cachedContents"]) == 1
    assert "nextPageToken" not in last


def test_list_rejects_a_forged_page_token(backend: Backend) -> None:
    with pytest.raises(errors.ClientError) as caught:
        backend.client.caches.list(config=types.ListCachedContentsConfig(page_token="bm90LWEtdG9rZW4"))

    assert (caught.value.code, caught.value.status) == (400, "INVALID_ARGUMENT")


def test_update_ttl_moves_the_expire_time(backend: Backend) -> None:
    cache = backend.create_cache(ttl="60s")
    assert cache.name is not None
    assert cache.expire_time is not None

    updated = backend.client.caches.update(
        name=cache.name, config=types.UpdateCachedContentConfig(ttl="7200s")
    )

    assert updated.expire_time is not None
    assert updated.update_time is not None
    assert updated.expire_time - updated.update_time == dt.timedelta(hours=2)
    assert updated.expire_time > cache.expire_time


def test_update_expire_time_sets_it(backend: Backend) -> None:
    cache = backend.create_cache()
    assert cache.name is not None
    target = dt.datetime(2099, 1, 2, 3, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=2)))

    updated = backend.client.caches.update(
        name=cache.name, config=types.UpdateCachedContentConfig(expire_time=target)
    )

    assert updated.expire_time == target
    assert backend.client.caches.get(name=cache.name).expire_time == target


def test_delete_removes_the_cache(backend: Backend, emulator: EmulatorProcess) -> None:
    cache = backend.create_cache()
    assert cache.name is not None

    backend.client.caches.delete(name=cache.name)

    assert emulator.admin.state()["caches"] == []
    with pytest.raises(errors.ClientError) as caught:
        backend.client.caches.get(name=cache.name)
    assert (caught.value.code, caught.value.status) == (backend.missing_code, backend.missing_status)


def test_delete_answers_an_empty_object(backend: Backend, emulator: EmulatorProcess) -> None:
    cache = backend.create_cache()
    prefix = "v1beta1" if backend.is_vertex else "v1beta"
    headers = {"Authorization": "Bearer t"} if backend.is_vertex else {"x-goog-api-key": "k"}

    response = httpx.delete(f"{emulator.url}/{prefix}/{cache.name}", headers=headers)

    assert (response.status_code, response.json()) == (200, {})


def test_the_async_client_runs_the_whole_lifecycle(backend: Backend, emulator: EmulatorProcess) -> None:
    async def lifecycle() -> tuple[list[str | None], list[str | None]]:
        aio = backend.client.aio
        config = types.CreateCachedContentConfig(contents=contents_of(CACHE_TOKENS), ttl="600s")
        created = [await aio.caches.create(model=MODEL, config=config) for _ in range(3)]
        assert created[0].name is not None
        fetched = await aio.caches.get(name=created[0].name)
        assert fetched.name == created[0].name
        updated = await aio.caches.update(
            name=created[0].name, config=types.UpdateCachedContentConfig(ttl="900s")
        )
        assert updated.expire_time is not None
        assert updated.update_time is not None
        assert updated.expire_time - updated.update_time == dt.timedelta(seconds=900)
        listed = [
            c.name async for c in await aio.caches.list(config=types.ListCachedContentsConfig(page_size=2))
        ]
        for cache in created:
            assert cache.name is not None
            await aio.caches.delete(name=cache.name)
        return [c.name for c in created], listed

    created, listed = asyncio.run(lifecycle())

    assert listed == created
    assert emulator.admin.state()["caches"] == []
