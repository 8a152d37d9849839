"""``make bench-triggers``: N cache sensors' triggers against a minimal shared-client loop.

The emulator runs in its own process. Each side runs in a fresh child process, imports done
before any clock starts, the two alternating for ``--rounds`` rounds (medians reported):

- ``triggers``: N ``CacheExpiryTrigger`` s driven the way the triggerer drives them (``run()``
  started as tasks in one event loop), all on one connection (``AIRFLOW_CONN_*``), each waiting
  on one of a few live caches and reading it every ``--poll`` seconds;
- ``loop``: what one would write by hand: one ``google.genai`` async client, N coroutines each
  reading its cache with ``client.aio.caches.get`` and sleeping ``--poll`` seconds.

Figures: start-up CPU (process CPU seconds from creating the triggers, or the client, until
every one of the N has made its first read), steady CPU per call (CPU seconds over a window of
``--window`` seconds after start-up, divided by the reads made in it) and open sockets (the most
``/proc/self/fd`` entries that are sockets, sampled every poll during the window). Reads are
counted in the child (the triggers' through a counting wrapper around the hook's read). INFO logs
are off on both sides, as in ``make bench``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any, cast

from benchmarks.loops import MODEL, connection

REPO = Path(__file__).resolve().parent.parent
CACHES = 10
SIDES = ("loop", "triggers")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def open_sockets() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                count += 1
        except OSError:
            continue
    return count


class Reads:
    """Reads made so far, and an event set once each of ``n`` readers (tasks) has made its first."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.total = 0
        self.readers: set[int] = set()
        self.all_started = asyncio.Event()

    def count(self) -> None:
        self.total += 1
        if not self.all_started.is_set():
            self.readers.add(id(asyncio.current_task()))
            if len(self.readers) >= self.n:
                self.all_started.set()


async def measure(reads: Reads, started_cpu: float, poll: float, window: float) -> dict[str, float]:
    """Start-up CPU once every reader has read once, then CPU per read over a steady window."""
    await reads.all_started.wait()
    startup = cpu_seconds() - started_cpu
    sockets = open_sockets()
    await asyncio.sleep(poll)  # past the start-up burst
    cpu0, reads0 = cpu_seconds(), reads.total
    end = time.monotonic() + window
    while time.monotonic() < end:
        await asyncio.sleep(poll / 2)
        sockets = max(sockets, open_sockets())
    calls = reads.total - reads0
    return {
        "startup_cpu_s": startup,
        "steady_cpu_per_call_ms": (cpu_seconds() - cpu0) / calls * 1000,
        "steady_calls": calls,
        "sockets": sockets,
    }


async def run_triggers(caches: list[str], n: int, poll: float, window: float) -> dict[str, float]:
    from airflow_provider_ctxcache.hooks import ContextCacheHook
    from airflow_provider_ctxcache.triggers import CacheExpiryTrigger

    reads = Reads(n)
    read = ContextCacheHook.aget_cache

    async def counted(self: ContextCacheHook, name: str) -> Any:
        result = await read(self, name)
        reads.count()
        return result

    ContextCacheHook.aget_cache = counted  # type: ignore[method-assign]  # instrumentation only
    started = cpu_seconds()
    triggers = [
        CacheExpiryTrigger(
            cache_name=caches[i % len(caches)], ctxcache_conn_id="bench_triggers", poll_interval=poll
        )
        for i in range(n)
    ]
    runs = [cast(AsyncGenerator[Any, None], trigger.run()) for trigger in triggers]
    tasks: list[asyncio.Task[Any]] = [asyncio.create_task(anext(r)) for r in runs]  # type: ignore[arg-type]
    figures = await measure(reads, started, poll, window)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert not any(t.done() and not t.cancelled() and t.exception() is None for t in tasks), "a trigger fired"
    return figures


async def run_loop(url: str, caches: list[str], n: int, poll: float, window: float) -> dict[str, float]:
    from google import genai
    from google.genai import types

    reads = Reads(n)
    started = cpu_seconds()
    client = genai.Client(
        api_key="bench-key", http_options=types.HttpOptions(base_url=url, api_version="v1beta")
    )

    async def poller(name: str) -> None:
        while True:
            await client.aio.caches.get(name=name)
            reads.count()
            await asyncio.sleep(poll)

    tasks = [asyncio.create_task(poller(caches[i % len(caches)])) for i in range(n)]
    figures = await measure(reads, started, poll, window)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await client.aio.aclose()
    return figures


