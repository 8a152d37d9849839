"""Bounded-concurrency fan-out of online ``generateContent`` calls against one cache.

A fixed pool of ``max_concurrency`` workers pulls requests from one shared iterator, so the
input is read lazily (a generator over a JSONL file works) and only ``max_concurrency`` requests
are in flight or in memory at once. Each finished key is handed to ``on_result`` as it
completes, in completion order, before it is added to the :class:`FanoutResult`.

Error policy, per request:

- ``CacheNotFoundError``: the cache is gone, so every further call would fail too. The run
  stops (workers cancelled, requests in flight abandoned), and :class:`FanoutCacheNotFoundError`
  (a ``CacheNotFoundError``) is raised with the cache name and the results finished so far.
- ``CtxCacheConfigError``: the input is wrong for every request; raised at once, run stopped.
- anything else (5xx, quota, timeouts): recorded as that key's error; the run goes on.

The hook's async client belongs to the event loop it first ran in, so the run closes it
(``hook.aclose()``) before returning or raising.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sized
from dataclasses import dataclass, field, fields
from typing import Any

from google.genai import types

from airflow_provider_ctxcache.exceptions import CacheNotFoundError, CtxCacheConfigError, CtxCacheError
from airflow_provider_ctxcache.hooks import ContextCacheHook
from airflow_provider_ctxcache.prompts import PromptRequest

MIN_CONCURRENCY = 1
MAX_CONCURRENCY = 1024
ERROR_TEXT_LIMIT = 500

ResultCallback = Callable[["KeyResult"], Awaitable[None] | None]


@dataclass
class Usage:
    """Token counts of one response (``usage_metadata``), or their sum over many."""

    prompt_token_count: int = 0
    cached_content_token_count: int = 0
    candidates_token_count: int = 0
    thoughts_token_count: int = 0
    total_token_count: int = 0

    @classmethod
    def of(cls, metadata: types.GenerateContentResponseUsageMetadata | None) -> Usage:
        if metadata is None:
            return cls()
        return cls(**{f.name: int(getattr(metadata, f.name, None) or 0) for f in fields(cls)})

    def add(self, other: Usage) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def to_dict(self) -> dict[str, int]:
        return {f.name: int(getattr(self, f.name)) for f in fields(self)}


@dataclass(frozen=True)
class KeyResult:
    """The outcome for one key: an answer (text, finish reason, usage) or an error string."""

    key: str
    text: str | None = None
    finish_reason: str | None = None
    usage: Usage | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable: ``{"text", "finish_reason", "usage"}`` or ``{"error"}``."""
        if self.error is not None:
            return {"error": self.error}
        return {
            "text": self.text,
            "finish_reason": self.finish_reason,
            "usage": (self.usage or Usage()).to_dict(),
        }


@dataclass
class FanoutSummary:
    """Totals of a run; ``requests`` counts the requests taken from the input and finished."""

    requests: int = 0
    succeeded: int = 0
    failed: int = 0
    usage: Usage = field(default_factory=Usage)
    elapsed_seconds: float = 0.0
    peak_in_flight: int = 0
    max_concurrency: int = 0

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.elapsed_seconds if self.elapsed_seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "succeeded": self.succeeded,
            "failed": self.failed,
            **self.usage.to_dict(),
            "elapsed_seconds": round(self.elapsed_seconds, 3),
            "requests_per_second": round(self.requests_per_second, 2),
            "peak_in_flight": self.peak_in_flight,
            "max_concurrency": self.max_concurrency,
        }


@dataclass
class FanoutResult:
    """Per-key results (insertion order = completion order) and the run's totals."""

    results: dict[str, KeyResult] = field(default_factory=dict)
    summary: FanoutSummary = field(default_factory=FanoutSummary)

    @property
    def failures(self) -> list[KeyResult]:
        return [r for r in self.results.values() if not r.ok]

    def record(self, result: KeyResult) -> None:
        self.results[result.key] = result
        s = self.summary
        s.requests += 1
        if result.ok:
            s.succeeded += 1
            if result.usage is not None:
                s.usage.add(result.usage)
        else:
            s.failed += 1


class FanoutCacheNotFoundError(CacheNotFoundError):
    """The cache vanished during the run; ``result`` holds what finished before it stopped."""

    def __init__(self, cache_name: str | None, result: FanoutResult) -> None:
        self.result = result
        done = result.summary
        super().__init__(
            cache_name,
            f"the fan-out stopped after {done.requests} requests ({done.succeeded} answered, "
            f"{done.failed} failed), whose results are kept",
        )


class FanoutFailedError(CtxCacheError):
    """Some keys failed; raised by callers that want the task to fail (``fail_on_error``)."""

    def __init__(self, result: FanoutResult, *, shown: int = 5) -> None:
        self.result = result
        failures = result.failures
        listed = "; ".join(f"{r.key!r}: {r.error}" for r in failures[:shown])
        more = f"; and {len(failures) - shown} more" if len(failures) > shown else ""
        super().__init__(
            f"{len(failures)} of {result.summary.requests} prompts failed ({listed}{more}). "
            f"The {result.summary.succeeded} answers that succeeded were logged. "
            "Retry the task, or set fail_on_error=False to return the errors with the answers."
        )


