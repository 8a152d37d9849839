"""``make bench-cpu``: the CPU-bound fan-out, the operator's real path against a hand-written pool.

The emulator runs in its own process with ``--latency-ms`` (default 50 ms) on generateContent,
short enough at ``--concurrency`` 128 that the client's CPU, not the wait, decides the rate.
Both sides read the same JSONL input (``{"key", "request": {"contents": [...]}}`` lines) and
write one JSONL answer line per key (``{"key", "response": {...}}``, the batch-output shape of
:mod:`airflow_provider_ctxcache.fanout.records`). Each run is a fresh child process
(``python -m benchmarks.cpu --child engine|raw ...``) that reports JSON on its last stdout line:

- ``engine``: ``GenerateWithCacheOperator(...).execute(context)``, the operator's real path, with
  ``input_uri`` the JSONL file and ``output_uri`` a folder (output parts), every other argument
  at the operator's default (keep-alive and progress on, ``xcom_results_limit`` 100, so a large
  run returns no results through XCom). The context is the small one the operator reads (a
  task instance with ``map_index`` and ``xcom_push``, a ``run_id``), as in the operator tests;
  nothing of Airflow is mocked (its guard logs that ``execute`` runs outside the task runner,
  and lets it run). Its time includes everything ``execute`` does: the connection
  lookup, the client, the whole-input check before any call, the calls, the output parts, their
  compaction and the cost report.
- ``raw``: what a careful team writes by hand with google-genai: one shared ``genai.Client``,
  ``concurrency`` asyncio workers pulling lines from one shared iterator over the input file,
  ``client.aio.models.generate_content(model, contents, config={"cached_content": cache})`` per
  line, and one answer line per key (the whole response as REST JSON, by the SDK's own
  ``model_dump``), written to a buffered file.

In each child the start-up comes first (imports, the client or operator, a warm-up of
``WARMUP_N`` requests from a separate input); then the clock starts: wall time, process CPU
(``getrusage(RUSAGE_SELF)`` user + system), and RSS (``/proc/self/statm``) right after the
start-up and at its peak during the run (a daemon thread samples it every 20 ms). The child
then checks that its output answers every key of the input, so a broken side cannot look fast.
In each of ``--rounds`` rounds (default 5) the two sides run at the same time, from one start
(:func:`run_pair`): this VM's speed moves by a quarter from one second to the next, so two runs
back to back do not see the same machine. Each side's rate and CPU per request are taken over
the time both were running; each side's medians are reported, and engine/raw is the median of
the rounds' own ratios. (The latency-bound case in :mod:`benchmarks.fanout` still alternates
the sides with :func:`compare`: its figures are read against the concurrency / latency limit,
which a side sharing the machine would not reach.)
INFO logs are off on both sides (as in ``make bench``).

Memory flatness: the engine's real path again, in fresh children at ``--rss-n`` and 10 x that
prompts, with 2 ms latency so the large run stays short; peak RSS during the run (and its growth
over the RSS after start-up) should not depend on N.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import json
import logging
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.loops import MODEL, connection, create_cache, prompts

REPO = Path(__file__).resolve().parent.parent
ROUNDS = 5
N = 20_000
CONCURRENCY = 128
LATENCY_MS = 50
RSS_N = 10_000
RSS_LATENCY_MS = 2
WARMUP_N = 200
SAMPLE_SECONDS = 0.02
SIDES = ("engine", "raw")
READY, GO = "ready", "go"  # a paired child's line when its start-up is done, and the parent's answer
PAIR_SAMPLE_SECONDS = 0.1  # how often the parent reads a paired child's CPU and output size
PAGE_MB = os.sysconf("SC_PAGE_SIZE") / 2**20
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# Summary figures of one child, and how they are combined over the rounds (all by median).
FIGURES = ("seconds", "rps", "cpu_s", "cpu_per_request", "startup_rss_mb", "peak_rss_mb", "growth_mb")


# ---------------------------------------------------------------------------------------- inputs


def write_input(path: Path, n: int, key_prefix: str = "k") -> Path:
    """``n`` batch-format request lines, one user turn each, as a team's input file would hold."""
    with path.open("w", encoding="utf-8") as out:
        for i, prompt in enumerate(prompts(n)):
            line = {
                "key": f"{key_prefix}{i}",
                "request": {"contents": [{"role": "user", "parts": [{"text": prompt}]}]},
            }
            out.write(json.dumps(line) + "\n")
    return path


