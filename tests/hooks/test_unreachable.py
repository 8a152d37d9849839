"""No connection at all (nothing listening, TLS, DNS): an error that names where, which connection
and what to do, over real sockets, without the API key and without retrying a dead emulator."""

from __future__ import annotations

import asyncio
import socket
import ssl

import pytest

from airflow_provider_ctxcache.emulator.process import EmulatorProcess
from airflow_provider_ctxcache.exceptions import EndpointUnreachableError, connection_failure
from airflow_provider_ctxcache.hooks import ContextCacheHook
from airflow_provider_ctxcache.hooks.backend import DeveloperApi, VertexAi
from airflow_provider_ctxcache.hooks.settings import ConnectionSettings
from airflow_provider_ctxcache.retry import is_transient, nothing_made, will_not_heal
from tests.hooks.conftest import API_KEY, FAST_RETRIES, ConnFactory

MODEL = "gemini-2.5-flash"


@pytest.fixture
def dead_url() -> str:
    """A loopback URL where nothing listens: a port just bound and released."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.mark.parametrize("backend", ["gemini_api", "vertex_ai"])
def test_nothing_listening_on_loopback_names_endpoint_connection_and_backend_and_says_start_the_emulator(
    backend: str, dead_url: str, make_conn: ConnFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = {"backend": backend, "base_url": dead_url, "retry_initial_delay": 5}
    if backend == "vertex_ai":
        extra.update(project="p", location="us-central1")
    conn_id = make_conn("ctxcache_emulator_down", **extra)
    port = dead_url.rpartition(":")[2]

    with pytest.raises(EndpointUnreachableError) as raised:
        ContextCacheHook(conn_id).count_tokens(model=MODEL, contents="hello")

    message = str(raised.value)
    assert message == (
        f"connection 'ctxcache_emulator_down' (backend {backend}) cannot reach {dead_url} "
        "(ConnectionRefusedError: [Errno 111] Connection refused); nothing is listening there: "
        f"start the emulator (`ctxcache-emulator --port {port}`), or set the connection's "
        "extra.base_url to where it listens."
    )
    assert API_KEY not in message
    # Refused on this machine is final: no SDK retry (5 s apart here) was even tried.
    assert "Retrying" not in capsys.readouterr().out
    assert will_not_heal(raised.value)
    assert not is_transient(raised.value)


def test_the_async_path_and_the_test_button_say_the_same(dead_url: str, make_conn: ConnFactory) -> None:
    conn_id = make_conn("ctxcache_emulator_down_async", base_url=dead_url, **FAST_RETRIES)

    async def read() -> None:
        hook = ContextCacheHook(conn_id)
        try:
            await hook.aget_cache("cachedContents/abc")
        finally:
            await hook.aclose()

    with pytest.raises(EndpointUnreachableError, match=f"cannot reach {dead_url} .*start the emulator"):
        asyncio.run(read())
    ok, message = ContextCacheHook(conn_id).test_connection()
    assert not ok
    assert message.startswith(
        f"EndpointUnreachableError: connection 'ctxcache_emulator_down_async' (backend gemini_api) "
        f"cannot reach {dead_url}"
    )
    assert API_KEY not in message


def test_a_tls_handshake_that_fails_names_tls_and_the_endpoint(
    emulator: EmulatorProcess, make_conn: ConnFactory
) -> None:
    # The emulator speaks plain HTTP: an https:// base_url on its port fails the handshake for real.
    https_url = emulator.url.replace("http://", "https://")
    conn_id = make_conn("ctxcache_tls", base_url=https_url, **FAST_RETRIES)

    with pytest.raises(EndpointUnreachableError) as raised:
        ContextCacheHook(conn_id).count_tokens(model=MODEL, contents="hello")

    message = str(raised.value)
    assert message.startswith(f"connection 'ctxcache_tls' (backend gemini_api) cannot reach {https_url} (")
    assert "the TLS handshake failed: check the server's certificate" in message
    assert "start the emulator" not in message
    assert API_KEY not in message
    assert raised.value.kind == "tls"
    assert is_transient(raised.value)  # not refused: a retry may meet a fixed proxy or network
    assert nothing_made(raised.value)  # no request was sent, so a create may be sent again


@pytest.mark.parametrize(
    ("backend", "endpoint"),
    [
        (DeveloperApi(ConnectionSettings(conn_id="prod", backend="gemini_api", api_key=API_KEY)), None),
        (
            VertexAi(
                ConnectionSettings(conn_id="prod", backend="vertex_ai", project="p", location="europe-west4")
            ),
            "https://europe-west4-aiplatform.googleapis.com",
        ),
    ],
    ids=["gemini_api", "vertex_ai"],
)
def test_without_base_url_the_error_names_googles_endpoint_and_the_network(
    backend: DeveloperApi | VertexAi, endpoint: str | None
) -> None:
    endpoint = endpoint or "https://generativelanguage.googleapis.com"
    refused = ConnectionRefusedError(111, "Connection refused")

    error = backend.unreachable(refused)

    assert isinstance(error, EndpointUnreachableError)
    assert str(error) == (
        f"connection 'prod' (backend {backend.name}) cannot reach {endpoint} "
        "(ConnectionRefusedError: [Errno 111] Connection refused); nothing is listening there: "
        "check extra.base_url (host and port) and that the server runs."
    )
    assert not will_not_heal(error)  # a remote refusal may be a restart or a network blip


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (ConnectionRefusedError(111, "Connection refused"), "refused"),
        (socket.gaierror(-2, "Name or service not known"), "dns"),
        (
            ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"),
            "tls",
        ),
    ],
)
def test_connection_failures_are_told_apart_by_their_os_error(error: OSError, kind: str) -> None:
    found = connection_failure(error)

    assert found is not None
    assert found[0] == kind
    assert found[1].startswith(f"{type(error).__name__}: ")


def test_other_errors_are_not_connection_failures() -> None:
    assert connection_failure(ValueError("bad")) is None
    assert connection_failure(TimeoutError("read timed out")) is None  # sent, maybe received: not this
