"""``make bench``: fan-out throughput and memory, printed side by side in one run.

The emulator runs in its own process with a fixed latency. Measured, at the same concurrency:
the engine behind GenerateWithCacheOperator; a plain google-genai asyncio loop; the limit
N x latency / concurrency; one call at a time; and one mapped Airflow task instance per prompt
(under ``dag.test()``). Engine and raw loop run alternately, three rounds, and the medians are
reported, since two cores shared with the emulator make single runs noisy; the same pair is
also run with no latency at all, where only client CPU counts. Peak RSS of the engine's
streaming path (JSONL in, JSONL out) is measured in fresh child processes at N and 10 x N.
A quota-bound scenario (:mod:`benchmarks.quota`) follows: the engine with its quota given, the
engine adapting to 429s, and a raw SDK loop, each against a binding token and request quota.
Figures go to stdout and to ``bench-results.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.loops import MODEL, connection, engine_rps, prompts, raw_sdk_rps

ROUNDS = 3
REPO = Path(__file__).resolve().parent.parent


def create_cache(url: str) -> str:
    from airflow_provider_ctxcache.emulator.tokens import text_of_tokens
    from airflow_provider_ctxcache.hooks import ContextCacheHook

    os.environ["AIRFLOW_CONN_CTXCACHE_DEFAULT"] = connection(url)
    name = ContextCacheHook().create_cache(model=MODEL, contents=[text_of_tokens(20_000)], ttl="2h").name
    assert name
    return name


def sequential_rps(cache: str, n: int) -> float:
    from airflow_provider_ctxcache.hooks import ContextCacheHook

    hook = ContextCacheHook()
    started = time.perf_counter()
    for prompt in prompts(n):
        hook.generate(model=MODEL, contents=prompt, cache_name=cache)
    return n / (time.perf_counter() - started)


def mapped_seconds_per_prompt(cache: str, n: int, home: Path) -> float:
    """Seconds per prompt when every prompt is its own mapped task instance (warm: API already up)."""
    from airflow.dag_processing.dagbag import DagBag

    subprocess.run(
        [str(Path(sys.executable).with_name("airflow")), "db", "migrate"],
        check=True,
        capture_output=True,
        env=os.environ.copy(),
    )
    dag = DagBag(dag_folder=str(REPO / "benchmarks" / "dags")).get_dag("bench_mapped_per_prompt")
    dag.test(run_conf={"cache_name": cache, "prompts": prompts(2)})  # starts Airflow's in-process API
    started = time.perf_counter()
    run = dag.test(run_conf={"cache_name": cache, "prompts": prompts(n)})
    elapsed = time.perf_counter() - started
    assert str(run.state) == "success", run.state
    return elapsed / n


def peak_rss_mb(url: str, cache: str, n: int, concurrency: int) -> float:
    """Peak RSS of a fresh process that streams n prompts from JSONL to JSONL through the engine."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.fanout",
            "--rss-child",
            str(n),
            "--url",
            url,
            "--cache",
            cache,
            "--concurrency",
            str(concurrency),
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=REPO,
        env=os.environ.copy(),
    )
    return float(json.loads(done.stdout.strip().splitlines()[-1])["rss_mb"])


