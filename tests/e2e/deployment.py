"""A real Airflow 3 deployment on 127.0.0.1, started from the project's venv for end-to-end tests.

``airflow standalone`` runs the api-server, scheduler (LocalExecutor), dag-processor and
triggerer on SQLite with the SimpleAuthManager, in a fresh ``AIRFLOW_HOME`` whose DAGs folder
links the shipped ``example_dags/*.py``. Everything runs in one new process group, stopped as a
whole at the end; the combined output goes to ``standalone.log`` in the deployment's folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 20.0
TERMINAL_RUN_STATES = {"success", "failed"}
SETTINGS_MODULE = "ctxcache_e2e_settings"
CLI_SETTINGS_MODULE = "ctxcache_e2e_cli_settings"
# Imported by the CLI through [database] sql_alchemy_connect_args. Airflow runs SQLite in WAL
# mode; a transaction that reads and then writes (``backfill create`` does, in a SAVEPOINT)
# fails at once with "database is locked" if the scheduler committed in between, without
# waiting. BEGIN IMMEDIATE takes the write lock up front, so the CLI waits its turn instead.
CLI_SETTINGS = """\
from sqlalchemy import event
from sqlalchemy.engine import Engine

CONNECT_ARGS = {"timeout": 60.0}


@event.listens_for(Engine, "connect")
def _no_implicit_begin(dbapi_connection, connection_record):
    if type(dbapi_connection).__module__.startswith("sqlite3"):
        dbapi_connection.isolation_level = None


@event.listens_for(Engine, "begin")
def _begin_immediate(connection):
    if connection.dialect.name == "sqlite":
        connection.exec_driver_sql("BEGIN IMMEDIATE")
"""

T = TypeVar("T")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def tail(path: Path, lines: int = 80) -> str:
    """The last ``lines`` lines of a text file, or a note that it does not exist."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        return f"({path}: {error})"
    return "\n".join(text.splitlines()[-lines:])


class DeploymentError(RuntimeError):
    """The deployment did not start, or something waited on it for too long."""