def check_max_concurrency(value: Any, field_name: str = "max_concurrency") -> int:
    """An int in 1..1024; anything else is a config error naming the field."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise CtxCacheConfigError(
            f"{field_name}: {value!r} is not a whole number; use {MIN_CONCURRENCY}..{MAX_CONCURRENCY}."
        )
    if not MIN_CONCURRENCY <= value <= MAX_CONCURRENCY:
        raise CtxCacheConfigError(
            f"{field_name}: {value} is outside {MIN_CONCURRENCY}..{MAX_CONCURRENCY}; "
            "keep it near your requests-per-minute quota times the latency in minutes."
        )
    return value


async def run_fanout(
    hook: ContextCacheHook,
    *,
    model: str,
    cache_name: str,
    requests: Iterable[PromptRequest],
    max_concurrency: int,
    on_result: ResultCallback | None = None,
) -> FanoutResult:
    """Send one ``hook.agenerate`` per request, at most ``max_concurrency`` at a time.

    :param requests: checked requests (see :func:`airflow_provider_ctxcache.prompts.normalize_prompts`);
        any iterable, read lazily.
    :param on_result: called (and awaited, if it returns an awaitable) with each key's result as
        it completes; an exception it raises stops the run.
    :raises FanoutCacheNotFoundError: the cache is missing or expired; carries the finished results.
    :raises CtxCacheConfigError: the requests or the connection are wrong for every call.
    """
    check_max_concurrency(max_concurrency)
    run = _Run(hook, model=model, cache_name=cache_name, on_result=on_result)
    run.result.summary.max_concurrency = max_concurrency
    started = time.monotonic()
    try:
        await run.drive(requests, max_concurrency)
    finally:
        run.result.summary.elapsed_seconds = time.monotonic() - started
        with contextlib.suppress(Exception):
            await hook.aclose()
    return run.result


class _Run:
    """The state one run's workers share."""

    def __init__(
        self, hook: ContextCacheHook, *, model: str, cache_name: str, on_result: ResultCallback | None
    ) -> None:
        self.hook = hook
        self.model = model
        self.cache_name = cache_name
        self.on_result = on_result
        self.result = FanoutResult()
        self.in_flight = 0

    async def drive(self, requests: Iterable[PromptRequest], max_concurrency: int) -> None:
        # Read the connection once, before the workers start, instead of once per worker.
        await self.hook.aload_settings()
        workers_needed = max_concurrency
        if isinstance(requests, Sized):
            workers_needed = max(1, min(max_concurrency, len(requests)))
        shared = iter(requests)
        workers = [asyncio.create_task(self.worker(shared)) for _ in range(workers_needed)]
        try:
            done, _ = await asyncio.wait(workers, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            # On a fatal error, or when this run itself is cancelled: stop every worker and wait
            # for them, so no call is left running against a closed client.
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
        fatal = next((t.exception() for t in done if not t.cancelled() and t.exception()), None)
        if isinstance(fatal, CacheNotFoundError):
            raise FanoutCacheNotFoundError(fatal.cache_name or self.cache_name, self.result) from None
        if fatal is not None:
            raise fatal

    async def worker(self, requests: Iterator[PromptRequest]) -> None:
        # One event loop thread: workers take turns on the shared iterator, never racing.
        for request in requests:
            outcome = await self.ask(request)
            if self.on_result is not None:
                maybe = self.on_result(outcome)
                if inspect.isawaitable(maybe):
                    await maybe
            self.result.record(outcome)

    async def ask(self, request: PromptRequest) -> KeyResult:
        self.in_flight += 1
        summary = self.result.summary
        summary.peak_in_flight = max(summary.peak_in_flight, self.in_flight)
        try:
            response = await self.hook.agenerate(
                model=self.model, contents=request.contents, cache_name=self.cache_name, config=request.config
            )
        except (CacheNotFoundError, CtxCacheConfigError):
            raise
        except Exception as error:
            return KeyResult(key=request.key, error=self.describe(error))
        finally:
            self.in_flight -= 1
        return answer_of(request.key, response)

    def describe(self, error: BaseException) -> str:
        text = self.hook.scrub(f"{type(error).__name__}: {error}")
        return text if len(text) <= ERROR_TEXT_LIMIT else text[: ERROR_TEXT_LIMIT - 3] + "..."


def answer_of(key: str, response: types.GenerateContentResponse) -> KeyResult:
    """Text, finish reason and usage of a response; text None when there is no text part."""
    candidate = response.candidates[0] if response.candidates else None
    reason = candidate.finish_reason if candidate is not None else None
    texts = [
        part.text
        for part in ((candidate.content.parts if candidate and candidate.content else None) or [])
        if isinstance(part.text, str) and not part.thought
    ]
    return KeyResult(
        key=key,
        text="".join(texts) if texts else None,
        finish_reason=None if reason is None else str(getattr(reason, "value", reason)),
        usage=Usage.of(response.usage_metadata),
    )
