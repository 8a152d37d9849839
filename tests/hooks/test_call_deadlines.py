"""One watchdog ends the calls that outlive the connection's timeout; any other cancellation stays one.

The unit tests drive :class:`CallDeadlines` with plain asyncio (a call is an await that never
ends); the hook tests make real calls that the emulator holds.
"""

from __future__ import annotations

import asyncio
import time

from airflow_provider_ctxcache.emulator.process import EmulatorProcess
from airflow_provider_ctxcache.hooks import ContextCacheHook
from airflow_provider_ctxcache.hooks.deadlines import CallDeadlines
from tests.hooks.conftest import ConnFactory, backend_extra
from tests.in_flight import wait_until_idle

MODEL = "gemini-2.5-flash"


async def call_until_cancelled(deadlines: CallDeadlines, started: asyncio.Event | None = None) -> str:
    """A call that never answers, as ``agenerate`` makes one: ``timeout`` when the watchdog ended it."""
    task = asyncio.current_task()
    assert task is not None
    cancelling = task.cancelling()
    deadlines.start(task)
    if started is not None:
        started.set()
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        if deadlines.timed_out(task, cancelling):
            return "timeout"
        raise
    finally:
        deadlines.end(task)
    return "answered"


def test_a_call_past_its_deadline_is_ended_as_a_timeout() -> None:
    deadlines = CallDeadlines(0.05)

    assert asyncio.run(call_until_cancelled(deadlines)) == "timeout"


def test_every_call_in_flight_is_ended_by_one_watchdog() -> None:
    deadlines = CallDeadlines(0.05)

    async def many() -> list[str]:
        return await asyncio.gather(*(call_until_cancelled(deadlines) for _ in range(50)))

    assert asyncio.run(many()) == ["timeout"] * 50


def test_a_call_cancelled_before_its_deadline_stays_cancelled() -> None:
    deadlines = CallDeadlines(3600)

    async def stop_it() -> BaseException | str:
        started = asyncio.Event()
        call = asyncio.create_task(call_until_cancelled(deadlines, started))
        await started.wait()
        call.cancel()
        try:
            return await call
        except asyncio.CancelledError as stopped:
            return stopped

    assert isinstance(asyncio.run(stop_it()), asyncio.CancelledError)


def test_the_watchdog_ends_once_no_call_is_in_flight() -> None:
    deadlines = CallDeadlines(0.05)

    async def one_then_idle() -> bool:
        await call_until_cancelled(deadlines)
        watchdog = deadlines._watchdog
        assert watchdog is not None
        await watchdog  # returns: nothing is left to watch
        return watchdog.done() and not watchdog.cancelled()

    assert asyncio.run(one_then_idle())


def test_each_event_loop_gets_its_own_watchdog() -> None:
    deadlines = CallDeadlines(0.05)

    first = asyncio.run(call_until_cancelled(deadlines))
    second = asyncio.run(call_until_cancelled(deadlines))

    assert (first, second) == ("timeout", "timeout")


def test_a_fan_out_call_stopped_by_its_run_is_a_cancellation_not_a_timeout(
    emulator: EmulatorProcess, make_conn: ConnFactory
) -> None:
    hook = ContextCacheHook(make_conn("deadline_stop", timeout=30, **backend_extra("gemini_api", emulator)))
    emulator.admin.faults(latency_ms=3000, ops=["generate_content"])
    outcome: list[BaseException | str] = []

    async def run_then_stop() -> None:
        call = asyncio.create_task(hook.agenerate(model=MODEL, contents="hi", retries=False))

        def wait_for_the_emulator() -> None:  # in a thread: the admin client is synchronous
            while not emulator.admin.state()["in_flight"]:
                time.sleep(0.02)

        await asyncio.to_thread(wait_for_the_emulator)  # the call is on the wire
        call.cancel()
        try:
            await call
            outcome.append("answered")
        except BaseException as error:
            outcome.append(error)

    asyncio.run(run_then_stop())
    wait_until_idle(emulator)

    [error] = outcome
    assert isinstance(error, asyncio.CancelledError), error


def test_the_hooks_watchdog_stops_when_its_clients_close(
    emulator: EmulatorProcess, make_conn: ConnFactory
) -> None:
    hook = ContextCacheHook(make_conn("deadline_close", timeout=30, **backend_extra("gemini_api", emulator)))

    async def call_then_close() -> asyncio.Task[None] | None:
        await hook.agenerate(model=MODEL, contents="hi", retries=False)
        watchdog = hook._call_deadlines._watchdog
        await hook.aclose()
        if watchdog is not None:
            await asyncio.gather(watchdog, return_exceptions=True)  # until it has ended
        return watchdog

    watchdog = asyncio.run(call_then_close())

    assert watchdog is not None
    assert watchdog.cancelled()
    assert hook._call_deadlines._watchdog is None


def test_a_timed_out_call_leaves_nothing_behind() -> None:
    deadlines = CallDeadlines(0.05)

    asyncio.run(call_until_cancelled(deadlines))

    assert deadlines._due == {}
    assert deadlines._expired == set()


def test_stopping_a_watchdog_whose_event_loop_has_closed_does_nothing() -> None:
    deadlines = CallDeadlines(3600)
    loop = asyncio.new_event_loop()

    async def begin_a_call() -> None:
        task = asyncio.current_task()
        assert task is not None
        deadlines.start(task)  # the watchdog now sleeps on this loop
        await asyncio.sleep(0)

    loop.run_until_complete(begin_a_call())
    watchdog = deadlines._watchdog
    assert watchdog is not None
    watchdog._log_destroy_pending = False  # type: ignore[attr-defined]  # closed while pending, on purpose
    loop.close()

    deadlines.stop()

    assert deadlines._watchdog is None
