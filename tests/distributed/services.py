"""Redis and PostgreSQL from Debian's packages, each on 127.0.0.1 on a free port, data in a temp folder.

Installed with ``apt-get install -y`` when missing (``apt-get update`` only if that fails). Each
server runs in its own session (``setsid``) and is stopped by its PID at the end, the whole
session with SIGKILL after a grace period. PostgreSQL refuses to run as root: when we are root,
``initdb`` and ``postgres`` run as the ``postgres`` user (``Popen(user=...)``, like ``runuser``).

Also the process helpers of the distributed deployment: :func:`stop_session` and
:func:`kill_session` reach every process a component started, including Airflow's task runners,
which put themselves in process groups of their own (but stay in the session).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from tests.e2e.deployment import free_port, tail

HOST = "127.0.0.1"
START_TIMEOUT_S = 60.0
APT_TIMEOUT_S = 900.0


class ServiceError(RuntimeError):
    """A server could not be installed or started."""


# -- processes -------------------------------------------------------------------------------


def spawn(command: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """``Popen`` in a new session (``setsid``: its own process group too).

    Its exit is observed with :func:`exit_status`, which does not reap it: until
    :func:`stop_sessions` has killed what is left of the session and reaps it, its PID (the
    session and group id) cannot be given to another process, so signalling the session by that
    id can never reach someone else's processes.
    """
    return subprocess.Popen(command, start_new_session=True, **kwargs)


def exit_status(process: subprocess.Popen[Any]) -> int | None:
    """The exit code (negative: the signal) once ``process`` has ended, else None; never reaps it."""
    if process.returncode is not None:
        return process.returncode
    try:
        result = os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:  # reaped elsewhere
        return process.poll()
    if result is None:
        return None
    return result.si_status if result.si_code == os.CLD_EXITED else -result.si_status


def session_members(sid: int) -> list[int]:
    """Every live process of the session ``sid`` (never this process)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            if os.getsid(int(entry)) == sid and not _zombie(int(entry)):
                members.append(int(entry))
        except OSError:  # gone meanwhile
            continue
    return members


def _zombie(pid: int) -> bool:
    with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
        return stat.read().rsplit(")", 1)[-1].split()[0] == "Z"


def kill_session(sid: int) -> list[int]:
    """SIGKILL every process of the session ``sid`` as one machine dying would: all stopped
    first (SIGSTOP, so none can react or fork), then killed. Returns the PIDs killed.

    ``sid`` must be the PID of a session leader from :func:`spawn` that is not yet reaped.
    """
    killed: list[int] = []
    for _ in range(5):  # a process forked between the listing and the SIGSTOP is caught next round
        members = session_members(sid)
        if not members:
            break
        for sig in (signal.SIGSTOP, signal.SIGKILL):
            for pid in members:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
        killed.extend(pid for pid in members if pid not in killed)
        time.sleep(0.1)
    return killed


def stop_session(process: subprocess.Popen[Any], *, sig: int = signal.SIGTERM, grace: float = 15.0) -> None:
    """``sig`` to the process group of ``process`` (its session leader), wait up to ``grace``
    seconds, then SIGKILL whatever is left in its session, then reap the leader."""
    stop_sessions([process], sig=sig, grace=grace)


def stop_sessions(
    processes: list[subprocess.Popen[Any]], *, sig: int = signal.SIGTERM, grace: float = 15.0
) -> None:
    """:func:`stop_session` for several at once: all are signalled first, then waited on together."""
    live = [p for p in processes if p.returncode is None]  # not reaped: the ids are still theirs
    for process in live:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
    deadline = time.monotonic() + grace
    while any(exit_status(p) is None for p in live) and time.monotonic() < deadline:
        time.sleep(0.2)
    # Children outside the leader's group (task runners) get a moment to follow, then SIGKILL.
    deadline = min(deadline, time.monotonic() + 5.0)
    while any(session_members(p.pid) for p in live) and time.monotonic() < deadline:
        time.sleep(0.2)
    for process in live:
        kill_session(process.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(5.0)


# -- packages ----------------------------------------------------------------------------------


def postgres_bin_dir() -> Path | None:
    """The newest ``/usr/lib/postgresql/N/bin`` that has ``initdb`` and ``postgres``."""
    candidates = [
        path.parent
        for path in Path("/usr/lib/postgresql").glob("*/bin/initdb")
        if (path.parent / "postgres").exists()
    ]
    if not candidates:
        return None
    return max(candidates, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)


def redis_server_binary() -> str | None:
    return shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )


def ensure_debian_packages() -> None:
    """``apt-get install -y`` Debian's ``redis-server`` and ``postgresql`` if either is missing."""
    missing = []
    if redis_server_binary() is None:
        missing.append("redis-server")
    if postgres_bin_dir() is None:
        missing.append("postgresql")
    if not missing:
        return
    if os.geteuid() != 0:
        raise ServiceError(f"{' and '.join(missing)} missing, and only root may apt-get install them")
    # RUNLEVEL=1: the packages' own services are not started (ours run on free ports).
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive", "RUNLEVEL": "1"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", *missing]
    result = _run(install, env)
    if result.returncode != 0:  # stale or absent package lists: update once, then try again
        _run(["apt-get", "update"], env)
        result = _run(install, env)
    if result.returncode != 0 or redis_server_binary() is None or postgres_bin_dir() is None:
        raise ServiceError(f"{' '.join(install)} failed ({result.returncode}):\n{result.stdout[-3000:]}")


