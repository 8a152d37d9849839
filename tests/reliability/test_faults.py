"""The fault table: what production does to a run, injected into the real emulator, and what the user gets.

Every test is one row of the "Faults" table in docs/reliability.md. Each one checks, on real
artefacts (the output folder, the emulator's counts and live caches, the task states):

- nothing lost: every key is answered, or its answer is still in the output after the failure;
- nothing duplicated: one output line per key;
- no cache left behind by the DAG that owns it (operator-level rows own no cache: they check
  that the fan-out made none and kept the one it was given);
- the error the user sees, by type and text.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_ctxcache.emulator.process import EmulatorProcess
from airflow_provider_ctxcache.exceptions import CacheNotFoundError
from airflow_provider_ctxcache.fanout import FanoutCacheNotFoundError, FanoutFailedError
from airflow_provider_ctxcache.hooks import ContextCacheHook
from airflow_provider_ctxcache.operators import CreateCacheOperator
from tests.dags.conftest import DagRunner, task_states
from tests.hooks.conftest import ConnFactory, backend_extra
from tests.operators.context import task_context
from tests.reliability.conftest import (
    CONTEXT,
    MODEL,
    fan_out,
    keys,
    new_cache,
    output_lines,
    write_input,
)

REPO = Path(__file__).resolve().parents[2]


def assert_each_key_once(folder: Path, expected: list[str]) -> list[dict[str, Any]]:
    lines = output_lines(folder)
    counted = Counter(line["key"] for line in lines)
    assert [k for k, n in counted.items() if n > 1] == [], "a key was answered twice"
    assert sorted(counted) == sorted(expected)
    return lines


def generate_statuses(emulator: EmulatorProcess) -> dict[str, int]:
    return dict(emulator.admin.state()["status_counts"].get("generate_content", {}))


def live_caches(emulator: EmulatorProcess) -> list[str]:
    return [cache["name"] for cache in emulator.admin.state()["caches"]]


def wait_for(condition: Any, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


# ---------------------------------------------------------------------------------- quota and outages


def test_429_bursts_pause_every_worker_for_the_retry_delay_and_lose_nothing(
    conn: str, emulator: EmulatorProcess, tmp_path: Path
) -> None:
    n = 40
    name = new_cache(conn)
    write_input(tmp_path / "in.jsonl", n)
    emulator.admin.faults(error_rate_429=0.2, retry_delay_s=0.1, seed=11, ops=["generate_content"])
    started = time.monotonic()
    output = fan_out(conn, name, tmp_path).execute(task_context())
    elapsed = time.monotonic() - started

    lines = assert_each_key_once(tmp_path / "out", keys(n))
    assert all("response" in line for line in lines)
    statuses = generate_statuses(emulator)
    summary = output["summary"]
    assert statuses["200"] == n  # the SDK's own retries are off: one 200 per key, no extra call
    assert summary["quota_waits"] == statuses["429"] > 0
    assert summary["retries"] == 0  # 429s do not use up attempts
    assert summary["failed"] == 0
    assert elapsed >= 0.1  # at least one retryDelay was honoured
    assert live_caches(emulator) == [name]


def test_503s_are_retried_with_backoff_until_every_key_is_answered_once(
    conn: str, emulator: EmulatorProcess, tmp_path: Path
) -> None:
    n = 60
    name = new_cache(conn)
    write_input(tmp_path / "in.jsonl", n)
    emulator.admin.faults(error_rate_503=0.3, seed=3, ops=["generate_content"])
    output = fan_out(conn, name, tmp_path).execute(task_context())

    lines = assert_each_key_once(tmp_path / "out", keys(n))
    assert all("response" in line for line in lines)
    statuses = generate_statuses(emulator)
    assert statuses["200"] == n
    assert output["summary"]["retries"] == statuses["503"] > 0
    assert output["summary"]["failed"] == 0
    assert live_caches(emulator) == [name]


def test_an_outage_longer_than_the_retries_fails_the_task_and_the_retry_asks_only_the_rest(
    conn: str, emulator: EmulatorProcess, tmp_path: Path
) -> None:
    n = 20
    name = new_cache(conn)
    write_input(tmp_path / "in.jsonl", n)
    # The first 8 answers arrive, then the model is overloaded for longer than 2 tries per key.
    first_eight = (tmp_path / "in.jsonl").read_text().splitlines(keepends=True)[:8]
    (tmp_path / "first.jsonl").write_text("".join(first_eight))
    fan_out(conn, name, tmp_path, input_uri=str(tmp_path / "first.jsonl")).execute(task_context())
    emulator.admin.faults(error_rate_503=1.0, ops=["generate_content"])
    with pytest.raises(FanoutFailedError) as failed:
        fan_out(conn, name, tmp_path, max_attempts=2, max_failure_ratio=1.0).execute(task_context())
    message = str(failed.value)
    assert message.startswith(f"{n - 8} of {n - 8} prompts failed")
    assert "Gemini API error 503 UNAVAILABLE: The model is overloaded" in message
    assert "answered keys are skipped when output_uri is set" in message
    lines = output_lines(tmp_path / "out")
    assert sum("response" in line for line in lines) == 8  # the answers from before are kept
    assert all(line["error"]["code"] == 503 for line in lines if "error" in line)

    emulator.admin.faults()
    before = emulator.admin.state()["counts"]["generate_content"]
    output = fan_out(conn, name, tmp_path).execute(task_context())
    assert output["summary"]["skipped_already_answered"] == 8
    assert emulator.admin.state()["counts"]["generate_content"] - before == n - 8
    lines = assert_each_key_once(tmp_path / "out", keys(n))  # compacted: the error lines are gone
    assert all("response" in line for line in lines)


def test_a_latency_spike_past_the_client_timeout_is_retried_and_answered_once(
    emulator: EmulatorProcess, make_conn: ConnFactory, tmp_path: Path
) -> None:
    n = 24
    conn = make_conn("ctxcache_spike", **backend_extra("gemini_api", emulator), timeout=1)
    name = new_cache(conn)
    write_input(tmp_path / "in.jsonl", n)
    # The spike hits the first 8 calls (one per worker): each outlasts the client's 1 s timeout.
    emulator.admin.faults(latency_ms=1500, for_requests=8, ops=["generate_content"])

    output = fan_out(conn, name, tmp_path).execute(task_context())

    lines = assert_each_key_once(tmp_path / "out", keys(n))
    assert all("response" in line for line in lines)
    assert output["summary"]["retries"] >= 8
    assert output["summary"]["failed"] == 0
    # A timed-out call still reaches the server (and is billed there): the price of a timeout.
    wait_for(lambda: emulator.admin.state()["counts"]["generate_content"] >= n + 8, 120, "the slow calls")
    assert live_caches(emulator) == [name]


def test_connection_resets_are_retried_and_every_key_answered_once(
    conn: str, emulator: EmulatorProcess, tmp_path: Path
) -> None:
    n = 60
    name = new_cache(conn)
    write_input(tmp_path / "in.jsonl", n)
    # The connection is dropped with no response (RST); 6 in a row for one key would exhaust
    # max_attempts, so the rate stays where that is a one-in-a-million event.
    emulator.admin.faults(error_rate_reset=0.15, seed=7, ops=["generate_content"])
    output = fan_out(conn, name, tmp_path).execute(task_context())

    lines = assert_each_key_once(tmp_path / "out", keys(n))
    assert all("response" in line for line in lines)
    statuses = generate_statuses(emulator)
    assert statuses["200"] == n
    assert output["summary"]["retries"] == statuses["reset"] > 0
    assert output["summary"]["failed"] == 0
    assert live_caches(emulator) == [name]


# ---------------------------------------------------------------------------------- the cache vanishes


def stop_when_answered(tmp_path: Path, count: int, action: Any) -> threading.Thread:
    def run() -> None:
        wait_for(lambda: len(output_lines(tmp_path / "out")) >= count, what=f"{count} answers")
        action()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


@pytest.mark.parametrize("how", ["expires", "is_deleted"])
def test_a_cache_that_vanishes_mid_run_stops_with_its_name_and_a_rerun_asks_only_the_rest(
    how: str, conn: str, emulator: EmulatorProcess, tmp_path: Path
) -> None:
    n = 120
    name = new_cache(conn, ttl="10m")
    write_input(tmp_path / "in.jsonl", n)
    emulator.admin.faults(latency_ms=25, ops=["generate_content"])
    if how == "expires":
        action = lambda: emulator.admin.advance_clock(11 * 60)  # noqa: E731 - the emulator's clock
    else:
        action = lambda: ContextCacheHook(conn).delete_cache(name)  # noqa: E731
    thread = stop_when_answered(tmp_path, 20, action)
    with pytest.raises(FanoutCacheNotFoundError) as stopped:
        fan_out(conn, name, tmp_path, max_concurrency=4).execute(task_context())
    thread.join()

    assert isinstance(stopped.value, CacheNotFoundError)
    message = str(stopped.value)
    assert message.startswith(f"cache {name!r} was not found: it expired, was deleted")
    assert "answered" in message
    assert "whose results are kept" in message
    assert "Create it again" in message
    lines = output_lines(tmp_path / "out")
    answered = [line["key"] for line in lines if "response" in line]
    assert 20 <= len(answered) < n
    assert len(answered) == len(set(answered))
    assert live_caches(emulator) == []  # nothing lingers: expired or deleted, it is gone
    time.sleep(0.1)  # calls abandoned client-side still land on the server: let them finish here

    emulator.admin.faults()
    fresh = new_cache(conn)
    before = emulator.admin.state()["counts"]["generate_content"]
    output = fan_out(conn, fresh, tmp_path).execute(task_context())
    assert output["summary"]["skipped_already_answered"] == len(answered)
    assert emulator.admin.state()["counts"]["generate_content"] - before == n - len(answered)
    assert all("response" in line for line in assert_each_key_once(tmp_path / "out", keys(n)))


# ---------------------------------------------------------------------------------- a killed worker

CHILD = """
import sys
from airflow_provider_ctxcache.operators import GenerateWithCacheOperator
from tests.operators.context import task_context
conn, cache, folder = sys.argv[1:4]
GenerateWithCacheOperator(task_id="ask", ctxcache_conn_id=conn, cache_name=cache,
                          input_uri=folder + "/in.jsonl", output_uri=folder + "/out",
                          allowed_roots=[folder], max_concurrency=8,
                          progress_interval=0).execute(task_context())
