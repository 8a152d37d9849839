"""The caches view is a connection test an admin must allow, bounded so it cannot stall the api-server.

The view's own functions run here in-process with real connections (``AIRFLOW_CONN_*``), Airflow's
real config (``AIRFLOW__...`` variables, read on every page load) and real HTTP: the session's
emulator, and a recording endpoint on 127.0.0.2 that stands for a host the connection's editor
chose (it records every request with its headers and answers what the test tells it).
Airflow's auth in front of the view is covered by tests/e2e/test_caches_view.py.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from airflow_provider_ctxcache.emulator.process import EmulatorProcess
from airflow_provider_ctxcache.hooks import ContextCacheHook
from airflow_provider_ctxcache.hooks.backend import backend_for
from airflow_provider_ctxcache.hooks.settings import ConnectionSettings, is_google_host
from airflow_provider_ctxcache.plugins.caches_view import (
    caches_json,
    caches_page,
    clear_listings,
    view_policy,
)
from tests.hooks.conftest import API_KEY, ConnFactory, backend_extra
from tests.in_flight import peak_in_flight
from tests.reliability.conftest import MODEL, new_cache
from tests.reliability.test_secrets import service_account

OPTION_VARS = (
    "AIRFLOW__CORE__TEST_CONNECTION",
    "AIRFLOW__CTXCACHE__CACHES_VIEW_ENABLED",
    "AIRFLOW__CTXCACHE__CACHES_VIEW_ALLOWED_HOSTS",
    "AIRFLOW__CTXCACHE__CACHES_VIEW_TIMEOUT",
    "AIRFLOW__CTXCACHE__CACHES_VIEW_MAX_CONCURRENT",
    "AIRFLOW__CTXCACHE__CACHES_VIEW_CACHE_SECONDS",
)
ENABLED = {"caches_view_enabled": "True", "caches_view_allowed_hosts": "127.0.0.1"}
BODY_MARKER = "BODY-MARKER-from-the-chosen-host"

Options = Callable[..., None]


class RecordingEndpoint:
    """A real HTTP server on 127.0.0.2: records each request (method, path, headers), answers one reply."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.status = 200
        self.body = b'{"cachedContents": []}'
        self.content_type = "application/json"
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                outer.requests.append(
                    {"method": self.command, "path": self.path, "headers": dict(self.headers.items())}
                )
                self.send_response(outer.status)
                self.send_header("Content-Type", outer.content_type)
                self.send_header("Content-Length", str(len(outer.body)))
                self.end_headers()
                self.wfile.write(outer.body)

            do_GET = do_POST = _answer

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.2", 0), Handler)
        self.url = f"http://127.0.0.2:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint() -> Iterator[RecordingEndpoint]:
    server = RecordingEndpoint()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def view_options(monkeypatch: pytest.MonkeyPatch) -> Iterator[Options]:
    """Sets ``[ctxcache] caches_view_*`` options as an admin would (env vars); none are set at first."""
    for var in OPTION_VARS:
        monkeypatch.delenv(var, raising=False)
    clear_listings()

    def set_options(**options: str) -> None:
        for name, value in options.items():
            section = "CORE" if name == "test_connection" else "CTXCACHE"
            monkeypatch.setenv(f"AIRFLOW__{section}__{name.upper()}", value)

    yield set_options
    clear_listings()


@pytest.fixture
def slow_emulator(emulator: EmulatorProcess) -> Iterator[EmulatorProcess]:
    """The emulator, for tests that inject latency: afterwards waits until no call is left in it."""
    yield emulator
    emulator.admin.faults()
    wait_for("the emulator to finish its slow calls", lambda: emulator.admin.state()["in_flight"] == 0)


