"""The four cache operators; they share ContextCacheHook."""

from __future__ import annotations

from airflow_provider_ctxcache.operators.create_cache import CreateCacheOperator
from airflow_provider_ctxcache.operators.delete_cache import DeleteCacheOperator
from airflow_provider_ctxcache.operators.extend_ttl import ExtendCacheTTLOperator
from airflow_provider_ctxcache.operators.generate import GenerateWithCacheOperator

__all__ = [
    "CreateCacheOperator",
    "DeleteCacheOperator",
    "ExtendCacheTTLOperator",
    "GenerateWithCacheOperator",
]