def _run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=APT_TIMEOUT_S,
        check=False,
    )


# -- servers -------------------------------------------------------------------------------------


class _Server:
    """A server process in its own session, its output in ``<root>/<name>.log``."""

    name = "server"

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix=f"ctxcache-{self.name}-"))
        self.log_path = self.root / f"{self.name}.log"
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def _spawn(self, command: list[str], **kwargs: Any) -> None:
        self._log = self.log_path.open("ab")
        self.process = spawn(
            command,
            cwd=self.root,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            **kwargs,
        )

    def _wait_ready(self, probe: Any) -> str:
        """'' once ``probe()`` passes; else why not (the process exited, or the deadline passed)."""
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        last = "no answer"
        while time.monotonic() < deadline:
            code = exit_status(self.process)
            if code is not None:
                return f"exited with {code}"
            try:
                probe()
                return ""
            except Exception as error:  # not up yet
                last = f"{type(error).__name__}: {error}"
            time.sleep(0.2)
        return f"not ready after {START_TIMEOUT_S:.0f}s ({last})"

    def start(self) -> Self:
        last = ""
        for _ in range(3):  # a free port can be taken between probing and binding
            self.port = free_port()
            self._start_once()
            last = self._wait_ready(self._probe)
            if not last:
                return self
            self.stop(remove=False)
        error = ServiceError(f"{self.name} on {HOST}: {last}; its log:\n{tail(self.log_path, 40)}")
        self.stop()
        raise error

    def _start_once(self) -> None:
        raise NotImplementedError

    def _probe(self) -> None:
        raise NotImplementedError

    def stop(self, *, remove: bool = True) -> None:
        """Stop the server by its PID (then its whole session); remove its data folder."""
        process, self.process = self.process, None
        if process is not None:
            stop_session(process, sig=self._stop_signal, grace=20.0)
        if self._log is not None:
            self._log.close()
            self._log = None
        if remove:
            shutil.rmtree(self.root, ignore_errors=True)

    _stop_signal: int = signal.SIGTERM

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class RedisServer(_Server):
    """``redis-server`` on 127.0.0.1, no persistence; ``url`` is the Celery broker URL."""

    name = "redis"

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def _start_once(self) -> None:
        binary = redis_server_binary()
        if binary is None:
            raise ServiceError("redis-server is not installed")
        self._spawn(
            [binary, "--bind", HOST, "--port", str(self.port), "--dir", str(self.root),
             "--save", "", "--appendonly", "no", "--protected-mode", "no", "--daemonize", "no"]
        )  # fmt: skip

    def _probe(self) -> None:
        import redis

        client = redis.Redis(host=HOST, port=self.port, socket_connect_timeout=1, socket_timeout=1)
        try:
            if not client.ping():
                raise ServiceError("no PONG")
        finally:
            client.close()


class PostgresServer(_Server):
    """PostgreSQL on 127.0.0.1 with trust auth and no durability (a test database), one DB ``airflow``.

    ``url`` is the SQLAlchemy URL of that database for Airflow's metadata and Celery's results.
    """

    name = "postgres"
    database = "airflow"
    _stop_signal = signal.SIGINT  # "fast" shutdown: active sessions are disconnected, no waiting

    def __init__(self) -> None:
        super().__init__()
        self.data = self.root / "data"
        self.sockets = self.root / "run"
        # PostgreSQL refuses to run as root: its files and processes belong to ``postgres``.
        self._user = "postgres" if os.geteuid() == 0 else None

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://postgres@{HOST}:{self.port}/{self.database}"

    def _as_user(self) -> dict[str, Any]:
        if self._user is None:
            return {}
        return {"user": self._user, "group": self._user, "extra_groups": []}

    def start(self) -> Self:
        bindir = postgres_bin_dir()
        if bindir is None:
            raise ServiceError("PostgreSQL is not installed")
        self.sockets.mkdir(parents=True, exist_ok=True)
        self.log_path.touch()
        if self._user is not None:
            for path in (self.root, self.sockets, self.log_path):
                shutil.chown(path, self._user, self._user)
        if not self.data.exists():
            result = subprocess.run(
                [str(bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                 "--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions"],
                cwd=self.root, capture_output=True, text=True, timeout=120, check=False, **self._as_user(),
            )  # fmt: skip
            if result.returncode != 0:
                raise ServiceError(f"initdb failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        super().start()
        self._create_database()
        return self

    def _start_once(self) -> None:
        bindir = postgres_bin_dir()
        assert bindir is not None
        self._spawn(
            [str(bindir / "postgres"), "-D", str(self.data), "-h", HOST, "-p", str(self.port),
             "-k", str(self.sockets), "-c", "fsync=off", "-c", "synchronous_commit=off",
             "-c", "full_page_writes=off", "-c", "max_connections=200"],
            **self._as_user(),
        )  # fmt: skip

    def _connect(self, dbname: str) -> Any:
        import psycopg2

        return psycopg2.connect(host=HOST, port=self.port, user="postgres", dbname=dbname, connect_timeout=2)

    def _probe(self) -> None:
        self._connect("postgres").close()

    def _create_database(self) -> None:
        connection = self._connect("postgres")
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(f"CREATE DATABASE {self.database}")
        finally:
            connection.close()