def child(side: str, url: str, caches: list[str], n: int, poll: float, window: float) -> None:
    import logging

    logging.disable(logging.INFO)
    # Everything either side imports, before any clock starts.
    import google.genai  # noqa: F401

    import airflow_provider_ctxcache.hooks
    import airflow_provider_ctxcache.triggers  # noqa: F401

    os.environ["AIRFLOW_CONN_BENCH_TRIGGERS"] = connection(url)
    if side == "triggers":
        figures = asyncio.run(run_triggers(caches, n, poll, window))
    else:
        figures = asyncio.run(run_loop(url, caches, n, poll, window))
    print(json.dumps(figures))


def run_child(side: str, url: str, caches: list[str], args: argparse.Namespace) -> dict[str, float]:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.triggers",
            "--child",
            side,
            "--url",
            url,
            "--caches",
            ",".join(caches),
            "--n",
            str(args.n),
            "--poll",
            str(args.poll),
            "--window",
            str(args.window),
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=REPO,
        env=os.environ.copy(),
    )
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def print_table(figures: dict[str, Any]) -> None:
    loop, triggers = figures["loop"], figures["triggers"]
    print(
        f"\n{figures['n']} cache sensors polling every {figures['poll_s']:g} s, one connection "
        f"(median of {figures['rounds']} rounds; emulator in its own process)"
    )
    print(f"{'':34}{'start-up CPU s':>16}{'steady CPU ms/call':>20}{'open sockets':>14}")
    rows = (("minimal loop, one shared client", loop), (f"{figures['n']} CacheExpiryTriggers", triggers))
    for label, row in rows:
        print(
            f"{label:34}{row['startup_cpu_s']:>16.3f}{row['steady_cpu_per_call_ms']:>20.3f}{row['sockets']:>14.0f}"
        )
    ratio = {key: triggers[key] / loop[key] for key in ("startup_cpu_s", "steady_cpu_per_call_ms", "sockets")}
    print(
        f"{'triggers / loop':34}{ratio['startup_cpu_s']:>15.2f}x{ratio['steady_cpu_per_call_ms']:>19.2f}x"
        f"{ratio['sockets']:>13.2f}x"
    )
    print("acceptance: start-up <= 2x, steady <= 1.2x, sockets <= connections (1) + a small constant")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=200, help="triggers (and loop readers)")
    parser.add_argument("--poll", type=float, default=1.0, help="seconds between one reader's reads")
    parser.add_argument("--window", type=float, default=8.0, help="seconds of steady polling measured")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--caches", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.url, args.caches.split(","), args.n, args.poll, args.window)
        return 0

    home = Path(tempfile.mkdtemp(prefix="ctxcache-bench-triggers-"))
    # INFO logs off on both sides (Airflow's structlog output as well as the stdlib's), as in
    # ``make bench``: the figures compare clients, not log writing.
    os.environ.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        }
    )
    import logging

    logging.disable(logging.INFO)
    from airflow_provider_ctxcache.emulator import EmulatorProcess
    from airflow_provider_ctxcache.emulator.tokens import text_of_tokens
    from airflow_provider_ctxcache.hooks import ContextCacheHook

    with EmulatorProcess() as emulator:
        os.environ["AIRFLOW_CONN_CTXCACHE_DEFAULT"] = connection(emulator.url)
        hook = ContextCacheHook()
        caches = [
            str(hook.create_cache(model=MODEL, contents=[text_of_tokens(2100)], ttl="2h").name)
            for _ in range(CACHES)
        ]
        hook.close()
        runs: dict[str, list[dict[str, float]]] = {side: [] for side in SIDES}
        for _ in range(args.rounds):
            for side in SIDES:
                runs[side].append(run_child(side, emulator.url, caches, args))
    figures: dict[str, Any] = {"n": args.n, "poll_s": args.poll, "rounds": args.rounds}
    for side in SIDES:
        figures[side] = {key: statistics.median(r[key] for r in runs[side]) for key in runs[side][0]}
    print_table(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