class AirflowDeployment:
    """``with AirflowDeployment(conn_uri_json) as airflow: airflow.api("GET", "/api/v2/dags")``."""

    def __init__(self, *, connections: Mapping[str, str], extra_env: Mapping[str, str] | None = None) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="ctxcache-e2e-"))
        self.home = self.root / "airflow-home"
        self.dags_folder = self.home / "dags"
        self.log_path = self.root / "standalone.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = self._environment(connections, extra_env or {})
        self._process: subprocess.Popen[bytes] | None = None
        self._log: Any = None
        self._client = httpx.Client(base_url=self.url, timeout=30.0, trust_env=False)
        self._token: str | None = None

    def _environment(self, connections: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
        # Start from the caller's environment without any Airflow setting of the test session.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_", "AIRFLOW__"))}
        env.update(
            {
                # standalone spawns `airflow` by name: the venv's bin/ goes first on PATH.
                "PATH": f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
                "PYTHONUNBUFFERED": "1",
                "NO_COLOR": "1",
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__PARALLELISM": "8",
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
                # SQLite allows one writer: wait up to 60 s for the lock (Python's default is 5 s,
                # which the CLI next to a busy scheduler can exceed: "database is locked").
                "PYTHONPATH": os.pathsep.join(filter(None, [str(self.root), env.get("PYTHONPATH")])),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS": f"{SETTINGS_MODULE}.CONNECT_ARGS",
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(self.port),
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__API__BASE_URL": self.url,
                # A non-default API port: tasks must be told where the execution API is.
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
                # One secret for every component, so tokens one signs the others accept.
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
                "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
                # Log servers on free ports: never collide with another Airflow on this machine.
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
                # Short intervals so DAG files are parsed and runs scheduled within seconds.
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "5",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
                "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2",
                **extra,
            }
        )
        for conn_id, value in connections.items():
            env[f"AIRFLOW_CONN_{conn_id.upper()}"] = value
        return env

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> AirflowDeployment:
        self.dags_folder.mkdir(parents=True)
        (self.root / f"{SETTINGS_MODULE}.py").write_text('CONNECT_ARGS = {"timeout": 60.0}\n')
        (self.root / f"{CLI_SETTINGS_MODULE}.py").write_text(CLI_SETTINGS)
        for dag_file in sorted((REPO / "example_dags").glob("*.py")):
            (self.dags_folder / dag_file.name).symlink_to(dag_file)
        self._log = self.log_path.open("wb")
        self._process = subprocess.Popen(
            [str(VENV_BIN / "airflow"), "standalone"],
            cwd=self.root,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # setsid: its own process group, stopped as a whole
        )
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        last = "no answer yet"
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise DeploymentError(
                    f"airflow standalone exited with {self._process.returncode}; its log:\n{self.log_tail()}"
                )
            try:
                health = self._client.get("/api/v2/monitor/health").json()
                states = {
                    name: (part or {}).get("status")
                    for name, part in health.items()
                    if name in ("metadatabase", "scheduler", "triggerer", "dag_processor")
                }
                last = json.dumps(states)
                if states and all(state == "healthy" for state in states.values()) and len(states) == 4:
                    return
            except (httpx.HTTPError, ValueError) as error:
                last = f"{type(error).__name__}: {error}"
            time.sleep(1.0)
        raise DeploymentError(
            f"the deployment was not healthy after {START_TIMEOUT_S:.0f}s (last: {last}); its log:\n"
            f"{self.log_tail()}"
        )

    def stop(self) -> None:
        """SIGTERM the whole process group, SIGKILL what is left after a grace period."""
        process, self._process = self._process, None
        if process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(STOP_TIMEOUT_S)
            # Children (api-server workers, executors, task runners) may outlive the leader.
            deadline = time.monotonic() + 5.0
            while _group_alive(process.pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(5.0)
        if self._log is not None:
            self._log.close()
            self._log = None
        self._client.close()

    def __enter__(self) -> AirflowDeployment:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- diagnostics -----------------------------------------------------------------------

    def log_tail(self, lines: int = 80) -> str:
        """The end of the standalone log and of the newest task logs."""
        parts = [f"--- {self.log_path} (last {lines} lines) ---", tail(self.log_path, lines)]
        return "\n".join([*parts, *self.task_log_tails(3)])

    def task_log_tails(self, newest: int) -> list[str]:
        """Headed tails of the ``newest`` task logs (the dag-processor's left out)."""
        task_logs = sorted(
            (p for p in (self.home / "logs").rglob("*.log") if "dag_processor" not in p.parts),
            key=lambda p: p.stat().st_mtime,
        )
        parts: list[str] = []
        for path in task_logs[-newest:]:
            parts += [f"--- {path} (last 25 events) ---", _compact_task_log(tail(path, 25))]
        return parts

    # -- REST API and CLI ------------------------------------------------------------------

    @property
    def token(self) -> str:
        if self._token is None:
            response = self._client.post("/auth/token", json={"username": "admin", "password": "admin"})
            if response.status_code >= 400:  # all-admins mode also hands one out without credentials
                response = self._client.get("/auth/token")
            response.raise_for_status()
            self._token = str(response.json()["access_token"])
        return self._token

    def api(self, method: str, path: str, body: Any = None, *, expect: int | tuple[int, ...] = 200) -> Any:
        """One REST call with a bearer token; fails with the response text on another status."""
        response = self._client.request(
            method, path, json=body, headers={"Authorization": f"Bearer {self.token}"}
        )
        allowed = (expect,) if isinstance(expect, int) else expect
        if response.status_code not in allowed:
            raise AssertionError(f"{method} {path} -> {response.status_code}: {response.text[:2000]}")
        return response.json() if response.content else None

    def cli(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """``airflow ARGS`` with the deployment's home and settings; fails with its output."""
        env = {
            **self.env,
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS": f"{CLI_SETTINGS_MODULE}.CONNECT_ARGS",
        }
        result = subprocess.run(
            [str(VENV_BIN / "airflow"), *args],
            env=env,
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise AssertionError(
                f"airflow {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
            )
        return result

    def wait_for(
        self, what: str, probe: Callable[[], T | None], *, timeout: float, interval: float = 1.0
    ) -> T:
        """Call ``probe`` until it returns something other than None; fail with the log tail."""
        deadline = time.monotonic() + timeout
        while True:
            value = probe()
            if value is not None:
                return value
            if time.monotonic() > deadline:
                raise DeploymentError(f"timed out after {timeout:.0f}s waiting for {what}")
            time.sleep(interval)

    def wait_for_dag(self, dag_id: str, timeout: float = 90.0) -> dict[str, Any]:
        """The DAG's record once the dag-processor has parsed it (import errors fail at once)."""

        def probe() -> dict[str, Any] | None:
            errors = self.api("GET", "/api/v2/importErrors")["import_errors"]
            if errors:
                raise AssertionError(f"import errors in the DAGs folder: {errors}")
            response = self._client.get(
                f"/api/v2/dags/{dag_id}", headers={"Authorization": f"Bearer {self.token}"}
            )
            return response.json() if response.status_code == 200 else None

        return self.wait_for(f"DAG {dag_id} to be parsed", probe, timeout=timeout)

    def unpause(self, dag_id: str) -> None:
        self.api("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})

    def trigger(
        self, dag_id: str, conf: Mapping[str, Any] | None = None, *, logical_date: str | None = None
    ) -> str:
        """A manual run, as the UI's trigger form makes it; returns its run id."""
        body = {"logical_date": logical_date, "conf": dict(conf or {})}
        run = self.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", body)
        return str(run["dag_run_id"])

    def run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
        return result

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        """``{task_id or task_id[i]: state}`` of one run."""
        tis = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=100")
        return {
            (ti["task_id"] if ti["map_index"] < 0 else f"{ti['task_id']}[{ti['map_index']}]"): ti["state"]
            for ti in tis["task_instances"]
        }

    def wait_for_run(
        self,
        dag_id: str,
        run_id: str,
        *,
        timeout: float = 150.0,
        on_poll: Callable[[dict[str, str | None]], None] | None = None,
        interval: float = 1.0,
    ) -> dict[str, Any]:
        """The run once it succeeded or failed; ``on_poll`` sees the task states at every poll."""

        def probe() -> dict[str, Any] | None:
            if on_poll is not None:
                on_poll(self.task_states(dag_id, run_id))
            run = self.run(dag_id, run_id)
            return run if run["state"] in TERMINAL_RUN_STATES else None

        try:
            return self.wait_for(f"run {run_id} of {dag_id}", probe, timeout=timeout, interval=interval)
        except DeploymentError as error:
            raise DeploymentError(f"{error}; task states: {self.task_states(dag_id, run_id)}") from None


def _compact_task_log(text: str) -> str:
    """Task logs are JSON lines: keep the time, level and event of each, cut long ones."""
    lines = []
    for line in text.splitlines():
        try:
            event = json.loads(line)
            line = f"{event.get('timestamp', '')[11:23]} {event.get('level', '')} {event.get('event', '')}"
            if event.get("error_detail"):
                line += f" {json.dumps(event['error_detail'])[:2000]}"
        except (ValueError, AttributeError):
            pass
        lines.append(line if len(line) <= 2500 else line[:2500] + " ...")
    return "\n".join(lines)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
