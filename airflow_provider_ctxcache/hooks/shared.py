"""One async Gemini client per connection per event loop, shared by every trigger that reads it.

A triggerer runs all its triggers in one event loop. Left alone, each ``CacheExpiryTrigger`` would
build its own hook, look its connection up and open its own client and socket: about 47 ms of CPU
and one socket per sensor, which a triggerer restarted with a thousand sensors pays all at once.
Here triggers of one connection lease one :class:`ContextCacheHook` (so one connection lookup
and one google-genai client, built by the hook as everywhere else) from a registry that belongs
to the running event loop.

Event loops. The registry is keyed by the running loop (weakly: a loop that is gone takes its
registry with it), so a client is only ever used in the loop it was built in; a trigger in a new
loop gets a new lookup and a new client, never one bound to a closed loop.

Lifetime. Leases are counted per client: the last lease to end closes the client and forgets
the connection, so a triggerer that has no sensors left holds no socket for them.

Refresh rule (a rotated key, a moved endpoint). The connection is read again, once for all the
triggers sharing it, when both

- a lease asks for the client and the last reading is at least ``[ctxcache]
  connection_refresh_seconds`` old (default 300 s), or
- a call failed with an authentication error (401, 403 that does not mean "cache gone", 400
  ``API key not valid``): :meth:`SharedHook.refresh_after` reads it again at once, and the caller
  repeats its call when the connection changed.

If the settings read are equal to the current client's, the client stays; otherwise a new hook
(and client) is built from them, leases move to it at their next call, and the old client is
closed when its last lease has moved on. Settings are compared whole (secrets included) and
never logged; only conn ids reach the log.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import weakref
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TypeVar

from airflow_provider_ctxcache.airflow_config import airflow_option, env_name
from airflow_provider_ctxcache.connection_defaults import (
    CONFIG_SECTION,
    CONNECTION_REFRESH_SECONDS,
    SHARED_CLIENT_MAX_CALLS,
)
from airflow_provider_ctxcache.exceptions import CtxCacheApiError, CtxCacheConfigError
from airflow_provider_ctxcache.hooks.context_cache import ContextCacheHook
from airflow_provider_ctxcache.hooks.settings import ConnectionSettings

REFRESH_KEY = "connection_refresh_seconds"
MAX_CALLS_KEY = "shared_client_max_calls"

T = TypeVar("T")


def refresh_seconds() -> float:
    """``[ctxcache] connection_refresh_seconds``: how old a connection reading may get (default 300)."""
    raw = airflow_option(CONFIG_SECTION, REFRESH_KEY, str(CONNECTION_REFRESH_SECONDS))
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise CtxCacheConfigError(
            f"[{CONFIG_SECTION}] {REFRESH_KEY}: {raw!r} is not a number of seconds >= 0; "
            f"set it (or {env_name(CONFIG_SECTION, REFRESH_KEY)}) to e.g. {CONNECTION_REFRESH_SECONDS:.0f}."
        )
    return value


def max_calls() -> int:
    """``[ctxcache] shared_client_max_calls``: calls in flight per shared client (default 4).

    Bounded so the client's socket pool stays small: without a bound, triggers that wake together
    open one socket each for their reads."""
    raw = airflow_option(CONFIG_SECTION, MAX_CALLS_KEY, str(SHARED_CLIENT_MAX_CALLS))
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise CtxCacheConfigError(
            f"[{CONFIG_SECTION}] {MAX_CALLS_KEY}: {raw!r} is not a whole number >= 1; "
            f"set it (or {env_name(CONFIG_SECTION, MAX_CALLS_KEY)}) to e.g. {SHARED_CLIENT_MAX_CALLS}."
        )
    return value


def is_auth_failure(error: BaseException) -> bool:
    """Whether the server refused the credentials (not a missing cache, which is its own error)."""
    if not isinstance(error, CtxCacheApiError):
        return False
    message = str(error)
    return error.code in (401, 403) or (error.code == 400 and "API key not valid" in message)


@dataclasses.dataclass
class SharedStats:
    """What the registries did in this process, for tests and benchmarks (never reset by them)."""

    lookups: int = 0
    """Connection lookups (``aget_connection``) made for shared clients."""
    clients_built: int = 0
    """Shared hooks (each builds one client) created from a new or changed connection."""
    clients_closed: int = 0


STATS = SharedStats()


class _Generation:
    """One hook (one client) built from one reading of the connection, and its lease count."""

    def __init__(self, hook: ContextCacheHook, settings: ConnectionSettings) -> None:
        self.hook = hook
        self.settings = settings
        self.leases = 0


class _Entry:
    """One connection in one event loop: its current generation and when it was read."""

    def __init__(self, registry: _Registry, conn_id: str) -> None:
        self.registry = registry
        self.conn_id = conn_id
        self.lock = asyncio.Lock()
        self.slots = asyncio.Semaphore(max_calls())
        self.refresh_seconds = refresh_seconds()  # read once: Airflow's config costs ~60 us a call
        self.current: _Generation | None = None
        self.read_at = 0.0
        self.reads = 0
        self.leases = 0

    async def generation(self, *, force_after: int | None = None) -> _Generation:
        """The current generation, after reading the connection again if the rule says so.

        ``force_after``: the read count a caller saw when its call failed; the connection is read
        again unless someone else already did since (one lookup for all who failed together).
        """
        if not self._due(force_after):
            assert self.current is not None
            return self.current
        async with self.lock:
            if self._due(force_after):
                await self._read()
            assert self.current is not None
            return self.current

    def _due(self, force_after: int | None) -> bool:
        if self.current is None:
            return True
        if force_after is not None:
            return self.reads == force_after
        return time.monotonic() - self.read_at >= self.refresh_seconds

    async def _read(self) -> None:
        probe = ContextCacheHook(self.conn_id)
        STATS.lookups += 1
        settings = ConnectionSettings.from_connection(await probe.aget_connection(self.conn_id))
        self.read_at = time.monotonic()
        self.reads += 1
        if self.current is not None and self.current.settings == settings:
            return
        hook = ContextCacheHook(self.conn_id)
        hook.__dict__["settings"] = settings  # what aload_settings would fill: no second lookup
        old, self.current = self.current, _Generation(hook, settings)
        STATS.clients_built += 1
        if old is not None:
            hook.log.info("Connection %r changed: a new shared Gemini client takes over", self.conn_id)
            if old.leases == 0:
                await _close(old)

    async def release(self, generation: _Generation) -> None:
        generation.leases -= 1
        if generation.leases == 0 and generation is not self.current:
            await _close(generation)

    async def end_lease(self) -> None:
        self.leases -= 1
        if self.leases == 0:
            self.registry.entries.pop(self.conn_id, None)
            current, self.current = self.current, None
            if current is not None and current.leases == 0:
                await _close(current)


async def _close(generation: _Generation) -> None:
    STATS.clients_closed += 1
    try:
        await generation.hook.aclose()
    except Exception:  # closing must never hide what the caller is doing
        generation.hook.log.debug("closing a shared Gemini client failed", exc_info=True)


class _Registry:
    def __init__(self) -> None:
        self.entries: dict[str, _Entry] = {}


_REGISTRIES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Registry] = weakref.WeakKeyDictionary()


def _entry(conn_id: str) -> _Entry:
    loop = asyncio.get_running_loop()
    registry = _REGISTRIES.get(loop)
    if registry is None:
        registry = _REGISTRIES[loop] = _Registry()
    entry = registry.entries.get(conn_id)
    if entry is None:
        entry = registry.entries[conn_id] = _Entry(registry, conn_id)
    return entry


class SharedHook:
    """A lease on the running loop's shared hook for ``conn_id``: ``async with SharedHook(id) as lease``.

    ``await lease.call(lambda hook: hook.aget_cache(name))`` makes one call on the current hook
    (reading the connection first when the refresh rule says so; again after an authentication
    failure); ``await lease.hook()`` gives that hook;
    :meth:`aclose` (or leaving the ``async with``) ends the lease. Use it inside one event loop.
    """

    def __init__(self, conn_id: str) -> None:
        self.conn_id = conn_id
        self._entry: _Entry | None = None
        self._generation: _Generation | None = None
        self._seen_reads = 0

    @property
    def last_hook(self) -> ContextCacheHook | None:
        """The hook this lease last used (its settings read), or None before the first."""
        return self._generation.hook if self._generation is not None else None

    async def hook(self, *, force_after: int | None = None) -> ContextCacheHook:
        if self._entry is None:
            self._entry = _entry(self.conn_id)
            self._entry.leases += 1
        generation = await self._entry.generation(force_after=force_after)
        self._seen_reads = self._entry.reads
        if generation is not self._generation:
            generation.leases += 1
            old, self._generation = self._generation, generation
            if old is not None:
                await self._entry.release(old)
        return generation.hook

    async def call(self, method: Callable[[ContextCacheHook], Awaitable[T]]) -> T:
        """``method(hook)`` on the current hook, within the connection's bound on calls in flight;
        after an authentication failure, once more if reading the connection again changed it."""
        hook = await self.hook()
        assert self._entry is not None
        async with self._entry.slots:
            try:
                return await method(hook)
            except Exception as error:
                if not await self.refresh_after(error):
                    raise
                hook.log.info("Connection %r changed after a refused call; calling again", self.conn_id)
                return await method(await self.hook())

    async def refresh_after(self, error: BaseException) -> bool:
        """After ``error``: whether the connection was read again and changed (so repeat the call).

        Only authentication failures count; others return False without a lookup.
        """
        if self._entry is None or self._generation is None or not is_auth_failure(error):
            return False
        before = self._generation
        await self.hook(force_after=self._seen_reads)
        return self._generation is not before

    async def aclose(self) -> None:
        entry, generation = self._entry, self._generation
        self._entry = self._generation = None
        if entry is None:
            return
        if generation is not None:
            await entry.release(generation)
        await entry.end_lease()

    async def __aenter__(self) -> SharedHook:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
