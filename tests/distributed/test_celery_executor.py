"""``ctxcache_batch_file`` on a real CeleryExecutor deployment: two workers, one emulator, gs:// files.

Two Celery workers (each a separate process group, its own hostname and its own private folder),
PostgreSQL as the metadata database and result backend, Redis as the broker, the project's
Gemini emulator and a Cloud Storage emulator, all on 127.0.0.1 (see ``conftest.py``). Each test
triggers the shipped example DAG through the REST API and checks real outcomes: task instance
hostnames and tries from the REST API, the answers in the bucket, and what the emulator billed.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import math
import uuid
from collections import Counter
from functools import cache
from types import ModuleType
from typing import Any

import pytest

from airflow_provider_ctxcache.emulator.process import EmulatorProcess
from airflow_provider_ctxcache.fanout.outputs import DEFAULT_FLUSH_SECONDS, DEFAULT_PART_SIZE, PART_PATTERN
from tests.distributed.conftest import REPORT
from tests.distributed.deployment import WORKER_CONCURRENCY, WORKERS, CeleryDeployment
from tests.e2e.deployment import REPO, TERMINAL_RUN_STATES
from tests.gcs import storage_client

# The 10-minute limit covers the first test's share of the package set-up (packages, PostgreSQL,
# Redis, `airflow db migrate`, six Airflow processes); the whole package takes about 3 minutes.
pytestmark = [pytest.mark.distributed, pytest.mark.timeout(600)]

DAG_ID = "ctxcache_batch_file"
DAG_FILE = REPO / "example_dags" / f"{DAG_ID}.py"
RUN_TIMEOUT_S = 420.0
GENERATE = "generate_content"
# The kill test: every generateContent call takes LATENCY_MS until the test freezes the run
# (each new call then waits HANG_MS), so the kill lands mid-run whatever the machine's speed.
LATENCY_MS = 2000
HANG_MS = 10_000
FAST_FLUSH_S = 2  # seconds, if the DAG takes output_flush_seconds as a param


@cache
def _dag_module() -> ModuleType:
    """The example DAG file, imported here to read what its mapped ``ask`` is given."""
    spec = importlib.util.spec_from_file_location("ctxcache_dist_batch_file_dag", DAG_FILE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ask_kwargs() -> dict[str, Any]:
    kwargs: dict[str, Any] = _dag_module().ask.partial_kwargs
    return kwargs


def write_requests(bucket: str, name: str, count: int) -> list[str]:
    """A batch-format JSONL file of ``count`` requests in the bucket; returns their keys."""
    keys = [f"q{i:05d}" for i in range(count)]
    lines = [
        {"key": key, "request": {"contents": [{"role": "user", "parts": [{"text": f"Clause {i}: what?"}]}]}}
        for i, key in enumerate(keys)
    ]
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    storage_client().bucket(bucket).blob(name).upload_from_string(data, content_type="application/jsonl")
    return keys


def output_lines(bucket: str, prefix: str) -> list[tuple[int, str, str]]:
    """Every answer line under ``prefix``: (shard index, attempt id, key), from the part objects."""
    found = []
    for blob in storage_client().list_blobs(bucket, prefix=prefix):
        folder, _, name = blob.name[len(prefix) :].rpartition("/")
        match = PART_PATTERN.match(name)
        if not folder.startswith("shard-") or match is None:
            continue
        for line in blob.download_as_bytes().decode().splitlines():
            if line.strip():
                record = json.loads(line)
                assert "response" in record, f"an error line in {blob.name}: {line[:300]}"
                found.append((int(folder[len("shard-") :]), match["attempt"], record["key"]))
    return found


def attempt_opened(attempt: str) -> dt.datetime:
    """When a fan-out attempt opened its output: its id starts with that UTC time."""
    stamp = attempt.split("Z-", 1)[0]
    return dt.datetime.strptime(stamp, "%Y%m%dT%H%M%S%f").replace(tzinfo=dt.timezone.utc)


def start_run(celery: CeleryDeployment, conf: dict[str, Any]) -> str:
    celery.wait_for_dag(DAG_ID)
    celery.unpause(DAG_ID)
    return celery.trigger(DAG_ID, conf)


def shard_table(celery: CeleryDeployment, run_id: str, title: str) -> list[dict[str, Any]]:
    """Every try of every mapped ``ask``, per worker; also added to the closing report."""
    rows = []
    for ti in celery.task_instances(DAG_ID, run_id, "ask"):
        for attempt in celery.tries(DAG_ID, run_id, "ask", ti["map_index"]):
            rows.append(
                {
                    "hostname": attempt["hostname"] or "-",
                    "map_index": attempt["map_index"],
                    "try_number": attempt["try_number"],
                    "state": attempt["state"],
                }
            )
    rows.sort(key=lambda r: (r["hostname"], r["map_index"], r["try_number"]))
    REPORT.append(f"{title}:")
    REPORT.append(f"  {'hostname':<10} {'shard':>5} {'try':>3}  state")
    REPORT.extend(
        f"  {r['hostname']:<10} {r['map_index']:>5} {r['try_number']:>3}  {r['state']}" for r in rows
    )
    return rows


def billed(emulator: EmulatorProcess) -> Counter[str]:
    """The emulator's billable events by type (cache_created, generate, cache_deleted, ...)."""
    return Counter(event["type"] for event in emulator.admin.usage())


