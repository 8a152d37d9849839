"""Caches are scoped: per backend, and per Vertex project and location."""

from __future__ import annotations

import pytest
from google.genai import errors, types

from airflow_provider_ctxcache.emulator.process import EmulatorProcess

from .conftest import MODEL, Backend, vertex_client


def test_a_developer_cache_is_invisible_on_vertex(developer: Backend, vertex: Backend) -> None:
    cache = developer.create_cache()
    assert cache.name is not None
    cache_id = cache.name.rsplit("/", 1)[1]

    with pytest.raises(errors.ClientError) as caught:
        vertex.client.caches.get(name=f"cachedContents/{cache_id}")

    assert caught.value.code == 404
    assert list(vertex.client.caches.list()) == []


def test_a_vertex_cache_is_invisible_on_the_developer_api(developer: Backend, vertex: Backend) -> None:
    cache = vertex.create_cache()
    assert cache.name is not None
    cache_id = cache.name.rsplit("/", 1)[1]

    with pytest.raises(errors.ClientError) as caught:
        developer.client.caches.get(name=f"cachedContents/{cache_id}")

    assert caught.value.code == 403
    assert list(developer.client.caches.list()) == []


def test_a_vertex_cache_is_invisible_in_another_location(vertex: Backend, emulator: EmulatorProcess) -> None:
    cache = vertex.create_cache()
    assert cache.name is not None
    elsewhere = vertex_client(emulator.url, location="europe-west4")

    with pytest.raises(errors.ClientError) as caught:
        elsewhere.caches.get(name=cache.name.rsplit("/", 1)[1])

    assert caught.value.code == 404
    assert list(elsewhere.caches.list()) == []


def test_a_vertex_cache_of_another_project_cannot_be_used(vertex: Backend, emulator: EmulatorProcess) -> None:
    cache = vertex.create_cache()
    other_project = vertex_client(emulator.url, project="other")

    with pytest.raises(errors.ClientError) as caught:
        other_project.models.generate_content(
            model=MODEL, contents="hi", config=types.GenerateContentConfig(cached_content=cache.name)
        )

    assert (caught.value.code, caught.value.status) == (404, "NOT_FOUND")


def test_state_shows_each_cache_with_its_backend(
    developer: Backend, vertex: Backend, emulator: EmulatorProcess
) -> None:
    dev_cache = developer.create_cache()
    vertex_cache = vertex.create_cache()

    caches = emulator.admin.state()["caches"]

    assert [(c["name"], c["backend"]) for c in caches] == [
        (dev_cache.name, "gemini_api"),
        (vertex_cache.name, "vertex_ai"),
    ]
