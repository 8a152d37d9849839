"""Shared fixtures: one real emulator process per test session, reset before each test.

Also a guard: any socket connection to an address outside 127.0.0.0/8 or ::1 fails the test,
so nothing in the suite can reach the internet or a cloud metadata server by accident.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_ctxcache.emulator.process import EmulatorProcess

# The SDK and google-auth read these; a developer's own shell must not leak into tests.
for _var in (
    "GOOGLE_API_KEY",
    "GEMINI_API_KEY",
    "GOOGLE_GENAI_USE_VERTEXAI",
    "GOOGLE_CLOUD_PROJECT",
    "GOOGLE_CLOUD_LOCATION",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "GOOGLE_GEMINI_BASE_URL",
    "GOOGLE_VERTEX_BASE_URL",
    "STORAGE_EMULATOR_HOST",
    "AIRFLOW__CTXCACHE__ALLOWED_ROOTS",
):
    os.environ.pop(_var, None)
os.environ.setdefault("NO_GCE_CHECK", "True")
# Airflow reads its config when first imported (during collection), so its home, database and
# DAGs folder are fixed here: a fresh SQLite home per session, never the developer's ~/airflow.
# The DAGs folder holds the shipped example DAGs and the test-only DAGs, linked side by side.
REPO = Path(__file__).resolve().parent.parent
AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="ctxcache-airflow-home-"))
DAGS_FOLDER = AIRFLOW_HOME / "dags"
DAGS_FOLDER.mkdir()
_DAG_FILES = [*(REPO / "example_dags").glob("*.py"), *(REPO / "tests" / "dags" / "dag_files").glob("*.py")]
for _dag_file in sorted(_DAG_FILES):
    (DAGS_FOLDER / _dag_file.name).symlink_to(_dag_file)
os.environ["AIRFLOW_HOME"] = str(AIRFLOW_HOME)
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(DAGS_FOLDER)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _is_local(address: Any) -> bool:
    if not isinstance(address, tuple):  # AF_UNIX paths
        return True
    host = address[0]
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _guarded_connect(self: socket.socket, address: Any) -> None:
    if not _is_local(address):
        raise OSError(f"test tried to reach {address!r}: only loopback is allowed in this suite")
    _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: Any) -> int:
    if not _is_local(address):
        raise OSError(f"test tried to reach {address!r}: only loopback is allowed in this suite")
    return _real_connect_ex(self, address)


socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]


@pytest.fixture(scope="session")
def emulator_process() -> Iterator[EmulatorProcess]:
    with EmulatorProcess() as process:
        yield process


@pytest.fixture
def emulator(emulator_process: EmulatorProcess) -> EmulatorProcess:
    """The session's emulator, emptied: no caches, no counts, no faults, clock at real time."""
    emulator_process.admin.reset()
    return emulator_process


@pytest.fixture(scope="session")
def gcs_server() -> Iterator[str]:
    """A real Cloud Storage emulator for the session (in memory, 127.0.0.1); yields its URL."""
    from tests.gcs import GcsEmulator

    with GcsEmulator() as server:
        yield server.url


@pytest.fixture
def gcs_bucket(gcs_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh, empty bucket on the emulator, with ``STORAGE_EMULATOR_HOST`` pointing at it."""
    import uuid

    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_server)
    name = f"test-{uuid.uuid4().hex[:16]}"
    storage.Client(project="test", credentials=AnonymousCredentials()).create_bucket(name)
    return name
