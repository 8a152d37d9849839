"""ContextCacheHook: one SDK call per method, for both Gemini backends, with errors mapped once.

What differs between the Developer API and Vertex AI (the client, cache names, error shapes,
limits) is asked of ``hook.backend`` (:mod:`.backend`), chosen once from the connection. The
hook is a plain API wrapper: what to do around a call (staging files, reusing caches, fanning
out, reporting costs) belongs to the operators and the fan-out engine that call it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from airflow.sdk import BaseHook
from google.genai import Client, types
from google.genai.errors import APIError

from airflow_provider_ctxcache.exceptions import (
    FIELDS_FORBIDDEN_WITH_CACHE,
    CacheNotFoundError,
    CtxCacheConfigError,
    ForbiddenWithCacheError,
)
from airflow_provider_ctxcache.hooks.backend import Backend, backend_for
from airflow_provider_ctxcache.hooks.client import local_server_refuses
from airflow_provider_ctxcache.hooks.deadlines import CallDeadlines
from airflow_provider_ctxcache.hooks.server_clock import server_now
from airflow_provider_ctxcache.hooks.settings import BACKENDS, CONN_TYPE, ConnectionSettings
from airflow_provider_ctxcache.model_facts import check_not_shut_down
from airflow_provider_ctxcache.retry import Backoff, nothing_made, server_hint, will_not_heal
from airflow_provider_ctxcache.validation import api_duration, one_expiry, parse_expire_time, parse_ttl

_CLIENTS = ("_client", "_single_attempt_client", "_deadline_client")  # built on first use
DEFAULT_PAGE_SIZE = 100


@dataclass(frozen=True)
class CacheRemoval:
    """What a delete found: whether it deleted, the cache as read just before, and when it ended.

    ``ended_at`` is on the server's clock (see :mod:`.server_clock`); None when nothing was deleted.
    """

    deleted: bool
    cache: types.CachedContent | None
    ended_at: dt.datetime | None


class ContextCacheHook(BaseHook):
    """Cache CRUD, token counting and generation against Gemini, sync and async.

    :param ctxcache_conn_id: an Airflow connection of type ``ctxcache``.
    :param retry_attempts: overrides the connection's retry count for this hook's calls.

    ``agenerate(..., retries=False)`` makes one attempt and leaves retrying to the caller (the
    fan-out engine, which honours the server's retryDelay), within the connection's ``timeout``;
    creates always do (see :meth:`create_cache`). Each uses a client of this hook without SDK retries.
    """

    conn_name_attr = "ctxcache_conn_id"
    default_conn_name = "ctxcache_default"
    conn_type = CONN_TYPE
    hook_name = "Gemini Context Cache"

    def __init__(
        self, ctxcache_conn_id: str = default_conn_name, *, retry_attempts: int | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.ctxcache_conn_id = ctxcache_conn_id
        self.retry_attempts = retry_attempts

    def __repr__(self) -> str:
        return f"{type(self).__name__}(ctxcache_conn_id={self.ctxcache_conn_id!r})"

    # -- connection and client -------------------------------------------------------------------

    @cached_property
    def settings(self) -> ConnectionSettings:
        return ConnectionSettings.from_connection(self.get_connection(self.ctxcache_conn_id))

    async def aload_settings(self) -> ConnectionSettings:
        """Reads the connection without blocking the event loop; async methods call it first.

        In the triggerer the sync lookup would block every other trigger, so async code paths
        fetch the connection with ``aget_connection`` and fill the same cache ``settings`` uses.
        """
        if "settings" not in self.__dict__:
            conn = await self.aget_connection(self.ctxcache_conn_id)
            self.__dict__["settings"] = ConnectionSettings.from_connection(conn)
        return self.settings

    def scrub(self, text: str) -> str:
        """``text`` without this connection's secrets; safe even when the connection is unreadable."""
        try:
            return self.settings.scrub(text)
        except Exception:
            return text

    @cached_property
    def backend(self) -> Backend:
        """The connection's backend rules (:class:`~.backend.DeveloperApi` or :class:`~.backend.VertexAi`)."""
        return backend_for(self.settings)

    def get_conn(self) -> Client:
        return self._client

    @cached_property
    def _client(self) -> Client:
        self.log.info("Gemini client for connection %r: %s", self.ctxcache_conn_id, self.backend.describe())
        return self._build(self.retry_attempts)

    def _build(self, retry_attempts: int | None, *, caller_deadline: bool = False) -> Client:
        backend = self.backend
        refused = local_server_refuses(self.settings)
        if refused is not None:  # the emulator is not running: no use retrying for 17 s
            raise backend.unreachable(refused) or refused
        try:
            return backend.build_client(retry_attempts=retry_attempts, caller_deadline=caller_deadline)
        except CtxCacheConfigError:
            raise
        except Exception as error:  # e.g. google.auth's DefaultCredentialsError when ADC is missing
            raise CtxCacheConfigError(
                f"connection {self.ctxcache_conn_id!r}: cannot build a Gemini client "
                f"({type(error).__name__}: {self.scrub(str(error))}). "
                f"For {backend.name}: {backend.credentials_hint}"
            ) from None

    @cached_property
    def storage_client(self) -> Any:
        """google-cloud-storage client for ``gs://`` inputs, outputs and staged contents."""
        return self.backend.storage_client()

    @cached_property
    def _single_attempt_client(self) -> Client:
        """Without SDK retries: for creates (see :meth:`_create_once`) and the Test button.
        Retrying in the SDK would multiply the caller's own attempts."""
        return self._client if self.retry_attempts == 1 else self._build(1)

    @cached_property
    def _deadline_client(self) -> Client:
        """One attempt and no transport timeout, for ``agenerate(retries=False)`` (the fan-out's
        calls), which bounds each call with one deadline of its own: see ``http_options``."""
        return self._build(1, caller_deadline=True)

    @cached_property
    def _call_deadlines(self) -> CallDeadlines:
        """The deadline of each ``agenerate(retries=False)`` call: the connection's timeout."""
        return CallDeadlines(self.settings.timeout_seconds)

    def _clients(self) -> list[Client]:
        built = (self.__dict__.get(name) for name in _CLIENTS)
        return list({id(c): c for c in built if c is not None}.values())

    def close(self) -> None:
        """Closes the clients; a later call builds new ones."""
        for client in self._clients():
            client.close()
        for name in _CLIENTS:
            self.__dict__.pop(name, None)

    async def aclose(self) -> None:
        """Closes the async clients; they belong to the event loop they first ran in."""
        deadlines = self.__dict__.get("_call_deadlines")
        if deadlines is not None:
            deadlines.stop()
        for client in self._clients():
            await client.aio.aclose()

    @contextlib.contextmanager
    def _api_errors(self, *, cache_name: str | None = None, model: str | None = None) -> Iterator[None]:
        """Turns SDK errors into the provider's named cases; tracebacks keep no request objects.

        A connection never made (the transport's error, after the SDK's retries) becomes
        ``EndpointUnreachableError`` naming the endpoint, the connection and the backend.
        """
        try:
            yield
        except APIError as error:
            raise self.backend.translate_error(error, cache_name=cache_name, model=model) from None
        except Exception as error:
            unreachable = self.backend.unreachable(error)
            if unreachable is None:
                raise
            raise unreachable from None

    def cache_name(self, name: Any, field: str = "cache_name") -> str:
        """The canonical full name (a short one expanded for this backend), or a config error."""
        return self.backend.cache_name(name, field)

    # -- caches ------------------------------------------------------------------------------------

    def create_cache(
        self,
        *,
        model: str,
        contents: Any,
        system_instruction: Any = None,
        tools: Any = None,
        tool_config: Any = None,
        ttl: Any = None,
        expire_time: Any = None,
        display_name: str | None = None,
        kms_key_name: str | None = None,
    ) -> types.CachedContent:
        """Create a cache; with neither ``ttl`` nor ``expire_time`` the service default (1 h) applies."""
        if not model:
            raise CtxCacheConfigError("model: is empty; name a Gemini model, e.g. 'gemini-2.5-flash'.")
        check_not_shut_down(model)
        self.backend.check_kms_key(kms_key_name)
        ttl_text, when = _expiry(ttl, expire_time)
        config = types.CreateCachedContentConfig(
            contents=contents,
            system_instruction=system_instruction,
            tools=tools,
            tool_config=tool_config,
            display_name=display_name,
            kms_key_name=kms_key_name,
            ttl=ttl_text,
            expire_time=when,
        )
        cache = self._create_once(model, config)
        self.log.info(
            "Created cache %s (model %s, %s tokens, expires %s)",
            cache.name,
            model,
            _token_count(cache),
            cache.expire_time,
        )
        return cache

    def _create_once(self, model: str, config: types.CreateCachedContentConfig) -> types.CachedContent:
        """Retries only answers that prove nothing was created (429, 503), never a timeout.

        A create that timed out may have made the cache on the server; sending it again would
        make a second, billed one. The task's retry finds the first by its display-name key.
        """
        settings = self.settings
        backoff = Backoff(settings.retry_initial_delay, settings.retry_max_delay)
        for attempt in range(1, settings.retry_attempts + 1):
            try:
                with self._api_errors(model=model):
                    return self._single_attempt_client.caches.create(model=model, config=config)
            except Exception as error:
                if not nothing_made(error) or will_not_heal(error) or attempt == settings.retry_attempts:
                    raise
                delay = backoff.delay(attempt, server_hint(error))
                self.log.info(
                    "Create got %s; trying again in %.1fs (attempt %d)",
                    type(error).__name__,
                    delay,
                    attempt + 1,
                )
                time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def get_cache(self, name: str) -> types.CachedContent:
        """The cache's metadata; raises ``CacheNotFoundError`` if it expired or was deleted."""
        name = self.cache_name(name)
        with self._api_errors(cache_name=name):
            return self._client.caches.get(name=name)

    async def aget_cache(self, name: str) -> types.CachedContent:
        await self.aload_settings()
        name = self.cache_name(name)
        with self._api_errors(cache_name=name):
            return await self._client.aio.caches.get(name=name)

    def list_caches(
        self, *, display_name: str | None = None, page_size: int = DEFAULT_PAGE_SIZE, limit: int | None = None
    ) -> list[types.CachedContent]:
        """Live caches over all pages; display names are not unique, so this may return several."""
        return self._list(self._client, display_name=display_name, page_size=page_size, limit=limit)

    def _list(
        self, client: Client, *, display_name: str | None, page_size: int, limit: int | None
    ) -> list[types.CachedContent]:
        found: list[types.CachedContent] = []
        with self._api_errors():
            for cache in client.caches.list(config=types.ListCachedContentsConfig(page_size=page_size)):
                if display_name is None or cache.display_name == display_name:
                    found.append(cache)
                    if limit is not None and len(found) >= limit:
                        break
        return found

    def update_cache_ttl(self, name: str, *, ttl: Any = None, expire_time: Any = None) -> types.CachedContent:
        """Set a new lifetime; the service replaces the expiry, it does not add to it."""
        name = self.cache_name(name)
        config = _update_config(ttl, expire_time)
        with self._api_errors(cache_name=name):
            cache = self._client.caches.update(name=name, config=config)
        self.log.info("Cache %s now expires %s", cache.name, cache.expire_time)
        return cache

    async def aupdate_cache_ttl(
        self, name: str, *, ttl: Any = None, expire_time: Any = None
    ) -> types.CachedContent:
        await self.aload_settings()
        name = self.cache_name(name)
        config = _update_config(ttl, expire_time)
        with self._api_errors(cache_name=name):
            return await self._client.aio.caches.update(name=name, config=config)

    def delete_cache(self, name: str) -> bool:
        """True if this call deleted it, False if it was already gone: safe for teardowns and retries."""
        return self.remove_cache(name).deleted

    def remove_cache(self, name: str) -> CacheRemoval:
        """Delete the cache and say what it was and when it ended (for its storage bill).

        The cache is read first (free): its ``createTime``, size and model price its storage,
        and its display name leads the caller to anything staged for it.
        """
        name = self.cache_name(name)
        try:
            cache = self.get_cache(name)
        except CacheNotFoundError:
            self.log.info("Cache %s was already gone", name)
            return CacheRemoval(deleted=False, cache=None, ended_at=None)
        try:
            with self._api_errors(cache_name=name):
                answer = self._client.caches.delete(name=name)
        except CacheNotFoundError:
            self.log.info("Cache %s was already gone", name)
            return CacheRemoval(deleted=False, cache=cache, ended_at=None)
        received = dt.datetime.now(dt.timezone.utc)
        http = getattr(answer, "sdk_http_response", None)
        ended_at = server_now(getattr(http, "headers", None), received)
        self.log.info("Deleted cache %s", name)
        return CacheRemoval(deleted=True, cache=cache, ended_at=ended_at)

    async def adelete_cache(self, name: str) -> bool:
        await self.aload_settings()
        name = self.cache_name(name)
        try:
            with self._api_errors(cache_name=name):
                await self._client.aio.caches.delete(name=name)
        except CacheNotFoundError:
            return False
        return True

    # -- tokens and generation ---------------------------------------------------------------------

    def count_tokens(self, *, model: str, contents: Any, system_instruction: Any = None) -> int:
        """Tokens the contents (and system instruction) would occupy in a cache.

        How the system instruction is sent is the backend's (the Developer API's countTokens
        takes contents only); the server's own check at create time stays the authority.
        """
        check_not_shut_down(model)
        contents, config = self.backend.count_tokens_request(contents, system_instruction)
        with self._api_errors(model=model):
            result = self._client.models.count_tokens(model=model, contents=contents, config=config)
        return int(result.total_tokens or 0)

    def generate(
        self, *, model: str, contents: Any, cache_name: str | None = None, config: Any = None
    ) -> types.GenerateContentResponse:
        """One online call; with ``cache_name`` the cached tokens are billed at the cached rate."""
        check_not_shut_down(model)
        cache_name = self.cache_name(cache_name) if cache_name else None
        generation_config = _generation_config(config, cache_name)
        with self._api_errors(cache_name=cache_name, model=model):
            return self._client.models.generate_content(
                model=model, contents=contents, config=generation_config
            )

    async def agenerate(
        self,
        *,
        model: str,
        contents: Any,
        cache_name: str | None = None,
        config: Any = None,
        retries: bool = True,
    ) -> types.GenerateContentResponse:
        """:meth:`generate`, async; ``retries=False``: one attempt, the caller retries.

        A ``config`` from :meth:`generation_config` for the same cache is sent as it is, without
        the per-call copy: callers making many calls prepare each distinct config once.
        """
        await self.aload_settings()
        check_not_shut_down(model)
        cache_name = self.cache_name(cache_name) if cache_name else None
        generation_config = _generation_config(config, cache_name)
        with self._api_errors(cache_name=cache_name, model=model):
            if retries:
                return await self._client.aio.models.generate_content(
                    model=model, contents=contents, config=generation_config
                )
            task = asyncio.current_task()
            if task is None:
                raise RuntimeError("agenerate(retries=False) must run inside an asyncio task")
            deadlines, cancelling = self._call_deadlines, task.cancelling()
            deadlines.start(task)
            try:
                return await self._deadline_client.aio.models.generate_content(
                    model=model, contents=contents, config=generation_config
                )
            except asyncio.CancelledError:
                if deadlines.timed_out(task, cancelling):
                    raise TimeoutError(
                        f"no answer within {deadlines.seconds:g} s (the connection's extra.timeout)"
                    ) from None
                raise
            finally:
                deadlines.end(task)

    def generation_config(self, config: Any, cache_name: str | None) -> types.GenerateContentConfig:
        """The config a call against ``cache_name`` sends: ``cached_content`` set, function calling off.

        Checked and built here once; :meth:`agenerate` sends it unchanged (the SDK copies a config
        before each call, so one object can serve every call, concurrent ones included).
        """
        return _generation_config(config, self.cache_name(cache_name) if cache_name else None)

    # -- the UI's Test button ----------------------------------------------------------------------

    def test_connection(self) -> tuple[bool, str]:
        """One list call without retries, so the UI's Test button answers in seconds."""
        try:
            client = self._single_attempt_client
            visible = len(self._list(client, display_name=None, page_size=1, limit=1))
            where = self.backend.describe()
        except Exception as error:
            return False, self.scrub(f"{type(error).__name__}: {error}")
        finally:
            self.close()
        return True, f"Connected to {where}; listing caches works ({visible} seen on the first page)."


def _expiry(ttl: Any, expire_time: Any) -> tuple[str | None, dt.datetime | None]:
    """The API's ``ttl`` string or an aware ``expire_time``, after the shared checks."""
    one_expiry(ttl, expire_time)
    if ttl is not None:
        return api_duration(parse_ttl(ttl)), None
    if expire_time is not None:
        return None, parse_expire_time(expire_time).astimezone(dt.timezone.utc)
    return None, None


def _update_config(ttl: Any, expire_time: Any) -> types.UpdateCachedContentConfig:
    if ttl is None and expire_time is None:
        raise CtxCacheConfigError("ttl, expire_time: give one of them to change the cache's lifetime.")
    ttl_text, when = _expiry(ttl, expire_time)
    return types.UpdateCachedContentConfig(ttl=ttl_text, expire_time=when)


def _generation_config(config: Any, cache_name: str | None) -> types.GenerateContentConfig:
    if _prepared_for(config, cache_name):
        return config  # type: ignore[no-any-return]
    if config is None:
        parsed = types.GenerateContentConfig()
    elif isinstance(config, types.GenerateContentConfig):
        parsed = config.model_copy()
    else:
        parsed = types.GenerateContentConfig.model_validate(config)
    if parsed.automatic_function_calling is None:
        # Tools live in the cache, never in these requests: the SDK's function-calling loop has nothing to do.
        parsed.automatic_function_calling = types.AutomaticFunctionCallingConfig(disable=True)
    if cache_name is not None:
        present = _fields_forbidden_with_cache(parsed)
        if present:
            raise ForbiddenWithCacheError(present)
        parsed.cached_content = cache_name
    return parsed


def _prepared_for(config: Any, cache_name: str | None) -> bool:
    """Whether ``config`` is what :func:`_generation_config` makes for ``cache_name`` already."""
    return (
        isinstance(config, types.GenerateContentConfig)
        and config.automatic_function_calling is not None
        and config.cached_content == cache_name
        and (cache_name is None or not _fields_forbidden_with_cache(config))
    )


def _fields_forbidden_with_cache(config: types.GenerateContentConfig) -> list[str]:
    """The fields set that the API refuses next to ``cached_content`` (they belong in the cache)."""
    return [name for name in FIELDS_FORBIDDEN_WITH_CACHE if getattr(config, name) is not None]


def _token_count(cache: types.CachedContent) -> int | None:
    return cache.usage_metadata.total_token_count if cache.usage_metadata else None


__all__ = ["BACKENDS", "ContextCacheHook"]
