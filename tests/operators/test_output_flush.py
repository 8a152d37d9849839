"""``gs://`` output: flushed on demand, and nothing received is lost when the task is told to stop.

Real everything: the operator (in a thread, in ``dag.test()``, or in an ``airflow dags test``
process that gets SIGTERM), the Gemini emulator over HTTP, the GCS emulator through
google-cloud-storage. The emulator answers the first calls and holds every later one
(``after_requests`` + a long latency), so each test waits on states (answers given, calls held,
objects in the bucket), never on the clock. Each test has an emulator of its own: the calls it
holds end with it, not inside a later test's emulator.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_ctxcache.emulator.process import EmulatorProcess
from airflow_provider_ctxcache.exceptions import CtxCacheConfigError, FanoutStoppedError
from airflow_provider_ctxcache.operators import GenerateWithCacheOperator
from tests.conftest import DAGS_FOLDER
from tests.dags.conftest import airflow_db, task_states
from tests.gcs import storage_client
from tests.hooks.conftest import ConnFactory, backend_extra
from tests.operators.context import task_context
from tests.operators.dag_files import ctxcache_test_stop as stop_dag
from tests.reliability.conftest import keys, new_cache, write_input

__all__ = ["airflow_db"]  # a session fixture, found here by pytest

REPO = Path(__file__).resolve().parents[2]
DAG_FILE = Path(stop_dag.__file__)
HOLD_MS = 600_000  # a held call outlives every test; the emulator holding it is stopped after the test
WAIT = 300.0  # only a bound on a hang: every wait below ends on a state


def wait_for(condition: Callable[[], Any], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.fixture
def own_emulator() -> Iterator[EmulatorProcess]:
    with EmulatorProcess() as process:
        yield process


@pytest.fixture
def conn(own_emulator: EmulatorProcess, make_conn: ConnFactory) -> str:
    return make_conn(stop_dag.CONN_ID, **backend_extra("gemini_api", own_emulator))


@pytest.fixture
def stop_dags(airflow_db: None) -> Iterator[Path]:
    """The stop DAGs linked into the session's DAGs folder, where ``dag.test()`` syncs them from."""
    link = DAGS_FOLDER / DAG_FILE.name
    link.symlink_to(DAG_FILE)
    try:
        yield link
    finally:
        link.unlink()


def answered(emulator: EmulatorProcess) -> int:
    return int(emulator.admin.state()["status_counts"]["generate_content"].get("200", 0))


def asked(emulator: EmulatorProcess) -> int:
    return int(emulator.admin.state()["counts"]["generate_content"])


def held_calls(emulator: EmulatorProcess) -> int:
    return int(emulator.admin.state()["in_flight"])


def gcs_input(bucket: str, tmp_path: Path, n: int) -> str:
    local = write_input(tmp_path / "in.jsonl", n)
    storage_client().bucket(bucket).blob("job/in.jsonl").upload_from_filename(str(local))
    return f"gs://{bucket}/job/in.jsonl"


def gcs_lines(bucket: str, prefix: str = "job/out/") -> list[dict[str, Any]]:
    """Every line of the output's parts (not the write probe a starting run makes and removes)."""
    blobs = storage_client().list_blobs(bucket, prefix=prefix + "part-")
    return [
        json.loads(line)
        for blob in sorted(blobs, key=lambda b: b.name)
        for line in blob.download_as_text().splitlines()
        if line.strip()
    ]


def each_once(lines: list[dict[str, Any]]) -> list[str]:
    counted = Counter(line["key"] for line in lines)
    assert [key for key, times in counted.items() if times > 1] == [], "a key was answered twice"
    assert all("response" in line for line in lines)
    return sorted(counted)


def rerun(conn: str, cache: str, bucket: str, input_uri: str) -> dict[str, Any]:
    output: dict[str, Any] = GenerateWithCacheOperator(
        task_id="ask",
        ctxcache_conn_id=conn,
        cache_name=cache,
        input_uri=input_uri,
        output_uri=f"gs://{bucket}/job/out/",
        max_concurrency=stop_dag.MAX_CONCURRENCY,
        progress_interval=0,
    ).execute(task_context())
    return output