def count_lines(path: Path) -> int:
    with path.open(encoding="utf-8") as lines:
        return sum(1 for line in lines if line.strip())


def input_keys(path: Path) -> set[str]:
    with path.open(encoding="utf-8") as lines:
        return {json.loads(line)["key"] for line in lines if line.strip()}


def answered_keys(files: list[Path]) -> set[str]:
    """Keys with an answer (a ``response`` with text) in the given output files."""
    keys: set[str] = set()
    for file in files:
        with file.open(encoding="utf-8") as lines:
            for line in lines:
                record = json.loads(line)
                candidates = (record.get("response") or {}).get("candidates") or [{}]
                parts = (candidates[0].get("content") or {}).get("parts") or [{}]
                if parts[0].get("text"):
                    keys.add(record["key"])
    return keys


# -------------------------------------------------------------------------------------- measuring


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class RssSampler:
    """RSS now (``/proc/self/statm``), and its peak while running, sampled from a daemon thread."""

    def __init__(self, interval: float = SAMPLE_SECONDS) -> None:
        self.interval = interval
        self.peak_mb = 0.0
        self._fd = os.open("/proc/self/statm", os.O_RDONLY)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="rss-sampler", daemon=True)

    def now_mb(self) -> float:
        return int(os.pread(self._fd, 128, 0).split()[1]) * PAGE_MB

    def _sample(self) -> None:
        while not self._done.wait(self.interval):
            self.peak_mb = max(self.peak_mb, self.now_mb())

    def __enter__(self) -> RssSampler:
        self.peak_mb = self.now_mb()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, self.now_mb())
        os.close(self._fd)


class Measurement:
    """Wall time, process CPU and RSS of the block it wraps (start-up already done): ``figures``."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.figures: dict[str, float] = {}
        self._rss = RssSampler()
        self._startup_rss = self._cpu = self._wall = 0.0

    def __enter__(self) -> Measurement:
        gc.collect()
        self._rss.__enter__()
        self._startup_rss = self._rss.now_mb()
        self._cpu, self._wall = cpu_seconds(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        seconds, cpu = time.perf_counter() - self._wall, cpu_seconds() - self._cpu
        self._rss.__exit__()
        peak = self._rss.peak_mb
        self.figures = {
            "n": self.n,
            "seconds": seconds,
            "rps": self.n / seconds,
            "cpu_s": cpu,
            "cpu_per_request": cpu / self.n,
            "startup_rss_mb": self._startup_rss,
            "peak_rss_mb": peak,
            "growth_mb": peak - self._startup_rss,
        }


# ---------------------------------------------------------------------------------- the two sides


class _TaskInstance:
    """What the operator reads of its task instance: the map index, and XCom for partial results."""

    map_index = -1

    def __init__(self) -> None:
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


def wait_for_go() -> None:
    """Tells the parent this child's start-up is done, and waits for the word to start (paired runs)."""
    print(READY, flush=True)
    if sys.stdin.readline().strip() != GO:
        raise RuntimeError("the parent went away before the start")


