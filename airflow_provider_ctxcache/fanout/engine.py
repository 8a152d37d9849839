"""Bounded-concurrency fan-out of online ``generateContent`` calls against one cache.

A fixed pool of ``max_concurrency`` workers (no more than the client has connections: see
``_Run.within_connections``) pulls requests from one shared iterator, so the input is read
lazily (a generator over a JSONL file works) and only that many requests are in flight at
once. Each finished key is handed to ``on_result`` as it completes (the output writer), and
is kept in memory only when ``FanoutOptions.keep_results`` says so, so memory stays flat in the
number of prompts.

Per request:

- pacing: before it is sent, a request waits until the run's quota has room for it (requests
  and input tokens per minute, cached tokens included; see :mod:`.pacing`), so a quota-bound
  run paces itself instead of collecting 429s. Without given limits the pacer learns them from
  the 429s it gets (backing off, then probing upward).
- 429 (quota): every worker pauses until the server's ``RetryInfo.retryDelay`` has passed (the
  SDK ignores it), or, without a hint, for a backoff that doubles with each 429 in a row; then
  the request is tried again. A 429 costs nothing, so it does not use up an attempt.
- 408/5xx and transport errors (timeouts, resets): retried with jittered exponential backoff,
  up to ``max_attempts`` tries.
- other API errors: recorded as that key's error at once.
- ``CacheNotFoundError``: the cache is gone, so every further call would fail too. The run
  stops and :class:`FanoutCacheNotFoundError` is raised with the results kept so far.
- ``CtxCacheConfigError``: wrong for every request; raised at once.

A key that still fails is recorded as its error; once more than ``max_failure_ratio`` of the
requests have failed, the run stops with :class:`FanoutFailedError`. While work remains, a
keep-alive task extends the cache's TTL before it would expire, and a progress task logs
done/total, rate, ETA, failures and cached tokens at a steady interval.

The hook's async client belongs to the event loop it first ran in, so the run closes it
(``hook.aclose()``) before returning or raising.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import inspect
import logging
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sized
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_ctxcache.costs.ledger import RequestTotals
from airflow_provider_ctxcache.exceptions import (
    CacheNotFoundError,
    CtxCacheConfigError,
    FanoutCacheNotFoundError,
    FanoutFailedError,
    QuotaExceededError,
)
from airflow_provider_ctxcache.fanout.pacing import Pacer, QuotaLimits, Ticket
from airflow_provider_ctxcache.fanout.records import KeyResult, Usage, answer_of
from airflow_provider_ctxcache.hooks import ContextCacheHook, async_connections_cap
from airflow_provider_ctxcache.prompts import PromptRequest, sent_contents
from airflow_provider_ctxcache.retry import Backoff, is_transient

MIN_CONCURRENCY = 1
MAX_CONCURRENCY = 1024
ERROR_TEXT_LIMIT = 500
FAILURES_KEPT = 20
KEEP_ALIVE_RECHECK = 5.0  # seconds between keep-alive looks at the expiry and the rate
CONFIGS_KEPT = 256  # prepared generation configs a run keeps (one per distinct request config)
# Log lines per HTTP request would bury the progress lines of a large run.
CHATTY_LOGGERS = ("httpx", "httpx2", "google_genai.models")

ResultCallback = Callable[["KeyResult"], Awaitable[None] | None]
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FanoutOptions:
    """How hard a run tries, and what it keeps; the defaults suit a quota-bound production run.

    :param max_attempts: tries per request for 5xx, timeouts and resets (429s do not count).
    :param max_failure_ratio: stop once more than this share of ``total`` (or, without a total,
        of the requests so far, after 100) has failed.
    :param backoff_initial: first backoff after a transient error or a 429 without a hint (s).
    :param backoff_max: the longest backoff (s); also caps the server's retryDelay.
    :param keep_alive: extend the cache's TTL while work remains.
    :param keep_alive_margin: extend when less than this is left (s).
    :param keep_alive_ttl: the TTL each extension sets (s, counted from then).
    :param progress_interval: seconds between progress lines; 0 turns them off.
    :param keep_results: keep every key's result in memory (small runs returning XCom);
        otherwise only the totals and the first failures are kept.
    :param total: how many requests to expect, for ETA and the failure ratio.
    :param quota: the requests and input tokens per minute this run may use (see
        :class:`~airflow_provider_ctxcache.fanout.pacing.QuotaLimits`); none given: adaptive.
    """

    max_attempts: int = 6
    max_failure_ratio: float = 0.05
    backoff_initial: float = 1.0
    backoff_max: float = 120.0
    keep_alive: bool = True
    keep_alive_margin: float = 300.0
    keep_alive_ttl: float = 1800.0
    progress_interval: float = 30.0
    keep_results: bool = True
    total: int | None = None
    quota: QuotaLimits = field(default_factory=QuotaLimits)


@dataclass
class FanoutSummary:
    """Totals of a run; ``requests`` counts the requests taken from the input and finished."""

    requests: int = 0
    succeeded: int = 0
    failed: int = 0
    retries: int = 0
    quota_waits: int = 0
    keep_alive_extensions: int = 0
    usage: Usage = field(default_factory=Usage)
    billing: RequestTotals = field(default_factory=RequestTotals)  # the same usage, per price tier
    elapsed_seconds: float = 0.0
    peak_in_flight: int = 0
    max_concurrency: int = 0
    pacing: dict[str, Any] = field(default_factory=dict)

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.elapsed_seconds if self.elapsed_seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "retries": self.retries,
            "quota_waits": self.quota_waits,
            "keep_alive_extensions": self.keep_alive_extensions,
            **self.usage.to_dict(),
            "elapsed_seconds": round(self.elapsed_seconds, 3),
            "requests_per_second": round(self.requests_per_second, 2),
            "peak_in_flight": self.peak_in_flight,
            "max_concurrency": self.max_concurrency,
            "pacing": dict(self.pacing),
        }


@dataclass
class FanoutResult:
    """The run's totals, and per-key results (completion order) when they are kept."""

    results: dict[str, KeyResult] = field(default_factory=dict)
    summary: FanoutSummary = field(default_factory=FanoutSummary)
    first_failures: list[KeyResult] = field(default_factory=list)
    keep_results: bool = True

    @property
    def failures(self) -> list[KeyResult]:
        if self.keep_results:
            return [r for r in self.results.values() if not r.ok]
        return list(self.first_failures)

    def record(self, result: KeyResult) -> None:
        if self.keep_results:
            self.results[result.key] = result
        s = self.summary
        s.requests += 1
        if result.ok:
            s.succeeded += 1
            if result.usage is not None:
                s.usage.add(result.usage)
                s.billing.add(result.usage)
        else:
            s.failed += 1
            if len(self.first_failures) < FAILURES_KEPT:
                self.first_failures.append(result)


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
    options: FanoutOptions | None = None,
    logger: logging.Logger | Any = None,
    expire_time: dt.datetime | None = None,
    cache_tokens: int | None = None,
) -> FanoutResult:
    """Send one ``hook.agenerate`` per request, at most ``max_concurrency`` at a time, within quota.

    :param requests: checked requests (see :func:`airflow_provider_ctxcache.prompts.normalize_prompts`);
        any iterable, read lazily.
    :param on_result: called (and awaited, if it returns an awaitable) with each key's result as
        it completes, before the next request is taken; an exception it raises stops the run.
    :param options: retries, failure ratio, keep-alive, progress; see :class:`FanoutOptions`.
    :param expire_time: the cache's expiry if the caller just read it; else it is read once.
    :param cache_tokens: the cache's size, counted into each request's input tokens for pacing;
        else it is read once.
    :raises FanoutCacheNotFoundError: the cache is missing or expired; carries the finished results.
    :raises FanoutFailedError: more than ``max_failure_ratio`` of the requests failed.
    :raises CtxCacheConfigError: the requests or the connection are wrong for every call.
    """
    check_max_concurrency(max_concurrency)
    run = _Run(
        hook,
        model=model,
        cache_name=cache_name,
        on_result=on_result,
        options=options or FanoutOptions(),
        logger=logger or log,
        expire_time=expire_time,
        cache_tokens=cache_tokens,
    )
    run.result.summary.max_concurrency = max_concurrency
    started = time.monotonic()
    try:
        with _quiet(CHATTY_LOGGERS):
            await _with_alarm_at_a_safe_point(run.drive(requests, max_concurrency))
    finally:
        run.result.summary.elapsed_seconds = time.monotonic() - started
        if run.pacer is not None:
            run.result.summary.pacing = run.pacer.to_dict()
        with contextlib.suppress(Exception):
            await hook.aclose()
    return run.result


