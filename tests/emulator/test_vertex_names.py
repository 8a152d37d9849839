"""Vertex takes a cache by ``cachedContents/ID`` as well as by its full name.

The SDK expands ``cachedContents/ID`` to ``projects/P/locations/L/cachedContents/ID`` in paths
and in a generate request's ``cachedContent``; a raw request may also send the short form.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from google.genai import errors, types

from airflow_provider_ctxcache.emulator.process import EmulatorProcess

from .conftest import CACHE_TOKENS, LOCATION, MODEL, PROJECT, Backend


def _short_name(vertex: Backend) -> tuple[str, str]:
    """A new cache's full name and its ``cachedContents/ID`` form."""
    name = str(vertex.create_cache().name)
    return name, "cachedContents/" + name.rsplit("/", 1)[-1]


def test_get_by_the_short_name_finds_the_cache(vertex: Backend) -> None:
    name, short = _short_name(vertex)

    assert vertex.client.caches.get(name=short).name == name


def test_update_by_the_short_name_moves_the_expiry(vertex: Backend) -> None:
    name, short = _short_name(vertex)

    updated = vertex.client.caches.update(name=short, config=types.UpdateCachedContentConfig(ttl="7200s"))

    assert updated.name == name
    assert vertex.client.caches.get(name=name).expire_time == updated.expire_time


def test_delete_by_the_short_name_removes_the_cache(vertex: Backend, emulator: EmulatorProcess) -> None:
    name, short = _short_name(vertex)

    vertex.client.caches.delete(name=short)

    assert emulator.admin.state()["caches"] == []
    with pytest.raises(errors.ClientError):
        vertex.client.caches.get(name=name)


def test_generate_with_the_short_name_uses_the_cache(vertex: Backend) -> None:
    _, short = _short_name(vertex)

    response = vertex.client.models.generate_content(
        model=MODEL, contents="hi", config=types.GenerateContentConfig(cached_content=short)
    )

    assert response.usage_metadata is not None
    assert response.usage_metadata.cached_content_token_count == CACHE_TOKENS


def test_the_sdk_sends_the_expanded_full_name(vertex: Backend, emulator: EmulatorProcess) -> None:
    name, short = _short_name(vertex)

    vertex.client.caches.get(name=short)
    vertex.client.models.generate_content(
        model=MODEL, contents="hi", config=types.GenerateContentConfig(cached_content=short)
    )

    get, generate = emulator.admin.requests()[-2:]
    assert get["path"] == f"/v1beta1/{name}"
    assert generate["body"]["cachedContent"] == name


def test_a_raw_generate_request_may_name_the_cache_by_its_short_form(
    vertex: Backend, emulator: EmulatorProcess, raw_headers: Callable[[str], dict[str, str]]
) -> None:
    _, short = _short_name(vertex)

    response = httpx.post(
        f"{emulator.url}/v1beta1/projects/{PROJECT}/locations/{LOCATION}/publishers/google/models/"
        f"{MODEL}:generateContent",
        headers=raw_headers("vertex_ai"),
        json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}], "cachedContent": short},
    )

    assert response.status_code == 200
    assert response.json()["usageMetadata"]["cachedContentTokenCount"] == CACHE_TOKENS
