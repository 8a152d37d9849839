"""The cache store: cached contents, their ids, scopes, paging and expiry.

Caches live in memory, keyed by full resource name. Each belongs to a scope: the Developer
API (``("gemini_api", "", "")``) or one Vertex project/location (``("vertex_ai", p, l)``);
a cache is invisible outside its scope. Expiry is checked against the emulator clock on
every access, so an expired cache is gone exactly when ``expireTime`` passes. The store
remembers when the last expired caches expired and when the last deleted ones were deleted
(not their contents), because Vertex answers a cache that expired or was deleted moments ago
differently from one that never existed. Whoever owns the store may pass ``on_expired`` to
hear of each expired cache once, as it is dropped (the usage ledger files it then).
"""

from __future__ import annotations

import base64
import secrets
import string
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .answers import ContextIndex
from .clock import Clock, format_timestamp
from .errors import invalid_argument
from .model_facts import GEMINI_API, VERTEX_AI

Scope = tuple[str, str, str]

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
# How many expired (and, apart, deleted) caches are remembered (a name and a time each); the
# oldest are forgotten.
EXPIRED_REMEMBERED = 10_000

_ID_ALPHABET = string.ascii_lowercase + string.digits


def developer_scope() -> Scope:
    """The single scope of the Developer API."""
    return (GEMINI_API, "", "")


def vertex_scope(project: str, location: str) -> Scope:
    """The scope of one Vertex project and location."""
    return (VERTEX_AI, project, location)


def scope_prefix(scope: Scope) -> str:
    """The resource-name prefix of a scope (``""`` or ``projects/p/locations/l/``)."""
    backend, project, location = scope
    return "" if backend == GEMINI_API else f"projects/{project}/locations/{location}/"


@dataclass
class CachedContent:
    """One cache: what the API shows, plus what answers and usage need."""

    name: str
    scope: Scope
    model: str
    display_name: str
    create_ns: int
    update_ns: int
    expire_ns: int
    total_tokens: int
    context: ContextIndex
    context_digest: str
    seq: int
    encryption_spec: dict[str, Any] | None = None
    modality_tokens: dict[str, int] = field(default_factory=dict)
    """``total_tokens`` by modality (``TEXT``, ``IMAGE``, ...), for ``cacheTokensDetails``."""
    builtin_tools: tuple[str, ...] = ()
    """The built-in tools (``googleSearch``, ...) the cache declares; they bill tool-use tokens."""

    @property
    def backend(self) -> str:
        """``gemini_api`` or ``vertex_ai``."""
        return self.scope[0]

    def resource(self) -> dict[str, Any]:
        """The resource as get/list return it (never the contents)."""
        nanos = self.backend == VERTEX_AI
        body: dict[str, Any] = {"name": self.name, "model": self.model}
        if self.display_name:
            body["displayName"] = self.display_name
        body["createTime"] = format_timestamp(self.create_ns, nanos=nanos)
        body["updateTime"] = format_timestamp(self.update_ns, nanos=nanos)
        body["expireTime"] = format_timestamp(self.expire_ns, nanos=nanos)
        body["usageMetadata"] = {"totalTokenCount": self.total_tokens}
        if self.encryption_spec:
            body["encryptionSpec"] = self.encryption_spec
        return body


