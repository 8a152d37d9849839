"""GenerateWithCacheOperator: many online calls against one cache, checked first, run concurrently.

The operator stays thin: it renders and checks its input (cache name, prompts, config,
concurrency) before any billable call, picks the model, and hands the requests to the fan-out
engine (:mod:`airflow_provider_ctxcache.fanout`), which owns concurrency and error policy.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from airflow.sdk import Context

from airflow_provider_ctxcache.exceptions import CtxCacheConfigError
from airflow_provider_ctxcache.fanout import (
    FanoutCacheNotFoundError,
    FanoutFailedError,
    FanoutResult,
    check_max_concurrency,
    run_fanout,
)
from airflow_provider_ctxcache.models import model_id
from airflow_provider_ctxcache.operators.base import CtxCacheBaseOperator
from airflow_provider_ctxcache.prompts import KEY_PREFIX, PromptRequest, normalize_prompts

DEFAULT_MAX_CONCURRENCY = 16
FAILURES_SHOWN = 5


class GenerateWithCacheOperator(CtxCacheBaseOperator):
    """Ask every prompt against an existing context cache, ``max_concurrency`` calls at a time.

    Map it over chunks of prompts to spread a large run over workers::

        GenerateWithCacheOperator.partial(task_id="ask", cache_name=create_cache.output,
                                          max_concurrency=32).expand(prompts=chunks)

    :param cache_name: the cache's name, usually ``create_cache.output`` (templated).
    :param prompts: a list of strings (keys ``prompt-00000``, ... by position) and/or requests in
        the Gemini batch format ``{"key": ..., "request": {"contents": [...], "generationConfig": {...}}}``
        (templated). System instruction, tools and tool config belong in the cache and are refused.
    :param model: the model to call (templated); by default the cache's own model, read once.
    :param generation_config: a dict of ``GenerateContentConfig`` fields (camelCase or snake_case)
        every request starts from; a request's own ``generationConfig`` wins field by field (templated).
    :param max_concurrency: calls in flight at once, 1..1024 (default 16).
    :param fail_on_error: fail the task if any prompt failed, after logging the answers that
        succeeded (default True); with False, the errors are returned next to the answers.
    :return: ``{"cache_name", "model", "results": {key: {"text", "finish_reason", "usage"} | {"error"}},
        "summary": {...}}``, JSON-serialisable, results in input order.
    """

    template_fields: Sequence[str] = ("cache_name", "prompts", "model", "generation_config")
    template_fields_renderers = {"prompts": "json", "generation_config": "json"}

    def __init__(
        self,
        *,
        cache_name: Any,
        prompts: Any,
        model: str | None = None,
        generation_config: dict[str, Any] | None = None,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        fail_on_error: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.cache_name = cache_name
        self.prompts = prompts
        self.model = model
        self.generation_config = generation_config
        # Not templated, so a bad value is reported when the DAG is parsed.
        self.max_concurrency = check_max_concurrency(max_concurrency)
        self.fail_on_error = fail_on_error

    def execute(self, context: Context) -> dict[str, Any]:
        try:
            return self._execute(_key_prefix(context))
        finally:
            self.hook.close()
            # The client is closed and its async half was bound to a finished event loop: a later
            # execute() of this same object (a test, an in-process retry) builds a fresh hook.
            self.__dict__.pop("hook", None)

    def _execute(self, key_prefix: str) -> dict[str, Any]:
        # Everything is checked before the first billable call.
        max_concurrency = check_max_concurrency(self.max_concurrency)
        cache_name = self.hook.cache_name(self.cache_name)
        requests = normalize_prompts(
            self.prompts,
            cache_name=cache_name,
            generation_config=self.generation_config,
            key_prefix=key_prefix,
        )
        model = self._model(cache_name)
        self.log.info(
            "Asking %d prompts against cache %s with model %s, up to %d at a time",
            len(requests),
            cache_name,
            model,
            max_concurrency,
        )
        try:
            result = asyncio.run(
                run_fanout(
                    self.hook,
                    model=model,
                    cache_name=cache_name,
                    requests=requests,
                    max_concurrency=max_concurrency,
                )
            )
        except FanoutCacheNotFoundError as error:
            self._log_answers(error.result)
            raise
        self._log_summary(result)
        if result.failures:
            if self.fail_on_error:
                self._log_answers(result)
                raise FanoutFailedError(result, shown=FAILURES_SHOWN)
            for failed in result.failures[:FAILURES_SHOWN]:
                self.log.warning("Prompt %r failed: %s", failed.key, failed.error)
        return self._output(cache_name, model, requests, result)

    def _model(self, cache_name: str) -> str:
        if self.model is not None:
            if not isinstance(self.model, str) or not model_id(self.model):
                raise CtxCacheConfigError(
                    f"model: {self.model!r} is not a model name; use e.g. 'gemini-2.5-flash', "
                    "or leave it unset to use the cache's model."
                )
            return self.model.strip()
        cached = self.hook.get_cache(cache_name).model
        if not cached:
            raise CtxCacheConfigError(
                f"model: cache {cache_name!r} does not report its model; set model= on the operator."
            )
        return model_id(cached)

    def _log_summary(self, result: FanoutResult) -> None:
        s = result.summary
        self.log.info(
            "Asked %d prompts: %d answered, %d failed; %d of %d prompt tokens came from the cache; "
            "%.2f s, %.1f requests/s, at most %d in flight",
            s.requests,
            s.succeeded,
            s.failed,
            s.usage.cached_content_token_count,
            s.usage.prompt_token_count,
            s.elapsed_seconds,
            s.requests_per_second,
            s.peak_in_flight,
        )

    def _log_answers(self, result: FanoutResult) -> None:
        """Keep the answers in the task log when the task fails and XCom will not hold them."""
        for answer in result.results.values():
            if answer.ok:
                self.log.info("Answer %r (%s): %s", answer.key, answer.finish_reason, answer.text)

    @staticmethod
    def _output(
        cache_name: str, model: str, requests: list[PromptRequest], result: FanoutResult
    ) -> dict[str, Any]:
        return {
            "cache_name": cache_name,
            "model": model,
            "results": {r.key: result.results[r.key].to_dict() for r in requests if r.key in result.results},
            "summary": result.summary.to_dict(),
        }


__all__ = ["GenerateWithCacheOperator"]


def _key_prefix(context: Any) -> str:
    """``prompt-0003-`` in mapped instance 3, so positional keys are unique across instances."""
    ti = context.get("ti") if hasattr(context, "get") else None
    map_index = getattr(ti, "map_index", None)
    return f"{KEY_PREFIX}{map_index:04d}-" if isinstance(map_index, int) and map_index >= 0 else KEY_PREFIX
