"""GenerateWithCacheOperator: many online calls against one cache, checked first, run concurrently.

The operator stays thin: it renders and checks its arguments, then hands them to the fan-out
job (:mod:`airflow_provider_ctxcache.fanout.job`), which validates the whole input before any
billable call, skips keys already answered in the output, runs the engine and prices the run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from airflow.sdk import Context, XComArg

from airflow_provider_ctxcache.contents import configured_allowed_roots
from airflow_provider_ctxcache.exceptions import CacheNotFoundError, CtxCacheConfigError
from airflow_provider_ctxcache.fanout import (
    FanoutCacheNotFoundError,
    FanoutFailedError,
    FanoutOptions,
    check_max_concurrency,
)
from airflow_provider_ctxcache.fanout.job import FanoutJob
from airflow_provider_ctxcache.fanout.outputs import DEFAULT_FLUSH_SECONDS, check_flush_seconds
from airflow_provider_ctxcache.fanout.pacing import QuotaLimits
from airflow_provider_ctxcache.model_facts import model_id
from airflow_provider_ctxcache.operators.base import CtxCacheBaseOperator
from airflow_provider_ctxcache.placement import check_local_paths
from airflow_provider_ctxcache.prompts import KEY_PREFIX
from airflow_provider_ctxcache.validation import parse_ttl

DEFAULT_MAX_CONCURRENCY = 16
FAILURES_SHOWN = 5
NO_UPSTREAM_XCOM = (
    "cache_name: is {value!r}: it comes from {source}, and this run has none (that task did not run "
    "in this run, as under `airflow tasks test`, or its XCom was cleared). Run the whole DAG "
    "(`airflow dags test {dag_id}`), or name an existing cache as a param: `airflow tasks test "
    '{dag_id} {task_id} -t \'{{"cache_name": "cachedContents/ID"}}\'`.'
)
CLEARED_AFTER_TEARDOWN = (
    "before any prompt was sent; if this task was cleared after its run ended, the run's teardown "
    "has deleted the cache: clear it together with the task that creates the cache (select "
    "create_cache and clear it with its downstream tasks), which finds or makes the cache again"
)


class GenerateWithCacheOperator(CtxCacheBaseOperator):
    """Ask every prompt against an existing context cache, ``max_concurrency`` calls at a time.

    Map it over chunks of prompts (or over input shards) to spread a large run over workers::

        GenerateWithCacheOperator.partial(task_id="ask", cache_name=create_cache.output,
                                          max_concurrency=32).expand(prompts=chunks)

    :param cache_name: the cache's name, usually ``create_cache.output`` (templated). When it
        comes from an upstream XCom that this run lacks (``airflow tasks test`` of this task
        alone), a ``cache_name`` param stands in (``-t '{"cache_name": "cachedContents/ID"}'``).
    :param prompts: a list of strings (keys ``prompt-00000``, ... by position) and/or requests in
        the Gemini batch format ``{"key": ..., "request": {"contents": [...], "generationConfig": {...}}}``
        (templated). System instruction, tools and tool config belong in the cache and are refused.
    :param input_uri: instead of ``prompts``: a JSONL file of batch-format requests, a local path
        under ``allowed_roots`` or ``gs://bucket/object`` (templated).
    :param output_uri: a local folder (under ``allowed_roots``) or ``gs://bucket/prefix/`` that
        receives batch-output lines ``{"key", "response"}`` / ``{"key", "error"}`` in parts while the
        run goes on; a retry or re-run skips keys already answered there (templated).
    :param model: the model to call (templated); by default the cache's own model.
    :param generation_config: ``GenerateContentConfig`` fields (camelCase or snake_case) every
        request starts from; a request's own ``generationConfig`` wins field by field (templated).
    :param max_concurrency: calls in flight at once, 1..1024 (default 16); over google-genai's
        default httpx transport at most 100 are on the wire at once (the run warns above that).
    :param rpm_limit: requests per minute this task may send (default: the connection extra
        ``rpm_limit``). Quotas are per project and per model: mapped instances running at once
        share them, so give each its share (see ``fanout.shards.split_quota``).
    :param tpm_limit: input tokens per minute this task may send, cached tokens included (default:
        the connection extra ``tpm_limit``). With neither limit the run adapts to the 429s it gets.
    :param max_attempts: tries per request on 5xx and timeouts (429s wait and do not count).
    :param max_failure_ratio: stop the run once more than this share of the prompts failed.
    :param keep_alive: extend the cache's TTL while work remains (default True).
    :param keep_alive_margin: extend when less than this is left (default ``"5m"``).
    :param keep_alive_ttl: the TTL each extension sets (default ``"30m"``).
    :param progress_interval: seconds between progress lines in the task log (default 30).
    :param fail_on_error: fail the task if any prompt failed (default True); answers are kept.
    :param prices: price overrides for the cost report (see ``costs.py``); default the connection
        extra ``prices``, then the built-in table.
    :param allowed_roots: folders local input and output may use; default ``[ctxcache] allowed_roots``.
    :param output_part_size: lines per output part (default 1000); on ``gs://`` a part is uploaded
        when it is full, or sooner (see ``output_flush_seconds``).
    :param output_flush_seconds: on a ``gs://`` output, the longest an answer waits in memory
        before it is uploaded, whether or not more answers arrive (default 10.0 seconds). A killed
        worker (SIGKILL, a lost node) loses at most that many seconds' answers, or
        ``output_part_size`` of them, and a retry asks those again. Local output is written
        line by line and never waits.
    :param shared_filesystem: on a distributed executor (Celery, Kubernetes) local ``input_uri`` and
        ``output_uri`` paths are refused before any call, since a retry or the reader of the
        answers may run on another worker; True declares that every worker mounts them. Default
        ``[ctxcache] shared_filesystem``.
    :param xcom_results_limit: with ``output_uri``, answers also go to XCom up to this many prompts.
    :return: ``{"cache_name", "model", "output_uri", "summary", "cost", "results"}``: results are
        ``{key: {"text", "finish_reason", "usage"} | {"error"}}``, or None for a large run with output.

    Stopping: when the task is told to stop (Airflow's SIGTERM, which calls :meth:`on_kill`; an
    ``execution_timeout``; any error), the calls in flight are abandoned and every answer
    received so far is in the output before the task ends (the ``gs://`` buffer is uploaded),
    so a retry asks only the rest and the calls that were in flight (at most
    ``max_concurrency``). Without an output, the answers go to the log and to XCom
    ``partial_results``. A SIGTERM fails the try with ``FanoutStoppedError`` (retried if the
    task has retries).
    """

    template_fields: Sequence[str] = (
        "cache_name",
        "prompts",
        "input_uri",
        "output_uri",
        "model",
        "generation_config",
    )
    template_fields_renderers = {"prompts": "json", "generation_config": "json"}

    def __init__(
        self,
        *,
        cache_name: Any,
        prompts: Any = None,
        input_uri: str | None = None,
        output_uri: str | None = None,
        model: str | None = None,
        generation_config: dict[str, Any] | None = None,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        rpm_limit: int | None = None,
        tpm_limit: int | None = None,
        max_attempts: int = 6,
        max_failure_ratio: float = 0.05,
        keep_alive: bool = True,
        keep_alive_margin: Any = "5m",
        keep_alive_ttl: Any = "30m",
        progress_interval: float = 30.0,
        fail_on_error: bool = True,
        prices: dict[str, Any] | None = None,
        allowed_roots: Sequence[str] | None = None,
        output_part_size: int = 1000,
        output_flush_seconds: float = DEFAULT_FLUSH_SECONDS,
        shared_filesystem: bool | None = None,
        xcom_results_limit: int = 100,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.cache_name = cache_name
        # Where cache_name comes from, seen before rendering replaces it: an absent upstream
        # XCom renders to None (or "None"), which deserves its own message.
        self._cache_name_from = _xcom_source(cache_name)
        self.prompts = prompts
        self.input_uri = input_uri
        self.output_uri = output_uri
        self.model = model
        self.generation_config = generation_config
        # Not templated, so a bad value is reported when the DAG is parsed.
        self.max_concurrency = check_max_concurrency(max_concurrency)
        self.rpm_limit = _limit(rpm_limit, "rpm_limit")
        self.tpm_limit = _limit(tpm_limit, "tpm_limit")
        self.max_attempts = max_attempts
        self.max_failure_ratio = max_failure_ratio
        self.keep_alive = keep_alive
        self.keep_alive_margin = keep_alive_margin
        self.keep_alive_ttl = keep_alive_ttl
        self.progress_interval = progress_interval
        self.fail_on_error = fail_on_error
        self.prices = prices
        self.allowed_roots = allowed_roots
        self.output_part_size = output_part_size
        self.output_flush_seconds = check_flush_seconds(output_flush_seconds)
        self.shared_filesystem = shared_filesystem
        self.xcom_results_limit = xcom_results_limit
        self._running: FanoutJob | None = None

    def execute(self, context: Context) -> dict[str, Any]:
        try:
            job = self._running = self._job(context)
            try:
                output = job.run()
            except (FanoutCacheNotFoundError, FanoutFailedError) as error:
                self._log_answers(error.result)
                raise
            except CacheNotFoundError as error:  # before any call: cleared after the teardown ran?
                raise CacheNotFoundError(error.cache_name, CLEARED_AFTER_TEARDOWN) from None
            except BaseException:  # a timeout, SIGTERM, any error: keep what was already paid for
                self._keep_partial(context, job)
                raise
        finally:
            self._running = None
            self.hook.close()
            # The client is closed and its async half was bound to a finished event loop: a later
            # execute() of this same object (a test, an in-process retry) builds a fresh hook.
            self.__dict__.pop("hook", None)
        if job.result is not None and job.result.summary.failed:
            if self.fail_on_error:
                self._log_answers(job.result)
                raise FanoutFailedError(job.result, shown=FAILURES_SHOWN)
            for failed in job.result.failures[:FAILURES_SHOWN]:
                self.log.warning("Prompt %r failed: %s", failed.key, failed.error)
        return output

    def on_kill(self) -> None:
        """Stop the fan-out in progress, keeping every answer received (Airflow's SIGTERM handler).

        Airflow 3 calls this from the task process's SIGTERM handler and then lets ``execute``
        go on; it raises nothing itself. So the run is stopped here: the job cancels its calls
        on its own event loop, closes (and so uploads) the output and raises
        ``FanoutStoppedError``. Also called after an ``execution_timeout``, when the run has
        already ended: then it does nothing.
        """
        job = getattr(self, "_running", None)
        if job is not None:
            self.log.warning("Told to stop: abandoning the calls in flight, keeping every answer received")
            job.stop("the task was told to stop (SIGTERM)")

    def _job(self, context: Context) -> FanoutJob:
        """Every argument checked and rendered, before any call that could cost money."""
        max_concurrency = check_max_concurrency(self.max_concurrency)
        cache_name = self.hook.cache_name(self._given_cache_name(context))
        if self.model is not None and (not isinstance(self.model, str) or not model_id(self.model)):
            raise CtxCacheConfigError(
                f"model: {self.model!r} is not a model name; use e.g. 'gemini-2.5-flash', "
                "or leave it unset to use the cache's model."
            )
        for name, value in (
            ("max_attempts", self.max_attempts),
            ("output_part_size", self.output_part_size),
            ("xcom_results_limit", self.xcom_results_limit),
        ):
            if (
                isinstance(value, bool)
                or not isinstance(value, int)
                or value < (0 if name == "xcom_results_limit" else 1)
            ):
                raise CtxCacheConfigError(f"{name}: {value!r} is not a positive whole number.")
        output_flush_seconds = check_flush_seconds(self.output_flush_seconds)
        check_local_paths(
            {"input_uri": self.input_uri, "output_uri": self.output_uri},
            shared_filesystem=self.shared_filesystem,
            task_executor=getattr(self, "executor", None),
        )
        if not isinstance(self.max_failure_ratio, (int, float)) or not 0 <= self.max_failure_ratio <= 1:
            raise CtxCacheConfigError(
                f"max_failure_ratio: {self.max_failure_ratio!r} must be between 0 and 1, e.g. 0.05."
            )
        margin = parse_ttl(self.keep_alive_margin, "keep_alive_margin").total_seconds()
        extension = parse_ttl(self.keep_alive_ttl, "keep_alive_ttl").total_seconds()
        if self.keep_alive and extension <= margin:
            raise CtxCacheConfigError(
                f"keep_alive_ttl: {self.keep_alive_ttl!r} must be longer than keep_alive_margin "
                f"({self.keep_alive_margin!r}), or each extension would be due at once."
            )
        options = FanoutOptions(
            max_attempts=self.max_attempts,
            max_failure_ratio=float(self.max_failure_ratio),
            keep_alive=self.keep_alive,
            keep_alive_margin=margin,
            keep_alive_ttl=extension,
            progress_interval=float(self.progress_interval),
            quota=self._quota(),
        )
        map_index = _map_index(context)
        return FanoutJob(
            hook=self.hook,
            cache_name=cache_name,
            max_concurrency=max_concurrency,
            options=options,
            prompts=self.prompts,
            input_uri=self.input_uri,
            output_uri=self.output_uri,
            model=self.model.strip() if isinstance(self.model, str) else None,
            generation_config=self.generation_config,
            key_prefix=f"{KEY_PREFIX}{map_index:04d}-" if map_index >= 0 else KEY_PREFIX,
            allowed_roots=self.allowed_roots
            if self.allowed_roots is not None
            else configured_allowed_roots(),
            output_part_size=self.output_part_size,
            output_flush_seconds=output_flush_seconds,
            xcom_results_limit=self.xcom_results_limit,
            prices=self.price_overrides(),
            logger=self.log,
        )

    def _given_cache_name(self, context: Context) -> Any:
        """The rendered ``cache_name``; when it was to come from an XCom this run lacks, the
        ``cache_name`` param (``airflow tasks test ... -t``), or an error that says so."""
        value = self.cache_name
        source = getattr(self, "_cache_name_from", None)
        if source is None or not _absent(value):
            return value
        params = context.get("params") if hasattr(context, "get") else None
        stand_in = params.get("cache_name") if isinstance(params, Mapping) else None
        if not _absent(stand_in):
            self.log.info(
                "cache_name: %s has no value in this run; using the cache_name param %r", source, stand_in
            )
            return stand_in
        raise CtxCacheConfigError(
            NO_UPSTREAM_XCOM.format(value=value, source=source, dag_id=self.dag_id, task_id=self.task_id)
        )

    def _quota(self) -> QuotaLimits:
        """The operator's limits win over the connection's; the window is the connection's."""
        settings = self.hook.settings
        return QuotaLimits(
            rpm=_limit(self.rpm_limit, "rpm_limit") or settings.rpm_limit,
            tpm=_limit(self.tpm_limit, "tpm_limit") or settings.tpm_limit,
            window_seconds=settings.quota_window_seconds,
            counts_cached=settings.tpm_counts_cached,
        )

    def _log_answers(self, result: Any) -> None:
        """Keep the answers in the task log when the task fails and XCom will not hold them."""
        self._log_each(result.results.values())

    def _log_each(self, answers: Any) -> None:
        for answer in answers:
            if answer.ok:
                self.log.info("Answer %r (%s): %s", answer.key, answer.finish_reason, answer.text)

    def _keep_partial(self, context: Context, job: FanoutJob) -> None:
        """The task is being stopped mid-run: the answers received so far must not be lost.

        With an output they are in it already (the sink is closed, and so flushed, on the way
        out); without one they go to the task log and to XCom as ``partial_results``.
        """
        if job.output_uri is not None or not job.received:
            return  # in the output already (a retry resumes there), or nothing was received
        received = list(job.received.values())
        self.log.warning(
            "Stopped mid-run after %d answers; they follow, and are in XCom 'partial_results'", len(received)
        )
        self._log_each(received)
        ti = context.get("ti") if hasattr(context, "get") else None
        if ti is not None:
            try:
                ti.xcom_push(key="partial_results", value={r.key: r.to_dict() for r in received})
            except Exception:  # the log above already holds them; never hide the real error
                self.log.warning("Could not push partial_results to XCom", exc_info=True)


def _limit(value: Any, name: str) -> int | None:
    """None, or a whole number >= 1: a quota of zero would never send anything."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CtxCacheConfigError(
            f"{name}: {value!r} is not a whole number >= 1; leave it unset to use the connection's "
            "limit or to let the run adapt to the quota."
        )
    return value


def _xcom_source(value: Any) -> str | None:
    """What XCom an unrendered ``cache_name`` reads ("the XCom of task 'create_cache'"), else None."""
    if isinstance(value, str):
        return "an upstream XCom (its template calls xcom_pull)" if "xcom_pull" in value else None
    tasks = sorted({operator.task_id for operator, _ in XComArg.iter_xcom_references(value)})
    if not tasks:
        return None
    return "the XCom of task " + ", ".join(repr(t) for t in tasks)


def _absent(value: Any) -> bool:
    """What a missing XCom renders to: None, or "None" in a string template; or nothing at all."""
    return value is None or (isinstance(value, str) and value.strip() in ("", "None"))


def _map_index(context: Any) -> int:
    ti = context.get("ti") if hasattr(context, "get") else None
    map_index = getattr(ti, "map_index", None)
    return map_index if isinstance(map_index, int) else -1


__all__ = ["GenerateWithCacheOperator"]
