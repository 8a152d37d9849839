"""The UI's Test button: a quick, honest answer that never shows the key."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from airflow_provider_ctxcache.emulator.process import EmulatorProcess
from airflow_provider_ctxcache.hooks import ContextCacheHook
from tests.hooks.conftest import ConnFactory, backend_extra

REQUIRED_KEY = "the-only-valid-key-42"


@pytest.fixture(scope="module")
def keyed_emulator() -> Iterator[EmulatorProcess]:
    with EmulatorProcess(args=["--api-key", REQUIRED_KEY]) as process:
        yield process


def test_connection_succeeds_against_the_emulator(hook: ContextCacheHook) -> None:
    ok, message = hook.test_connection()
    assert ok, message
    assert message.startswith(f"Connected to {hook.backend.name} at http://127.0.0.1:")


def test_wrong_api_key_fails_without_echoing_it(
    keyed_emulator: EmulatorProcess, make_conn: ConnFactory
) -> None:
    wrong = "wrong-key-that-must-not-leak"
    conn_id = make_conn("c_wrong_key", password=wrong, **backend_extra("gemini_api", keyed_emulator))
    ok, message = ContextCacheHook(conn_id).test_connection()
    assert not ok
    assert "API key not valid" in message
    assert wrong not in message


def test_right_api_key_passes_the_keyed_emulator(
    keyed_emulator: EmulatorProcess, make_conn: ConnFactory
) -> None:
    conn_id = make_conn("c_right_key", password=REQUIRED_KEY, **backend_extra("gemini_api", keyed_emulator))
    ok, message = ContextCacheHook(conn_id).test_connection()
    assert ok, message
    assert REQUIRED_KEY not in message


def test_unreachable_server_fails_at_once(make_conn: ConnFactory) -> None:
    conn_id = make_conn("c_down", base_url="http://127.0.0.1:9", retry_initial_delay=5)
    ok, message = ContextCacheHook(conn_id).test_connection()
    assert not ok
    assert message.startswith("EndpointUnreachableError: connection 'c_down' (backend gemini_api) cannot")
    assert "start the emulator" in message
