"""Test DAG: a fan-out without output_uri that its execution_timeout stops mid-run."""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG

from airflow_provider_ctxcache.emulator.tokens import text_of_tokens
from airflow_provider_ctxcache.operators import (
    CreateCacheOperator,
    DeleteCacheOperator,
    GenerateWithCacheOperator,
)

with DAG("ctxcache_test_timeout", schedule=None, catchup=False):
    create_cache = CreateCacheOperator(
        task_id="create_cache", model="gemini-2.5-flash", contents=[text_of_tokens(2100)], ttl="30m"
    )
    ask = GenerateWithCacheOperator(
        task_id="ask",
        cache_name=create_cache.output,
        prompts=[f"Question {i}?" for i in range(400)],
        max_concurrency=1,
        execution_timeout=dt.timedelta(seconds=4),
    )
    delete_cache = DeleteCacheOperator(task_id="delete_cache", cache_name=create_cache.output)
    create_cache >> ask >> delete_cache.as_teardown(setups=create_cache)