def cache_lives(emulator: EmulatorProcess) -> dict[str, Any]:
    caches: dict[str, Any] = emulator.admin.usage_summary()["caches"]
    return caches


def test_sharded_fanout_runs_on_both_workers_with_one_answer_per_key(
    celery: CeleryDeployment, dist_emulator: EmulatorProcess, gcs_bucket: str
) -> None:
    shards, shard_size = 4, 64
    keys = write_requests(gcs_bucket, "in/requests.jsonl", shards * shard_size)
    run_id = start_run(
        celery,
        {
            "input_uri": f"gs://{gcs_bucket}/in/requests.jsonl",
            "output_uri": f"gs://{gcs_bucket}/out/",
            "shard_size": shard_size,
        },
    )
    run = celery.wait_for_run(DAG_ID, run_id, timeout=RUN_TIMEOUT_S)
    states = celery.task_states(DAG_ID, run_id)
    assert run["state"] == "success", states

    asks = celery.task_instances(DAG_ID, run_id, "ask")
    assert sorted(ti["map_index"] for ti in asks) == list(range(shards))
    assert all(ti["state"] == "success" for ti in asks), states
    rows = shard_table(celery, run_id, f"Sharded fan-out, {len(keys)} keys in {shards} shards")
    assert {ti["hostname"] for ti in asks} == set(WORKERS), rows

    lines = output_lines(gcs_bucket, "out/")
    per_key = Counter(key for _shard, _attempt, key in lines)
    assert set(per_key) == set(keys)
    assert max(per_key.values()) == 1, {k: n for k, n in per_key.items() if n > 1}
    assert {shard for shard, _a, _k in lines} == set(range(shards))

    events = billed(dist_emulator)
    assert (events["cache_created"], events["cache_deleted"], events["generate"]) == (1, 1, len(keys)), events
    (life,) = cache_lives(dist_emulator).values()
    assert life["ended_by"] == "deleted"
    assert dist_emulator.admin.state()["caches"] == []