class CacheStore:
    """All caches of one emulator, with lazy expiry against its clock."""

    def __init__(self, clock: Clock, on_expired: Callable[[CachedContent], None] | None = None) -> None:
        self.clock = clock
        self.on_expired = on_expired
        self._caches: dict[str, CachedContent] = {}
        self._expired: OrderedDict[str, tuple[Scope, int]] = OrderedDict()
        self._deleted: OrderedDict[str, tuple[Scope, int]] = OrderedDict()
        self._seq = 0

    def new_name(self, scope: Scope) -> str:
        """A fresh resource name: lowercase alnum id (Developer API), numeric id (Vertex)."""
        while True:
            if scope[0] == GEMINI_API:
                cache_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(16))
            else:
                cache_id = str(secrets.randbelow(9 * 10**18) + 10**18)
            name = f"{scope_prefix(scope)}cachedContents/{cache_id}"
            if name not in self._caches:
                return name

    def next_seq(self) -> int:
        """A creation sequence number: list order is creation order."""
        self._seq += 1
        return self._seq

    def add(self, cache: CachedContent) -> None:
        """Store a new cache."""
        self._caches[cache.name] = cache

    def get(self, name: str, scope: Scope) -> CachedContent | None:
        """The live cache of that name in that scope, or None (expired ones are dropped)."""
        cache = self._caches.get(name)
        if cache is None or cache.scope != scope:
            return None
        if cache.expire_ns <= self.clock.now_ns():
            self._drop_expired(name)
            return None
        return cache

    def expired_at(self, name: str, scope: Scope) -> int | None:
        """When the cache of that name expired (ns), if it is remembered as expired in that scope.

        None for a cache that is live, was deleted, never existed or expired long ago.
        """
        self.get(name, scope)
        return _remembered(self._expired, name, scope)

    def deleted_at(self, name: str, scope: Scope) -> int | None:
        """When the cache of that name was deleted (ns), if it is remembered as deleted in that scope."""
        return _remembered(self._deleted, name, scope)

    def _drop_expired(self, name: str) -> None:
        cache = self._caches.pop(name)
        _remember(self._expired, name, cache.scope, cache.expire_ns)
        if self.on_expired is not None:
            self.on_expired(cache)

    def delete(self, name: str, scope: Scope) -> bool:
        """Delete a live cache; False if there was none."""
        if self.get(name, scope) is None:
            return False
        del self._caches[name]
        _remember(self._deleted, name, scope, self.clock.now_ns())
        return True

    def live(self, scope: Scope | None = None) -> list[CachedContent]:
        """Live caches (of one scope, or all) in creation order; drops the expired ones."""
        now = self.clock.now_ns()
        expired = [name for name, c in self._caches.items() if c.expire_ns <= now]
        for name in expired:
            self._drop_expired(name)
        caches = [c for c in self._caches.values() if scope is None or c.scope == scope]
        caches.sort(key=lambda c: c.seq)
        return caches

    def page(self, scope: Scope, page_size: int, page_token: str) -> tuple[list[CachedContent], str]:
        """One page of a scope's caches and the token of the next page (``""`` on the last)."""
        caches = self.live(scope)
        if page_token:
            after = _decode_token(page_token, scope)
            caches = [c for c in caches if c.seq > after]
        size = DEFAULT_PAGE_SIZE if page_size <= 0 else min(page_size, MAX_PAGE_SIZE)
        page = caches[:size]
        token = _encode_token(page[-1].seq, scope) if len(caches) > size else ""
        return page, token

    def clear(self) -> None:
        """Forget every cache, live, expired or deleted."""
        self._caches.clear()
        self._expired.clear()
        self._deleted.clear()


def _encode_token(seq: int, scope: Scope) -> str:
    raw = f"{seq}|{'|'.join(scope)}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_token(token: str, scope: Scope) -> int:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        seq, *token_scope = raw.split("|")
        if tuple(token_scope) != scope:
            raise ValueError("page token of another scope")
        return int(seq)
    except ValueError as exc:
        raise invalid_argument("Invalid page token.") from exc


def _remember(ended: OrderedDict[str, tuple[Scope, int]], name: str, scope: Scope, when_ns: int) -> None:
    ended[name] = (scope, when_ns)
    while len(ended) > EXPIRED_REMEMBERED:
        ended.popitem(last=False)


def _remembered(ended: OrderedDict[str, tuple[Scope, int]], name: str, scope: Scope) -> int | None:
    remembered = ended.get(name)
    if remembered is None or remembered[0] != scope:
        return None
    return remembered[1]