def wait_for(what: str, condition: Callable[[], bool], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


def page(conn_id: str) -> tuple[int, str]:
    response = caches_page(None, conn_id)
    return response.status_code, bytes(response.body).decode()


def listing(conn_id: str) -> tuple[int, dict[str, Any]]:
    response = caches_json(None, conn_id)
    return response.status_code, json.loads(bytes(response.body))


def list_calls(emulator: EmulatorProcess) -> int:
    return int(emulator.admin.state()["counts"]["list_caches"])


# -- [core] test_connection / [ctxcache] caches_view_enabled ----------------------------------------


@pytest.mark.parametrize("core_test_connection", [None, "Disabled", "Hidden"])
def test_the_view_calls_nothing_until_an_admin_enables_it(
    emulator: EmulatorProcess,
    make_conn: ConnFactory,
    view_options: Options,
    core_test_connection: str | None,
) -> None:
    if core_test_connection is not None:
        view_options(test_connection=core_test_connection)
    view_options(caches_view_allowed_hosts="127.0.0.1")  # allowed hosts alone enable nothing
    conn_id = make_conn("ctxcache_view_off", **backend_extra("gemini_api", emulator))

    status, text = page(conn_id)

    assert status == 403
    assert "[core] test_connection = Enabled" in text
    assert "[ctxcache] caches_view_enabled = True" in text
    assert "Nothing was called" in text
    assert emulator.admin.requests() == []


@pytest.mark.parametrize(
    "switch",
    [{"test_connection": "Enabled"}, {"caches_view_enabled": "True"}],
    ids=["core-test-connection-enabled", "provider-option"],
)
def test_an_admin_turns_the_view_on_with_either_setting(
    emulator: EmulatorProcess, make_conn: ConnFactory, view_options: Options, switch: dict[str, str]
) -> None:
    view_options(caches_view_allowed_hosts="127.0.0.1", **switch)
    conn_id = make_conn("ctxcache_view_on", **backend_extra("gemini_api", emulator))
    name = new_cache(conn_id)

    status, body = listing(conn_id)

    assert status == 200
    assert (body["state"], body["error"]) == ("ok", None)
    assert [row["name"] for row in body["caches"]] == [name]
    assert body["caches"][0]["model"].endswith(MODEL)


# -- where credentials may go -----------------------------------------------------------------


def test_the_emulators_loopback_host_is_not_allowed_implicitly(
    emulator: EmulatorProcess, make_conn: ConnFactory, view_options: Options
) -> None:
    view_options(caches_view_enabled="True")
    conn_id = make_conn("ctxcache_view_loopback", **backend_extra("gemini_api", emulator))

    status, text = page(conn_id)

    assert status == 403
    assert "Not called" in text
    assert "&#x27;127.0.0.1&#x27;" in text
    assert "caches_view_allowed_hosts" in text
    assert emulator.admin.requests() == []


def test_a_host_the_admin_did_not_allow_gets_no_request_and_no_key(
    endpoint: RecordingEndpoint, make_conn: ConnFactory, view_options: Options
) -> None:
    view_options(**ENABLED)  # 127.0.0.1 is allowed; the connection points at 127.0.0.2
    conn_id = make_conn("ctxcache_view_elsewhere", base_url=endpoint.url)

    status, text = page(conn_id)

    assert status == 403
    assert "&#x27;127.0.0.2&#x27;" in text
    assert endpoint.requests == []


def test_a_service_account_token_uri_the_admin_did_not_allow_gets_nothing(
    emulator: EmulatorProcess, endpoint: RecordingEndpoint, make_conn: ConnFactory, view_options: Options
) -> None:
    view_options(**ENABLED)  # the endpoint (the emulator) is allowed, the token_uri host is not
    info = {**service_account(emulator), "token_uri": f"{endpoint.url}/token"}
    conn_id = make_conn(
        "ctxcache_view_token_uri",
        password=None,
        **{**backend_extra("vertex_ai", emulator), "service_account_json": json.dumps(info)},
    )

    status, text = page(conn_id)

    assert status == 403
    assert "&#x27;127.0.0.2&#x27;" in text
    assert endpoint.requests == []
    assert emulator.admin.requests() == []
    assert emulator.admin.state()["tokens_issued"] == 0


def test_a_host_the_admin_allowed_is_called_with_the_key(
    endpoint: RecordingEndpoint, make_conn: ConnFactory, view_options: Options
) -> None:
    view_options(caches_view_enabled="True", caches_view_allowed_hosts="gemini-proxy.internal, 127.0.0.2")
    conn_id = make_conn("ctxcache_view_allowed", base_url=endpoint.url)

    status, text = page(conn_id)

    assert status == 200, text
    assert "No live caches" in text
    assert len(endpoint.requests) == 1
    assert "cachedContents" in endpoint.requests[0]["path"]
    headers = {k.lower(): v for k, v in endpoint.requests[0]["headers"].items()}
    assert headers["x-goog-api-key"] == API_KEY


def test_only_googles_endpoints_are_trusted_without_the_allow_list() -> None:
    developer = backend_for(ConnectionSettings(conn_id="d", backend="gemini_api", api_key="k" * 39))
    vertex = backend_for(
        ConnectionSettings(conn_id="v", backend="vertex_ai", project="p", location="europe-west4")
    )
    assert developer.credential_hosts() == ["generativelanguage.googleapis.com"]
    assert vertex.credential_hosts() == ["europe-west4-aiplatform.googleapis.com"]
    assert all(is_google_host(h) for h in (*developer.credential_hosts(), *vertex.credential_hosts()))
    for lookalike in ("googleapis.com.attacker.net", "evilgoogleapis.com", "127.0.0.1", "", "localhost"):
        assert not is_google_host(lookalike), lookalike


@pytest.mark.parametrize(
    ("status", "body", "content_type"),
    [
        (
            500,
            json.dumps({"error": {"code": 500, "message": BODY_MARKER, "status": "INTERNAL"}}),
            "application/json",
        ),
        (403, json.dumps({"error": {"code": 403, "message": BODY_MARKER}}), "application/json"),
        (502, f"<html><script>alert(1)</script>{BODY_MARKER}</html>", "text/html"),
    ],
    ids=["json-500", "json-403", "html-502"],
)
def test_a_failed_call_shows_its_class_and_http_status_never_its_body(
    endpoint: RecordingEndpoint,
    make_conn: ConnFactory,
    view_options: Options,
    status: int,
    body: str,
    content_type: str,
) -> None:
    view_options(caches_view_enabled="True", caches_view_allowed_hosts="127.0.0.2")
    endpoint.status, endpoint.body, endpoint.content_type = status, body.encode(), content_type
    conn_id = make_conn("ctxcache_view_failing", base_url=endpoint.url)

    page_status, text = page(conn_id)
    clear_listings()
    json_status, answer = listing(conn_id)

    assert len(endpoint.requests) == 2  # the call was made, twice
    assert (page_status, json_status) == (200, 200)
    assert f"(HTTP {status})" in text
    assert answer["error"].endswith(f"(HTTP {status})")
    assert answer["state"] == "error"
    for shown in (text, json.dumps(answer)):
        assert BODY_MARKER not in shown
        assert "alert(1)" not in shown


# -- timeout, concurrency cap, reuse ------------------------------------------------------------


def test_a_slow_backend_meets_the_views_own_timeout_not_the_connections(
    slow_emulator: EmulatorProcess, make_conn: ConnFactory, view_options: Options
) -> None:
    view_options(**ENABLED, caches_view_timeout="1")
    conn_id = make_conn("ctxcache_view_slow", **backend_extra("gemini_api", slow_emulator))
    assert ContextCacheHook(conn_id).settings.timeout_seconds == 300  # the connection's, for tasks
    slow_emulator.admin.faults(latency_ms=8000, ops=["list_caches"])

    status, body = listing(conn_id)

    assert status == 200
    assert body["error"] == "ReadTimeout (no answer within 1 s)"
    assert slow_emulator.admin.state()["in_flight"] == 1  # the backend still holds the call: not waited for


def test_parallel_page_loads_beyond_the_cap_are_answered_busy_at_once(
    slow_emulator: EmulatorProcess, make_conn: ConnFactory, view_options: Options
) -> None:
    view_options(**ENABLED, caches_view_timeout="60")
    conns = [
        make_conn(f"ctxcache_view_par{i}", **backend_extra("gemini_api", slow_emulator)) for i in range(8)
    ]
    slow_emulator.admin.faults(latency_ms=3000, ops=["list_caches"])
    loads = [conns[i % len(conns)] for i in range(48)]
    start = threading.Barrier(len(loads), timeout=120)

    def load(conn_id: str) -> tuple[int, float]:
        start.wait()
        status, _ = page(conn_id)
        return status, time.monotonic()

    with peak_in_flight(slow_emulator) as peak, ThreadPoolExecutor(len(loads)) as pool:
        answers = list(pool.map(load, loads))

    listed = [at for status, at in answers if status == 200]
    busy = [at for status, at in answers if status == 503]
    assert len(listed) + len(busy) == len(loads)
    assert 1 <= list_calls(slow_emulator) <= 4
    assert peak.value <= 4
    assert len(busy) >= len(loads) - 4
    assert max(busy) < min(listed)  # every busy answer came before the backend answered anyone


def test_parallel_loads_of_one_connection_make_one_call(
    slow_emulator: EmulatorProcess, make_conn: ConnFactory, view_options: Options
) -> None:
    view_options(**ENABLED, caches_view_timeout="60")
    conn_id = make_conn("ctxcache_view_one", **backend_extra("gemini_api", slow_emulator))
    slow_emulator.admin.faults(latency_ms=2000, ops=["list_caches"])
    start = threading.Barrier(10, timeout=120)

    def load(_: int) -> int:
        start.wait()
        return page(conn_id)[0]

    with ThreadPoolExecutor(10) as pool:
        statuses = sorted(pool.map(load, range(10)))

    assert statuses == [200] + [503] * 9
    assert list_calls(slow_emulator) == 1


def test_a_busy_answer_says_to_try_again(
    slow_emulator: EmulatorProcess, make_conn: ConnFactory, view_options: Options
) -> None:
    view_options(**ENABLED, caches_view_timeout="60", caches_view_max_concurrent="1")
    first, second = (
        make_conn(name, **backend_extra("gemini_api", slow_emulator))
        for name in ("ctxcache_view_a", "ctxcache_view_b")
    )
    slow_emulator.admin.faults(latency_ms=3000, ops=["list_caches"])
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(page, first)
        wait_for(
            "the first listing to reach the backend", lambda: slow_emulator.admin.state()["in_flight"] == 1
        )
        response = caches_page(None, second)
        assert running.result()[0] == 200

    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert "Try again in a few seconds" in bytes(response.body).decode()


def test_a_second_load_within_the_cache_time_reuses_the_listing(
    emulator: EmulatorProcess, make_conn: ConnFactory, view_options: Options
) -> None:
    view_options(**ENABLED)
    conn_id = make_conn("ctxcache_view_reuse", **backend_extra("gemini_api", emulator))

    _, first = listing(conn_id)
    new_cache(conn_id)
    _, second = listing(conn_id)

    assert list_calls(emulator) == 1
    assert second == first  # same rows, same listed_at: no call was made
    assert second["caches"] == []


def test_a_listing_is_fetched_again_once_its_cache_time_passed(
    emulator: EmulatorProcess, make_conn: ConnFactory, view_options: Options
) -> None:
    view_options(**ENABLED, caches_view_cache_seconds="0.5")
    conn_id = make_conn("ctxcache_view_expiry", **backend_extra("gemini_api", emulator))
    listing(conn_id)
    name = new_cache(conn_id)

    wait_for("a fresh listing", lambda: [r["name"] for r in listing(conn_id)[1]["caches"]] == [name])

    assert list_calls(emulator) == 2


def test_the_view_options_are_declared_off_and_bounded_by_default(view_options: Options) -> None:
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    manager.initialize_providers_configuration()
    declared = dict(manager.provider_configs)["airflow-provider-ctxcache"]["ctxcache"]["options"]
    defaults = {
        name: option["default"] for name, option in declared.items() if name.startswith("caches_view")
    }

    assert defaults == {
        "caches_view_enabled": "False",
        "caches_view_allowed_hosts": "",
        "caches_view_timeout": "5.0",
        "caches_view_max_concurrent": "4",
        "caches_view_cache_seconds": "15.0",
    }
    policy = view_policy()
    assert (policy.enabled, policy.allowed_hosts) == (False, frozenset())
    assert (policy.timeout_seconds, policy.max_concurrent, policy.cache_seconds) == (5.0, 4, 15.0)