# ---------------------------------------------------------------------------------- the argument


@pytest.mark.parametrize("value", [0, -1, "x", float("nan"), True])
def test_a_bad_output_flush_seconds_is_refused_naming_the_field_when_the_dag_is_parsed(value: Any) -> None:
    with pytest.raises(CtxCacheConfigError, match=r"^output_flush_seconds: .* e\.g\. 10 \(the default\)"):
        GenerateWithCacheOperator(task_id="ask", cache_name="cachedContents/x", output_flush_seconds=value)


@pytest.mark.parametrize("value", [0, -1, "x"])
def test_a_bad_output_flush_seconds_set_after_parsing_is_refused_before_any_call(
    value: Any, conn: str, own_emulator: EmulatorProcess, gcs_bucket: str
) -> None:
    operator = GenerateWithCacheOperator(
        task_id="ask",
        ctxcache_conn_id=conn,
        cache_name="cachedContents/x",
        input_uri=f"gs://{gcs_bucket}/job/in.jsonl",
        output_uri=f"gs://{gcs_bucket}/job/out/",
    )
    operator.output_flush_seconds = value  # as a mapped or edited task could carry it

    with pytest.raises(CtxCacheConfigError, match=r"^output_flush_seconds: "):
        operator.execute(task_context())
    assert sum(own_emulator.admin.state()["counts"].values()) == 0
    assert gcs_lines(gcs_bucket) == []


# ---------------------------------------------------------------------------------- flush on demand


def test_output_flush_seconds_uploads_an_answer_while_every_later_call_is_still_held(
    conn: str, own_emulator: EmulatorProcess, gcs_bucket: str, tmp_path: Path
) -> None:
    # One answer, then every call hangs: no write follows the first, and its part is far from
    # full, so only the flush interval, checked while no answer arrives, can upload it.
    concurrency = 3
    name = new_cache(conn)
    input_uri = gcs_input(gcs_bucket, tmp_path, 20)
    own_emulator.admin.faults(latency_ms=HOLD_MS, after_requests=1, ops=["generate_content"])
    operator = GenerateWithCacheOperator(
        task_id="ask",
        ctxcache_conn_id=conn,
        cache_name=name,
        input_uri=input_uri,
        output_uri=f"gs://{gcs_bucket}/job/out/",
        max_concurrency=concurrency,
        output_part_size=1000,
        output_flush_seconds=0.05,
        progress_interval=0,
    )
    ended: list[BaseException] = []

    def run() -> None:
        try:
            operator.execute(task_context())
        except BaseException as error:
            ended.append(error)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    try:
        wait_for(lambda: gcs_lines(gcs_bucket) or not worker.is_alive(), "the first answer in the bucket")
        assert worker.is_alive(), f"the run ended before its answer was uploaded: {ended}"
        assert answered(own_emulator) == 1
        assert held_calls(own_emulator) == concurrency  # the run goes on: every worker is waiting
        assert len(each_once(gcs_lines(gcs_bucket))) == 1
    finally:
        operator.on_kill()  # what Airflow's SIGTERM handler calls; also from another thread
        worker.join(WAIT)
    assert not worker.is_alive()
    assert [type(error) for error in ended] == [FanoutStoppedError], ended


# ---------------------------------------------------------------------------------- a stopped task


def test_a_job_told_to_stop_before_its_calls_start_asks_nothing(
    conn: str, own_emulator: EmulatorProcess, gcs_bucket: str, tmp_path: Path
) -> None:
    name = new_cache(conn)
    operator = GenerateWithCacheOperator(
        task_id="ask",
        ctxcache_conn_id=conn,
        cache_name=name,
        input_uri=gcs_input(gcs_bucket, tmp_path, 5),
        output_uri=f"gs://{gcs_bucket}/job/out/",
    )
    job = operator._job(task_context())
    job.stop("SIGTERM while the input was being checked")

    with pytest.raises(
        FanoutStoppedError, match=r"^the fan-out was stopped \(SIGTERM while .*\) after 0 answers"
    ):
        job.run()
    assert asked(own_emulator) == 0


