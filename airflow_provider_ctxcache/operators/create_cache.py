"""CreateCacheOperator: one cache per run (or per content), never a second one on retry."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowSkipException
from google.genai import types

from airflow_provider_ctxcache.cache_owner import display_name as owned_display_name
from airflow_provider_ctxcache.contents import (
    ContentBuilder,
    configured_allowed_roots,
    files_to_stage,
    fingerprint,
    resolve,
)
from airflow_provider_ctxcache.costs import (
    advise,
    check_overrides,
    creation_report,
    readable_duration,
)
from airflow_provider_ctxcache.exceptions import (
    CacheNotWorthItError,
    CacheTooSmallError,
    CtxCacheApiError,
    CtxCacheConfigError,
    EndpointUnreachableError,
    QuotaExceededError,
)
from airflow_provider_ctxcache.fanout.pending import count_pending
from airflow_provider_ctxcache.model_facts import check_not_shut_down, model_id
from airflow_provider_ctxcache.operators.base import CtxCacheBaseOperator
from airflow_provider_ctxcache.placement import check_local_paths
from airflow_provider_ctxcache.staging import Stager, remove_staged
from airflow_provider_ctxcache.validation import one_expiry, parse_expire_time, parse_ttl

if TYPE_CHECKING:
    from airflow.sdk import Context

REUSE_MODES = ("run", "content", "never")
# A cache made by a create that got no answer was made after the create started, by the
# service's clock; this allows for the worker's clock being a little ahead.
CLOCK_SLACK = dt.timedelta(seconds=5)
LOOK_AGAIN_SECONDS = 1.0
LOOK_FOR_SECONDS = 60.0  # how long a create that got no answer may still be completing
# A reused cache must hold about what the content counts (the service may add a few tokens).
SIZE_SLACK_TOKENS = 16
SIZE_SLACK_SHARE = 0.01
IF_NOT_WORTH_IT = ("warn", "fail", "skip")
DEFAULT_TTL = "1h"
# `airflow tasks test` runs one task in a throwaway run: no teardown deletes what it creates.
SINGLE_TASK_TEST_TTL = dt.timedelta(minutes=10)
TEMPORARY_RUN_PREFIX = "__airflow_temporary_run_"


def cache_key(
    reuse: str, *, fingerprint_hex: str, dag_id: str, task_id: str, run_id: str, map_index: int
) -> str:
    """The display-name suffix that finds this cache again after a retry or in another run.

    "run" binds it to (dag_id, task_id, run_id, map_index) and the content, never try_number,
    because XCom is cleared when a task retries; "content" binds it to the content alone.
    """
    if reuse == "content":
        return f"ctxcache:c:{fingerprint_hex[:24]}"
    run = hashlib.sha256(f"{dag_id}\0{task_id}\0{run_id}\0{map_index}".encode()).hexdigest()
    return f"ctxcache:r:{run[:16]}:{fingerprint_hex[:16]}"


def _map_index(ti: Any) -> int:
    index = getattr(ti, "map_index", None)
    return -1 if index is None else int(index)


class CreateCacheOperator(CtxCacheBaseOperator):
    """Create a Gemini context cache, or find the one this run (or this content) already made.

    :param model: e.g. ``gemini-2.5-flash``.
    :param contents: strings, ``{"text": ...}``, ``{"file": PATH}`` (file or folder under
        ``allowed_roots``) and ``{"uri": URI, "mime_type": ...}`` items.
    :param system_instruction: cached with the content (requests that use the cache cannot set one).
    :param tools: cached tool declarations; ``tool_config`` likewise.
    :param ttl: ``"90m"``, ``"2h"``, ``"3600s"``, seconds or a timedelta (default ``"1h"``
        when ``expire_time`` is not set either).
    :param expire_time: a timezone-aware time in the future, instead of ``ttl``.
    :param display_name: a readable prefix; the provider appends ``@DAG_ID/RUN_ID`` (with reuse
        ``"run"`` or ``"never"``, see :mod:`~airflow_provider_ctxcache.cache_owner`) and its reuse key.
    :param reuse: ``"run"`` (a retry or re-run of this task in this DAG run finds its cache),
        ``"content"`` (any run with the same model and content reuses a live cache with at least
        ``min_remaining_ttl`` left) or ``"never"``.
    :param min_remaining_ttl: for ``reuse="content"``, how much life a cache needs to be reused.
    :param allowed_roots: folders local files may be read from; default ``[ctxcache] allowed_roots``.
    :param staging_uri: ``gs://bucket/prefix`` for files too large to send inline on vertex_ai
        (default: the connection extra ``staging_uri``); the Developer API uses the Files API.
        Staged objects are removed when DeleteCacheOperator deletes the cache.
    :param prompts: the prompts the cache is made for (as ``GenerateWithCacheOperator`` takes them),
        or ``input_uri``, a JSONL file of them; with ``output_uri``, where their answers go (local
        paths under ``[ctxcache] allowed_roots``, as the fan-out reads them). Before
        anything is spent, every request is checked and the pending ones counted: none pending
        skips this task (and those that need the cache), a bad one fails it naming its line.
    :param shared_filesystem: on a distributed executor (Celery, Kubernetes) local ``input_uri`` and
        ``output_uri`` paths are refused, since the tasks that use them may run on other workers;
        True declares that every worker mounts them. Default ``[ctxcache] shared_filesystem``.
    :param expected_requests: how many requests will use the cache, when the prompts are not given
        here; with ``prompts``/``input_uri``, the pending count is used instead.
    :param if_not_worth_it: what to do when the break-even advisor finds the cache would cost more
        than asking the same requests online without one: ``"warn"`` (default: log it and create),
        ``"fail"`` or ``"skip"`` (no cache; the tasks that need it are skipped too).
    :param prices: price overrides for the creation's cost and the advice; default the connection
        extra ``prices``, then the built-in table.
    :param min_tokens: override the model's minimum cache size checked before creating. By
        default the minimum comes from the provider's model table for the connection's backend
        (the lowest credible value); for a model the table does not know, the server decides
        (its "too small" answer is raised as ``CacheTooSmallError`` too).
    :return: the cache's full name; XCom also gets ``expire_time``, ``token_count``, ``model``,
        ``reused``, ``cost`` (the creation, charged only to the task that created the cache) and,
        when the request count is known, ``advice`` (the break-even table as numbers).
    """

    template_fields: Sequence[str] = (
        "model",
        "contents",
        "system_instruction",
        "ttl",
        "expire_time",
        "display_name",
        "reuse",
        "min_remaining_ttl",
        "staging_uri",
        "prompts",
        "input_uri",
        "output_uri",
        "expected_requests",
        "if_not_worth_it",
    )
    template_fields_renderers = {"contents": "json", "system_instruction": "md", "prompts": "json"}

    def __init__(
        self,
        *,
        model: str,
        contents: Any,
        system_instruction: str | None = None,
        tools: list[Any] | None = None,
        tool_config: Any = None,
        ttl: Any = None,
        expire_time: Any = None,
        display_name: str | None = None,
        reuse: str = "run",
        min_remaining_ttl: Any = "10m",
        allowed_roots: Sequence[str] | None = None,
        min_tokens: int | None = None,
        kms_key_name: str | None = None,
        staging_uri: str | None = None,
        prompts: Any = None,
        input_uri: str | None = None,
        output_uri: str | None = None,
        expected_requests: Any = None,
        if_not_worth_it: str = "warn",
        prices: dict[str, Any] | None = None,
        shared_filesystem: bool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model = model
        self.contents = contents
        self.system_instruction = system_instruction
        self.tools = tools
        self.tool_config = tool_config
        self.ttl = ttl
        self.expire_time = expire_time
        self.display_name = display_name
        self.reuse = reuse
        self.min_remaining_ttl = min_remaining_ttl
        self.allowed_roots = allowed_roots
        self.min_tokens = min_tokens
        self.kms_key_name = kms_key_name
        self.staging_uri = staging_uri
        self.prompts = prompts
        self.input_uri = input_uri
        self.output_uri = output_uri
        self.expected_requests = expected_requests
        self.if_not_worth_it = if_not_worth_it
        self.prices = prices
        self.shared_filesystem = shared_filesystem

    def execute(self, context: Context) -> str:
        plan = self._plan(context)
        alone = single_task_test(context)
        if alone:
            self._shorten_for_single_task_test(plan)
        hook = self.hook
        requests = self._requests()
        if requests == 0:
            raise AirflowSkipException(
                "Nothing to ask (no request without an answer), so no cache is created and the tasks "
                "that need it are skipped."
            )
        existing = self._find_reusable(plan["display_name"], plan["min_remaining"])
        if existing is not None:
            self._check_adopted(plan, existing)
            self.log.info(
                "Reusing cache %s (display name %r, expires %s)",
                existing.name,
                existing.display_name,
                existing.expire_time,
            )
            return self._push(context, existing, reused=True)

        limit = hook.backend.inline_limit_bytes
        stager = Stager(self.staging_area(self.staging_uri), plan["key"], self.log)
        parts = resolve(plan["items"], stager if files_to_stage(plan["items"], limit) else None, limit)
        try:
            tokens = self._precheck_size(plan["model"], parts)
            self._advise(context, plan, tokens, requests)
            started = dt.datetime.now(dt.timezone.utc)
            try:
                cache = hook.create_cache(
                    model=plan["model"],
                    contents=parts,
                    system_instruction=self.system_instruction,
                    tools=self.tools,
                    tool_config=self.tool_config,
                    ttl=plan["ttl"],
                    expire_time=plan["expire_time"],
                    display_name=plan["display_name"],
                    kms_key_name=self.kms_key_name,
                )
            except (CtxCacheConfigError, CtxCacheApiError, QuotaExceededError, EndpointUnreachableError):
                raise  # the service answered, or was never reached: it made nothing
            except Exception as error:  # a timeout or a lost connection: it may have made it
                cache = self._made_anyway(plan["display_name"], started, error)
        except (CacheTooSmallError, AirflowSkipException, CacheNotWorthItError):
            if stager.staged:
                remove_staged(stager.area, plan["key"], self.log)
            raise
        if self.reuse == "content":
            cache = self._settle_on_oldest(context, plan, cache)
        if alone:
            self.log.warning(
                "Delete it when done: ctxcache caches delete %s --conn-id %s (else it expires %s)",
                cache.name,
                self.ctxcache_conn_id,
                cache.expire_time.isoformat() if cache.expire_time else "at its TTL",
            )
        return self._push(context, cache, reused=False)

    def _shorten_for_single_task_test(self, plan: dict[str, Any]) -> None:
        """Under ``airflow tasks test`` no teardown runs, so the cache lives at most 10 minutes.

        A shorter ``ttl`` or ``expire_time`` the DAG gives is kept; a longer one (or the 1 h
        default) becomes a 10-minute ``ttl``: enough to run the next task by hand, and what is
        forgotten stops billing soon.
        """
        if plan["ttl"] is not None:
            lifetime = plan["ttl"]
        else:
            lifetime = plan["expire_time"] - dt.datetime.now(dt.timezone.utc)
        if lifetime <= SINGLE_TASK_TEST_TTL:
            self.log.warning(
                "airflow tasks test runs this task alone: no teardown will delete the cache; "
                "it keeps its lifetime of %s",
                readable_duration(lifetime.total_seconds()),
            )
            return
        plan["ttl"], plan["expire_time"] = SINGLE_TASK_TEST_TTL, None
        self.log.warning(
            "airflow tasks test runs this task alone: no teardown will delete the cache, so it lives "
            "%s instead of %s",
            readable_duration(SINGLE_TASK_TEST_TTL.total_seconds()),
            readable_duration(lifetime.total_seconds()),
        )

    def _made_anyway(self, display_name: str, started: dt.datetime, error: Exception) -> types.CachedContent:
        """The create failed without an answer: find the cache the service may have made anyway.

        Its display name carries this task's key, so the cache is found (waiting while the service
        may still be making it) and used, rather than left billed with no task to delete it.
        """
        self.log.warning(
            "Create failed without an answer (%s); looking for the cache it may have made", error
        )
        deadline = time.monotonic() + max(LOOK_FOR_SECONDS, 2 * self.hook.settings.timeout_seconds)
        since = started - CLOCK_SLACK
        while True:
            made = [
                cache
                for cache in self.hook.list_caches(display_name=display_name)
                if cache.create_time is not None and cache.create_time >= since
            ]
            if made:
                cache = min(made, key=_age)
                self.log.warning("The service made cache %s after all; using it", cache.name)
                return cache
            if time.monotonic() >= deadline:
                raise error
            time.sleep(LOOK_AGAIN_SECONDS)

    def _settle_on_oldest(
        self, context: Context, plan: dict[str, Any], mine: types.CachedContent
    ) -> types.CachedContent:
        """Runs that created the same content at once keep one cache: the oldest, which all see.

        Every run lists the caches with its key after creating; the oldest was made before any
        of the others, so each of them sees it and the creators of the rest delete their own.
        """
        now = dt.datetime.now(dt.timezone.utc)
        same = [  # only those a run would reuse: one about to expire is not a rival
            c
            for c in self.hook.list_caches(display_name=plan["display_name"])
            if c.create_time and c.expire_time and c.expire_time - now > plan["min_remaining"]
        ]
        oldest = min([*same, mine], key=_age)
        if oldest.name == mine.name:
            return mine
        self.log.info(
            "Another run made cache %s for the same content first; deleting %s", oldest.name, mine.name
        )
        removal = self.hook.remove_cache(str(mine.name))  # its staged files are the oldest's too
        self._report_short_life(context, mine, removal.ended_at)
        return oldest

    def _report_short_life(
        self, context: Context, cache: types.CachedContent, ended_at: dt.datetime | None
    ) -> None:
        """The creation (and seconds of storage) of a cache this task made and deleted at once."""
        seconds = (ended_at - cache.create_time).total_seconds() if ended_at and cache.create_time else 0.0
        model = model_id(cache.model or self.model)
        report = creation_report(
            model=model,
            cache_name=str(cache.name),
            price=self.report_price(model),
            cache_tokens=_tokens(cache),
            created=True,
            storage_seconds=max(0.0, seconds),
        )
        self.log.info("Cost of the cache made and deleted:\n%s", report.table())
        context["ti"].xcom_push(key="cost_of_duplicate", value=report.to_dict())

    def _check_adopted(self, plan: dict[str, Any], cache: types.CachedContent) -> None:
        """A cache found by its display name must hold this content: same model, same size.

        Anyone who may create caches can give one this task's display name; reusing it would
        answer from its content. Counting the content is free and needs nothing staged.
        """
        model = model_id(cache.model or "")
        if model != plan["model"]:
            raise CtxCacheConfigError(
                f"reuse: cache {cache.name!r} has this task's display name but model {model!r}, not "
                f"{plan['model']!r}; it was not made by this task. Delete it, or set reuse='never'."
            )
        limit = self.hook.backend.inline_limit_bytes
        if files_to_stage(plan["items"], limit):
            return  # counting would stage the large files again; the model and key must do
        counted = self.hook.count_tokens(
            model=plan["model"],
            contents=resolve(plan["items"], None, limit),
            system_instruction=self.system_instruction,
        )
        held = _tokens(cache)
        if abs(held - counted) > max(SIZE_SLACK_TOKENS, counted * SIZE_SLACK_SHARE):
            raise CtxCacheConfigError(
                f"reuse: cache {cache.name!r} has this task's display name but holds {held:,} tokens, "
                f"while this content counts {counted:,}; it was not made from this content. Delete it, "
                "or set reuse='never'."
            )

    def _precheck_size(self, model: str, parts: list[types.Part]) -> int:
        """Counts the content (free) and refuses it when surely below the model's minimum.

        The count also proves the backend serves the model before the (billed) create. The
        minimum is the table's lowest credible value, which never refuses what the service
        would take; for a model the table does not know there is none, and the server decides.
        """
        tokens = self.hook.count_tokens(
            model=model, contents=parts, system_instruction=self.system_instruction
        )
        minimum = (
            self.min_tokens if self.min_tokens is not None else self.hook.backend.min_cache_tokens(model)
        )
        if minimum is None:
            self.log.info(
                "%d tokens; no known minimum cache size for %s here: the server decides", tokens, model
            )
        elif tokens < minimum:
            raise CacheTooSmallError(tokens, minimum, model)
        return tokens

    def _requests(self) -> int | None:
        """The requests that will use the cache: the pending count of the given input, else expected.

        The input and output are read under ``[ctxcache] allowed_roots``, as the fan-out reads them.
        """
        check_local_paths(
            {"input_uri": self.input_uri, "output_uri": self.output_uri},
            shared_filesystem=self.shared_filesystem,
            task_executor=getattr(self, "executor", None),
        )
        if self.prompts is not None or self.input_uri is not None:
            work = count_pending(
                prompts=self.prompts,
                input_uri=self.input_uri,
                output_uri=self.output_uri,
                storage_client_factory=lambda: self.hook.storage_client,
                allowed_roots=configured_allowed_roots(),
                max_request_bytes=self.hook.backend.request_limit_bytes,
            )
            self.log.info(
                "%d requests in the input, %d already answered in %s: %d to ask",
                work.total,
                work.answered,
                self.output_uri or "(no output_uri)",
                work.pending,
            )
            return work.pending
        return self._expected_requests()

    def _expected_requests(self) -> int | None:
        value = self.expected_requests
        if value is None or value == "":
            return None
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value.strip())
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise CtxCacheConfigError(
                f"expected_requests: {self.expected_requests!r} is not a whole number >= 0; give how "
                "many requests will use the cache, or leave it unset."
            )
        return value

    def _advise(self, context: Context, plan: dict[str, Any], tokens: int, requests: int | None) -> None:
        """Print the break-even table and follow ``if_not_worth_it``; free, before the create."""
        if requests is None:
            self.log.info("No break-even advice: pass expected_requests (or prompts / input_uri) to get it.")
            return
        if plan["ttl"] is not None:
            seconds = plan["ttl"].total_seconds()
        else:
            seconds = (plan["expire_time"] - dt.datetime.now(dt.timezone.utc)).total_seconds()
        advice = advise(
            model=plan["model"],
            context_tokens=tokens,
            requests=requests,
            ttl=max(seconds, 0.0),
            prices=plan["prices"],
        )
        self.log.info("Break-even advice before creating the cache:\n%s", advice.table())
        context["ti"].xcom_push(key="advice", value=advice.to_dict())
        if advice.worth_it is not False:
            return
        why = (
            f"a cache of {tokens:,} tokens held {readable_duration(seconds)} for {requests:,} requests "
            f"costs more than asking them online without a cache (break-even: "
            f"{_requests_text((advice.break_even or {}).get('online_no_cache'))})"
        )
        if self.if_not_worth_it == "fail":
            raise CacheNotWorthItError(
                f"if_not_worth_it='fail': {why}. Raise the request count, shorten the ttl, or set "
                "if_not_worth_it='warn' to create it anyway."
            )
        if self.if_not_worth_it == "skip":
            raise AirflowSkipException(f"if_not_worth_it='skip': {why}; no cache is created.")
        self.log.warning("Creating it anyway (if_not_worth_it='warn'): %s.", why)

    def _plan(self, context: Context) -> dict[str, Any]:
        """Every argument checked and rendered, before any call that could cost money."""
        if not isinstance(self.model, str) or not model_id(self.model):
            raise CtxCacheConfigError("model: is empty; name a Gemini model, e.g. 'gemini-2.5-flash'.")
        check_not_shut_down(self.model)
        if self.reuse not in REUSE_MODES:
            raise CtxCacheConfigError(f"reuse: {self.reuse!r} is not one of {', '.join(REUSE_MODES)}.")
        if self.if_not_worth_it not in IF_NOT_WORTH_IT:
            raise CtxCacheConfigError(
                f"if_not_worth_it: {self.if_not_worth_it!r} is not one of {', '.join(IF_NOT_WORTH_IT)}."
            )
        if self.prompts is not None and self.input_uri is not None:
            raise CtxCacheConfigError("prompts, input_uri: give one of them (or neither), not both.")
        prices = self.price_overrides()
        check_overrides(prices)
        self._expected_requests()
        one_expiry(self.ttl, self.expire_time)
        expire_time = parse_expire_time(self.expire_time) if self.expire_time is not None else None
        ttl_value = (
            None if expire_time is not None else parse_ttl(DEFAULT_TTL if self.ttl is None else self.ttl)
        )
        min_remaining = parse_ttl(self.min_remaining_ttl, "min_remaining_ttl")
        roots = self.allowed_roots if self.allowed_roots is not None else configured_allowed_roots()
        builder = ContentBuilder(backend=self.hook.backend, allowed_roots=roots)
        items = builder.build(self.contents)
        model = model_id(self.model)
        digest = fingerprint(
            model=model,
            contents=items,
            system_instruction=self.system_instruction,
            tools=self.tools,
            tool_config=self.tool_config,
        )
        if self.reuse == "never":
            # No reuse, but the cache still carries a key: its staged files' folder, and a way to
            # tell whose it is (a task killed mid-create leaves a cache someone must attribute).
            key = f"ctxcache:n:{uuid.uuid4().hex[:16]}"
        else:
            key = cache_key(
                self.reuse,
                fingerprint_hex=digest,
                dag_id=self.dag_id,
                task_id=self.task_id,
                run_id=context["run_id"],
                map_index=_map_index(context["ti"]),
            )
        # Run-owned caches also name their DAG and run, so `ctxcache caches gc` can tell when they are done.
        display_name = owned_display_name(
            key, prefix=self.display_name, dag_id=self.dag_id, run_id=context["run_id"]
        )
        return {
            "model": model,
            "prices": prices,
            "items": items,
            "key": key,
            "ttl": ttl_value,
            "expire_time": expire_time,
            "min_remaining": min_remaining,
            "display_name": display_name or None,
        }

    def _find_reusable(
        self, display_name: str | None, min_remaining: dt.timedelta
    ) -> types.CachedContent | None:
        if self.reuse == "never" or not display_name:
            return None
        now = dt.datetime.now(dt.timezone.utc)
        # A retry in the same run takes any live cache; another run needs enough life left.
        needed = min_remaining if self.reuse == "content" else dt.timedelta(0)
        live = [
            cache
            for cache in self.hook.list_caches(display_name=display_name)
            if cache.expire_time is not None and cache.expire_time - now > needed
        ]
        return max(live, key=lambda cache: cache.expire_time or now, default=None)

    def _push(self, context: Context, cache: types.CachedContent, *, reused: bool) -> str:
        assert cache.name
        ti = context["ti"]
        ti.xcom_push(key="expire_time", value=cache.expire_time.isoformat() if cache.expire_time else None)
        ti.xcom_push(
            key="token_count", value=cache.usage_metadata.total_token_count if cache.usage_metadata else None
        )
        model = model_id(cache.model or self.model)
        ti.xcom_push(key="model", value=model)
        ti.xcom_push(key="reused", value=reused)
        report = creation_report(
            model=model,
            cache_name=cache.name,
            price=self.report_price(model),
            cache_tokens=_tokens(cache),
            created=not reused,
        )
        self.log.info("Cost:\n%s", report.table())
        ti.xcom_push(key="cost", value=report.to_dict())
        return cache.name


def single_task_test(context: Any) -> bool:
    """Whether ``airflow tasks test`` runs this task: it sets AIRFLOW_TEST_MODE, and its run for a
    date with no run has a temporary run id. Either way no other task of the DAG runs with it."""
    run_id = str(context.get("run_id") or "") if hasattr(context, "get") else ""
    return os.environ.get("AIRFLOW_TEST_MODE") == "True" or run_id.startswith(TEMPORARY_RUN_PREFIX)


def _age(cache: types.CachedContent) -> tuple[dt.datetime, str]:
    """Oldest first; the name breaks a tie the same way in every run."""
    return (cache.create_time or dt.datetime.max.replace(tzinfo=dt.timezone.utc), str(cache.name))


def _tokens(cache: types.CachedContent) -> int:
    return (cache.usage_metadata.total_token_count or 0) if cache.usage_metadata else 0


def _requests_text(count: int | None) -> str:
    return "never" if count is None else f"{count:,} requests"