async def _with_alarm_at_a_safe_point(work: Awaitable[None]) -> None:
    """Runs ``work``; an ``execution_timeout`` stops it here, never inside the transport.

    Airflow's ``execution_timeout`` raises ``AirflowTaskTimeout`` from a SIGALRM handler wherever
    the main thread happens to be. Inside an event loop that can be asyncio's socket code, which
    logs the exception as a failed write and carries on: the timeout was lost and the task ran to
    the end (seen on a busy machine). So while the loop runs, SIGALRM is the loop's: it cancels
    the work, and Airflow's own handler is then called from here, where its exception stops the
    run like any other (answers kept, the output flushed).
    """
    previous = signal.getsignal(signal.SIGALRM)
    if not callable(previous) or threading.current_thread() is not threading.main_thread():
        await work
        return
    loop = asyncio.get_running_loop()
    driving = asyncio.ensure_future(work)
    fired = False

    def alarm() -> None:
        nonlocal fired
        fired = True
        driving.cancel()

    loop.add_signal_handler(signal.SIGALRM, alarm)
    try:
        await driving
    except asyncio.CancelledError:
        if fired:
            previous(signal.SIGALRM, None)  # Airflow's handler raises its timeout here
        raise
    finally:
        loop.remove_signal_handler(signal.SIGALRM)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def _quiet(names: Iterable[str]) -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(max(logger.level, logging.WARNING))
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


