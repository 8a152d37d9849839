"""Operators run against the emulator through real ``ctxcache`` connections in the environment."""

from __future__ import annotations

import pytest

from airflow_provider_ctxcache.emulator.process import EmulatorProcess
from tests.hooks.conftest import ConnFactory, backend, backend_extra, hook, make_conn  # noqa: F401  (shared fixtures)


@pytest.fixture
def conn_id(backend: str, emulator: EmulatorProcess, make_conn: ConnFactory) -> str:  # noqa: F811
    """A connection id on each backend, for operators' ``ctxcache_conn_id``."""
    return make_conn(f"ctxcache_op_{backend}", **backend_extra(backend, emulator))
