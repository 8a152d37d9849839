"""The most requests an emulator held at once while a block ran, sampled from its admin state."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from airflow_provider_ctxcache.emulator.process import EmulatorProcess


@dataclass
class Peak:
    value: int = 0


@contextlib.contextmanager
def peak_in_flight(emulator: EmulatorProcess, every: float = 0.05) -> Iterator[Peak]:
    """Samples ``in_flight`` every ``every`` seconds in a thread until the block ends."""
    peak = Peak()
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak.value = max(peak.value, emulator.admin.state()["in_flight"])
            done.wait(every)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        yield peak
    finally:
        done.set()
        watcher.join()


def wait_until_idle(emulator: EmulatorProcess, limit: float = 120.0) -> None:
    """Until the emulator holds no request: calls a test gave up on must not count in the next test's peak."""
    give_up = time.monotonic() + limit  # a bound for a broken emulator only, far past any call's hold
    while emulator.admin.state()["in_flight"]:
        if time.monotonic() > give_up:
            raise AssertionError(f"the emulator still held requests after {limit:g} s")
        time.sleep(0.05)
