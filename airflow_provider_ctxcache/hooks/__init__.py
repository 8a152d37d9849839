"""The provider's one hook."""

from __future__ import annotations

from airflow_provider_ctxcache.hooks.context_cache import CacheRemoval, ContextCacheHook

__all__ = ["CacheRemoval", "ContextCacheHook"]
