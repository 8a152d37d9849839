"""A real CeleryExecutor deployment of Airflow 3 on 127.0.0.1, for the distributed tests.

api-server, scheduler, dag-processor, triggerer and two Celery workers, each ``airflow``
command a process of its own in its own session (``setsid``), its output in
``<root>/<component>.log``. PostgreSQL is the metadata database and Celery's result backend,
Redis the broker (see :mod:`tests.distributed.services`). The REST helpers (token, trigger, task
states, waiting) come from :class:`tests.e2e.deployment.AirflowDeployment`.

Each worker stands for a machine of its own: its own Celery hostname and Airflow hostname (what
the task instance's ``hostname`` shows, through ``[core] hostname_callable``), and its own
private folder (``disk``) as its ``[ctxcache] allowed_roots`` and its ``TMPDIR``. Task logs go
to one log folder that the api-server reads (workers skip serving logs).

A worker's task runners put themselves in process groups of their own; killing a worker like a
machine dies therefore kills its whole session (every process it started), see
:func:`~tests.distributed.services.kill_session`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

from tests.distributed.services import (
    exit_status,
    kill_session,
    session_members,
    spawn,
    stop_session,
    stop_sessions,
)
from tests.e2e.deployment import (
    CLI_SETTINGS_MODULE,
    REPO,
    SETTINGS_MODULE,
    VENV_BIN,
    AirflowDeployment,
    DeploymentError,
    tail,
)

WORKERS = ("worker-a", "worker-b")
WORKER_CONCURRENCY = 2  # task slots per worker
HOSTNAME_MODULE = "ctxcache_dist_hostname"
# Imported by every component through [core] hostname_callable: a worker reports its own name,
# the others this machine's name (gethostname, not getfqdn: no DNS lookup leaves 127.0.0.1).
HOSTNAME_CALLABLE = """\
import os
import socket


def worker_hostname() -> str:
    return os.environ.get("CTXCACHE_WORKER_NAME") or socket.gethostname()
