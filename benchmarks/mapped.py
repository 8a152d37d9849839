"""One mapped task instance per prompt, measured on a real Airflow deployment (not extrapolated).

``airflow standalone`` (api-server, scheduler with the LocalExecutor at the e2e deployment's
own parallelism, dag-processor, triggerer) on SQLite runs ``bench_mapped_per_prompt`` once
with N prompts: one ``GenerateWithCacheOperator`` task instance per prompt, as many at a time
as the executor allows. The figure is the DAG run's own duration (its start and end dates in
the REST API); the client's trigger-to-finished time is reported next to it.

``python -m benchmarks.mapped --n 100 --latency-ms 250`` starts an emulator of its own;
:func:`run` is what ``benchmarks.fanout`` calls with its emulator and cache.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.loops import connection, create_cache, prompts

REPO = Path(__file__).resolve().parent.parent
DAGS = REPO / "benchmarks" / "dags"
DAG_ID = "bench_mapped_per_prompt"
MAPPED_TASK = "ask"
DEFAULT_N = 60
PAGE = 100  # the REST API's maximum page size ([api] maximum_page_limit)


def run(emulator_url: str, cache: str, n: int, *, parallelism: int | None = None) -> dict[str, float | int]:
    """Run the per-prompt DAG once with ``n`` prompts on a fresh deployment; its figures.

    ``parallelism`` overrides ``[core] parallelism``; by default the deployment keeps its own.
    Fails unless the run and every one of its ``n`` mapped instances succeeded.
    """
    from airflow_provider_ctxcache.emulator.process import EmulatorAdmin
    from tests.e2e.deployment import AirflowDeployment

    # The DAGs folder is the benchmark's own: the scheduler and dag-processor see only this DAG.
    extra_env = {"AIRFLOW__CORE__DAGS_FOLDER": str(DAGS)}
    if parallelism is not None:
        extra_env["AIRFLOW__CORE__PARALLELISM"] = str(parallelism)
    admin = EmulatorAdmin(emulator_url)
    try:
        asked_before = _generate_count(admin)
        with AirflowDeployment(
            connections={"ctxcache_default": connection(emulator_url)}, extra_env=extra_env
        ) as airflow:
            used_parallelism = int(airflow.cli("config", "get-value", "core", "parallelism").stdout.strip())
            airflow.wait_for_dag(DAG_ID)
            airflow.unpause(DAG_ID)
            started = time.perf_counter()
            run_id = airflow.trigger(DAG_ID, {"cache_name": cache, "prompts": prompts(n)})
            finished = airflow.wait_for_run(DAG_ID, run_id, timeout=120.0 + 5.0 * n)
            wall = time.perf_counter() - started
            instances = _task_instances(airflow, run_id)
            log_tail = airflow.log_tail() if finished["state"] != "success" else ""
        asked = _generate_count(admin) - asked_before
    finally:
        admin.close()

    mapped = [ti for ti in instances if ti["task_id"] == MAPPED_TASK]
    not_ok = {ti["map_index"]: ti["state"] for ti in mapped if ti["state"] != "success"}
    assert finished["state"] == "success", f"run {run_id}: {finished['state']}; failed: {not_ok}\n{log_tail}"
    assert len(mapped) == n, f"{len(mapped)} mapped instances of {MAPPED_TASK}, not {n}"
    assert not not_ok, f"mapped instances not successful: {not_ok}"
    assert asked >= n, f"the emulator answered {asked} generate_content calls for {n} prompts"
    seconds = (_time(finished["end_date"]) - _time(finished["start_date"])).total_seconds()
    return {
        "mapped_n": n,
        "mapped_seconds": seconds,
        "mapped_wall_seconds": wall,
        "mapped_seconds_per_prompt": seconds / n,
        "mapped_parallelism": used_parallelism,
        **_overlap(mapped),
    }


def _generate_count(admin: Any) -> int:
    return int(admin.state()["counts"].get("generate_content", 0))


def _task_instances(airflow: Any, run_id: str) -> list[dict[str, Any]]:
    """Every task instance of the run, page by page."""
    path = f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances"
    found: list[dict[str, Any]] = []
    while True:
        page = airflow.api("GET", f"{path}?limit={PAGE}&offset={len(found)}&order_by=map_index")
        found += page["task_instances"]
        if not page["task_instances"] or len(found) >= page["total_entries"]:
            return found


def _time(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def _overlap(instances: list[dict[str, Any]]) -> dict[str, float | int]:
    """How many instances really ran at once, how long one ran, and how long one sat queued."""
    edges: list[tuple[dt.datetime, int]] = []
    durations: list[float] = []
    waits: list[float] = []
    for ti in instances:
        start, end = _time(ti["start_date"]), _time(ti["end_date"])
        edges += [(start, 1), (end, -1)]
        durations.append((end - start).total_seconds())
        if ti.get("queued_when"):
            waits.append((start - _time(ti["queued_when"])).total_seconds())
    running = peak = 0
    for _, step in sorted(edges, key=lambda edge: (edge[0], edge[1])):  # an end before a start
        running += step
        peak = max(peak, running)
    return {
        "mapped_peak_running": peak,
        "mapped_task_seconds_mean": sum(durations) / len(durations),
        "mapped_queued_to_start_seconds_mean": sum(waits) / len(waits) if waits else 0.0,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=DEFAULT_N, help="prompts, one mapped task instance each")
    parser.add_argument("--latency-ms", type=int, default=250, help="emulator latency per generate_content")
    parser.add_argument("--parallelism", type=int, help="[core] parallelism (default: the deployment's)")
    args = parser.parse_args()
    # The cache is created from this process through the provider's hook: an Airflow home of its own.
    os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="ctxcache-bench-mapped-")
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    import logging

    logging.disable(logging.INFO)  # the figures, not the hook's log
    from airflow_provider_ctxcache.emulator import EmulatorProcess

    started = time.perf_counter()
    with EmulatorProcess() as emulator:
        cache = create_cache(emulator.url)
        emulator.admin.faults(latency_ms=args.latency_ms, ops=["generate_content"])
        figures = run(emulator.url, cache, args.n, parallelism=args.parallelism)
    print(
        f"one mapped task per prompt: N={figures['mapped_n']}, latency={args.latency_ms} ms, "
        f"parallelism={figures['mapped_parallelism']}: run {figures['mapped_seconds']:.1f} s "
        f"({figures['mapped_seconds_per_prompt']:.3f} s/prompt, "
        f"{figures['mapped_n'] / figures['mapped_seconds']:.2f} prompts/s), "
        f"trigger-to-done {figures['mapped_wall_seconds']:.1f} s; "
        f"peak running {figures['mapped_peak_running']}, "
        f"task {figures['mapped_task_seconds_mean']:.1f} s mean, "
        f"queued-to-start {figures['mapped_queued_to_start_seconds_mean']:.1f} s mean; "
        f"whole command {time.perf_counter() - started:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
