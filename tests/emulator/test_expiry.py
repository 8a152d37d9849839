"""TTL and expire_time: validation like the real service, and expiry on the emulator clock."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import httpx
import pytest
from google.genai import errors, types

from airflow_provider_ctxcache.emulator.process import EmulatorProcess
from airflow_provider_ctxcache.emulator.tokens import text_of_tokens

from .conftest import CACHE_TOKENS, LOCATION, MODEL, PROJECT, Backend


def _raw_create(
    emulator: EmulatorProcess, backend: Backend, headers: dict[str, str], **fields: object
) -> httpx.Response:
    """A create sent over plain httpx, for bodies the SDK would not produce."""
    if backend.is_vertex:
        url = f"{emulator.url}/v1beta1/projects/{PROJECT}/locations/{LOCATION}/cachedContents"
    else:
        url = f"{emulator.url}/v1beta/cachedContents"
    body = {
        "model": backend.full_model(),
        "contents": [{"role": "user", "parts": [{"text": text_of_tokens(CACHE_TOKENS)}]}],
        **fields,
    }
    return httpx.post(url, json=body, headers=headers)


def _error(response: httpx.Response) -> tuple[int, str, str]:
    error = response.json()["error"]
    assert error["code"] == response.status_code
    return response.status_code, error["status"], error["message"]


def _calls_addressing(backend: Backend, name: str) -> dict[str, Callable[[], object]]:
    """get, update, delete and generateContent, each addressing the cache ``name``."""
    return {
        "get": lambda: backend.client.caches.get(name=name),
        "update": lambda: backend.client.caches.update(
            name=name, config=types.UpdateCachedContentConfig(ttl="60s")
        ),
        "delete": lambda: backend.client.caches.delete(name=name),
        "generate": lambda: backend.client.models.generate_content(
            model=MODEL, contents="hi", config=types.GenerateContentConfig(cached_content=name)
        ),
    }


def _errors_of(calls: dict[str, Callable[[], object]]) -> dict[str, tuple[int, str, str]]:
    seen = {}
    for what, call in calls.items():
        with pytest.raises(errors.ClientError) as caught:
            call()
        seen[what] = (caught.value.code, str(caught.value.status), str(caught.value.message))
    return seen


def test_an_expired_cache_is_permission_denied_on_the_developer_api(
    developer: Backend, emulator: EmulatorProcess
) -> None:
    name = str(developer.create_cache(ttl="60s").name)
    emulator.admin.advance_clock(61)

    seen = _errors_of(_calls_addressing(developer, name))

    denied = (403, "PERMISSION_DENIED", "CachedContent not found (or permission denied)")
    assert seen == dict.fromkeys(seen, denied)


def test_vertex_says_a_cache_that_just_expired_is_expired(vertex: Backend, emulator: EmulatorProcess) -> None:
    name = str(vertex.create_cache(ttl="60s").name)
    cache_id = name.rsplit("/", 1)[-1]
    emulator.admin.advance_clock(61)

    seen = _errors_of(_calls_addressing(vertex, name))

    expired = (400, "INVALID_ARGUMENT", f"Cache content {cache_id} is expired.")
    assert seen == dict.fromkeys(["get", "update", "delete", "generate"], expired)


def test_vertex_answers_not_found_once_the_default_grace_of_300_s_is_over(
    vertex: Backend, emulator: EmulatorProcess
) -> None:
    name = str(vertex.create_cache(ttl="60s").name)
    emulator.admin.advance_clock(60 + 299)
    still_expired = _errors_of({"get": _calls_addressing(vertex, name)["get"]})["get"][0]

    emulator.admin.advance_clock(2)

    seen = _errors_of(_calls_addressing(vertex, name))
    assert still_expired == 400
    assert {code for code, _, _ in seen.values()} == {404}
    assert {status for _, status, _ in seen.values()} == {"NOT_FOUND"}


def test_the_expired_grace_is_set_through_the_faults_endpoint(
    vertex: Backend, emulator: EmulatorProcess
) -> None:
    emulator.admin.faults(expired_grace_s=10)
    name = str(vertex.create_cache(ttl="60s").name)
    get = _calls_addressing(vertex, name)["get"]

    emulator.admin.advance_clock(65)
    within = _errors_of({"get": get})["get"]
    emulator.admin.advance_clock(6)
    after = _errors_of({"get": get})["get"]

    assert within[:2] == (400, "INVALID_ARGUMENT")
    assert after[:2] == (404, "NOT_FOUND")


def test_a_zero_grace_makes_vertex_answer_not_found_at_once(
    vertex: Backend, emulator: EmulatorProcess
) -> None:
    emulator.admin.faults(expired_grace_s=0)
    name = str(vertex.create_cache(ttl="60s").name)
    emulator.admin.advance_clock(61)

    assert _errors_of({"get": _calls_addressing(vertex, name)["get"]})["get"][:2] == (404, "NOT_FOUND")


def test_a_deleted_cache_is_missing_not_expired_on_vertex(vertex: Backend) -> None:
    name = str(vertex.create_cache(ttl="60s").name)
    vertex.client.caches.delete(name=name)

    seen = _errors_of(_calls_addressing(vertex, name))

    assert {code for code, _, _ in seen.values()} == {404}


def test_vertex_may_answer_a_deleted_cache_with_invalid_resource_state(
    vertex: Backend, emulator: EmulatorProcess
) -> None:
    name = str(vertex.create_cache(ttl="60s").name)
    emulator.admin.faults(deleted_state_s=30)
    vertex.client.caches.delete(name=name)

    seen = _errors_of(_calls_addressing(vertex, name))
    assert {(code, message) for code, _, message in seen.values()} == {
        (400, "Invalid resource state for cache content.")
    }

    emulator.admin.advance_clock(31)
    assert {code for code, _, _ in _errors_of(_calls_addressing(vertex, name)).values()} == {404}


def test_a_cache_deleted_then_past_its_expire_time_is_still_missing_not_expired(
    vertex: Backend, emulator: EmulatorProcess
) -> None:
    name = str(vertex.create_cache(ttl="60s").name)
    vertex.client.caches.delete(name=name)
    emulator.admin.advance_clock(61)

    assert _errors_of({"get": _calls_addressing(vertex, name)["get"]})["get"][:2] == (404, "NOT_FOUND")


def test_a_cache_is_alive_until_its_expire_time(backend: Backend, emulator: EmulatorProcess) -> None:
    cache = backend.create_cache(ttl="60s")
    assert cache.name is not None

    emulator.admin.advance_clock(55)

    assert backend.client.caches.get(name=cache.name).name == cache.name


def test_list_and_state_omit_expired_caches(backend: Backend, emulator: EmulatorProcess) -> None:
    short = backend.create_cache(ttl="10s")
    long = backend.create_cache(ttl="1000s")

    emulator.admin.advance_clock(11)

    assert [c.name for c in backend.client.caches.list()] == [long.name]
    assert [c["name"] for c in emulator.admin.state()["caches"]] == [long.name]
    assert short.name != long.name


def test_the_developer_api_says_not_found_or_permission_denied(developer: Backend) -> None:
    with pytest.raises(errors.ClientError) as caught:
        developer.client.caches.get(name="cachedContents/doesnotexist")

    assert caught.value.code == 403
    assert caught.value.status == "PERMISSION_DENIED"
    assert caught.value.message == "CachedContent not found (or permission denied)"


def test_extending_the_ttl_keeps_the_cache_alive(backend: Backend, emulator: EmulatorProcess) -> None:
    cache = backend.create_cache(ttl="60s")
    assert cache.name is not None

    emulator.admin.advance_clock(50)
    backend.client.caches.update(name=cache.name, config=types.UpdateCachedContentConfig(ttl="60s"))
    emulator.admin.advance_clock(50)

    assert backend.client.caches.get(name=cache.name).name == cache.name


def test_the_clock_endpoint_returns_the_new_time(emulator: EmulatorProcess) -> None:
    before = dt.datetime.fromisoformat(emulator.admin.state()["now"])

    after = dt.datetime.fromisoformat(emulator.admin.advance_clock(3600))

    assert dt.timedelta(seconds=3600) <= after - before < dt.timedelta(seconds=3610)


def test_expire_time_and_ttl_together_are_refused(backend: Backend) -> None:
    with pytest.raises(errors.ClientError) as caught:
        backend.create_cache(ttl="60s", expire_time=dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1))

    assert (caught.value.code, caught.value.status) == (400, "INVALID_ARGUMENT")
    assert "cached_content.ttl" in str(caught.value.message)
    assert "cached_content.expire_time" in str(caught.value.message)


@pytest.mark.parametrize("ttl", ["0s", "-5s"])
def test_a_ttl_that_is_not_positive_is_refused(backend: Backend, ttl: str) -> None:
    with pytest.raises(errors.ClientError) as caught:
        backend.create_cache(ttl=ttl)

    assert (caught.value.code, caught.value.status) == (400, "INVALID_ARGUMENT")
    assert "cached_content.ttl" in str(caught.value.message)


@pytest.mark.parametrize("ttl", ["3600", "1h", "s", "1.2.3s", 3600])
def test_a_malformed_ttl_is_refused(
    backend: Backend, emulator: EmulatorProcess, raw_headers: Callable[[str], dict[str, str]], ttl: object
) -> None:
    response = _raw_create(emulator, backend, raw_headers(backend.name), ttl=ttl)

    code, status, message = _error(response)
    assert (code, status) == (400, "INVALID_ARGUMENT")
    assert "cached_content.ttl" in message


def test_a_naive_expire_time_is_refused(
    backend: Backend, emulator: EmulatorProcess, raw_headers: Callable[[str], dict[str, str]]
) -> None:
    # What the SDK sends for a naive datetime: no UTC offset, so not RFC 3339.
    response = _raw_create(emulator, backend, raw_headers(backend.name), expireTime="2099-01-02T00:00:00")

    code, status, message = _error(response)
    assert (code, status) == (400, "INVALID_ARGUMENT")
    assert "cached_content.expire_time" in message


def test_an_expire_time_with_an_offset_is_accepted_raw(
    backend: Backend, emulator: EmulatorProcess, raw_headers: Callable[[str], dict[str, str]]
) -> None:
    response = _raw_create(
        emulator, backend, raw_headers(backend.name), expireTime="2099-01-02T05:00:00+05:00"
    )

    assert response.status_code == 200
    assert response.json()["expireTime"].startswith("2099-01-02T00:00:00.")


def test_an_expire_time_in_the_past_is_refused(backend: Backend) -> None:
    with pytest.raises(errors.ClientError) as caught:
        backend.create_cache(expire_time=dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=1))

    assert (caught.value.code, caught.value.status) == (400, "INVALID_ARGUMENT")
    assert "cached_content.expire_time" in str(caught.value.message)


def test_update_validates_like_create(backend: Backend) -> None:
    cache = backend.create_cache()
    assert cache.name is not None

    for config in (
        types.UpdateCachedContentConfig(ttl="0s"),
        types.UpdateCachedContentConfig(
            ttl="60s", expire_time=dt.datetime(2099, 1, 1, tzinfo=dt.timezone.utc)
        ),
        types.UpdateCachedContentConfig(expire_time=dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)),
    ):
        with pytest.raises(errors.ClientError) as caught:
            backend.client.caches.update(name=cache.name, config=config)
        assert (caught.value.code, caught.value.status) == (400, "INVALID_ARGUMENT")


def test_update_of_anything_but_the_expiration_is_refused(
    backend: Backend, emulator: EmulatorProcess, raw_headers: Callable[[str], dict[str, str]]
) -> None:
    cache = backend.create_cache(display_name="before")
    version = "v1beta1" if backend.is_vertex else "v1beta"

    response = httpx.patch(
        f"{emulator.url}/{version}/{cache.name}",
        json={"displayName": "after"},
        headers=raw_headers(backend.name),
    )

    assert _error(response)[:2] == (400, "INVALID_ARGUMENT")
    assert backend.client.caches.get(name=str(cache.name)).display_name == "before"


def test_update_accepts_an_update_mask(
    backend: Backend, emulator: EmulatorProcess, raw_headers: Callable[[str], dict[str, str]]
) -> None:
    cache = backend.create_cache()
    version = "v1beta1" if backend.is_vertex else "v1beta"

    response = httpx.patch(
        f"{emulator.url}/{version}/{cache.name}",
        params={"updateMask": "ttl"},
        json={"ttl": "120s"},
        headers=raw_headers(backend.name),
    )

    assert response.status_code == 200
    bad_mask = httpx.patch(
        f"{emulator.url}/{version}/{cache.name}",
        params={"updateMask": "displayName"},
        json={"ttl": "120s"},
        headers=raw_headers(backend.name),
    )
    assert _error(bad_mask)[:2] == (400, "INVALID_ARGUMENT")