class _Run:
    """The state one run's workers share."""

    def __init__(
        self,
        hook: ContextCacheHook,
        *,
        model: str,
        cache_name: str,
        on_result: ResultCallback | None,
        options: FanoutOptions,
        logger: Any,
        expire_time: dt.datetime | None = None,
        cache_tokens: int | None = None,
    ) -> None:
        self.hook = hook
        self.model = model
        self.cache_name = cache_name
        self.on_result = on_result
        self.options = options
        self.log = logger
        self.result = FanoutResult(keep_results=options.keep_results)
        self.in_flight = 0
        self.paused_until = 0.0  # monotonic time before which no worker sends (after a 429)
        self.quota_streak = 0
        self.started = time.monotonic()
        self.expire_time = expire_time
        self.cache_tokens = cache_tokens
        self.pacer: Pacer | None = None
        self.backoff = Backoff(options.backoff_initial, options.backoff_max)
        # Requests with equal configs share one config object (see prompts._ConfigPool): each is
        # prepared for the cache once, not copied on every call. The object is kept beside its
        # prepared form, so its id cannot be reused while the entry lives.
        self.configs: dict[int, tuple[Any, Any]] = {}

    async def drive(self, requests: Iterable[PromptRequest], max_concurrency: int) -> None:
        # Read the connection once, before the workers start, instead of once per worker.
        await self.hook.aload_settings()
        quota = self.options.quota
        needs_size = self.cache_tokens is None and bool(quota.tpm)
        if needs_size or (self.expire_time is None and self.options.keep_alive):
            # One read serves keep-alive (the expiry) and token pacing (the size to count per request).
            try:
                cache = await self.hook.aget_cache(self.cache_name)
            except CacheNotFoundError as error:
                raise FanoutCacheNotFoundError(error.cache_name or self.cache_name, self.result) from None
            self.expire_time = self.expire_time or cache.expire_time
            if self.cache_tokens is None and cache.usage_metadata is not None:
                self.cache_tokens = cache.usage_metadata.total_token_count
        self.pacer = Pacer(quota, cache_tokens=self.cache_tokens)
        workers_needed = max_concurrency
        if isinstance(requests, Sized):
            workers_needed = max(1, min(max_concurrency, len(requests)))
        workers_needed = self.within_connections(workers_needed, max_concurrency)
        shared = iter(requests)
        workers = [asyncio.create_task(self.worker(shared)) for _ in range(workers_needed)]
        all_workers: asyncio.Future[Any] = asyncio.ensure_future(asyncio.gather(*workers))
        helpers: set[asyncio.Future[Any]] = set()
        if self.options.progress_interval > 0:
            helpers.add(asyncio.create_task(self.progress()))
        if self.options.keep_alive:
            helpers.add(asyncio.create_task(self.keep_alive()))
        fatal: BaseException | None = None
        try:
            # The run is over when every worker is, or as soon as any task fails.
            while fatal is None and not all_workers.done():
                done, _ = await asyncio.wait({all_workers, *helpers}, return_when=asyncio.FIRST_COMPLETED)
                for task in done - {all_workers}:
                    helpers.discard(task)
                    fatal = fatal or task.exception()
            if all_workers.done() and not all_workers.cancelled():
                fatal = fatal or all_workers.exception()
        finally:
            # On a fatal error, or when this run itself is cancelled: stop every task and wait
            # for them, so no call is left running against a closed client.
            for task in (*workers, all_workers, *helpers):
                task.cancel()
            await asyncio.gather(*workers, all_workers, *helpers, return_exceptions=True)
        if isinstance(fatal, CacheNotFoundError):
            raise FanoutCacheNotFoundError(fatal.cache_name or self.cache_name, self.result) from None
        if fatal is not None:
            raise fatal
        self.log_progress(final=True)

    def within_connections(self, workers: int, max_concurrency: int) -> int:
        """At most as many workers as the client has connections, saying so when that is fewer.

        A call past google-genai's httpx pool would only wait inside the client, whose queue of
        waiting calls costs CPU on every call (docs/benchmark.md measures it); the requests past
        the cap stay unread in the input until a worker is free instead.
        """
        cap = async_connections_cap()
        if cap is None or workers <= cap:
            return workers
        self.log.warning(
            "max_concurrency=%d, but google-genai's httpx client keeps at most %d connections: "
            "the run makes %d calls at once (more would only wait inside the client). Install "
            "google-genai[aiohttp] (no connection cap) or set max_concurrency to %d or less.",
            max_concurrency,
            cap,
            cap,
            cap,
        )
        return cap

    async def worker(self, requests: Iterator[PromptRequest]) -> None:
        # One event loop thread: workers take turns on the shared iterator, never racing.
        for request in requests:
            outcome = await self.ask(request)
            if self.on_result is not None:
                maybe = self.on_result(outcome)
                if inspect.isawaitable(maybe):
                    await maybe
            self.result.record(outcome)
            if not outcome.ok and self.too_many_failures():
                raise FanoutFailedError(self.result, stopped_early=True)

    def too_many_failures(self) -> bool:
        summary, ratio = self.result.summary, self.options.max_failure_ratio
        if self.options.total:
            return summary.failed > ratio * self.options.total
        return summary.requests >= 100 and summary.failed > ratio * summary.requests

    def config_of(self, request: PromptRequest) -> Any:
        given = request.config
        found = self.configs.get(id(given))
        if found is not None and found[0] is given:
            return found[1]
        prepared = self.hook.generation_config(given, self.cache_name)
        if len(self.configs) >= CONFIGS_KEPT:
            self.configs.clear()
        self.configs[id(given)] = (given, prepared)
        return prepared

    async def ask(self, request: PromptRequest) -> KeyResult:
        assert self.pacer is not None
        config = self.config_of(request)
        contents = sent_contents(request.contents)
        attempt = 0
        while True:
            await self.wait_for_quota()
            ticket: Ticket = await self.pacer.acquire(request.contents)
            attempt += 1
            self.in_flight += 1
            summary = self.result.summary
            summary.peak_in_flight = max(summary.peak_in_flight, self.in_flight)
            try:
                # One attempt each: the engine retries, honouring RetryInfo, which the SDK ignores;
                # SDK retries underneath would multiply the attempts.
                try:
                    response = await self.hook.agenerate(
                        model=self.model,
                        contents=contents,
                        cache_name=self.cache_name,
                        config=config,
                        retries=False,
                    )
                finally:
                    self.pacer.answered(ticket)  # the service has counted it by now, if at all
            except (CacheNotFoundError, CtxCacheConfigError):
                raise
            except QuotaExceededError as error:
                # Free to retry: a 429 is not billed, so it does not use up an attempt.
                attempt -= 1
                self.pacer.refused(
                    ticket, quota_id=error.quota_id or error.quota_metric, quota_value=error.quota_value
                )
                self.pause_for_quota(error.retry_delay)
                continue
            except Exception as error:
                if is_transient(error) and attempt < self.options.max_attempts:
                    summary.retries += 1
                    await asyncio.sleep(self.backoff.delay(attempt))
                    continue
                return self.failed(request.key, error, attempt)
            finally:
                self.in_flight -= 1
            self.quota_streak = 0
            outcome = answer_of(
                request.key,
                response,
                keep_response=not self.options.keep_results,
                attempts=attempt,
                fingerprint=request.fingerprint,
            )
            if outcome.usage is not None:
                self.pacer.settle(
                    ticket, outcome.usage.input_tokens, outcome.usage.cached_content_token_count
                )
            return outcome

    async def wait_for_quota(self) -> None:
        # A loop, not an Event: another 429 may push the pause further while this one sleeps.
        while (delay := self.paused_until - time.monotonic()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(delay)

    def pause_for_quota(self, hint: float | None) -> None:
        """All workers wait: the quota is shared, so one 429 means the others would get one too."""
        self.quota_streak += 1
        self.result.summary.quota_waits += 1
        delay = self.backoff.delay(self.quota_streak, hint)
        self.paused_until = max(self.paused_until, time.monotonic() + delay)

    def failed(self, key: str, error: BaseException, attempts: int) -> KeyResult:
        detail = str(error) or (
            "the connection closed with no response" if is_transient(error) else repr(error)
        )
        text = self.hook.scrub(f"{type(error).__name__}: {detail}")
        if len(text) > ERROR_TEXT_LIMIT:
            text = text[: ERROR_TEXT_LIMIT - 3] + "..."
        code = getattr(error, "code", None)
        return KeyResult(
            key=key,
            error=text,
            error_code=code if isinstance(code, int) else None,
            error_status=getattr(error, "status", None)
            if isinstance(getattr(error, "status", None), str)
            else None,
            attempts=attempts,
        )

    async def keep_alive(self) -> None:
        """Extend the cache before it expires while work remains; a vanished cache stops the run.

        Within ``keep_alive_margin`` of the expiry it extends, unless the rate so far says the
        remaining work ends well before the expiry: a short run never stretches a cache that a
        downstream expiry sensor or teardown is waiting on.
        """
        options = self.options
        expires = self.expire_time
        while expires is not None:
            left = (expires - dt.datetime.now(dt.timezone.utc)).total_seconds()
            if left > options.keep_alive_margin:
                await asyncio.sleep(min(left - options.keep_alive_margin, KEEP_ALIVE_RECHECK))
                continue
            needed = self.seconds_of_work_left()
            if needed is None and left > 1.0:  # nothing finished yet: wait for a rate to judge by
                await asyncio.sleep(min(KEEP_ALIVE_RECHECK, left / 4))
                continue
            if needed is not None and needed < left / 2:
                await asyncio.sleep(min(KEEP_ALIVE_RECHECK, left / 4))
                continue
            cache = await self.hook.aupdate_cache_ttl(self.cache_name, ttl=options.keep_alive_ttl)
            self.result.summary.keep_alive_extensions += 1
            self.log.info("Keep-alive: cache %s now expires %s", self.cache_name, cache.expire_time)
            expires = cache.expire_time

    def seconds_of_work_left(self) -> float | None:
        """From the rate so far; None until something has finished or when the total is unknown."""
        done, total = self.result.summary.requests, self.options.total
        if not done or not total:
            return None
        rate = done / max(time.monotonic() - self.started, 1e-9)
        return max(total - done, 0) / rate

    async def progress(self) -> None:
        interval = self.options.progress_interval
        if interval <= 0:
            return
        while True:
            await asyncio.sleep(interval)
            self.log_progress()

    def log_progress(self, *, final: bool = False) -> None:
        summary, total = self.result.summary, self.options.total
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = summary.requests / elapsed
        if total:
            left = max(total - summary.requests, 0)
            eta = f"{left / rate:.0f}s" if rate > 0 else "?"
            done = f"{summary.requests}/{total} ({summary.requests / total:.0%})"
        else:
            eta, done = "?", str(summary.requests)
        self.log.info(
            "%s %s done, %.1f req/s, ETA %s, %d failed, %d retries, %d quota waits (429), "
            "%d cached tokens; %s",
            "Fan-out finished:" if final else "Fan-out progress:",
            done,
            rate,
            "0s" if final else eta,
            summary.failed,
            summary.retries,
            summary.quota_waits,
            summary.usage.cached_content_token_count,
            self.pacer.describe() if self.pacer is not None else "not started",
        )