"""
# Task instances whose supervisor stopped heartbeating (a killed worker) are failed after this
# many seconds instead of 300; a live supervisor heartbeats every MIN_HEARTBEAT_INTERVAL_S.
TASK_HEARTBEAT_TIMEOUT_S = 15
MIN_HEARTBEAT_INTERVAL_S = 2
START_TIMEOUT_S = 240.0
STOP_GRACE_S = 15.0


@dataclass
class Component:
    """One ``airflow ...`` process in its own session."""

    name: str
    command: list[str]
    env: dict[str, str]
    cwd: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    _log: IO[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        self._log = self.log_path.open("ab")
        self._log.write(f"\n===== start {self.starts + 1}: {' '.join(self.command)}\n".encode())
        self._log.flush()
        # Its own session and process group, stopped as a whole.
        self.process = spawn(
            self.command,
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.starts += 1

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def alive(self) -> bool:
        return self.process is not None and exit_status(self.process) is None

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            stop_session(process, grace=STOP_GRACE_S)
        self._close_log()

    def kill(self) -> list[int]:
        """SIGKILL every process of its session at once, as if the machine died."""
        process, self.process = self.process, None
        if process is None:
            return []
        killed = kill_session(process.pid)
        survivors = session_members(process.pid)  # before reaping the leader: its id is still its own
        process.wait(10.0)
        self._close_log()
        if survivors:
            raise DeploymentError(f"{self.name}: processes {survivors} survived SIGKILL")
        return killed

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""


@dataclass
class Worker(Component):
    """A Celery worker standing for a machine: its hostname and its private folder."""

    hostname: str = ""
    disk: Path = Path()

    @property
    def celery_node(self) -> str:
        return f"celery@{self.hostname}"

    def ready(self) -> bool:
        """Whether this start of the worker has said it consumes tasks."""
        text = self.log_text().rsplit("===== start ", 1)[-1]
        return f"{self.celery_node} ready." in text


class CeleryDeployment(AirflowDeployment):
    """``with CeleryDeployment(connections=..., database_url=..., broker_url=...) as airflow: ...``."""

    def __init__(
        self,
        *,
        connections: Mapping[str, str],
        database_url: str,
        broker_url: str,
        extra_env: Mapping[str, str] | None = None,
        workers: tuple[str, ...] = WORKERS,
    ) -> None:
        self.database_url = database_url
        self.broker_url = broker_url
        env = {
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database_url,
            "AIRFLOW__CELERY__BROKER_URL": broker_url,
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{database_url}",
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(WORKER_CONCURRENCY),
            # One task per free slot: a worker never holds a task it is not running.
            "AIRFLOW__CELERY__WORKER_PREFETCH_MULTIPLIER": "1",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(TASK_HEARTBEAT_TIMEOUT_S),
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
            "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": str(MIN_HEARTBEAT_INTERVAL_S),
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": f"{HOSTNAME_MODULE}.worker_hostname",
            **(extra_env or {}),
        }
        super().__init__(connections=connections, extra_env=env)
        self.log_path = self.root / "scheduler.log"  # the parent's log_tail() starts with it
        self.components: dict[str, Component] = {}
        self.workers: dict[str, Worker] = {}
        for name in ("api-server", "scheduler", "dag-processor", "triggerer"):
            self.components[name] = Component(
                name=name,
                command=[str(VENV_BIN / "airflow"), name],
                env=self.env,
                cwd=self.root,
                log_path=self.root / f"{name}.log",
            )
        for name in workers:
            disk = self.root / "machines" / name
            env = {
                **self.env,
                "CTXCACHE_WORKER_NAME": name,
                # This machine's own disk: the only local folder its tasks may use, and its temp.
                "AIRFLOW__CTXCACHE__ALLOWED_ROOTS": str(disk),
                "TMPDIR": str(disk / "tmp"),
            }
            self.workers[name] = Worker(
                name=name,
                command=[
                    *(str(VENV_BIN / "airflow"), "celery", "worker"),
                    *("--concurrency", str(WORKER_CONCURRENCY), "--celery-hostname", name),
                    *("--pid", str(self.root / f"{name}.pid")),
                    *("--skip-serve-logs", "--without-mingle", "--without-gossip"),
                ],
                env=env,
                cwd=self.root,
                log_path=self.root / f"{name}.log",
                hostname=name,
                disk=disk,
            )

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> CeleryDeployment:
        try:
            self.dags_folder.mkdir(parents=True)
            connect_args = 'CONNECT_ARGS = {"connect_timeout": 10}\n'
            (self.root / f"{SETTINGS_MODULE}.py").write_text(connect_args)
            (self.root / f"{CLI_SETTINGS_MODULE}.py").write_text(connect_args)
            (self.root / f"{HOSTNAME_MODULE}.py").write_text(HOSTNAME_CALLABLE)
            for dag_file in sorted((REPO / "example_dags").glob("*.py")):
                (self.dags_folder / dag_file.name).symlink_to(dag_file)
            for worker in self.workers.values():
                (worker.disk / "tmp").mkdir(parents=True)
            self.cli("db", "migrate", timeout=300)
            for component in [*self.components.values(), *self.workers.values()]:
                component.start()
            self._wait_ready(START_TIMEOUT_S)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        """Until every component is healthy (REST health) and every live worker consumes tasks."""
        last = "no answer yet"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for component in [*self.components.values(), *self.workers.values()]:
                code = exit_status(component.process) if component.process is not None else None
                if code is not None:
                    raise DeploymentError(f"{component.name} exited with {code}; logs:\n{self.log_tail()}")
            try:
                health = self._client.get("/api/v2/monitor/health").json()
                states = {
                    name: (part or {}).get("status")
                    for name, part in health.items()
                    if name in ("metadatabase", "scheduler", "triggerer", "dag_processor")
                }
                waiting = [name for name, w in self.workers.items() if w.alive and not w.ready()]
                last = f"{json.dumps(states)}; workers not ready: {waiting}"
                if len(states) == 4 and all(s == "healthy" for s in states.values()) and not waiting:
                    return
            except (httpx.HTTPError, ValueError) as error:
                last = f"{type(error).__name__}: {error}"
            time.sleep(1.0)
        raise DeploymentError(f"not ready after {timeout:.0f}s (last: {last}); logs:\n{self.log_tail()}")

    def stop(self) -> None:
        """Every component at once: SIGTERM to each PID's group, then SIGKILL to each whole session."""
        everything = [*self.workers.values(), *self.components.values()]
        processes = [c.process for c in everything if c.process is not None]
        try:
            stop_sessions(processes, grace=STOP_GRACE_S)
        finally:
            for component in everything:
                component.process = None
                component._close_log()
            self._client.close()
            shutil.rmtree(self.root, ignore_errors=True)  # homes, logs, the machines' disks

    def __enter__(self) -> CeleryDeployment:
        return self.start()

    # -- workers -------------------------------------------------------------------------------

    def kill_worker(self, name: str) -> list[int]:
        """SIGKILL the worker's whole session (Celery, its pool, supervisors and task runners)."""
        return self.workers[name].kill()

    def ensure_workers(self, timeout: float = 120.0) -> None:
        """Start again any worker that is not running (a test killed it), and wait until it consumes."""
        restarted = False
        for worker in self.workers.values():
            if not worker.alive:
                worker.stop()  # reap it, close its log
                worker.start()
                restarted = True
        if restarted:
            self._wait_ready(timeout)

    # -- REST ----------------------------------------------------------------------------------

    def task_instances(self, dag_id: str, run_id: str, task_id: str | None = None) -> list[dict[str, Any]]:
        tis = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=1000")
        return [ti for ti in tis["task_instances"] if task_id is None or ti["task_id"] == task_id]

    def tries(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> list[dict[str, Any]]:
        """Every try of one task instance (hostname, state, try_number), oldest first."""
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/{map_index}/tries"
        result = self.api("GET", path)
        return sorted(result["task_instances"], key=lambda t: t["try_number"])

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int, map_index: int = -1) -> str:
        """The task log of one try as text (the REST API's structured events, JSON-dumped)."""
        path = (
            f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}"
            f"?map_index={map_index}&full_content=true"
        )
        result = self.api("GET", path)
        content = result.get("content") if isinstance(result, dict) else result
        return json.dumps(content, ensure_ascii=False)

    def dag_params(self, dag_id: str) -> dict[str, Any]:
        params: dict[str, Any] = self.api("GET", f"/api/v2/dags/{dag_id}/details").get("params") or {}
        return params

    def task(self, dag_id: str, task_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.api("GET", f"/api/v2/dags/{dag_id}/tasks/{task_id}")
        return result

    # -- diagnostics ---------------------------------------------------------------------------

    def log_tail(self, lines: int = 40) -> str:
        parts = []
        for component in [*self.components.values(), *self.workers.values()]:
            parts += [f"--- {component.log_path} (last {lines} lines) ---", tail(component.log_path, lines)]
        return "\n".join([*parts, *self.task_log_tails(4)])


__all__ = ["WORKERS", "CeleryDeployment", "Component", "Worker", "session_members"]
