"""``make bench``: fan-out throughput, printed side by side in one run, then the CPU-bound and quota cases.

The emulator runs in its own process with a fixed latency (default 250 ms). The latency-bound
case, at the same concurrency: the operator's real path (``GenerateWithCacheOperator.execute``
with a JSONL ``input_uri`` and an ``output_uri`` folder, keep-alive and progress on) against a
hand-written google-genai worker pool over one shared client writing the same answer lines,
each run in a fresh child process with its start-up and a warm-up done before the clock starts
(the machinery of :mod:`benchmarks.cpu`). The two alternate over five rounds, since two cores
shared with the emulator make single runs noisy: each side's medians are printed, and engine/raw
is the median of the rounds' own ratios (a round's two runs are back to back). Then the limit
N x latency / concurrency, one call at a time, and one mapped Airflow task instance per prompt,
run by a real deployment's LocalExecutor at its own parallelism (:mod:`benchmarks.mapped`). The
CPU-bound case (:mod:`benchmarks.cpu`: 50 ms latency, concurrency 128, CPU per request and RSS,
and the memory flatness of the engine at N and 10 x N) and the quota-bound case
(:mod:`benchmarks.quota`: the engine with its quota given, the engine adapting to 429s, and a
raw SDK loop, each against a binding token and request quota) follow. Figures go to stdout and
to ``bench-results.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import cpu, mapped
from benchmarks.loops import MODEL, create_cache, prompts

REPO = Path(__file__).resolve().parent.parent


def sequential_rps(cache: str, n: int) -> float:
    from airflow_provider_ctxcache.hooks import ContextCacheHook

    hook = ContextCacheHook()
    started = time.perf_counter()
    for prompt in prompts(n):
        hook.generate(model=MODEL, contents=prompt, cache_name=cache)
    return n / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=2000, help="prompts per latency-bound run")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency-ms", type=int, default=250)
    parser.add_argument(
        "--mapped-n", type=int, default=mapped.DEFAULT_N, help="prompts in the one-task-per-prompt run"
    )
    parser.add_argument("--cpu-n", type=int, default=cpu.N, help="prompts per CPU-bound run")
    parser.add_argument("--cpu-concurrency", type=int, default=cpu.CONCURRENCY)
    parser.add_argument("--cpu-latency-ms", type=int, default=cpu.LATENCY_MS)
    parser.add_argument("--rss-n", type=int, default=cpu.RSS_N, help="N for the memory runs (and 10 x N)")
    parser.add_argument("--only-quota", action="store_true", help="run the quota-bound scenario alone")
    parser.add_argument(
        "--no-cpu", action="store_true", help="skip the CPU-bound case (make bench-cpu runs it)"
    )
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="ctxcache-bench-"))
    os.environ.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "benchmarks" / "dags"),
        }
    )
    import logging

    logging.disable(logging.INFO)  # the numbers, not Airflow's task logs
    from airflow_provider_ctxcache.emulator import EmulatorProcess
    from benchmarks import quota

    n, concurrency, latency = args.n, args.concurrency, args.latency_ms
    with EmulatorProcess() as emulator:
        cache = create_cache(emulator.url)
        if args.only_quota:
            figures = quota.run(emulator, n, concurrency, latency)
            quota.print_table(figures)
            return 0
        figures = {"n": n, "concurrency": concurrency, "latency_ms": latency, "rounds": cpu.ROUNDS}
        folder = Path(tempfile.mkdtemp(prefix="ctxcache-bench-latency-"))
        try:
            sides = cpu.compare(emulator, cache, folder, n=n, concurrency=concurrency, latency_ms=latency)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        figures["engine_rps"] = sides.engine["rps"]
        figures["raw_sdk_rps"] = sides.raw["rps"]
        figures["engine_cpu_per_request"] = sides.engine["cpu_per_request"]
        figures["raw_sdk_cpu_per_request"] = sides.raw["cpu_per_request"]
        figures["engine_raw_ratio"] = sides.rps_ratio
        figures["engine_raw_ratios"] = sides.rps_ratios
        figures["engine_raw_cpu_ratio"] = sides.cpu_ratio
        emulator.admin.faults(latency_ms=latency, ops=["generate_content"])
        figures["limit_rps"] = concurrency / (latency / 1000)
        figures["sequential_rps"] = sequential_rps(cache, 20)
        if not args.no_cpu:
            figures.update(
                cpu.run(
                    emulator,
                    cache,
                    n=args.cpu_n,
                    concurrency=args.cpu_concurrency,
                    latency_ms=args.cpu_latency_ms,
                    rss_n=args.rss_n,
                )
            )
        emulator.admin.faults(latency_ms=latency, ops=["generate_content"])
        figures.update(mapped.run(emulator.url, cache, args.mapped_n))
        figures.update(quota.run(emulator, n, concurrency, latency))

    print_table(figures)
    if not args.no_cpu:
        cpu.print_table(figures)
    quota.print_table(figures)
    (REPO / "bench-results.json").write_text(json.dumps(figures, indent=2) + "\n")
    return 0


def print_table(f: dict[str, Any]) -> None:
    engine = f["engine_rps"]
    mapped_rps = f["mapped_n"] / f["mapped_seconds"]
    rows = [
        ("engine (operator's path)", engine, ""),
        (
            "raw google-genai worker pool",
            f["raw_sdk_rps"],
            f"engine/raw   = {f['engine_raw_ratio']:.2f}x (target >= 0.9; median of rounds: "
            f"{cpu.rounds_text(f['engine_raw_ratios'])})",
        ),
        (
            "limit: concurrency / latency",
            f["limit_rps"],
            f"engine/limit = {engine / f['limit_rps']:.2f}x (target >= 0.8)",
        ),
        ("one call at a time", f["sequential_rps"], f"engine/seq   = {engine / f['sequential_rps']:.0f}x"),
        (
            "one mapped task per prompt",
            mapped_rps,
            f"engine/mapped = {engine / mapped_rps:.0f}x (target >= 50): {f['mapped_n']} task instances "
            f"in {f['mapped_seconds']:.0f} s, LocalExecutor parallelism {f['mapped_parallelism']}",
        ),
    ]
    print(
        f"\nlatency-bound fan-out: N={f['n']}, concurrency={f['concurrency']}, latency={f['latency_ms']} ms, "
        f"JSONL in and out ({f['rounds']} rounds: medians)\n"
    )
    print(f"{'':38}{'req/s':>9}   ratio")
    for label, rps, ratio in rows:
        print(f"{label:38}{rps:9.1f}   {ratio}".rstrip())
    cpu_engine, cpu_raw = 1000 * f["engine_cpu_per_request"], 1000 * f["raw_sdk_cpu_per_request"]
    print(
        f"client CPU per 1000 requests: engine {cpu_engine:.2f} s, raw {cpu_raw:.2f} s "
        f"(median of rounds {f['engine_raw_cpu_ratio']:.2f}x)"
    )


if __name__ == "__main__":
    sys.exit(main())