def test_a_task_sigterm_mid_run_leaves_every_answer_received_in_the_gcs_output_and_a_rerun_asks_only_the_rest(
    conn: str, own_emulator: EmulatorProcess, gcs_bucket: str, stop_dags: Path, tmp_path: Path
) -> None:
    n, given, concurrency = 60, 12, stop_dag.MAX_CONCURRENCY
    name = new_cache(conn)
    input_uri = gcs_input(gcs_bucket, tmp_path, n)
    own_emulator.admin.faults(latency_ms=HOLD_MS, after_requests=given, ops=["generate_content"])
    conf = {"cache": name, "input_uri": input_uri, "output_uri": f"gs://{gcs_bucket}/job/out/"}
    log = tmp_path / "dags-test.log"
    airflow = Path(sys.executable).with_name("airflow")
    # The real CLI and task runner: `airflow dags test` runs the task in this process, with
    # Airflow's own SIGTERM handler (it calls the operator's on_kill and raises nothing).
    with log.open("w") as out:
        child = subprocess.Popen(
            [str(airflow), "dags", "test", "ctxcache_test_stop_sigterm", "-c", json.dumps(conf)],
            env=os.environ.copy(),
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        # Every answer given has been received and written once every worker waits on a held call.
        wait_for(
            lambda: (
                child.poll() is not None
                or (answered(own_emulator) == given and held_calls(own_emulator) == concurrency)
            ),
            "the answered calls, then every worker on a held one",
        )
        assert child.poll() is None, log.read_text()[-3000:]
        sent = answered(own_emulator) + held_calls(own_emulator)
        assert gcs_lines(gcs_bucket) == []  # all in the buffer: 3600 s, 1000 lines (the DAG's settings)
        child.send_signal(signal.SIGTERM)
        returncode = child.wait(WAIT)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    text = log.read_text()
    assert returncode != 0, text[-3000:]
    assert "FanoutStoppedError" in text, text[-3000:]
    assert f"after {given} answers" in text
    assert len(each_once(gcs_lines(gcs_bucket))) == given

    own_emulator.admin.faults()
    before = asked(own_emulator)
    output = rerun(conn, name, gcs_bucket, input_uri)
    asked_again = asked(own_emulator) - before
    assert output["summary"]["skipped_already_answered"] == given
    assert asked_again == n - given  # nothing received is asked again
    # Only the calls in flight at the stop were asked twice: at most one per worker.
    assert sent + asked_again <= n + concurrency
    assert each_once(gcs_lines(gcs_bucket)) == keys(n)


@pytest.mark.usefixtures("airflow_db")
def test_an_execution_timeout_mid_run_leaves_every_answer_received_in_the_gcs_output(
    conn: str,
    own_emulator: EmulatorProcess,
    gcs_bucket: str,
    stop_dags: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from airflow.dag_processing.dagbag import DagBag

    n, given = 60, 12
    name = new_cache(conn)
    input_uri = gcs_input(gcs_bucket, tmp_path, n)
    # The first calls are answered, every later one hangs: the timeout can only land mid-run.
    own_emulator.admin.faults(latency_ms=HOLD_MS, after_requests=given, ops=["generate_content"])
    dag = DagBag(dag_folder=str(stop_dags)).get_dag("ctxcache_test_stop_timeout")
    assert dag is not None

    run = dag.test(
        run_conf={"cache": name, "input_uri": input_uri, "output_uri": f"gs://{gcs_bucket}/job/out/"}
    )

    assert task_states(run)["ask"] == "failed"
    logged = capsys.readouterr().out
    assert "AirflowTaskTimeout" in logged
    stopped = re.search(r"Stopped mid-run after (\d+) answers", logged)
    assert stopped is not None, logged[-3000:]
    received = int(stopped[1])
    # Every answer the task received is in the output (they were all in its buffer), and it
    # cannot have received more than the service gave.
    assert 0 < received <= answered(own_emulator)
    assert len(each_once(gcs_lines(gcs_bucket))) == received

    own_emulator.admin.faults()
    before = asked(own_emulator)
    rerun(conn, name, gcs_bucket, input_uri)
    assert asked(own_emulator) - before == n - received
    assert each_once(gcs_lines(gcs_bucket)) == keys(n)
