"""Test DAG: the README's shape (create -> ask -> delete as a teardown), for ``airflow tasks test``.

No ttl: the 1 h default, which a single-task test shortens. ``ask`` reads the cache's name from
``create_cache``'s XCom, which a single-task test of ``ask`` does not have.
"""

from __future__ import annotations

from airflow.sdk import DAG

from airflow_provider_ctxcache.emulator.tokens import text_of_tokens
from airflow_provider_ctxcache.operators import (
    CreateCacheOperator,
    DeleteCacheOperator,
    GenerateWithCacheOperator,
)

with DAG("ctxcache_test_single_task", schedule=None, catchup=False):
    create = CreateCacheOperator(
        task_id="create_cache", model="gemini-2.5-flash", contents=[text_of_tokens(2100)]
    )
    ask = GenerateWithCacheOperator(
        task_id="ask", cache_name=create.output, prompts=["Which law governs?"], progress_interval=0
    )
    delete = DeleteCacheOperator(task_id="delete_cache", cache_name=create.output)
    create >> ask >> delete.as_teardown(setups=create)
