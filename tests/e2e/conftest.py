"""Fixtures for the end-to-end tests: a dedicated emulator and a real Airflow deployment on it.

Both are package-scoped (one deployment for all of ``tests/e2e``) and stopped at the end, also
on failure. A failing e2e test gets the tail of the deployment's log (and of the newest task
logs) appended to its report.
"""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Generator, Iterator
from typing import Any

import pytest

from airflow_provider_ctxcache.emulator.process import EmulatorProcess
from tests.e2e.deployment import AirflowDeployment

DEPLOYMENT_KEY = pytest.StashKey[AirflowDeployment]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "e2e: starts a real Airflow deployment (api-server, scheduler, triggerer); ~3 min"
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    deployment = item.stash.get(DEPLOYMENT_KEY, None)
    if report.failed and deployment is not None and call.when in ("setup", "call"):
        report.sections.append(("Airflow deployment log tail", deployment.log_tail()))


@pytest.fixture(scope="package")
def e2e_emulator() -> Iterator[EmulatorProcess]:
    """An emulator of its own: the deployment's tasks run in other processes and use it freely."""
    with EmulatorProcess() as process:
        yield process


@pytest.fixture(scope="package")
def airflow_deployment(e2e_emulator: EmulatorProcess) -> Iterator[AirflowDeployment]:
    connection = json.dumps(
        {
            "conn_type": "ctxcache",
            "password": "e2e-test-key",
            "extra": {"backend": "gemini_api", "base_url": e2e_emulator.url, "retry_initial_delay": 0.05},
        }
    )
    # A SIGTERM to pytest (a CI timeout) would skip the teardown and orphan the deployment:
    # turn it into KeyboardInterrupt while the deployment runs, so the group is still stopped.
    previous = signal.getsignal(signal.SIGTERM)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        # No skip: if Airflow cannot start from the project's venv, that is a failure.
        with AirflowDeployment(connections={"ctxcache_default": connection}) as deployment:
            yield deployment
    finally:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture
def airflow(airflow_deployment: AirflowDeployment, request: pytest.FixtureRequest) -> AirflowDeployment:
    """The module's deployment, remembered on the test so a failure reports its log tail."""
    request.node.stash[DEPLOYMENT_KEY] = airflow_deployment
    return airflow_deployment
