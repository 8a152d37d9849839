"""The provider's one hook, and the per-event-loop sharing of its async client (for triggers)."""

from __future__ import annotations

from airflow_provider_ctxcache.hooks.client import async_connections_cap
from airflow_provider_ctxcache.hooks.context_cache import CacheRemoval, ContextCacheHook
from airflow_provider_ctxcache.hooks.shared import SharedHook

__all__ = ["CacheRemoval", "ContextCacheHook", "SharedHook", "async_connections_cap"]
