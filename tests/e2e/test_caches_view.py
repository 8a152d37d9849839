"""The provider's live-caches view (``CtxCachePlugin``) in the real Airflow deployment and in Chromium.

The deployment loads the plugin from a one-line module in its ``AIRFLOW_HOME/plugins`` folder.
Until ``tests/e2e/deployment.py`` writes that module (see ``PLUGIN_SETUP``), these tests skip.

The view lists caches only where an admin allowed it, and Airflow reads its options when the
api-server starts: this module runs a deployment of its own with ``[ctxcache]
caches_view_enabled = True`` and ``caches_view_allowed_hosts = 127.0.0.1`` (the emulator's host,
which is not allowed implicitly). The view off by default, refused hosts, failed calls, the
timeout, the cap and the reuse of listings are specified in
tests/reliability/test_caches_view_safety.py.
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from airflow_provider_ctxcache.emulator.process import EmulatorProcess
from airflow_provider_ctxcache.emulator.tokens import text_of_tokens
from airflow_provider_ctxcache.hooks import ContextCacheHook
from tests.e2e.deployment import AirflowDeployment
from tests.e2e.test_ui import _screenshot, browser, chromium, page  # noqa: F401  (shared fixtures)
from tests.in_flight import peak_in_flight

pytestmark = pytest.mark.e2e

MODEL = "gemini-2.5-flash"
TOKENS = 2234
PLUGIN_SETUP = (
    "tests/e2e/deployment.py, AirflowDeployment.start(), after self.dags_folder.mkdir(...): "
    '(self.home / "plugins").mkdir(); (self.home / "plugins" / "ctxcache_plugins.py").write_text('
    '"from airflow_provider_ctxcache.plugins.caches_view import CtxCachePlugin  # noqa: F401\\n")'
)

VIEW_OPTIONS = {
    "AIRFLOW__CTXCACHE__CACHES_VIEW_ENABLED": "True",
    "AIRFLOW__CTXCACHE__CACHES_VIEW_ALLOWED_HOSTS": "127.0.0.1",
}


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """A SIGTERM to pytest (a CI timeout) still stops the deployment's process group."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM)
    if main:
        signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)


@pytest.fixture(scope="module")
def airflow_deployment(e2e_emulator: EmulatorProcess) -> Iterator[AirflowDeployment]:
    """The package's deployment, plus the options with which an admin allows the caches view."""
    connection = json.dumps(
        {
            "conn_type": "ctxcache",
            "password": "e2e-test-key",
            "extra": {"backend": "gemini_api", "base_url": e2e_emulator.url, "retry_initial_delay": 0.05},
        }
    )
    with (
        _sigterm_as_interrupt(),
        AirflowDeployment(connections={"ctxcache_default": connection}, extra_env=VIEW_OPTIONS) as deployment,
    ):
        yield deployment


@pytest.fixture
def with_plugin(airflow: AirflowDeployment) -> AirflowDeployment:
    plugins = airflow.api("GET", "/api/v2/plugins")["plugins"]
    if not any(plugin["name"] == "ctxcache" for plugin in plugins):
        pytest.skip(f"the deployment does not load CtxCachePlugin; add to {PLUGIN_SETUP}")
    return airflow


