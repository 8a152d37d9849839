"""The README's first DAG, run exactly as the README tells a new user to run it.

The DAG is the first ```python block under "## Your first DAG", written unchanged to the path
the README names. The emulator is started with the README's command (its first ```bash block
there), and the README's second ```bash block runs as written in ``bash`` from the checkout,
with a fresh ``HOME``, so ``~/airflow-ctxcache`` is a new Airflow home on SQLite. Only the port
differs: 8765 becomes a free one, in both blocks, so the test cannot collide with anything else
on the machine. Nothing of this test session's Airflow settings reaches those processes.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest

from airflow_provider_ctxcache.emulator.process import READY_PREFIX, EmulatorAdmin
from tests.docs.markdown import README, REPO, blocks_under, text_under

HEADING = "## Your first DAG"
README_PORT = "8765"
START_TIMEOUT_S = 120.0  # a generous bound on the emulator's start; the wait ends at its ready line
RUN_TIMEOUT_S = 1200.0  # a bound for a hung run only: the test waits for the commands to finish


@dataclass(frozen=True)
class Instructions:
    """What the README's first-DAG section tells the user to do."""

    dag_code: str
    dag_path: str  # as the README writes it, e.g. ~/airflow-ctxcache/dags/first_cache.py
    dag_id: str
    emulator_command: str
    run_script: str


