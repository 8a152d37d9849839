"""Run the emulator as a child process, and talk to its admin API.

:class:`EmulatorProcess` is what tests, benchmarks and the demo use: a real server on
loopback in its own process group, started with the same interpreter, ready once it printed
its one ready line. :class:`EmulatorAdmin` is a small synchronous client for ``/_emulator/``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import IO, Any

import httpx

READY_PREFIX = "ctxcache-emulator listening on "
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 5.0


class EmulatorAdmin:
    """Synchronous client for the admin API (``/_emulator/``); no auth needed."""

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        # trust_env=False: a proxy configured in the environment must never see loopback calls.
        self._client = httpx.Client(base_url=self.url, timeout=timeout, trust_env=False)

    def _call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        # Every admin POST must be JSON (Content-Type: application/json), even one without a body.
        if body is None and method == "POST":
            body = {}
        response = self._client.request(method, f"/_emulator/{path}", json=body)
        response.raise_for_status()
        return response.json()

    def state(self) -> dict[str, Any]:
        """Live caches, files and open uploads, request counts by op and by status, the emulator clock."""
        result: dict[str, Any] = self._call("GET", "state")
        return result

    def requests(self) -> list[dict[str, Any]]:
        """The last 1000 API requests: method, path, op, status, body (never headers)."""
        result: list[dict[str, Any]] = self._call("GET", "requests")["requests"]
        return result

    def usage(self) -> list[dict[str, Any]]:
        """Every billable event served (the last 100,000), in emulator-clock order.

        Each has ``type`` (``cache_created``, ``cache_ttl_changed``, ``cache_deleted``,
        ``cache_expired``, ``generate``), ``time`` (RFC 3339, nanos), ``backend``, ``project`` and
        ``location``; see :mod:`.ledger` for the rest. Only successful calls are events.
        """
        result: list[dict[str, Any]] = self.usage_summary()["events"]
        return result

    def usage_summary(self) -> dict[str, Any]:
        """``{"events": [...], "caches": {name: {backend, model, tokens, created, ended, ended_by}}}``.

        ``ended`` is the deletion or expiry time (null while live), ``ended_by`` ``"deleted"``,
        ``"expired"`` or null: storage is tokens x (ended - created).
        """
        result: dict[str, Any] = self._call("GET", "usage")
        return result

    def reset(self) -> None:
        """Empty caches, counts, request log, usage and faults; clock back to real time."""
        self._call("POST", "reset")

    def faults(self, **config: Any) -> dict[str, Any]:
        """Set the injected faults, quotas and grace (replacing all of them); no arguments clears them.

        Faults on the ops in ``ops`` (default: all): ``latency_ms``, ``error_rate_429`` (its
        RetryInfo says ``retry_delay_s``), ``error_rate_503``, ``error_rate_reset`` (the
        connection is reset with no response; counted under the status ``"reset"``), ``seed``.
        Per-model generateContent quotas, whatever ``ops`` says: ``rpm_limit`` (requests) and
        ``tpm_limit`` (input tokens: prompt, cache included, plus tool use) per sliding window of
        ``quota_window_s`` seconds (default 60); 0 means no limit. ``expired_grace_s`` (default
        300): how long Vertex answers 400 "Cache content N is expired." before 404;
        ``deleted_state_s`` (default 0): how long it answers 400 "Invalid resource state for cache
        content." for a deleted cache before 404. ``clock_skip_s``: the clock moves forward this far
        before each request of an op in ``ops`` (e.g. hours of a cache's life before its delete).
        ``after_requests`` / ``for_requests``: the latency and errors skip the first N requests of
        the ops / stop after N (0: no bound). Returns the whole config as the emulator now holds it.
        """
        result: dict[str, Any] = self._call("POST", "faults", config)
        return result

    def advance_clock(self, seconds: float) -> str:
        """Move the emulator clock forward; returns its new time (RFC 3339)."""
        result: str = self._call("POST", "clock", {"advance_seconds": seconds})["now"]
        return result

    def set_api_key(self, api_key: str | None) -> None:
        """Developer-API calls must carry this key from now on (None: any key); a reset restores
        the key the emulator started with. For key-rotation tests."""
        self._call("POST", "api_key", {"api_key": api_key})

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()


class EmulatorProcess:
    """The emulator in a child process: ``with EmulatorProcess() as emu: emu.url``."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.args = tuple(args)
        self.env = dict(env) if env is not None else None
        self.url = ""
        self._process: subprocess.Popen[str] | None = None
        self._stderr: IO[str] | None = None
        self._admin: EmulatorAdmin | None = None
        self.returncode: int | None = None
        """The exit code of the last run, once it has stopped."""

    @property
    def admin(self) -> EmulatorAdmin:
        """An admin client for this emulator (after :meth:`start`)."""
        if self._admin is None:
            raise RuntimeError("the emulator is not started")
        return self._admin

    @property
    def pid(self) -> int | None:
        """The child's process id, while it runs."""
        return self._process.pid if self._process else None

    def start(self) -> EmulatorProcess:
        """Spawn the emulator and wait for its ready line; raise with its stderr if it dies."""
        if self._process is not None:
            raise RuntimeError("the emulator is already started")
        command = [
            sys.executable,
            "-m",
            "airflow_provider_ctxcache.emulator",
            "--host",
            self.host,
            "--port",
            str(self.port),
            *self.args,
        ]
        env = {**os.environ, **(self.env or {}), "PYTHONUNBUFFERED": "1"}
        # stderr goes to a file: a pipe nobody reads would block a chatty server.
        self._stderr = tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace")  # noqa: SIM115
        self._process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            stdin=subprocess.DEVNULL,
            env=env,
            text=True,
            start_new_session=True,
        )
        line = self._read_ready_line(self._process)
        if line is None or not line.startswith(READY_PREFIX):
            stderr = self._stderr_text()
            self.stop()
            raise RuntimeError(f"the emulator did not start (ready line {line!r}); its stderr:\n{stderr}")
        self.url = line[len(READY_PREFIX) :].strip()
        self.port = int(self.url.rsplit(":", 1)[1])
        self._admin = EmulatorAdmin(self.url)
        stdout = self._process.stdout
        if stdout is not None:
            threading.Thread(target=_drain, args=(stdout,), daemon=True).start()
        return self

    def _read_ready_line(self, process: subprocess.Popen[str]) -> str | None:
        lines: list[str] = []
        stdout = process.stdout
        assert stdout is not None
        reader = threading.Thread(target=lambda: lines.append(stdout.readline()), daemon=True)
        reader.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while reader.is_alive() and time.monotonic() < deadline:
            reader.join(0.05)
            if process.poll() is not None:
                reader.join(0.5)
                break
        return lines[0] if lines and lines[0] else None

    def _stderr_text(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read()

    def stop(self) -> None:
        """SIGTERM the emulator's process group; SIGKILL it if still alive after 5 s."""
        process, self._process = self._process, None
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        if process is not None:
            if process.poll() is None:
                _signal_group(process.pid, signal.SIGTERM)
                try:
                    process.wait(STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    _signal_group(process.pid, signal.SIGKILL)
                    process.wait(STOP_TIMEOUT_S)
            self.returncode = process.returncode
            if process.stdout is not None:
                process.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def __enter__(self) -> EmulatorProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _drain(stream: IO[str]) -> None:
    """Keep reading the child's stdout so it can never block on a full pipe."""
    try:
        for _ in stream:
            pass
    except (OSError, ValueError):
        pass


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)
