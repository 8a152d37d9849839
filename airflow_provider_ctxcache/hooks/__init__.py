"""The provider's one hook."""

from __future__ import annotations

from airflow_provider_ctxcache.hooks.context_cache import ContextCacheHook

__all__ = ["ContextCacheHook"]
