"""An ``execution_timeout`` stops a fan-out from the engine, never from inside the transport.

Airflow's timeout raises from a SIGALRM handler wherever the main thread is; inside the event
loop that was once asyncio's socket code, which logged it as a failed write and went on, so the
task ran to the end and succeeded (seen on a busy machine). The engine now takes SIGALRM while
its loop runs and calls Airflow's handler at a point of its own. Here the alarm is sent when the
20th answer arrives: a state, not a timer.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from types import FrameType

import pytest

from airflow_provider_ctxcache.emulator.process import EmulatorProcess
from airflow_provider_ctxcache.fanout import FanoutOptions, KeyResult, run_fanout
from airflow_provider_ctxcache.hooks import ContextCacheHook
from airflow_provider_ctxcache.prompts import normalize_prompts
from tests.fanout.conftest import MODEL, create_cache


class TimeoutReached(Exception):
    """Stands in for AirflowTaskTimeout."""


@pytest.fixture
def alarm_frames() -> Iterator[list[FrameType | None]]:
    """A SIGALRM handler like Airflow's (it raises); records the frame it was called in."""
    frames: list[FrameType | None] = []

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        frames.append(frame)
        raise TimeoutReached("Timeout")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    try:
        yield frames
    finally:
        signal.signal(signal.SIGALRM, previous)


def run_until_alarm(hook: ContextCacheHook, cache_name: str, n: int, alarm_at: int) -> None:
    received = 0

    def on_result(_result: KeyResult) -> None:
        nonlocal received
        received += 1
        if received == alarm_at:
            os.kill(os.getpid(), signal.SIGALRM)

    asyncio.run(
        run_fanout(
            hook,
            model=MODEL,
            cache_name=cache_name,
            requests=normalize_prompts([f"Question {i}?" for i in range(n)]),
            max_concurrency=8,
            on_result=on_result,
            options=FanoutOptions(progress_interval=0),
        )
    )


def test_the_timeout_stops_the_run_at_the_engines_own_point(
    gemini_hook: ContextCacheHook, emulator: EmulatorProcess, alarm_frames: list[FrameType | None]
) -> None:
    name = create_cache(gemini_hook)
    emulator.admin.faults(latency_ms=20, ops=["generate_content"])

    with pytest.raises(TimeoutReached):
        run_until_alarm(gemini_hook, name, n=400, alarm_at=20)

    assert alarm_frames == [None]  # called by the engine, not interrupting whatever code ran
    assert emulator.admin.state()["counts"]["generate_content"] < 400


def test_the_timeouts_handler_is_back_in_place_after_the_run(
    gemini_hook: ContextCacheHook, alarm_frames: list[FrameType | None]
) -> None:
    name = create_cache(gemini_hook)
    handler = signal.getsignal(signal.SIGALRM)

    run_until_alarm(gemini_hook, name, n=5, alarm_at=0)  # no alarm

    assert signal.getsignal(signal.SIGALRM) is handler
    with pytest.raises(TimeoutReached):
        os.kill(os.getpid(), signal.SIGALRM)
    assert len(alarm_frames) == 1