def test_local_paths_without_a_shared_filesystem_are_refused_before_any_billable_call(
    celery: CeleryDeployment, dist_emulator: EmulatorProcess
) -> None:
    # The file is on one machine's own disk, as a user who tried it on a laptop would leave it.
    folder = celery.workers[WORKERS[0]].disk / f"batch-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    requests = [
        {"key": f"r{i}", "request": {"contents": [{"parts": [{"text": f"Clause {i}?"}]}]}} for i in range(6)
    ]
    (folder / "requests.jsonl").write_text("".join(json.dumps(r) + "\n" for r in requests))
    run_id = start_run(
        celery,
        {
            "input_uri": str(folder / "requests.jsonl"),
            "output_uri": str(folder / "answers"),
            "shard_size": 2,
        },
    )
    run = celery.wait_for_run(DAG_ID, run_id, timeout=RUN_TIMEOUT_S)
    states = celery.task_states(DAG_ID, run_id)
    assert run["state"] == "failed", states
    assert states["create_cache"] == "failed", states
    assert states["shards"] == "failed", states
    assert all(state == "upstream_failed" for task, state in states.items() if task.startswith("ask")), states

    # Nothing billable happened: no cache, no call; nothing was written on the machine.
    events = billed(dist_emulator)
    assert (events["cache_created"], events["generate"]) == (0, 0), events
    counts = dist_emulator.admin.state()["counts"]
    assert (counts["create_cache"], counts[GENERATE]) == (0, 0), counts
    assert sorted(p.name for p in folder.iterdir()) == ["requests.jsonl"]

    # Each refusing task's log says why (the executor, other machines) and what to use instead.
    for task_id in ("create_cache", "shards"):
        (ti,) = celery.task_instances(DAG_ID, run_id, task_id)
        log = celery.task_log(DAG_ID, run_id, task_id, ti["try_number"])
        assert "CtxCacheConfigError" in log, log[-3000:]
        for words in ("local path", "CeleryExecutor", "gs://", "shared_filesystem"):
            assert words in log, f"{task_id}'s log does not say {words!r}: {log[-3000:]}"


