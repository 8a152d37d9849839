"""Hooks built from real Airflow connections (``AIRFLOW_CONN_*`` variables) that point at the emulator."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from airflow_provider_ctxcache.emulator.process import EmulatorProcess
from airflow_provider_ctxcache.hooks import ContextCacheHook

API_KEY = "test-api-key-0123456789"
FAST_RETRIES = {"retry_initial_delay": 0.01, "retry_max_delay": 0.05}

ConnFactory = Callable[..., str]


@pytest.fixture
def make_conn(monkeypatch: pytest.MonkeyPatch) -> ConnFactory:
    """Registers a ``ctxcache`` connection in the environment and returns its id."""

    def make(conn_id: str, *, password: str | None = API_KEY, **extra: Any) -> str:
        conn: dict[str, Any] = {"conn_type": "ctxcache", "extra": extra}
        if password is not None:
            conn["password"] = password
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
        return conn_id

    return make


def backend_extra(backend: str, emulator: EmulatorProcess) -> dict[str, Any]:
    if backend == "vertex_ai":
        return {
            "backend": "vertex_ai",
            "project": "test-project",
            "location": "us-central1",
            "base_url": emulator.url,
            **FAST_RETRIES,
        }
    return {"backend": "gemini_api", "base_url": emulator.url, **FAST_RETRIES}


@pytest.fixture(params=["gemini_api", "vertex_ai"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def hook(backend: str, emulator: EmulatorProcess, make_conn: ConnFactory) -> ContextCacheHook:
    """A hook on each backend, talking to the emulator."""
    conn_id = make_conn(f"ctxcache_test_{backend}", **backend_extra(backend, emulator))
    return ContextCacheHook(conn_id)
