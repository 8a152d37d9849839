"""CreateCacheOperator: one cache per run (or per content), never a second one on retry."""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from google.genai import types

from airflow_provider_ctxcache.contents import (
    ContentBuilder,
    configured_allowed_roots,
    files_to_stage,
    fingerprint,
    resolve,
)
from airflow_provider_ctxcache.exceptions import CacheTooSmallError, CtxCacheConfigError
from airflow_provider_ctxcache.models import check_not_shut_down, model_id
from airflow_provider_ctxcache.operators.base import CtxCacheBaseOperator
from airflow_provider_ctxcache.staging import Stager, remove_staged
from airflow_provider_ctxcache.validation import one_expiry, parse_expire_time, parse_ttl

if TYPE_CHECKING:
    from airflow.sdk import Context

REUSE_MODES = ("run", "content", "never")
DEFAULT_TTL = "1h"
DISPLAY_NAME_LIMIT = 128


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


def keyed_display_name(prefix: str, key: str) -> str:
    room = DISPLAY_NAME_LIMIT - len(key) - 1
    return f"{prefix[:room]} {key}" if prefix else key


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
    :param display_name: a readable prefix; the provider appends its reuse key.
    :param reuse: ``"run"`` (a retry or re-run of this task in this DAG run finds its cache),
        ``"content"`` (any run with the same model and content reuses a live cache with at least
        ``min_remaining_ttl`` left) or ``"never"``.
    :param min_remaining_ttl: for ``reuse="content"``, how much life a cache needs to be reused.
    :param allowed_roots: folders local files may be read from; default ``[ctxcache] allowed_roots``.
    :param staging_uri: ``gs://bucket/prefix`` for files too large to send inline on vertex_ai
        (default: the connection extra ``staging_uri``); the Developer API uses the Files API.
        Staged objects are removed when DeleteCacheOperator deletes the cache.
    :param min_tokens: override the model's minimum cache size checked before creating. By
        default the minimum comes from the provider's model table for the connection's backend
        (the lowest credible value); for a model the table does not know, the server decides
        (its "too small" answer is raised as ``CacheTooSmallError`` too).
    :return: the cache's full name; XCom also gets ``expire_time``, ``token_count``, ``model``, ``reused``.
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
    )
    template_fields_renderers = {"contents": "json", "system_instruction": "md"}

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

    def execute(self, context: Context) -> str:
        plan = self._plan(context)
        hook = self.hook
        existing = self._find_reusable(plan["display_name"], plan["min_remaining"])
        if existing is not None:
            self.log.info(
                "Reusing cache %s (display name %r, expires %s)",
                existing.name,
                existing.display_name,
                existing.expire_time,
            )
            return self._push(context, existing, reused=True)

        limit = hook.backend.inline_limit_bytes
        stager = Stager(hook, plan["key"], self.staging_uri or hook.settings.staging_uri)
        parts = resolve(plan["items"], stager if files_to_stage(plan["items"], limit) else None, limit)
        try:
            self._precheck_size(plan["model"], parts)
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
        except CacheTooSmallError:
            if stager.staged:
                remove_staged(hook, plan["key"], self.staging_uri)
            raise
        return self._push(context, cache, reused=False)

    def _precheck_size(self, model: str, parts: list[types.Part]) -> None:
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

    def _plan(self, context: Context) -> dict[str, Any]:
        """Every argument checked and rendered, before any call that could cost money."""
        if not isinstance(self.model, str) or not model_id(self.model):
            raise CtxCacheConfigError("model: is empty; name a Gemini model, e.g. 'gemini-2.5-flash'.")
        check_not_shut_down(self.model)
        if self.reuse not in REUSE_MODES:
            raise CtxCacheConfigError(f"reuse: {self.reuse!r} is not one of {', '.join(REUSE_MODES)}.")
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
            # No reuse, but staged files still need a folder that the delete can find.
            key = f"ctxcache:n:{uuid.uuid4().hex[:16]}"
            keyed = bool(files_to_stage(items, self.hook.backend.inline_limit_bytes))
        else:
            key = cache_key(
                self.reuse,
                fingerprint_hex=digest,
                dag_id=self.dag_id,
                task_id=self.task_id,
                run_id=context["run_id"],
                map_index=_map_index(context["ti"]),
            )
            keyed = True
        display_name = (
            keyed_display_name(self.display_name or self.dag_id, key) if keyed else self.display_name
        )
        return {
            "model": model,
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
        ti.xcom_push(key="model", value=model_id(cache.model or self.model))
        ti.xcom_push(key="reused", value=reused)
        return cache.name
