"""The fan-out engine against the emulator, through hooks built from real ``ctxcache`` connections."""

from __future__ import annotations

import pytest

from airflow_provider_ctxcache.emulator.process import EmulatorProcess
from airflow_provider_ctxcache.emulator.tokens import text_of_tokens
from airflow_provider_ctxcache.hooks import ContextCacheHook
from tests.hooks.conftest import (  # noqa: F401  (shared fixtures)
    ConnFactory,
    backend,
    backend_extra,
    hook,
    make_conn,
)

MODEL = "gemini-2.5-flash"
CACHE_TOKENS = 2100


@pytest.fixture
def gemini_hook(emulator: EmulatorProcess, make_conn: ConnFactory) -> ContextCacheHook:  # noqa: F811
    """A Developer-API hook on the emulator, for tests where the backend does not matter."""
    return ContextCacheHook(make_conn("ctxcache_fanout", **backend_extra("gemini_api", emulator)))


def create_cache(cache_hook: ContextCacheHook, ttl: str = "30m") -> str:
    """A cache of exactly CACHE_TOKENS tokens on the emulator; returns its full name."""
    cache = cache_hook.create_cache(model=MODEL, contents=[text_of_tokens(CACHE_TOKENS)], ttl=ttl)
    assert cache.name
    return cache.name