def test_killed_worker_shards_are_retried_on_the_other_worker_and_resume(
    celery: CeleryDeployment, dist_emulator: EmulatorProcess, gcs_bucket: str
) -> None:
    kwargs = ask_kwargs()
    ask = celery.task(DAG_ID, "ask")
    assert ask["retries"] >= 1, "the DAG's mapped `ask` needs retries for a lost worker's shard to run again"
    concurrency = int(kwargs["max_concurrency"])
    part_size = int(kwargs.get("output_part_size", DEFAULT_PART_SIZE))
    conf_extra: dict[str, Any] = {}
    if "output_flush_seconds" in celery.dag_params(DAG_ID):
        conf_extra["output_flush_seconds"] = FAST_FLUSH_S
        flush_s = float(FAST_FLUSH_S)
    else:
        flush_s = float(kwargs.get("output_flush_seconds", DEFAULT_FLUSH_SECONDS))
    latency_s = LATENCY_MS / 1000
    # As many shards as the two workers have slots, so every shard runs from the start; each
    # long enough that its first part is uploaded (after flush_s) rounds before it could end.
    shards = len(WORKERS) * WORKER_CONCURRENCY
    shard_size = concurrency * (math.ceil(flush_s / latency_s) + 4)
    keys = write_requests(gcs_bucket, "in/requests.jsonl", shards * shard_size)

    admin = dist_emulator.admin
    admin.faults(ops=[GENERATE], latency_ms=LATENCY_MS)
    run_id = start_run(
        celery,
        {
            "input_uri": f"gs://{gcs_bucket}/in/requests.jsonl",
            "output_uri": f"gs://{gcs_bucket}/out/",
            "shard_size": shard_size,
            **conf_extra,
        },
    )

    def a_worker_with_answers() -> str | None:
        """The hostname of a worker running a shard that has uploaded answers, once there is one."""
        if celery.run(DAG_ID, run_id)["state"] in TERMINAL_RUN_STATES:
            raise AssertionError(f"the run ended early: {celery.task_states(DAG_ID, run_id)}")
        running = [
            ti
            for ti in celery.task_instances(DAG_ID, run_id, "ask")
            if ti["state"] == "running" and ti["hostname"] in WORKERS
        ]
        if not running:
            return None
        answered = {shard for shard, _attempt, _key in output_lines(gcs_bucket, "out/")}
        return next((ti["hostname"] for ti in running if ti["map_index"] in answered), None)

    victim = celery.wait_for("a worker running a shard with answers", a_worker_with_answers, timeout=240)
    # Freeze the run: calls already waiting finish, every new one waits HANG_MS, so nothing can end
    # the victim's shards before the kill. Then the machine dies: its whole process group.
    admin.faults(ops=[GENERATE], latency_ms=HANG_MS)
    killed = {
        ti["map_index"]
        for ti in celery.task_instances(DAG_ID, run_id, "ask")
        if ti["state"] == "running" and ti["hostname"] == victim
    }
    killed_pids = celery.kill_worker(victim)
    killed_at = dt.datetime.now(dt.timezone.utc)
    admin.faults()  # the rest of the run at full speed
    survivor = next(name for name in WORKERS if name != victim)
    assert killed, "the victim was running no shard"

    run = celery.wait_for_run(DAG_ID, run_id, timeout=RUN_TIMEOUT_S)
    states = celery.task_states(DAG_ID, run_id)
    # The killed worker's calls still waiting in the emulator are answered (and billed) later.
    celery.wait_for("every call answered", lambda: admin.state()["in_flight"] == 0 or None, timeout=60)
    rows = shard_table(celery, run_id, f"Killed {victim} mid-run; shards {sorted(killed)} retried")
    assert run["state"] == "success", states

    by_shard: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        by_shard.setdefault(row["map_index"], []).append(row)
    for shard in killed:
        tries = sorted(by_shard[shard], key=lambda r: r["try_number"])
        first, last = tries[0], tries[-1]
        assert first["hostname"] == victim, by_shard[shard]
        assert (last["hostname"], last["state"]) == (survivor, "success"), by_shard[shard]
        assert last["try_number"] >= 2, by_shard[shard]

    lines = output_lines(gcs_bucket, "out/")
    per_key = Counter(key for _shard, _attempt, key in lines)
    duplicates = sum(n - 1 for n in per_key.values())
    assert set(per_key) == set(keys), f"{len(set(keys) - set(per_key))} keys have no answer"
    assert duplicates == 0, {k: n for k, n in per_key.items() if n > 1}
    # What each killed try had uploaded: the parts of its attempt, opened before the kill (an
    # upload under way at the kill may land just after it: it counts, the retry skipped it too).
    flushed = {
        shard: {key for s, attempt, key in lines if s == shard and attempt_opened(attempt) < killed_at}
        for shard in killed
    }
    assert any(flushed.values()), "the victim had uploaded no answers"
    assert all(len(done) < shard_size for done in flushed.values()), "a shard had finished: not mid-run"
    # Resume: each retried shard's new attempt wrote exactly the keys its killed try had not uploaded.
    for shard in killed:
        mine = set(keys[shard * shard_size : (shard + 1) * shard_size])
        retried = [key for s, attempt, key in lines if s == shard and attempt_opened(attempt) > killed_at]
        assert set(retried) == mine - flushed[shard], f"shard {shard}"

    events = billed(dist_emulator)
    reasked = events["generate"] - len(keys)
    # Lost with the victim, per shard: the answers buffered since its last upload (they arrived
    # within flush_s, each of `concurrency` slots answering at most once per latency_s; at most a
    # part), and the calls in flight (at most `concurrency`).
    per_shard_bound = min(part_size, concurrency * (math.floor(flush_s / latency_s) + 1)) + concurrency
    bound = len(killed) * per_shard_bound
    REPORT.append(
        f"Kill figures: keys={len(keys)} (shards={shards} x {shard_size}), duplicates={duplicates}, "
        f"generate calls={events['generate']}, re-asked calls={reasked} (bound {bound} = {len(killed)} "
        f"killed shards x [min(part {part_size}, {concurrency} x (floor({flush_s:g}s / {latency_s:g}s) + 1)) "
        f"+ {concurrency} in flight]), uploaded before the kill={sum(map(len, flushed.values()))}, "
        f"killed pids={len(killed_pids)}"
    )
    assert 0 <= reasked <= bound, REPORT[-1]
    assert (events["cache_created"], events["cache_deleted"]) == (1, 1), events
    assert admin.state()["caches"] == []
