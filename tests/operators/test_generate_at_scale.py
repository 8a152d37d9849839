"""GenerateWithCacheOperator at scale: JSONL in and out, faults, resume, a vanished cache.

A worker killed mid-run is in tests/reliability/test_faults.py.

Each test reads the output the operator wrote (batch-output lines) and the emulator's counts,
so "exactly once" and "within N + max_concurrency calls" are checked on real artefacts.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_ctxcache.emulator.process import EmulatorProcess
from airflow_provider_ctxcache.emulator.tokens import text_of_tokens
from airflow_provider_ctxcache.exceptions import CacheNotFoundError
from airflow_provider_ctxcache.hooks import ContextCacheHook
from airflow_provider_ctxcache.operators import GenerateWithCacheOperator
from airflow_provider_ctxcache.prompts import normalize_prompts
from tests.hooks.conftest import ConnFactory, backend_extra
from tests.operators.context import task_context
from tests.output_files import output_lines

MODEL = "gemini-2.5-flash"


@pytest.fixture
def conn(emulator: EmulatorProcess, make_conn: ConnFactory) -> str:
    return make_conn("ctxcache_scale", **backend_extra("gemini_api", emulator))


def new_cache(conn_id: str, ttl: str = "30m") -> str:
    name = ContextCacheHook(conn_id).create_cache(model=MODEL, contents=[text_of_tokens(2100)], ttl=ttl).name
    assert name
    return name


def write_input(path: Path, n: int, cache_name: str | None = None) -> Path:
    with path.open("w") as out:
        for i in range(n):
            request: dict[str, Any] = {"contents": [{"role": "user", "parts": [{"text": f"Question {i}?"}]}]}
            if cache_name:
                request["cachedContent"] = cache_name
            out.write(json.dumps({"key": f"q{i:05d}", "request": request}) + "\n")
    return path


def operator(conn_id: str, cache_name: str, tmp_path: Path, **kwargs: Any) -> GenerateWithCacheOperator:
    arguments: dict[str, Any] = {
        "input_uri": str(tmp_path / "in.jsonl"),
        "output_uri": str(tmp_path / "out"),
        "allowed_roots": [str(tmp_path)],
        "progress_interval": 0,
    }
    arguments.update(kwargs)
    return GenerateWithCacheOperator(
        task_id="ask", ctxcache_conn_id=conn_id, cache_name=cache_name, **arguments
    )


def test_every_key_is_answered_exactly_once_under_429s_and_503s(
    conn: str, emulator: EmulatorProcess, tmp_path: Path
) -> None:
    name = new_cache(conn)
    write_input(tmp_path / "in.jsonl", 200)
    emulator.admin.faults(
        error_rate_429=0.2, error_rate_503=0.05, retry_delay_s=0.1, seed=5, ops=["generate_content"]
    )
    summary = operator(conn, name, tmp_path, max_concurrency=16).execute(task_context())["summary"]
    lines = output_lines(tmp_path / "out")
    assert sorted(line["key"] for line in lines) == [f"q{i:05d}" for i in range(200)]
    assert all("response" in line for line in lines)
    statuses = emulator.admin.state()["status_counts"]["generate_content"]
    assert statuses["200"] == 200
    assert statuses["429"] > 0
    assert statuses["503"] > 0
    assert summary["quota_waits"] == statuses["429"]


def test_a_retry_skips_every_key_already_answered(
    conn: str, emulator: EmulatorProcess, tmp_path: Path
) -> None:
    name = new_cache(conn)
    write_input(tmp_path / "in.jsonl", 30)
    operator(conn, name, tmp_path).execute(task_context())
    again = operator(conn, name, tmp_path).execute(task_context())
    assert again["summary"]["skipped_already_answered"] == 30
    assert again["summary"]["requests"] == 0
    assert emulator.admin.state()["counts"]["generate_content"] == 30
    assert len(output_lines(tmp_path / "out")) == 30


def test_a_cache_deleted_mid_run_stops_with_the_answers_so_far_in_the_output(
    conn: str, emulator: EmulatorProcess, tmp_path: Path
) -> None:
    name = new_cache(conn)
    write_input(tmp_path / "in.jsonl", 200)
    emulator.admin.faults(latency_ms=30, ops=["generate_content"])

    def delete_when_some_are_answered() -> None:
        while not (tmp_path / "out").exists() or len(output_lines(tmp_path / "out")) < 20:
            time.sleep(0.02)
        ContextCacheHook(conn).delete_cache(name)

    deleter = threading.Thread(target=delete_when_some_are_answered)
    deleter.start()
    with pytest.raises(CacheNotFoundError, match=name):
        operator(conn, name, tmp_path, max_concurrency=4).execute(task_context())
    deleter.join()
    lines = output_lines(tmp_path / "out")
    keys = [line["key"] for line in lines]
    assert len(keys) >= 20
    assert len(keys) == len(set(keys))
    assert all("response" in line for line in lines)
    assert emulator.admin.state()["counts"]["generate_content"] < 200
    time.sleep(0.2)  # calls abandoned client-side still finish on the server: let them land in this test


def test_the_forum_thread_batch_file_runs_unchanged(
    conn: str, emulator: EmulatorProcess, tmp_path: Path
) -> None:
    name = new_cache(conn)
    forum_lines = [
        {
            "key": f"request-{i}",
            "request": {
                "contents": [
                    {"parts": [{"text": f"Summarise clause {i} of the cached contract."}], "role": "user"}
                ],
                "generationConfig": {"temperature": 0.2, "thinking_config": {"thinking_budget": 0}},
                "cachedContent": name,
            },
        }
        for i in range(1, 4)
    ]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(line) + "\n" for line in forum_lines))
    output = operator(conn, name, tmp_path).execute(task_context())
    lines = output_lines(tmp_path / "out")
    assert sorted(line["key"] for line in lines) == ["request-1", "request-2", "request-3"]
    assert all(line["response"]["usageMetadata"]["cachedContentTokenCount"] == 2100 for line in lines)
    sent = [r["body"] for r in emulator.admin.requests() if r["op"] == "generate_content"]
    assert [body["generationConfig"]["temperature"] for body in sent] == [0.2, 0.2, 0.2]
    assert set(output["results"]) == {"request-1", "request-2", "request-3"}


def test_gcs_input_and_output_work_like_local_files(
    conn: str, emulator: EmulatorProcess, gcs_bucket: str, tmp_path: Path
) -> None:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    name = new_cache(conn)
    bucket = storage.Client(project="test", credentials=AnonymousCredentials()).bucket(gcs_bucket)
    local = write_input(tmp_path / "in.jsonl", 25)
    bucket.blob("jobs/in.jsonl").upload_from_filename(str(local))
    output = GenerateWithCacheOperator(
        task_id="ask",
        ctxcache_conn_id=conn,
        cache_name=name,
        input_uri=f"gs://{gcs_bucket}/jobs/in.jsonl",
        output_uri=f"gs://{gcs_bucket}/jobs/out/",
        output_part_size=10,
        progress_interval=0,
    ).execute(task_context())
    blobs = sorted(b.name for b in bucket.list_blobs(prefix="jobs/out/"))
    assert len(blobs) == 3
    keys = [json.loads(line)["key"] for b in blobs for line in bucket.blob(b).download_as_text().splitlines()]
    assert sorted(keys) == [f"q{i:05d}" for i in range(25)]
    assert output["output_uri"] == f"gs://{gcs_bucket}/jobs/out/"


def test_xcom_gets_a_small_summary_and_the_cost_report(
    conn: str, emulator: EmulatorProcess, tmp_path: Path
) -> None:
    name = new_cache(conn)
    write_input(tmp_path / "in.jsonl", 12)
    output = operator(conn, name, tmp_path, xcom_results_limit=10).execute(task_context())
    assert output["results"] is None  # more prompts than xcom_results_limit: the answers stay in the output
    assert output["summary"]["succeeded"] == 12
    assert output["summary"]["cached_content_token_count"] == 12 * 2100
    cost = output["cost"]
    assert cost["model"] == MODEL
    assert cost["tokens"]["requests"] == 12
    assert cost["tokens"]["cached_tokens"] == 12 * 2100
    assert set(cost["charged"]) == {"uncached_input", "cached_input", "output"}  # the cache's own: elsewhere
    assert cost["baselines"]["batch_no_cache"] == pytest.approx(cost["baselines"]["online_no_cache"] / 2)
    assert len(json.dumps(output)) < 5000


def test_more_prompts_than_xcom_holds_need_an_output_uri(
    conn: str, emulator: EmulatorProcess, tmp_path: Path
) -> None:
    from airflow_provider_ctxcache.exceptions import CtxCacheConfigError

    name = new_cache(conn)
    write_input(tmp_path / "in.jsonl", 1001)
    with pytest.raises(CtxCacheConfigError, match=r"^output_uri: 1001 prompts are too many"):
        operator(conn, name, tmp_path, output_uri=None).execute(task_context())
    assert emulator.admin.state()["counts"]["generate_content"] == 0


def test_a_bad_line_in_the_input_fails_before_any_call(
    conn: str, emulator: EmulatorProcess, tmp_path: Path
) -> None:
    from airflow_provider_ctxcache.exceptions import CtxCacheConfigError

    name = new_cache(conn)
    write_input(tmp_path / "in.jsonl", 50)
    with (tmp_path / "in.jsonl").open("a") as out:
        out.write('{"key": "bad", "request": {"contents": "x", "tools": [{"code_execution": {}}]}}\n')
    with pytest.raises(CtxCacheConfigError, match=r"^input_uri line 51\.request\.tools"):
        operator(conn, name, tmp_path).execute(task_context())
    assert emulator.admin.state()["counts"]["generate_content"] == 0


def test_each_answer_carries_the_fingerprint_of_its_own_request(
    conn: str, emulator: EmulatorProcess, tmp_path: Path
) -> None:
    name = new_cache(conn)
    source = write_input(tmp_path / "in.jsonl", 30)
    asked = [json.loads(line) for line in source.read_text().splitlines()]
    # Worked out here in one reading, as the operator's first reading does.
    expected = {request.key: request.fingerprint for request in normalize_prompts(asked)}

    operator(conn, name, tmp_path, max_concurrency=8).execute(task_context())

    stored = {line["key"]: line["requestHash"] for line in output_lines(tmp_path / "out")}
    assert stored == expected
    assert len(set(stored.values())) == 30  # thirty different requests, thirty different hashes