def rss_child(url: str, cache: str, n: int, concurrency: int) -> None:
    from airflow_provider_ctxcache.fanout import FanoutOptions
    from airflow_provider_ctxcache.fanout.job import FanoutJob
    from airflow_provider_ctxcache.hooks import ContextCacheHook

    os.environ["AIRFLOW_CONN_CTXCACHE_DEFAULT"] = connection(url)
    folder = Path(tempfile.mkdtemp(prefix="ctxcache-bench-rss-"))
    with (folder / "in.jsonl").open("w") as out:
        for i, prompt in enumerate(prompts(n)):
            out.write(
                json.dumps(
                    {"key": f"k{i}", "request": {"contents": [{"role": "user", "parts": [{"text": prompt}]}]}}
                )
                + "\n"
            )
    FanoutJob(
        hook=ContextCacheHook(),
        cache_name=cache,
        max_concurrency=concurrency,
        options=FanoutOptions(progress_interval=0, keep_alive=False),
        input_uri=str(folder / "in.jsonl"),
        output_uri=str(folder / "out"),
        allowed_roots=[str(folder)],
        model=MODEL,
    ).run()
    print(json.dumps({"rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=2000, help="prompts per throughput run")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency-ms", type=int, default=250)
    parser.add_argument("--mapped-n", type=int, default=20, help="prompts in the one-task-per-prompt run")
    parser.add_argument("--rss-n", type=int, default=2000, help="N for the memory runs (and 10 x N)")
    parser.add_argument("--only-quota", action="store_true", help="run the quota-bound scenario alone")
    parser.add_argument("--rss-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child(args.url, args.cache, args.rss_child, args.concurrency)
        return 0

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
        figures = {"n": n, "concurrency": concurrency, "latency_ms": latency}
        for delay, suffix in ((latency, ""), (0, "_cpu_bound")):
            emulator.admin.faults(latency_ms=delay, ops=["generate_content"])
            engine_rps(cache, min(n, 200), concurrency)  # warm-up: imports, connection pool
            engine, raw = [], []
            for _ in range(ROUNDS):
                engine.append(engine_rps(cache, n, concurrency))
                raw.append(raw_sdk_rps(emulator.url, cache, n, concurrency))
            figures[f"engine_rps{suffix}"] = statistics.median(engine)
            figures[f"raw_sdk_rps{suffix}"] = statistics.median(raw)
        emulator.admin.faults(latency_ms=latency, ops=["generate_content"])
        figures["limit_rps"] = concurrency / (latency / 1000)
        figures["sequential_rps"] = sequential_rps(cache, 20)
        figures["mapped_seconds_per_prompt"] = mapped_seconds_per_prompt(cache, args.mapped_n, home)
        emulator.admin.faults(latency_ms=2, ops=["generate_content"])
        figures["rss_mb_n"] = peak_rss_mb(emulator.url, cache, args.rss_n, concurrency)
        figures["rss_mb_10n"] = peak_rss_mb(emulator.url, cache, 10 * args.rss_n, concurrency)
        figures["rss_n"] = args.rss_n
        figures.update(quota.run(emulator, n, concurrency, latency))

    print_table(figures, args.mapped_n)
    quota.print_table(figures)
    (REPO / "bench-results.json").write_text(json.dumps(figures, indent=2) + "\n")
    return 0


def print_table(f: dict[str, Any], mapped_n: int) -> None:
    engine = f["engine_rps"]
    at_1000_engine = 1000 / engine
    at_1000_mapped = 1000 * f["mapped_seconds_per_prompt"]
    rows = [
        ("engine (GenerateWithCacheOperator)", engine, ""),
        (
            "raw google-genai asyncio loop",
            f["raw_sdk_rps"],
            f"engine/raw   = {engine / f['raw_sdk_rps']:.2f}x (target >= 0.9)",
        ),
        (
            "limit: concurrency / latency",
            f["limit_rps"],
            f"engine/limit = {engine / f['limit_rps']:.2f}x (target >= 0.8)",
        ),
        ("one call at a time", f["sequential_rps"], f"engine/seq   = {engine / f['sequential_rps']:.0f}x"),
        (
            "one mapped task per prompt",
            1 / f["mapped_seconds_per_prompt"],
            f"at N=1000: {at_1000_mapped:.0f} s vs {at_1000_engine:.1f} s = "
            f"{at_1000_mapped / at_1000_engine:.0f}x (target >= 50)",
        ),
    ]
    print(
        f"\nfan-out benchmark: N={f['n']}, concurrency={f['concurrency']}, latency={f['latency_ms']} ms, "
        f"emulator in its own process ({mapped_n} prompts for the mapped run)\n"
    )
    print(f"{'':38}{'req/s':>9}   ratio")
    for label, rps, ratio in rows:
        print(f"{label:38}{rps:9.1f}   {ratio}")
    cpu_engine, cpu_raw = f["engine_rps_cpu_bound"], f["raw_sdk_rps_cpu_bound"]
    label = "no latency: engine vs raw (client CPU)"
    print(f"{label:38}{cpu_engine:9.1f}   engine/raw   = {cpu_engine / cpu_raw:.2f}x")
    print(
        f"\npeak RSS, streaming JSONL -> JSONL: N={f['rss_n']}: {f['rss_mb_n']:.0f} MB; "
        f"10N={10 * f['rss_n']}: {f['rss_mb_10n']:.0f} MB; "
        f"ratio {f['rss_mb_10n'] / f['rss_mb_n']:.2f}x (target <= 1.2)"
    )


if __name__ == "__main__":
    sys.exit(main())
