"""The provider's live-caches view (``CtxCachePlugin``) in the real Airflow deployment and in Chromium.

The deployment loads the plugin from a one-line module in its ``AIRFLOW_HOME/plugins`` folder.
Until ``tests/e2e/deployment.py`` writes that module (see ``PLUGIN_SETUP``), these tests skip.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from airflow_provider_ctxcache.emulator.tokens import text_of_tokens
from airflow_provider_ctxcache.hooks import ContextCacheHook
from tests.e2e.deployment import AirflowDeployment
from tests.e2e.test_ui import _screenshot, browser, chromium, page  # noqa: F401  (shared fixtures)

pytestmark = pytest.mark.e2e

MODEL = "gemini-2.5-flash"
TOKENS = 2234
PLUGIN_SETUP = (
    "tests/e2e/deployment.py, AirflowDeployment.start(), after self.dags_folder.mkdir(...): "
    '(self.home / "plugins").mkdir(); (self.home / "plugins" / "ctxcache_plugins.py").write_text('
    '"from airflow_provider_ctxcache.plugins.caches_view import CtxCachePlugin  # noqa: F401\\n")'
)


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


def test_the_plugin_registers_the_app_and_a_nav_entry(with_plugin: AirflowDeployment) -> None:
    plugin = next(p for p in with_plugin.api("GET", "/api/v2/plugins")["plugins"] if p["name"] == "ctxcache")
    assert [app["url_prefix"] for app in plugin["fastapi_apps"]] == ["/ctxcache"]
    assert [view["name"] for view in plugin["external_views"]] == ["Gemini caches"]


def test_caches_view_lists_the_live_cache(with_plugin: AirflowDeployment, live_cache: Any) -> None:
    airflow = with_plugin
    token_text = f"{TOKENS:,}"

    response = _get(airflow, "/ctxcache/caches.json?conn_id=ctxcache_default")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["error"] is None
    row = next(r for r in body["caches"] if r["name"] == live_cache.name)
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
    page.goto(f"{with_plugin.url}/ctxcache/caches?conn_id=ctxcache_default")
    table = page.locator("table#caches")
    table.wait_for()
    row = table.locator("tr", has_text=live_cache.name)
    text = row.inner_text()
    assert live_cache.model in text
    assert f"{TOKENS:,}" in text
    assert live_cache.display_name in text
    _screenshot(page.locator("body"), "caches_view.png")