def engine_child(
    cache: str, source: Path, warmup: Path, output: Path, concurrency: int, paired: bool = False
) -> dict[str, float]:
    from airflow_provider_ctxcache.operators.generate import GenerateWithCacheOperator

    roots = [str(output.parent)]

    def operator(input_uri: Path, output_uri: Path) -> GenerateWithCacheOperator:
        return GenerateWithCacheOperator(
            task_id="ask",
            cache_name=cache,
            input_uri=str(input_uri),
            output_uri=str(output_uri),
            max_concurrency=concurrency,
            allowed_roots=roots,
        )

    def context() -> Any:
        return {"ti": _TaskInstance(), "run_id": "manual__2026-01-01T00:00:00+00:00"}

    warm_out = output.with_name(output.name + "-warmup")
    operator(warmup, warm_out).execute(context())
    shutil.rmtree(warm_out)
    task = operator(source, output)
    n = count_lines(source)
    if paired:
        wait_for_go()
    with Measurement(n) as measurement:
        returned = task.execute(context())
    assert returned["summary"]["succeeded"] == n, returned["summary"]
    assert returned["results"] is None, "a large run with output_uri returns no results through XCom"
    expected = input_keys(source)
    assert answered_keys(sorted(output.glob("part-*.jsonl"))) == expected, "the engine's output misses keys"
    return measurement.figures


# The SDK's own bookkeeping fields, which a batch-output line does not carry.
NOT_IN_A_BATCH_LINE = {"sdk_http_response", "automatic_function_calling_history", "parsed"}


def answer_line(key: str, response: Any) -> dict[str, Any]:
    """The batch-output line ``{"key", "response"}``, the whole response as REST JSON (camelCase):
    the line the engine writes, made with the SDK's own serializer as a team would."""
    body = response.model_dump(mode="json", exclude_none=True, by_alias=True, exclude=NOT_IN_A_BATCH_LINE)
    return {"key": key, "response": body}


def error_line(key: str, error: Exception) -> dict[str, Any]:
    code = getattr(error, "code", None)
    status = getattr(error, "status", None)
    return {
        "key": key,
        "error": {"code": code, "status": status, "message": f"{type(error).__name__}: {error}"},
    }


async def raw_pool(client: Any, cache: str, source: Path, target: Path, concurrency: int) -> None:
    """``concurrency`` workers pulling from one iterator over the input, one answer line per key."""
    config = {"cached_content": cache}
    with source.open(encoding="utf-8") as lines, target.open("w", encoding="utf-8") as out:

        async def worker(requests: Iterator[str]) -> None:
            for line in requests:
                item = json.loads(line)
                try:
                    response = await client.aio.models.generate_content(
                        model=MODEL, contents=item["request"]["contents"], config=config
                    )
                    record = answer_line(item["key"], response)
                except Exception as error:  # the key's error line, as a batch job writes it
                    record = error_line(item["key"], error)
                out.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")

        shared = iter(lines)
        await asyncio.gather(*(worker(shared) for _ in range(concurrency)))


def raw_child(
    url: str, cache: str, source: Path, warmup: Path, output: Path, concurrency: int, paired: bool = False
) -> dict[str, float]:
    from google import genai
    from google.genai import types

    n = count_lines(source)

    async def main() -> dict[str, float]:
        client = genai.Client(
            api_key="bench-key", http_options=types.HttpOptions(base_url=url, api_version="v1beta")
        )
        warm_out = output.with_name(output.name + "-warmup")
        await raw_pool(client, cache, warmup, warm_out, concurrency)
        warm_out.unlink()
        if paired:
            wait_for_go()
        with Measurement(n) as measurement:
            await raw_pool(client, cache, source, output, concurrency)
        await client.aio.aclose()
        return measurement.figures

    figures = asyncio.run(main())
    assert answered_keys([output]) == input_keys(source), "the raw pool's output misses keys"
    return figures


def child(args: argparse.Namespace) -> None:
    logging.disable(logging.INFO)
    os.environ["AIRFLOW_CONN_CTXCACHE_DEFAULT"] = connection(args.url)
    source, warmup, output = Path(args.input), Path(args.warmup), Path(args.output)
    if args.child == "engine":
        figures = engine_child(args.cache, source, warmup, output, args.concurrency, args.paired)
    else:
        figures = raw_child(args.url, args.cache, source, warmup, output, args.concurrency, args.paired)
    print(json.dumps({"side": args.child, **figures}))


