"""The model table: which models each backend serves, and from how many tokens each caches."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from google.genai import errors

from airflow_provider_ctxcache.emulator import create_app
from airflow_provider_ctxcache.emulator.model_facts import MODEL_FACTS, ModelFacts
from airflow_provider_ctxcache.emulator.process import EmulatorProcess

from .conftest import Backend, make_backend

NO_CACHING_MODEL = "gemini-test-no-caching"

# (model, backend, minimum) as API_FACTS "What changed" (checked 2026-11-29) gives them.
MINIMUMS = [
    *(
        (model, backend, 2048)
        for model in (
            "gemini-2.0-flash",
            "gemini-2.0-flash-001",
            "gemini-2.0-flash-lite",
            "gemini-2.5-flash",
            "gemini-2.5-flash-lite",
            "gemini-2.5-pro",
        )
        for backend in ("gemini_api", "vertex_ai")
    ),
    *(
        (model, backend, 4096)
        for model in (
            "gemini-3-flash-preview",
            "gemini-3.1-pro-preview",
            "gemini-3.5-flash",
            "gemini-3.1-flash-lite",
            "gemini-3.1-flash-lite-preview",
        )
        for backend in ("gemini_api", "vertex_ai")
    ),
    ("gemini-1.5-flash-002", "vertex_ai", 32769),
    ("gemini-1.5-pro-002", "vertex_ai", 32769),
]


def _error(call: object) -> errors.APIError:
    assert callable(call)
    with pytest.raises(errors.APIError) as caught:
        call()
    return caught.value


@pytest.mark.parametrize(("model", "backend_name", "minimum"), MINIMUMS)
def test_each_model_caches_from_exactly_its_minimum(
    emulator: EmulatorProcess, model: str, backend_name: str, minimum: int
) -> None:
    backend = make_backend(backend_name, emulator.url)

    too_small = _error(lambda: backend.create_cache(tokens=minimum - 1, model=model))

    assert (too_small.code, too_small.status) == (400, "INVALID_ARGUMENT")
    assert str(minimum) in str(too_small.message)
    assert backend.create_cache(tokens=minimum, model=model).name


def test_a_versioned_model_shares_its_base_models_minimum(backend: Backend) -> None:
    cache = backend.create_cache(tokens=2048, model="gemini-2.5-flash-002")

    assert cache.model == backend.full_model("gemini-2.5-flash-002")


def test_a_shut_down_model_is_not_found_like_an_unknown_one(backend: Backend) -> None:
    model = "gemini-3-pro-preview"  # shut down on 2026-03-09
    calls = [
        lambda: backend.client.models.generate_content(model=model, contents="hi"),
        lambda: backend.client.models.count_tokens(model=model, contents="hi"),
        lambda: backend.create_cache(tokens=5000, model=model),
    ]

    seen = [_error(call) for call in calls]

    assert [(e.code, e.status) for e in seen] == [(404, "NOT_FOUND")] * 3


def test_a_vertex_only_model_is_not_found_on_the_developer_api(developer: Backend) -> None:
    error = _error(
        lambda: developer.client.models.generate_content(model="gemini-1.5-pro-002", contents="hi")
    )

    assert (error.code, error.status) == (404, "NOT_FOUND")


def test_a_vertex_only_model_answers_on_vertex(vertex: Backend) -> None:
    response = vertex.client.models.generate_content(model="gemini-1.5-pro-002", contents="hi")

    assert response.text


@pytest.fixture
def no_caching_emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An emulator in this process (real HTTP on loopback) whose table has a model without caching.

    No row of today's table lacks caching, so the row is added for this test only.
    """
    row = ModelFacts({"gemini_api": 2048, "vertex_ai": 2048}, False, None, "none", True)
    monkeypatch.setitem(MODEL_FACTS, NO_CACHING_MODEL, row)
    config = uvicorn.Config(create_app(), host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def test_a_model_without_explicit_caching_still_generates(no_caching_emulator: str) -> None:
    backend = make_backend("gemini_api", no_caching_emulator)

    assert backend.client.models.generate_content(model=NO_CACHING_MODEL, contents="hi").text


def test_a_model_without_explicit_caching_refuses_a_cache_on_the_developer_api(
    no_caching_emulator: str,
) -> None:
    developer = make_backend("gemini_api", no_caching_emulator)

    error = _error(lambda: developer.create_cache(tokens=5000, model=NO_CACHING_MODEL))

    assert (error.code, error.status) == (404, "NOT_FOUND")
    assert "not supported for createCachedContent" in str(error.message)


def test_a_model_without_explicit_caching_refuses_a_cache_on_vertex(no_caching_emulator: str) -> None:
    vertex = make_backend("vertex_ai", no_caching_emulator)

    error = _error(lambda: vertex.create_cache(tokens=5000, model=NO_CACHING_MODEL))

    assert (error.code, error.status) == (400, "INVALID_ARGUMENT")
    assert str(error.message).endswith("does not support cached content.")


def test_model_facts_is_a_plain_table_of_frozen_rows() -> None:
    # The provider keeps its own copy of this table and compares the two field by field.
    assert [f.name for f in dataclasses.fields(ModelFacts)] == [
        "min_cache_tokens",
        "caching",
        "shut_down",
        "thinking_default",
        "thinking_can_be_off",
    ]
    row = MODEL_FACTS["gemini-2.5-flash"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        row.caching = False  # type: ignore[misc]


def test_every_row_names_known_backends_and_iso_shutdown_dates() -> None:
    for facts in MODEL_FACTS.values():
        assert facts.min_cache_tokens
        assert set(facts.min_cache_tokens) <= {"gemini_api", "vertex_ai"}
        if facts.shut_down is not None:
            dt.date.fromisoformat(facts.shut_down)
        assert facts.thinking_default in {"none", "off", "dynamic", "minimal", "low", "medium", "high"}


def test_the_thinking_facts_of_the_table() -> None:
    thinking = {
        mid: (MODEL_FACTS[mid].thinking_default, MODEL_FACTS[mid].thinking_can_be_off)
        for mid in (
            "gemini-2.0-flash",
            "gemini-2.5-flash",
            "gemini-2.5-flash-lite",
            "gemini-2.5-pro",
            "gemini-3-flash-preview",
            "gemini-3.1-pro-preview",
        )
    }

    assert thinking == {
        "gemini-2.0-flash": ("none", True),
        "gemini-2.5-flash": ("dynamic", True),
        "gemini-2.5-flash-lite": ("off", True),
        "gemini-2.5-pro": ("dynamic", False),
        "gemini-3-flash-preview": ("high", True),
        "gemini-3.1-pro-preview": ("high", False),
    }
