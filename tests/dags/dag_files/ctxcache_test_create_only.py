"""Test DAG: only the create task, so a test can run it twice in one DAG run and count caches."""

from __future__ import annotations

from airflow.sdk import DAG

from airflow_provider_ctxcache.emulator.tokens import text_of_tokens
from airflow_provider_ctxcache.operators.create_cache import CreateCacheOperator

with DAG("ctxcache_test_create_only", schedule=None, catchup=False, params={"reuse": "run"}):
    CreateCacheOperator(
        task_id="create_cache",
        model="gemini-2.5-flash",
        contents=[text_of_tokens(2100)],
        ttl="30m",
        reuse="{{ params.reuse }}",
    )
