"""One fan-out task from input to report: validate, resume, run the engine, write, price.

The operator renders and checks its arguments and hands them here; this module owns the order
of things so that nothing billable happens before the whole input has been checked, and
nothing already answered is asked again.

Stopping: :meth:`FanoutJob.stop` (the operator's ``on_kill``, which Airflow calls from its
SIGTERM handler) cancels the run on its event loop; the calls in flight are abandoned, every
answer already received is in the output (the sink is closed, so a ``gs://`` buffer is
uploaded) and :class:`FanoutStoppedError` is raised. An exception that ends the run from
inside (``execution_timeout``'s ``AirflowTaskTimeout``, an error) takes the same way out: the
output is closed before it propagates.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
from collections.abc import Coroutine, Iterator, Sequence
from typing import Any

from airflow_provider_ctxcache.costs import ModelPrice, fanout_report, find_price
from airflow_provider_ctxcache.exceptions import CtxCacheConfigError, FanoutStoppedError
from airflow_provider_ctxcache.fanout.engine import FanoutOptions, FanoutResult, run_fanout
from airflow_provider_ctxcache.fanout.fingerprints import FingerprintSpool
from airflow_provider_ctxcache.fanout.inputs import InputFile, open_input
from airflow_provider_ctxcache.fanout.outputs import (
    DEFAULT_FLUSH_SECONDS,
    OutputScan,
    ResultSink,
    changed_requests_error,
    open_output,
)
from airflow_provider_ctxcache.fanout.records import KeyResult, xcom_answer
from airflow_provider_ctxcache.hooks import ContextCacheHook
from airflow_provider_ctxcache.model_facts import model_id
from airflow_provider_ctxcache.prompts import KEY_PREFIX, Entries, PromptRequest, iter_normalized

XCOM_RESULTS_WITHOUT_OUTPUT = 1000


@dataclasses.dataclass
class FanoutJob:
    """Everything one task needs; ``prompts`` or ``input_uri``, and optionally ``output_uri``."""

    hook: ContextCacheHook
    cache_name: str
    max_concurrency: int
    options: FanoutOptions
    prompts: Sequence[Any] | None = None
    input_uri: str | None = None
    output_uri: str | None = None
    model: str | None = None
    generation_config: Any = None
    key_prefix: str = KEY_PREFIX
    allowed_roots: Sequence[str] = ()
    output_part_size: int = 1000
    output_flush_seconds: float = DEFAULT_FLUSH_SECONDS
    xcom_results_limit: int = 100
    prices: Any = None
    logger: Any = None
    result: FanoutResult | None = dataclasses.field(default=None, init=False)
    # Every answer received, as it arrives: what is left to show if the task is stopped mid-run
    # (a timeout, SIGTERM) before the engine returns its result.
    received: dict[str, KeyResult] = dataclasses.field(default_factory=dict, init=False)
    answers: int = dataclasses.field(default=0, init=False)  # results received (written or held)
    # Why the run must stop (a reason from stop(), or the exception that stops it); set once.
    _stop: str | BaseException | None = dataclasses.field(default=None, init=False, repr=False)
    _loop: asyncio.AbstractEventLoop | None = dataclasses.field(default=None, init=False, repr=False)
    _main: asyncio.Task[Any] | None = dataclasses.field(default=None, init=False, repr=False)
    _wrote: asyncio.Event | None = dataclasses.field(default=None, init=False, repr=False)

    def stop(self, reason: str = "the task was told to stop") -> None:
        """Stop the run soon, keeping every answer received; safe from a signal handler or a thread.

        Before the calls start, the job raises :class:`FanoutStoppedError` instead of starting
        them; during the calls, the run is cancelled on its event loop (never interrupted in the
        middle of a write) and the same error is raised once the output is closed. After the
        calls (compaction, the report) it does nothing: everything is in the output already.
        """
        self._stop_with(reason)

    def _stop_with(self, why: str | BaseException) -> None:
        if self._stop is not None:
            return  # one cancellation: a second would cut short the engine's own clean-up
        self._stop = why
        loop, main = self._loop, self._main
        if loop is not None and main is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed in between: the run is over
                loop.call_soon_threadsafe(main.cancel)

    def _raise_if_stopped(self, sink: ResultSink | None) -> None:
        why = self._stop
        if why is None:
            return
        if isinstance(why, BaseException):
            raise why
        raise FanoutStoppedError(why, self.answers, sink.uri if sink is not None else None)

    def run(self) -> dict[str, Any]:
        source = self._open_source()
        try:
            return self._run(source)
        finally:
            if isinstance(source, InputFile):
                source.close()

    def _open_source(self) -> InputFile | Sequence[Any]:
        if (self.prompts is None) == (self.input_uri is None):
            raise CtxCacheConfigError("prompts, input_uri: give exactly one of them.")
        if self.input_uri is not None:
            return open_input(
                self.input_uri,
                storage_client_factory=self._storage,
                allowed_roots=self.allowed_roots,
                max_line_bytes=self.hook.backend.request_limit_bytes,
            )
        if isinstance(self.prompts, (str, bytes)) or not isinstance(self.prompts, Sequence):
            raise CtxCacheConfigError(
                f"prompts: a {type(self.prompts).__name__} is not a list of prompts; pass a list of strings "
                'or of batch requests {"key": ..., "request": {"contents": [...]}}.'
            )
        if not self.prompts:
            raise CtxCacheConfigError(
                "prompts: the list is empty; give at least one prompt "
                "(or skip the task when there is nothing to ask)."
            )
        return self.prompts

    def _requests(
        self,
        source: InputFile | Sequence[Any],
        *,
        checked: bool = False,
        fingerprints: Iterator[str] | None = None,
    ) -> Iterator[PromptRequest]:
        """The input's requests; ``checked``: the whole input passed a first, checking reading,
        whose ``fingerprints`` (when given) the requests take instead of hashing themselves again."""
        if isinstance(source, InputFile):
            entries = Entries(lambda: ((f"input_uri line {n}", obj) for n, obj in source.lines()))
        else:
            entries = Entries(lambda: ((f"prompts[{i}]", prompt) for i, prompt in enumerate(source)))
        return iter_normalized(
            entries,
            cache_name=self.cache_name,
            generation_config=self.generation_config,
            key_prefix=self.key_prefix,
            max_request_bytes=self.hook.backend.request_limit_bytes,
            checked=checked,
            fingerprints=fingerprints,
        )

    def _storage(self) -> Any:
        return self.hook.storage_client

    def _run(self, source: InputFile | Sequence[Any]) -> dict[str, Any]:
        sink = (
            open_output(
                self.output_uri,
                storage_client_factory=self._storage,
                allowed_roots=self.allowed_roots,
                part_size=self.output_part_size,
                flush_seconds=self.output_flush_seconds,
            )
            if self.output_uri is not None
            else None
        )
        try:
            return self._run_into(source, sink)
        finally:
            if sink is not None:
                sink.release()

    def _run_into(self, source: InputFile | Sequence[Any], sink: ResultSink | None) -> dict[str, Any]:
        fingerprints = FingerprintSpool()  # the first pass's, for the second
        try:
            scan = sink.scan() if sink is not None else OutputScan()
            if sink is not None:
                sink.check_writable()  # before anything is paid for, not after the answers are in
                if scan.torn:
                    self._warn(
                        "%s: %d lines are not answers (first at %s); their keys are asked again",
                        sink.uri,
                        scan.torn,
                        ", ".join(scan.torn_at),
                    )
            answered = scan.answered
            # First pass: the whole input is checked before the first billable call.
            total = skipped = 0
            changed: list[str] = []
            for request in self._requests(source):
                self._raise_if_stopped(sink)
                total += 1
                fingerprints.add(request.fingerprint)
                if request.key in answered:
                    skipped += 1
                    if scan.fingerprints.get(request.key, request.fingerprint) != request.fingerprint:
                        changed.append(request.key)
            if changed and sink is not None:
                raise changed_requests_error(changed, sink.uri)
            if sink is None and total > XCOM_RESULTS_WITHOUT_OUTPUT:
                raise CtxCacheConfigError(
                    f"output_uri: {total} prompts are too many to return through XCom "
                    f"(at most {XCOM_RESULTS_WITHOUT_OUTPUT}); set output_uri to a folder or gs:// prefix."
                )
            cache = self.hook.get_cache(self.cache_name)  # free: the model, the size to price, the expiry
            model = self._model(cache.model)
            price = find_price(model, self.prices)  # bad price overrides fail here, before any billable call
            cache_tokens = (cache.usage_metadata.total_token_count or 0) if cache.usage_metadata else 0
            self._log(
                "Fan-out of %d prompts against %s with %s: %d already answered in %s, %d to ask",
                total,
                self.cache_name,
                model,
                skipped,
                self.output_uri or "(no output_uri)",
                total - skipped,
            )
            options = dataclasses.replace(self.options, total=total - skipped, keep_results=sink is None)
            self._log("Quota: %s", options.quota.describe())
            second_pass = self._requests(source, checked=True, fingerprints=fingerprints.replay())
            remaining = (r for r in second_pass if r.key not in answered)
            self._raise_if_stopped(sink)
            result = asyncio.run(
                self._fan_out(
                    sink,
                    run_fanout(
                        self.hook,
                        model=model,
                        cache_name=self.cache_name,
                        requests=remaining,
                        max_concurrency=self.max_concurrency,
                        on_result=self._keep(sink),
                        options=options,
                        logger=self.logger,
                        expire_time=cache.expire_time,
                        cache_tokens=cache_tokens,
                    ),
                )
            )
            self.result = result
        finally:
            fingerprints.close()
            if sink is not None:
                sink.close()  # uploads a gs:// buffer: also when the run is being stopped
                if self.result is None and self.answers:
                    self._warn(
                        "Stopped mid-run after %d answers; they are in %s, and a retry asks only the rest",
                        self.answers,
                        sink.uri,
                    )
        if sink is not None:
            dropped = sink.compact()
            if dropped:
                self._log("Output compacted: %d superseded lines removed", dropped)
        report = self._cost(model, price, result, cache_tokens, cache.create_time)
        return {
            "cache_name": self.cache_name,
            "model": model,
            "output_uri": sink.uri if sink is not None else None,
            "summary": {**result.summary.to_dict(), "total": total, "skipped_already_answered": skipped},
            "cost": report,
            "results": self._results(sink, result, total, source),
        }

    async def _fan_out(self, sink: ResultSink | None, run: Coroutine[Any, Any, FanoutResult]) -> FanoutResult:
        """The engine's run, stoppable through :meth:`stop`, with the output flushed when due."""
        self._loop, self._main = asyncio.get_running_loop(), asyncio.current_task()
        flusher: asyncio.Task[None] | None = None
        if sink is not None and sink.flush_seconds is not None:
            self._wrote = asyncio.Event()
            flusher = asyncio.create_task(self._flush_when_due(sink, self._wrote))
            flusher.add_done_callback(self._flusher_done)
        try:
            self._raise_if_stopped(sink)  # told to stop while the loop started
            return await run
        except asyncio.CancelledError:
            self._raise_if_stopped(sink)
            raise
        finally:
            run.close()  # never awaited if the stop came first
            self._loop = self._main = self._wrote = None
            if flusher is not None:
                # Not awaited: a stop arriving now must not interrupt a finished run. It waits only
                # in awaits, never inside an upload; asyncio.run ends it before returning.
                flusher.cancel()

    async def _flush_when_due(self, sink: ResultSink, wrote: asyncio.Event) -> None:
        """Upload buffered answers once the oldest has waited ``flush_seconds``, writes or not."""
        while True:
            await wrote.wait()
            wrote.clear()
            while (due := sink.flush_due_in()) is not None:
                if due > 0:
                    await asyncio.sleep(due)
                else:
                    sink.flush()  # sync, like the uploads a write makes; one part, then back to the loop

    def _flusher_done(self, flusher: asyncio.Task[None]) -> None:
        error = None if flusher.cancelled() else flusher.exception()
        if error is not None:
            self._stop_with(error)  # e.g. the bucket refused the upload: stop the run with it

    def _model(self, cached_model: str | None) -> str:
        """The model to call: the cache's own; a different one would fail on every request."""
        cached = model_id(cached_model or "")
        if self.model is None or not cached:
            return cached or model_id(self.model or "")
        if model_id(self.model) != cached:
            raise CtxCacheConfigError(
                f"model: {self.model!r} is not the model of cache {self.cache_name!r} ({cached!r}); "
                "a request must use the cache's model: leave model unset or set it to that one."
            )
        return cached

    def _cost(
        self,
        model: str,
        price: ModelPrice | None,
        result: FanoutResult,
        cache_tokens: int,
        created: dt.datetime | None,
    ) -> dict[str, Any]:
        """This task's requests, priced per tier; the cache's own costs are charged elsewhere."""
        now = dt.datetime.now(dt.timezone.utc)
        report = fanout_report(
            result.summary.billing,
            model=model,
            cache_name=self.cache_name,
            price=price,
            cache_tokens=cache_tokens,
            creation=True,
            cache_seconds=max(0.0, (now - created).total_seconds()) if created else 0.0,
        )
        self._log("Cost of this fan-out:\n%s", report.table())
        return report.to_dict()

    def _results(
        self, sink: ResultSink | None, result: FanoutResult, total: int, source: InputFile | Sequence[Any]
    ) -> dict[str, Any] | None:
        """Answers for XCom, in input order: all without an output, else only when the output is small."""
        if sink is None:
            keys = (request.key for request in self._requests(source, checked=True))
            return {key: result.results[key].to_dict() for key in keys if key in result.results}
        if total > self.xcom_results_limit:
            return None
        return {record["key"]: xcom_answer(record) for record in sink.records()}

    def _keep(self, sink: ResultSink | None) -> Any:
        """Each result as it arrives: written to the output, or held here when there is none."""
        if sink is None:

            def hold(result: KeyResult) -> None:
                self.received[result.key] = result
                self.answers += 1

            return hold

        def write(result: KeyResult) -> None:
            sink.write(result.to_batch_line())
            self.answers += 1
            if self._wrote is not None:
                self._wrote.set()  # the flusher times the buffer from here

        return write

    def _log(self, message: str, *args: Any) -> None:
        if self.logger is not None:
            self.logger.info(message, *args)

    def _warn(self, message: str, *args: Any) -> None:
        if self.logger is not None:
            self.logger.warning(message, *args)