@pytest.fixture
def live_cache(with_plugin: AirflowDeployment, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A cache made on the deployment's emulator through the deployment's own connection."""
    monkeypatch.setenv("AIRFLOW_CONN_CTXCACHE_DEFAULT", with_plugin.env["AIRFLOW_CONN_CTXCACHE_DEFAULT"])
    hook = ContextCacheHook("ctxcache_default")
    cache = hook.create_cache(
        model=MODEL,
        contents=[text_of_tokens(TOKENS)],
        ttl="2h",
        display_name=f"caches-view-{uuid.uuid4().hex[:8]}",
    )
    try:
        yield cache
    finally:
        hook.delete_cache(str(cache.name))
        hook.close()


def _get(airflow: AirflowDeployment, path: str, *, auth: bool = True) -> httpx.Response:
    headers = {"Authorization": f"Bearer {airflow.token}"} if auth else {}
    return httpx.get(f"{airflow.url}{path}", headers=headers, timeout=30.0, trust_env=False)


def _listed(airflow: AirflowDeployment, cache_name: str) -> dict[str, Any]:
    """The view's row for ``cache_name``, once a listing holds it (a listing is reused for 15 s)."""

    def probe() -> dict[str, Any] | None:
        response = _get(airflow, "/ctxcache/caches.json?conn_id=ctxcache_default")
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["error"] is None, body
        return next((row for row in body["caches"] if row["name"] == cache_name), None)

    return airflow.wait_for(f"the caches view to list {cache_name}", probe, timeout=60)


@contextlib.contextmanager
def _connections(airflow: AirflowDeployment, ids: list[str], extra: dict[str, Any]) -> Iterator[list[str]]:
    """Connections created through Airflow's REST API (metadata DB rows), deleted afterwards."""
    for conn_id in ids:
        body = {"connection_id": conn_id, "conn_type": "ctxcache", "password": "e2e-test-key"}
        airflow.api("POST", "/api/v2/connections", {**body, "extra": json.dumps(extra)}, expect=201)
    try:
        yield ids
    finally:
        for conn_id in ids:
            airflow.api("DELETE", f"/api/v2/connections/{conn_id}", expect=(204, 404))


def test_the_plugin_registers_the_app_and_a_nav_entry(with_plugin: AirflowDeployment) -> None:
    plugin = next(p for p in with_plugin.api("GET", "/api/v2/plugins")["plugins"] if p["name"] == "ctxcache")
    assert [app["url_prefix"] for app in plugin["fastapi_apps"]] == ["/ctxcache"]
    assert [view["name"] for view in plugin["external_views"]] == ["Gemini caches"]


def test_caches_view_lists_the_live_cache(with_plugin: AirflowDeployment, live_cache: Any) -> None:
    airflow = with_plugin
    token_text = f"{TOKENS:,}"

    row = _listed(airflow, live_cache.name)
    assert row["model"] == live_cache.model
    assert row["total_token_count"] == TOKENS
    assert row["display_name"] == live_cache.display_name
    assert row["time_left"].startswith(("1h", "2h")), row

    page_html = _get(airflow, "/ctxcache/caches?conn_id=ctxcache_default")
    assert page_html.status_code == 200
    assert "text/html" in page_html.headers["content-type"]
    for text in (live_cache.name, live_cache.display_name, live_cache.model, token_text):
        assert text in page_html.text

    # Airflow's auth guards the view: a bad token is refused, and without credentials it
    # answers as Airflow's own API does (the e2e deployment runs all-admins mode, where the
    # simple auth manager lets anonymous callers in; a real deployment answers 401).
    bad = {"Authorization": "Bearer not-a-jwt"}
    for path in ("/ctxcache/caches", "/ctxcache/caches.json"):
        refused = httpx.get(f"{airflow.url}{path}", headers=bad, timeout=30.0, trust_env=False)
        assert refused.status_code == 403, refused.text
        assert live_cache.name not in refused.text
        own_api = _get(airflow, "/api/v2/connections", auth=False).status_code
        assert _get(airflow, path, auth=False).status_code == own_api


def test_caches_view_shows_errors_without_secrets(with_plugin: AirflowDeployment) -> None:
    response = _get(with_plugin, "/ctxcache/caches?conn_id=no_such_connection")
    assert response.status_code == 200
    assert "Could not list the caches of no_such_connection" in response.text
    assert "no_such_connection" in response.text
    secret = json.loads(with_plugin.env["AIRFLOW_CONN_CTXCACHE_DEFAULT"])["password"]
    assert secret not in response.text


def test_caches_view_in_the_browser(
    page: Any,  # noqa: F811
    with_plugin: AirflowDeployment,
    live_cache: Any,
) -> None:
    _listed(with_plugin, live_cache.name)  # the page shows the same (possibly reused) listing
    page.goto(f"{with_plugin.url}/ctxcache/caches?conn_id=ctxcache_default")
    table = page.locator("table#caches")
    table.wait_for()
    row = table.locator("tr", has_text=live_cache.name)
    text = row.inner_text()
    assert live_cache.model in text
    assert f"{TOKENS:,}" in text
    assert live_cache.display_name in text
    _screenshot(page.locator("body"), "caches_view.png")


def test_a_connection_pointing_at_a_host_not_allowed_gets_no_call(with_plugin: AirflowDeployment) -> None:
    with _connections(with_plugin, ["ctxcache_view_elsewhere"], {"base_url": "http://127.0.0.2:9"}):
        response = _get(with_plugin, "/ctxcache/caches.json?conn_id=ctxcache_view_elsewhere")

    assert response.status_code == 403
    body = response.json()
    assert body["state"] == "refused"
    assert "'127.0.0.2'" in body["error"]
    assert "caches_view_allowed_hosts" in body["error"]


def test_parallel_page_loads_against_a_slow_backend_leave_airflows_api_responsive(
    with_plugin: AirflowDeployment, e2e_emulator: EmulatorProcess
) -> None:
    airflow = with_plugin
    ids = [f"ctxcache_view_par{i}_{uuid.uuid4().hex[:6]}" for i in range(8)]
    loads = [ids[i % len(ids)] for i in range(48)]
    headers = {"Authorization": f"Bearer {airflow.token}"}
    start = threading.Barrier(len(loads), timeout=120)

    def load(conn_id: str) -> int:
        start.wait()
        url = f"{airflow.url}/ctxcache/caches?conn_id={conn_id}"
        return httpx.get(url, headers=headers, timeout=120.0, trust_env=False).status_code

    with _connections(airflow, ids, {"base_url": e2e_emulator.url}):
        e2e_emulator.admin.faults(latency_ms=5000, ops=["list_caches"])
        calls_before = e2e_emulator.admin.state()["counts"]["list_caches"]
        try:
            with peak_in_flight(e2e_emulator) as peak, ThreadPoolExecutor(len(loads)) as pool:
                pending = [pool.submit(load, conn_id) for conn_id in loads]
                airflow.wait_for(
                    "the view's calls to reach the slow backend",
                    lambda: e2e_emulator.admin.state()["in_flight"] > 0 or None,
                    timeout=60,
                    interval=0.05,
                )
                own_api = _get(airflow, "/api/v2/connections?limit=1")
                still_waiting = e2e_emulator.admin.state()["in_flight"]
                statuses = [future.result() for future in pending]
        finally:
            e2e_emulator.admin.faults()
        calls = e2e_emulator.admin.state()["counts"]["list_caches"] - calls_before
        airflow.wait_for(
            "the slow calls to end", lambda: e2e_emulator.admin.state()["in_flight"] == 0 or None, timeout=60
        )

    assert own_api.status_code == 200, own_api.text
    assert still_waiting > 0  # Airflow's own API answered while the view's calls were stalled
    assert set(statuses) <= {200, 503}
    assert statuses.count(503) >= len(loads) - 4
    assert 1 <= calls <= 4
    assert peak.value <= 4
