"""The admin API: state, request log, reset."""

from __future__ import annotations

import datetime as dt

import httpx
import pytest
from google.genai import errors, types

from airflow_provider_ctxcache.emulator.process import EmulatorProcess

from .conftest import CACHE_TOKENS, MODEL, Backend


def test_state_counts_every_request_by_op_and_status(backend: Backend, emulator: EmulatorProcess) -> None:
    cache = backend.create_cache()
    assert cache.name is not None
    backend.client.caches.get(name=cache.name)
    list(backend.client.caches.list())
    backend.client.caches.update(name=cache.name, config=types.UpdateCachedContentConfig(ttl="60s"))
    backend.client.models.generate_content(
        model=MODEL, contents="hi", config=types.GenerateContentConfig(cached_content=cache.name)
    )
    backend.client.models.count_tokens(model=MODEL, contents="hi")
    backend.client.caches.delete(name=cache.name)
    with pytest.raises(errors.ClientError):
        backend.client.caches.delete(name=cache.name)

    state = emulator.admin.state()

    assert state["counts"] == {
        "create_cache": 1,
        "get_cache": 1,
        "list_caches": 1,
        "update_cache": 1,
        "delete_cache": 2,
        "generate_content": 1,
        "count_tokens": 1,
        "batch": 0,
        "upload_file": 0,
        "get_file": 0,
        "list_files": 0,
        "delete_file": 0,
    }
    assert state["status_counts"]["delete_cache"] == {"200": 1, str(backend.missing_code): 1}


def test_state_shows_live_caches_as_the_api_does(backend: Backend, emulator: EmulatorProcess) -> None:
    cache = backend.create_cache(display_name="shown")

    (shown,) = emulator.admin.state()["caches"]

    assert shown["name"] == cache.name
    assert shown["displayName"] == "shown"
    assert shown["usageMetadata"] == {"totalTokenCount": CACHE_TOKENS}
    assert "contents" not in shown


def test_the_request_log_keeps_method_path_op_status_and_body(
    developer: Backend, emulator: EmulatorProcess
) -> None:
    developer.client.models.count_tokens(model=MODEL, contents="abcd")

    (entry,) = emulator.admin.requests()

    assert entry["method"] == "POST"
    assert entry["path"] == f"/v1beta/models/{MODEL}:countTokens"
    assert entry["op"] == "count_tokens"
    assert entry["status"] == 200
    assert entry["body"] == {"contents": [{"parts": [{"text": "abcd"}], "role": "user"}]}
    assert "headers" not in entry


def test_the_request_log_never_holds_an_api_key(emulator: EmulatorProcess) -> None:
    secret = "AIza-very-secret-key"
    httpx.get(f"{emulator.url}/v1beta/cachedContents", params={"key": secret, "pageSize": 5})
    httpx.get(f"{emulator.url}/v1beta/cachedContents", headers={"x-goog-api-key": secret})

    log = httpx.get(f"{emulator.url}/_emulator/requests").text
    state = httpx.get(f"{emulator.url}/_emulator/state").text

    assert secret not in log
    assert secret not in state
    assert emulator.admin.requests()[0]["path"] == "/v1beta/cachedContents?pageSize=5"


def test_the_request_log_keeps_the_last_thousand(developer: Backend, emulator: EmulatorProcess) -> None:
    with httpx.Client(base_url=emulator.url, headers={"x-goog-api-key": "k"}) as client:
        for _ in range(1005):
            client.get("/v1beta/cachedContents")

    assert len(emulator.admin.requests()) == 1000
    assert emulator.admin.state()["counts"]["list_caches"] == 1005


def test_reset_empties_caches_counts_log_faults_and_clock(
    backend: Backend, emulator: EmulatorProcess
) -> None:
    backend.create_cache()
    emulator.admin.faults(latency_ms=5)
    emulator.admin.advance_clock(86400)

    emulator.admin.reset()

    state = emulator.admin.state()
    assert state["caches"] == []
    assert set(state["counts"].values()) == {0}
    assert emulator.admin.requests() == []
    assert state["faults"]["latency_ms"] == 0
    now = dt.datetime.fromisoformat(state["now"])
    assert abs(now - dt.datetime.now(dt.timezone.utc)) < dt.timedelta(seconds=60)


def test_a_request_that_began_before_a_reset_is_not_counted_after_it(
    developer: Backend, emulator: EmulatorProcess
) -> None:
    # A test that ends with calls still in flight must not leak them into the next test's counts.
    import threading

    cache = developer.create_cache()
    emulator.admin.faults(latency_ms=300, ops=["generate_content"])
    finished = threading.Event()

    def ask() -> None:
        try:
            developer.client.models.generate_content(
                model=MODEL, contents="hi", config=types.GenerateContentConfig(cached_content=cache.name)
            )
        except errors.APIError:
            pass  # the reset removed the cache it asked about
        finally:
            finished.set()

    threading.Thread(target=ask).start()
    while emulator.admin.state()["in_flight"] == 0:  # wait until the server holds the call
        assert not finished.wait(0.01)
    emulator.admin.reset()
    assert finished.wait(60)

    assert emulator.admin.state()["counts"]["generate_content"] == 0
    assert emulator.admin.requests() == []
