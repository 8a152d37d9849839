"""The async fan-out engine behind GenerateWithCacheOperator."""

from __future__ import annotations

from airflow_provider_ctxcache.exceptions import (
    FanoutCacheNotFoundError,
    FanoutFailedError,
    FanoutStoppedError,
)
from airflow_provider_ctxcache.fanout.engine import (
    MAX_CONCURRENCY,
    MIN_CONCURRENCY,
    FanoutOptions,
    FanoutResult,
    FanoutSummary,
    check_max_concurrency,
    run_fanout,
)
from airflow_provider_ctxcache.fanout.records import KeyResult, Usage, answer_of

__all__ = [
    "MAX_CONCURRENCY",
    "MIN_CONCURRENCY",
    "FanoutCacheNotFoundError",
    "FanoutFailedError",
    "FanoutOptions",
    "FanoutResult",
    "FanoutStoppedError",
    "FanoutSummary",
    "KeyResult",
    "Usage",
    "answer_of",
    "check_max_concurrency",
    "run_fanout",
]
