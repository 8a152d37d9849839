"""Fixtures for the distributed tests: Redis, PostgreSQL, an emulator and a CeleryExecutor deployment.

All package-scoped (one deployment for all of ``tests/distributed``) and stopped at the end, also
on failure; a SIGTERM to pytest (a CI timeout) is turned into KeyboardInterrupt meanwhile so the
teardown still runs. A failing test gets the tails of every component's log in its report. The
figures the tests measure (shard tables, kill figures) are printed at the end of the session,
also under ``pytest -q``.
"""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Generator, Iterator
from typing import Any

import pytest

from airflow_provider_ctxcache.emulator.process import EmulatorProcess
from tests.distributed.deployment import CeleryDeployment
from tests.distributed.services import PostgresServer, RedisServer, ensure_debian_packages

DEPLOYMENT_KEY = pytest.StashKey[CeleryDeployment]()
REPORT: list[str] = []
"""Lines the tests want in the closing note (printed in the terminal summary)."""


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "distributed: starts Redis, PostgreSQL and a CeleryExecutor deployment with two workers; ~3 min",
    )


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if REPORT:
        terminalreporter.write_sep("-", "distributed deployment figures")
        for line in REPORT:
            terminalreporter.write_line(line)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    deployment = item.stash.get(DEPLOYMENT_KEY, None)
    if report.failed and deployment is not None and call.when in ("setup", "call"):
        report.sections.append(("CeleryExecutor deployment log tails", deployment.log_tail()))


@pytest.fixture(scope="package")
def _stop_on_sigterm() -> Iterator[None]:
    previous = signal.getsignal(signal.SIGTERM)
    main = threading.current_thread() is threading.main_thread()
    if main:
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="package")
def debian_packages() -> None:
    """Debian's redis-server and postgresql, apt-get installed when missing (no skip: CI runs as root)."""
    ensure_debian_packages()


@pytest.fixture(scope="package")
def redis_server(_stop_on_sigterm: None, debian_packages: None) -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="package")
def postgres_server(_stop_on_sigterm: None, debian_packages: None) -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server


@pytest.fixture(scope="package")
def dist_emulator(_stop_on_sigterm: None) -> Iterator[EmulatorProcess]:
    """An emulator of its own, in its own process: every worker's tasks call it."""
    with EmulatorProcess() as process:
        yield process


@pytest.fixture(scope="package")
def celery_deployment(
    _stop_on_sigterm: None,
    dist_emulator: EmulatorProcess,
    redis_server: RedisServer,
    postgres_server: PostgresServer,
    gcs_server: str,
) -> Iterator[CeleryDeployment]:
    connection = json.dumps(
        {
            "conn_type": "ctxcache",
            "password": "distributed-test-key",
            "extra": {"backend": "gemini_api", "base_url": dist_emulator.url, "retry_initial_delay": 0.05},
        }
    )
    with CeleryDeployment(
        connections={"ctxcache_default": connection},
        database_url=postgres_server.url,
        broker_url=redis_server.url,
        extra_env={"STORAGE_EMULATOR_HOST": gcs_server},
    ) as deployment:
        yield deployment


@pytest.fixture
def celery(
    celery_deployment: CeleryDeployment, dist_emulator: EmulatorProcess, request: pytest.FixtureRequest
) -> CeleryDeployment:
    """The package's deployment with both workers consuming (one a test killed is started again),
    and its emulator emptied; remembered on the test so a failure reports the log tails."""
    request.node.stash[DEPLOYMENT_KEY] = celery_deployment
    celery_deployment.ensure_workers()
    dist_emulator.admin.reset()
    return celery_deployment