# ------------------------------------------------------------------------------------ the parent


def run_child(
    side: str, url: str, cache: str, source: Path, warmup: Path, output: Path, concurrency: int
) -> dict[str, float]:
    """One fresh child process; its output is removed once it has been checked there."""
    done = subprocess.run(
        child_command(side, url, cache, source, warmup, output, concurrency),
        capture_output=True,
        text=True,
        cwd=REPO,
        env=os.environ.copy(),
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the {side} child failed ({done.returncode}):\n{done.stderr[-4000:]}")
    remove_output(output)
    figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def remove_output(output: Path) -> None:
    """A side's output once its child has checked it: the engine's folder of parts, or the raw file."""
    if output.is_dir():
        shutil.rmtree(output)
    else:
        output.unlink(missing_ok=True)


def child_command(
    side: str, url: str, cache: str, source: Path, warmup: Path, output: Path, concurrency: int
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "benchmarks.cpu",
        "--child",
        side,
        "--url",
        url,
        "--cache",
        cache,
        "--input",
        str(source),
        "--warmup",
        str(warmup),
        "--output",
        str(output),
        "--concurrency",
        str(concurrency),
    ]


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU of a running process so far (``/proc/PID/stat``), in seconds."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime (fields 14, 15 of the file)


def output_bytes(output: Path) -> int:
    """Answer bytes written so far: the raw pool's file, or the engine's output parts."""
    if output.is_dir():
        return sum(part.stat().st_size for part in output.glob("part-*.jsonl"))
    return output.stat().st_size if output.exists() else 0


@dataclasses.dataclass
class _Sample:
    at: float
    cpu: dict[str, float]
    written: dict[str, int]


def run_pair(
    url: str, cache: str, source: Path, warmup: Path, outputs: dict[str, Path], concurrency: int
) -> dict[str, dict[str, float]]:
    """Both sides at once, in fresh children, from one start: each one's rate and CPU per request
    over the time both were running.

    Each child does its start-up and warm-up, says so, and waits; the parent starts both at the
    same moment and samples each one's CPU (``/proc/PID/stat``) and output size every
    ``PAIR_SAMPLE_SECONDS``. The window ends when the first side has written its last answer;
    each side's requests in it are its output bytes then over its final bytes, times N. So both
    sides are measured on the same machine in the same seconds, which this VM's speed (varying
    by a quarter from one second to the next) does not allow two runs in a row.
    """
    folder = next(iter(outputs.values())).parent
    children: dict[str, subprocess.Popen[str]] = {}
    stdout: dict[str, Path] = {}
    logs: list[Any] = []
    try:
        for side in SIDES:
            # Files, not pipes: a child never blocks on a full pipe while the parent samples.
            stdout[side] = folder / f"{side}.stdout"
            out, err = stdout[side].open("w"), (folder / f"{side}.stderr").open("w")
            logs += [out, err]
            children[side] = subprocess.Popen(
                [*child_command(side, url, cache, source, warmup, outputs[side], concurrency), "--paired"],
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=err,
                text=True,
                cwd=REPO,
                env=os.environ.copy(),
            )
        while not all(READY in _lines(stdout[side]) for side in SIDES):
            for side, process in children.items():
                if process.poll() is not None:
                    raise RuntimeError(f"the {side} child ended before its start:\n{_stderr(folder, side)}")
            time.sleep(PAIR_SAMPLE_SECONDS)
        samples: list[_Sample] = []
        cpu_now = dict.fromkeys(SIDES, 0.0)

        def sample() -> None:
            for side, process in children.items():
                # A child that has ended (and been reaped) keeps its last reading.
                with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                    cpu_now[side] = process_cpu_seconds(process.pid)
            written = {side: output_bytes(outputs[side]) for side in SIDES}
            samples.append(_Sample(time.perf_counter(), dict(cpu_now), written))

        sample()
        for process in children.values():
            assert process.stdin is not None
            process.stdin.write(GO + "\n")
            process.stdin.flush()
        while any(process.poll() is None for process in children.values()):
            time.sleep(PAIR_SAMPLE_SECONDS)
            sample()
        reports: dict[str, dict[str, float]] = {}
        for side, process in children.items():
            if process.wait() != 0:
                raise RuntimeError(
                    f"the {side} child failed ({process.returncode}):\n{_stderr(folder, side)}"
                )
            reports[side] = json.loads(_lines(stdout[side])[-1])
        final = {side: output_bytes(outputs[side]) for side in SIDES}
    finally:
        for process in children.values():
            if process.poll() is None:
                process.kill()
                process.wait()
        for log in logs:
            log.close()
    start = samples[0]
    # The first sample where one side had written everything: from then on it no longer competes.
    # Each child checks its output before it ends, so such a sample is taken while both are alive.
    end = next((s for s in samples[1:] if any(s.written[side] >= final[side] for side in SIDES)), samples[-1])
    figures: dict[str, dict[str, float]] = {}
    for side in SIDES:
        n = int(reports[side]["n"])  # the child counted its input for its own check
        done = n * end.written[side] / final[side]
        seconds, cpu = end.at - start.at, end.cpu[side] - start.cpu[side]
        figures[side] = {
            **{key: reports[side][key] for key in ("startup_rss_mb", "peak_rss_mb", "growth_mb")},
            "n": n,
            "window_requests": done,
            "seconds": seconds,
            "rps": done / seconds,
            "cpu_s": cpu,
            "cpu_per_request": cpu / done,
        }
    for output in outputs.values():
        remove_output(output)
    return figures


def _lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _stderr(folder: Path, side: str, chars: int = 4000) -> str:
    return (folder / f"{side}.stderr").read_text(encoding="utf-8")[-chars:]


def compare(
    emulator: Any,
    cache: str,
    folder: Path,
    *,
    n: int,
    concurrency: int,
    latency_ms: int,
    rounds: int = ROUNDS,
    together: bool = False,
) -> Comparison:
    """``rounds`` rounds of engine against raw pool, in fresh children: medians and each round's ratios.

    ``together``: a round's two sides run at the same time (:func:`run_pair`); otherwise one after
    the other, the engine first in even rounds and the raw pool first in odd ones.
    """
    emulator.admin.faults(latency_ms=latency_ms, ops=["generate_content"])
    source = write_input(folder / f"in-{n}.jsonl", n)
    warmup = write_input(folder / "warmup.jsonl", WARMUP_N, key_prefix="warm")
    runs: dict[str, list[dict[str, float]]] = {side: [] for side in SIDES}
    for round_ in range(rounds):
        outputs = {
            side: folder / (f"out-{side}-{round_}" + ("" if side == "engine" else ".jsonl")) for side in SIDES
        }
        if together:
            pair = run_pair(emulator.url, cache, source, warmup, outputs, concurrency)
        else:
            order = SIDES if round_ % 2 == 0 else SIDES[::-1]
            pair = {
                side: run_child(side, emulator.url, cache, source, warmup, outputs[side], concurrency)
                for side in order
            }
        for side in SIDES:
            runs[side].append(pair[side])
    sides = {side: {key: statistics.median(r[key] for r in runs[side]) for key in FIGURES} for side in SIDES}
    return Comparison(
        sides["engine"],
        sides["raw"],
        paired_ratios(runs["engine"], runs["raw"], "rps"),
        paired_ratios(runs["engine"], runs["raw"], "cpu_per_request"),
    )


def paired_ratios(engine: list[dict[str, float]], raw: list[dict[str, float]], figure: str) -> list[float]:
    """engine/raw of ``figure`` in each round, whose two runs were back to back.

    On this shared VM the whole machine's speed drifts by more than the gap being measured
    within minutes; the two runs of a round see nearly the same machine, so their ratio cancels
    the drift that a ratio of two medians, taken from different minutes, keeps.
    """
    return [e[figure] / r[figure] for e, r in zip(engine, raw, strict=True)]


@dataclasses.dataclass(frozen=True)
class Comparison:
    """Each side's medians over the rounds, and engine/raw per round (rate and CPU per request)."""

    engine: dict[str, float]
    raw: dict[str, float]
    rps_ratios: list[float]
    cpu_ratios: list[float]

    @property
    def rps_ratio(self) -> float:
        """The median of the rounds' engine/raw rates: the figure each case's rate target is read on."""
        return statistics.median(self.rps_ratios)

    @property
    def cpu_ratio(self) -> float:
        return statistics.median(self.cpu_ratios)


def run(
    emulator: Any,
    cache: str,
    *,
    n: int = N,
    concurrency: int = CONCURRENCY,
    latency_ms: int = LATENCY_MS,
    rounds: int = ROUNDS,
    rss_n: int = RSS_N,
    rss_latency_ms: int = RSS_LATENCY_MS,
) -> dict[str, Any]:
    """The CPU-bound comparison and the memory-flatness runs; the figures for bench-results.json."""
    folder = Path(tempfile.mkdtemp(prefix="ctxcache-bench-cpu-"))
    try:
        sides = compare(
            emulator,
            cache,
            folder,
            n=n,
            concurrency=concurrency,
            latency_ms=latency_ms,
            rounds=rounds,
            together=True,
        )
        engine, raw = sides.engine, sides.raw
        figures: dict[str, Any] = {
            "cpu_n": n,
            "cpu_concurrency": concurrency,
            "cpu_latency_ms": latency_ms,
            "cpu_rounds": rounds,
            "cpu_engine_rps": engine["rps"],
            "cpu_raw_sdk_rps": raw["rps"],
            "cpu_engine_cpu_per_request": engine["cpu_per_request"],
            "cpu_raw_cpu_per_request": raw["cpu_per_request"],
            "cpu_engine_startup_rss_mb": engine["startup_rss_mb"],
            "cpu_raw_startup_rss_mb": raw["startup_rss_mb"],
            "cpu_engine_peak_rss_mb": engine["peak_rss_mb"],
            "cpu_raw_peak_rss_mb": raw["peak_rss_mb"],
            "cpu_engine_rss_growth_mb": engine["growth_mb"],
            "cpu_raw_rss_growth_mb": raw["growth_mb"],
            "cpu_rps_ratio": sides.rps_ratio,
            "cpu_cpu_ratio": sides.cpu_ratio,
            "cpu_rps_ratios": sides.rps_ratios,
            "cpu_cpu_ratios": sides.cpu_ratios,
        }
        emulator.admin.faults(latency_ms=rss_latency_ms, ops=["generate_content"])
        warmup = folder / "warmup.jsonl"
        figures["rss_n"] = rss_n
        figures["rss_latency_ms"] = rss_latency_ms
        for size, suffix in ((rss_n, "n"), (10 * rss_n, "10n")):
            source = write_input(folder / f"in-{size}.jsonl", size)
            one = run_child(
                "engine", emulator.url, cache, source, warmup, folder / f"out-rss-{size}", concurrency
            )
            source.unlink()
            figures[f"rss_mb_{suffix}"] = one["peak_rss_mb"]
            figures[f"rss_startup_mb_{suffix}"] = one["startup_rss_mb"]
            figures[f"rss_growth_mb_{suffix}"] = one["growth_mb"]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return figures


def print_table(f: dict[str, Any]) -> None:
    print(
        f"\nCPU-bound fan-out: N={f['cpu_n']}, concurrency={f['cpu_concurrency']}, "
        f"latency={f['cpu_latency_ms']} ms, JSONL in and out ({f['cpu_rounds']} rounds: medians)\n"
        "both sides run at the same time in each round, from one start; req/s and CPU are each side's\n"
        "over the time both were running (until the first had answered every key)\n"
    )
    print(f"{'':30}{'req/s':>8}{'CPU s/1000 req':>16}{'RSS after start-up':>20}{'peak RSS':>10}{'growth':>9}")
    for label, side in (("engine (operator's path)", "engine"), ("raw google-genai worker pool", "raw_sdk")):
        cpu_side = "raw" if side == "raw_sdk" else side
        print(
            f"{label:30}{f[f'cpu_{side}_rps']:8.0f}{1000 * f[f'cpu_{cpu_side}_cpu_per_request']:16.2f}"
            f"{f[f'cpu_{cpu_side}_startup_rss_mb']:17.0f} MB{f[f'cpu_{cpu_side}_peak_rss_mb']:7.0f} MB"
            f"{f[f'cpu_{cpu_side}_rss_growth_mb']:6.0f} MB"
        )
    print(
        f"{'engine/raw, median of rounds':30}= {f['cpu_rps_ratio']:.2f}x (target >= 0.95)    "
        f"CPU {f['cpu_cpu_ratio']:.2f}x (target <= 1.05)"
    )
    print(
        f"{'  each round':30}  {rounds_text(f['cpu_rps_ratios'])}    CPU {rounds_text(f['cpu_cpu_ratios'])}"
    )
    n = f["rss_n"]
    print(
        f"\nmemory, the engine's real path (JSONL in, output parts), latency {f['rss_latency_ms']} ms, "
        f"fresh process each\n"
    )
    print(f"{'':30}{'RSS after start-up':>20}{'peak RSS':>10}{'growth':>9}")
    for size, suffix in ((n, "n"), (10 * n, "10n")):
        print(
            f"{f'N={size}':30}{f[f'rss_startup_mb_{suffix}']:17.0f} MB{f[f'rss_mb_{suffix}']:7.0f} MB"
            f"{f[f'rss_growth_mb_{suffix}']:6.0f} MB"
        )
    print(f"{'peak(10N)/peak(N)':30}= {f['rss_mb_10n'] / f['rss_mb_n']:.2f}x (target <= 1.05)")


def rounds_text(ratios: list[float]) -> str:
    """Each round's ratio, so a reader sees the spread the median was taken from."""
    return " ".join(f"{ratio:.2f}" for ratio in ratios)


def bench_environment() -> None:
    """A throwaway Airflow home, examples and INFO logs off, for this process and its children."""
    if "AIRFLOW_HOME" not in os.environ:
        os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="ctxcache-bench-home-")
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
    logging.disable(logging.INFO)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=N, help="prompts per run")
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY)
    parser.add_argument("--latency-ms", type=int, default=LATENCY_MS)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument(
        "--rss-n", type=int, default=RSS_N, help="N of the small memory run (the big one: 10 x N)"
    )
    parser.add_argument("--rss-latency-ms", type=int, default=RSS_LATENCY_MS)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--child", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--paired", action="store_true", help=argparse.SUPPRESS)
    for hidden in ("--url", "--cache", "--input", "--warmup", "--output"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    args = parser.parse_args()
    bench_environment()
    if args.child:
        child(args)
        return 0

    from airflow_provider_ctxcache.emulator import EmulatorProcess

    with EmulatorProcess() as emulator:
        cache = create_cache(emulator.url)
        figures = run(
            emulator,
            cache,
            n=args.n,
            concurrency=args.concurrency,
            latency_ms=args.latency_ms,
            rounds=args.rounds,
            rss_n=args.rss_n,
            rss_latency_ms=args.rss_latency_ms,
        )
    print_table(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