def readme_instructions() -> Instructions:
    (dag, *_) = blocks_under(README, HEADING, "python")
    emulator, run, *_ = blocks_under(README, HEADING, "bash")
    prose = " ".join(text_under(README, HEADING).split())
    saved = re.search(r"Save the DAG as `(?P<path>[^`]+\.py)`", prose)
    assert saved is not None, "the README must say where to save the DAG"
    dag_id = re.search(r"dag_id=\"(?P<id>[^\"]+)\"", dag.code)
    assert dag_id is not None
    return Instructions(
        dag_code=dag.code,
        dag_path=saved["path"],
        dag_id=dag_id["id"],
        emulator_command=emulator.code.strip(),
        run_script=run.code,
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def user_environment(home: Path) -> dict[str, str]:
    """A new user's shell: this session's environment without any Airflow setting, a fresh HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_", "_AIRFLOW"))}
    env.pop("VIRTUAL_ENV", None)
    env.update({"HOME": str(home), "PYTHONUNBUFFERED": "1", "NO_COLOR": "1"})
    return env


def exports(script: str) -> str:
    """The lines of a README block that set up the shell (``source``, ``export``)."""
    return "".join(line + "\n" for line in script.splitlines() if line.startswith(("source ", "export ")))


def stop_group(process: subprocess.Popen[Any]) -> None:
    """SIGTERM the process group; SIGKILL it if it has not ended once the grace period is over."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def wait_for_ready_line(process: subprocess.Popen[str]) -> str:
    """The emulator's URL from its one ready line; the rest of its output is drained."""
    stdout = process.stdout
    assert stdout is not None
    first: list[str] = []
    reader = threading.Thread(target=lambda: first.append(stdout.readline()), daemon=True)
    reader.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while reader.is_alive() and process.poll() is None and time.monotonic() < deadline:
        reader.join(0.1)
    reader.join(0.5)
    line = first[0] if first else ""
    assert line.startswith(READY_PREFIX), f"the emulator did not start: {line!r}"
    threading.Thread(target=_drain, args=(stdout,), daemon=True).start()
    return line[len(READY_PREFIX) :].strip()


def _drain(stream: IO[str]) -> None:
    with contextlib.suppress(OSError, ValueError):
        for _ in stream:
            pass


@dataclass
class Session:
    """The user's checkout shell after following the README: its environment and the emulator."""

    instructions: Instructions
    env: dict[str, str]
    home: Path
    run_script: str
    emulator: EmulatorAdmin
    log: Path

    def bash(self, script: str) -> subprocess.CompletedProcess[str]:
        """Run ``script`` in bash from the checkout, as the user would type it, logging its output."""
        done = subprocess.run(
            ["bash", "-c", "set -eo pipefail\n" + script],
            cwd=REPO,
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
            check=False,
        )
        with self.log.open("a", encoding="utf-8") as log:
            log.write(f"$ {script}\n{done.stdout}{done.stderr}\n[exit {done.returncode}]\n")
        return done

    def in_shell(self, command: str) -> subprocess.CompletedProcess[str]:
        """``command`` in the shell the README's block set up (its ``source`` and ``export`` lines)."""
        return self.bash(exports(self.run_script) + command)


@dataclass(frozen=True)
class FirstRun:
    """What running the README's block produced."""

    result: subprocess.CompletedProcess[str]
    emulator_state: dict[str, Any]
    airflow_db: Path


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    if not (REPO / ".venv" / "bin" / "activate").is_file():
        pytest.skip("the README's commands use the checkout's .venv, which `make demo` makes")
    instructions = readme_instructions()
    port = str(free_port())
    assert README_PORT in instructions.emulator_command
    assert README_PORT in instructions.run_script
    home = tmp_path_factory.mktemp("new-user-home")
    env = user_environment(home)
    emulator = subprocess.Popen(
        ["bash", "-c", instructions.emulator_command.replace(README_PORT, port)],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,  # its own process group: stopped as a whole
    )
    try:
        url = wait_for_ready_line(emulator)
        admin = EmulatorAdmin(url)
        yield Session(
            instructions=instructions,
            env=env,
            home=home,
            run_script=instructions.run_script.replace(README_PORT, port),
            emulator=admin,
            log=home / "commands.log",
        )
        admin.close()
    finally:
        stop_group(emulator)


@pytest.fixture(scope="module")
def first_run(session: Session) -> FirstRun:
    dag_file = Path(session.instructions.dag_path.replace("~", str(session.home), 1))
    dag_file.parent.mkdir(parents=True, exist_ok=True)
    dag_file.write_text(session.instructions.dag_code, encoding="utf-8")
    result = session.bash(session.run_script)
    airflow_home = session.bash(exports(session.run_script) + 'echo "$AIRFLOW_HOME"').stdout.strip()
    return FirstRun(
        result=result,
        emulator_state=session.emulator.state(),
        airflow_db=Path(airflow_home) / "airflow.db",
    )


def xcom_value(db: Path, dag_id: str, task_id: str, key: str = "return_value") -> Any:
    with contextlib.closing(sqlite3.connect(db)) as connection:
        rows = connection.execute(
            "SELECT value FROM xcom WHERE dag_id = ? AND task_id = ? AND key = ?", (dag_id, task_id, key)
        ).fetchall()
    assert len(rows) == 1, rows
    return json.loads(rows[0][0])


def test_the_readmes_first_dag_runs_unchanged_with_airflow_dags_test_on_the_emulator(
    first_run: FirstRun,
) -> None:
    output = first_run.result.stdout + first_run.result.stderr
    assert first_run.result.returncode == 0, output[-6000:]
    assert re.search(r"DagRun Finished: dag_id=first_cache, .*state=success", output), output[-3000:]


def test_the_first_dags_answers_are_in_the_ask_tasks_xcom_and_printed_by_show(
    session: Session, first_run: FirstRun
) -> None:
    returned = xcom_value(first_run.airflow_db, session.instructions.dag_id, "ask")
    assert returned["output_uri"] is None
    results = returned["results"]
    assert list(results) == ["prompt-00000", "prompt-00001"]
    output = first_run.result.stdout + first_run.result.stderr
    for key, answer in results.items():
        assert answer["text"]
        assert answer["finish_reason"] == "STOP"
        assert answer["usage"]["cached_content_token_count"] > 2000  # the contract, from the cache
        assert f"{key} {answer['text']}" in output
    # The answer the README quotes is the one the run printed.
    prose = " ".join(text_under(README, HEADING).split())
    quoted = re.search(r"`(?P<line>prompt-00000 [^`]+?)(?:, \.\.\.)?`", prose)
    assert quoted is not None
    assert quoted["line"] in output


def test_the_first_dags_teardown_leaves_no_cache_on_the_emulator(first_run: FirstRun) -> None:
    state = first_run.emulator_state
    assert state["caches"] == []
    assert state["counts"]["create_cache"] == 1
    assert state["counts"]["generate_content"] == 2
    assert state["counts"]["delete_cache"] == 1


def test_the_first_dag_runs_with_the_connection_the_readme_gives_for_the_emulator(
    session: Session,
) -> None:
    (connection_lines, *_) = blocks_under(README, "## The connection", "bash")
    emulator_line = connection_lines.code.splitlines()[0]
    assert emulator_line.startswith("export AIRFLOW_CONN_CTXCACHE_DEFAULT=")
    assert emulator_line in session.instructions.run_script


@dataclass(frozen=True)
class SingleTask:
    """docs/operations.md, "Testing one task" then "Leftover caches", run in that order once."""

    left: dict[str, Any]  # the cache `tasks test ... create_cache` left on the emulator
    created: str
    alone: str
    asked: str
    generate_calls_before_ask: int
    generate_calls_after_ask: int
    dry_run: str
    caches_after_dry_run: list[str]
    collected: str
    caches_after_collect: list[str]


@pytest.fixture(scope="module")
def single_task(session: Session, first_run: FirstRun) -> SingleTask:
    dag_id = session.instructions.dag_id
    before = {cache["name"] for cache in session.emulator.state()["caches"]}

    def run(command: str) -> str:
        done = session.in_shell(command)
        assert done.returncode == 0, (command, (done.stdout + done.stderr)[-4000:])  # even if the task fails
        return done.stdout + done.stderr

    created = run(f"airflow tasks test {dag_id} create_cache")
    (left,) = [c for c in session.emulator.state()["caches"] if c["name"] not in before]
    alone = run(f"airflow tasks test {dag_id} ask")
    calls_before = session.emulator.state()["counts"].get("generate_content", 0)
    asked = run(f"airflow tasks test {dag_id} ask -t '{json.dumps({'cache_name': left['name']})}'")
    calls_after = session.emulator.state()["counts"].get("generate_content", 0)
    dry = run("ctxcache caches gc")
    after_dry = [cache["name"] for cache in session.emulator.state()["caches"]]
    collected = run("ctxcache caches gc --delete")
    return SingleTask(
        left=left,
        created=created,
        alone=alone,
        asked=asked,
        generate_calls_before_ask=calls_before,
        generate_calls_after_ask=calls_after,
        dry_run=dry,
        caches_after_dry_run=after_dry,
        collected=collected,
        caches_after_collect=[cache["name"] for cache in session.emulator.state()["caches"]],
    )


def test_tasks_test_of_create_leaves_a_ten_minute_cache_named_for_its_temporary_run(
    single_task: SingleTask,
) -> None:
    left = single_task.left
    assert "__airflow_temporary_run_" in left["displayName"]
    lived = dt.datetime.fromisoformat(left["expireTime"]) - dt.datetime.fromisoformat(left["createTime"])
    assert lived == dt.timedelta(minutes=10)
    assert "so it lives 10 min instead of 30 min" in single_task.created  # the DAG asks for 30m


def test_tasks_test_of_create_logs_the_command_that_deletes_its_cache(single_task: SingleTask) -> None:
    name = single_task.left["name"]
    assert f"Delete it when done: ctxcache caches delete {name} --conn-id ctxcache_default" in (
        single_task.created
    )


def test_tasks_test_of_ask_alone_says_there_is_no_upstream_xcom_and_how_to_pass_one(
    single_task: SingleTask,
) -> None:
    assert "cache_name: is None: it comes from the XCom of task 'create_cache'" in single_task.alone
    assert """ask -t '{"cache_name": "cachedContents/ID"}'""" in single_task.alone
    assert "new_state=failed" in single_task.alone
    assert single_task.generate_calls_before_ask == 2  # the first run's two; none from `ask` alone


def test_tasks_test_of_ask_with_the_cache_name_param_asks_that_cache(single_task: SingleTask) -> None:
    assert f"using the cache_name param {single_task.left['name']!r}" in single_task.asked
    assert "new_state=success" in single_task.asked
    assert single_task.generate_calls_after_ask == single_task.generate_calls_before_ask + 2


def test_caches_gc_lists_the_leftover_then_deletes_it_only_when_told(single_task: SingleTask) -> None:
    name = single_task.left["name"]
    assert name in single_task.dry_run
    assert name in single_task.caches_after_dry_run
    assert name in single_task.collected
    assert single_task.caches_after_collect == []
