"""One watchdog for the deadlines of many concurrent calls, instead of a timer per call.

``asyncio.timeout`` schedules a timer for each call and cancels it when the call returns; a
fan-out makes hundreds of calls a second, and that timer is a measurable share of its own CPU
per call. Every call of one hook has the same deadline (the connection's timeout), so the oldest
call in flight always ends first: one task sleeping until that moment serves them all.

A call past its deadline is cancelled, and :meth:`CallDeadlines.timed_out` then tells that
cancellation apart from any other (a run being stopped), as ``asyncio.timeout`` does.
"""

from __future__ import annotations

import asyncio
from typing import Any


class CallDeadlines:
    """The calls in flight on one event loop, each cancelled once ``seconds`` have passed."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._due: dict[asyncio.Task[Any], float] = {}  # in start order: the first ends first
        self._expired: set[asyncio.Task[Any]] = set()
        self._watchdog: asyncio.Task[None] | None = None

    def start(self, task: asyncio.Task[Any]) -> None:
        """``task`` begins a call now; it must call :meth:`end` however the call ends."""
        loop = task.get_loop()
        self._due[task] = loop.time() + self.seconds
        watchdog = self._watchdog
        if watchdog is None or watchdog.done() or watchdog.get_loop() is not loop:
            self._watchdog = loop.create_task(self._watch(loop))

    def end(self, task: asyncio.Task[Any]) -> None:
        self._due.pop(task, None)
        self._expired.discard(task)  # cancelled, but the call ended some other way

    def timed_out(self, task: asyncio.Task[Any], cancelling_before: int) -> bool:
        """Whether the ``CancelledError`` that ``task`` got is this watchdog's, and only its.

        :param cancelling_before: ``task.cancelling()`` when the call began.
        """
        if task not in self._expired:
            return False
        self._expired.discard(task)
        return task.uncancel() <= cancelling_before

    def stop(self) -> None:
        """Ends the watchdog (a call started later starts a new one)."""
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None and not watchdog.get_loop().is_closed():  # a closed loop ended it
            watchdog.cancel()

    async def _watch(self, loop: asyncio.AbstractEventLoop) -> None:
        due = self._due
        while due:
            now = loop.time()
            for task, deadline in list(due.items()):
                if deadline > now:
                    break
                del due[task]
                self._expired.add(task)
                task.cancel()
            if due:
                await asyncio.sleep(next(iter(due.values())) - now)
