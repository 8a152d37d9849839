"""The provider's forms in the real Airflow UI, in headless Chromium; screenshots as artifacts.

Debian's ``/usr/bin/chromium`` is driven by the ``playwright`` Python package (no browser
download). If Chromium is missing, the test installs it with apt-get when running as root; it
skips, with the reason, only when the browser cannot be installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.deployment import REPO, AirflowDeployment

pytestmark = pytest.mark.e2e

SCREENSHOTS = REPO / "artifacts" / "screenshots"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _install_chromium() -> str:
    """What apt-get said, when it could not install Chromium."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("apt-get") is None:
        return "not root, or no apt-get"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    output = ""
    for command in (["apt-get", "install", "-y", "-q", "chromium"], ["apt-get", "update", "-q"]):
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900, check=False)
        output = (result.stdout + result.stderr)[-2000:]
        if command[1] == "install" and result.returncode == 0:
            return ""
    result = subprocess.run(
        ["apt-get", "install", "-y", "-q", "chromium"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    return "" if result.returncode == 0 else (output + result.stdout + result.stderr)[-2000:]


@pytest.fixture(scope="module")
def chromium() -> str:
    path = _find_chromium()
    if path is None:
        problem = _install_chromium()
        path = _find_chromium()
        if path is None:
            pytest.skip(f"Chromium is not installed and could not be installed: {problem}")
    return path


@pytest.fixture(scope="module")
def browser(chromium: str) -> Iterator[Any]:
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="the playwright package is not installed (pip install playwright)"
    )
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Any, airflow: AirflowDeployment) -> Iterator[Any]:
    """A logged-in page: all-admins mode hands out a session cookie at /auth/token/login."""
    context = browser.new_context(viewport={"width": 1400, "height": 2200})
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto(f"{airflow.url}/auth/token/login?next={airflow.url}/")
    page.wait_for_load_state("networkidle")
    yield page
    context.close()


def _screenshot(locator: Any, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / name
    locator.screenshot(path=str(path))
    assert path.stat().st_size > 10_000, f"{path} looks empty"
    return path


def test_connection_form_shows_the_ctxcache_fields(page: Any, airflow: AirflowDeployment) -> None:
    page.goto(f"{airflow.url}/connections")
    page.get_by_role("button", name="Add Connection").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Connection ID").fill("my_gemini_cache")
    connection_type = dialog.get_by_label("Connection Type")
    connection_type.click()
    connection_type.press_sequentially("ctxcache")
    page.get_by_role("option", name="Gemini Context Cache").click()
    dialog.get_by_text("Extra Fields", exact=True).click()
    dialog.get_by_label("Timeout (seconds)").wait_for()

    labels = {label.split("\n")[0].strip() for label in dialog.locator("label").all_inner_texts()}
    expected = {
        "API key (Gemini Developer API)",
        "Backend",
        "Project",
        "Location",
        "Base URL",
        "API version",
        "Service account JSON",
        "Key file path",
        "Staging URI",
        "Retry attempts",
        "Timeout (seconds)",
    }
    assert expected <= labels, f"missing: {expected - labels}"
    assert not {"Host", "Schema", "Login", "Port"} & labels, labels
    placeholder = dialog.get_by_label("API key (Gemini Developer API)").get_attribute("placeholder")
    assert placeholder is not None
    assert "emulator" in placeholder
    text = dialog.inner_text()
    assert "gemini_api (API key) or vertex_ai" in text
    _screenshot(dialog, "connection_form_ctxcache.png")


def test_trigger_form_of_fanout_shows_its_params(page: Any, airflow: AirflowDeployment) -> None:
    airflow.wait_for_dag("ctxcache_fanout")
    page.goto(f"{airflow.url}/dags/ctxcache_fanout")
    page.get_by_role("button", name="Trigger").first.click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("Run Parameters").wait_for()
    page.wait_for_load_state("networkidle")

    text = dialog.inner_text()
    for param, description in {
        "model": "Gemini model that holds the cache.",
        "ttl": "How long the cache may live",
        "prompts": "Questions (strings) or batch-style requests",
        "chunk_size": "Questions per mapped task instance.",
    }.items():
        assert param in text, f"param {param} is not in the trigger form"
        assert description in text
    values = [field.input_value() for field in dialog.locator("input, textarea").all()]
    assert "gemini-2.5-flash" in values
    assert any("How many days does the Customer have to pay" in value for value in values), values
    _screenshot(dialog, "trigger_form_ctxcache_fanout.png")