"""


def test_a_worker_killed_mid_run_then_retried_answers_each_key_once_within_n_plus_concurrency_calls(
    conn: str, emulator: EmulatorProcess, tmp_path: Path
) -> None:
    n, concurrency = 150, 8
    name = new_cache(conn)
    write_input(tmp_path / "in.jsonl", n)
    # The first 40 calls are answered; every later one hangs, so the run cannot end before the kill.
    emulator.admin.faults(latency_ms=600_000, after_requests=40, ops=["generate_content"])
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, conn, name, str(tmp_path)],
        env=os.environ.copy(),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: len(output_lines(tmp_path / "out")) >= 40 or child.poll() is not None, 300)
        assert child.poll() is None, "the run ended before it could be killed"
        child.send_signal(signal.SIGKILL)  # as the OOM killer or a lost node would
    finally:
        child.wait()
    answered_before = len(output_lines(tmp_path / "out"))
    assert answered_before < n

    emulator.admin.faults()
    output = fan_out(conn, name, tmp_path, max_concurrency=concurrency).execute(task_context())
    lines = assert_each_key_once(tmp_path / "out", keys(n))
    assert all("response" in line for line in lines)
    assert output["summary"]["skipped_already_answered"] >= answered_before
    assert emulator.admin.state()["counts"]["generate_content"] <= n + concurrency
    assert live_caches(emulator) == [name]


# ---------------------------------------------------------------------------------- create faults


def create_operator(conn_id: str) -> CreateCacheOperator:
    return CreateCacheOperator(
        task_id="create_cache", ctxcache_conn_id=conn_id, model=MODEL, contents=[CONTEXT], ttl="10m"
    )


RUN_ID = "scheduled__2026-05-01T00:00:00+00:00"


def test_a_create_that_times_out_after_the_server_made_the_cache_leaves_one_cache_with_sdk_retries(
    emulator: EmulatorProcess, make_conn: ConnFactory
) -> None:
    conn = make_conn(
        "ctxcache_slow_create", **backend_extra("gemini_api", emulator), timeout=1, retry_attempts=2
    )
    emulator.admin.faults(latency_ms=1500, ops=["create_cache"])

    name = create_operator(conn).execute(task_context(RUN_ID))  # the timeout is not sent again

    assert live_caches(emulator) == [name]
    assert emulator.admin.state()["counts"]["create_cache"] == 1


def test_a_create_that_times_out_after_the_server_made_the_cache_is_found_by_the_task_retry(
    emulator: EmulatorProcess, make_conn: ConnFactory
) -> None:
    conn = make_conn(
        "ctxcache_slow_create", **backend_extra("gemini_api", emulator), timeout=1, retry_attempts=1
    )
    emulator.admin.faults(latency_ms=1500, ops=["create_cache"])
    first = create_operator(conn).execute(task_context(RUN_ID))  # finds the cache the timeout hid
    emulator.admin.faults()

    context = task_context(RUN_ID)
    name = create_operator(conn).execute(context)  # the task's retry: same run id, XCom cleared

    assert name == first
    assert context["ti"].pushed["reused"] is True
    assert live_caches(emulator) == [name]
    assert emulator.admin.state()["counts"]["create_cache"] == 1


def test_429s_on_create_are_retried_by_the_sdk_and_make_exactly_one_cache(
    conn: str, emulator: EmulatorProcess
) -> None:
    emulator.admin.faults(error_rate_429=0.5, retry_delay_s=0.1, seed=1, ops=["create_cache"])
    context = task_context(RUN_ID)
    name = create_operator(conn).execute(context)
    statuses = emulator.admin.state()["status_counts"]["create_cache"]
    assert statuses.get("429", 0) > 0
    assert statuses["200"] == 1
    assert live_caches(emulator) == [name]
    assert context["ti"].pushed["reused"] is False


# ---------------------------------------------------------------------------------- teardown in a DAG


def test_a_dag_run_whose_fan_out_fails_still_deletes_the_cache_and_ends_failed(
    run_dag: DagRunner, emulator: EmulatorProcess, capfd: pytest.CaptureFixture[str]
) -> None:
    emulator.admin.faults(error_rate_503=1.0, ops=["generate_content"])
    run = run_dag("ctxcache_test_fault_teardown", conf={"prompts": ["One?", "Two?", "Three?"]})
    assert run.state == "failed"
    assert task_states(run) == {"create_cache": "success", "ask": "failed", "delete_cache": "success"}
    state = emulator.admin.state()
    assert state["caches"] == []
    assert state["counts"]["create_cache"] == 1
    assert state["counts"]["delete_cache"] == 1
    assert 1 <= state["counts"]["generate_content"] <= 3  # one try per prompt, then it stopped
    logged = capfd.readouterr()
    text = logged.out + logged.err
    assert "FanoutFailedError" in text
    assert "prompts failed" in text
    assert "503 UNAVAILABLE" in text
