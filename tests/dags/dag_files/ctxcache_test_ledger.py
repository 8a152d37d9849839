"""Test DAG: a cache of any size on any model, questions against it, then the delete.

The context is made by a task (``params.tokens`` tokens of text), so a 300,000-token cache
does not sit in the DAG's serialized form.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import DAG, Param, get_current_context, task

from airflow_provider_ctxcache.emulator.tokens import text_of_tokens
from airflow_provider_ctxcache.operators import (
    CreateCacheOperator,
    DeleteCacheOperator,
    GenerateWithCacheOperator,
)

with DAG(
    "ctxcache_test_ledger",
    schedule=None,
    catchup=False,
    render_template_as_native_obj=True,
    params={
        "model": Param("gemini-2.5-flash", type="string"),
        "tokens": Param(2100, type="integer"),
        "prompts": Param(["Which law governs?", "Who owns deliverables?"], type="array"),
    },
):

    @task
    def context() -> list[Any]:
        return [text_of_tokens(int(get_current_context()["params"]["tokens"]))]

    create_cache = CreateCacheOperator(
        task_id="create_cache",
        model="{{ params.model }}",
        contents=context(),
        ttl="1h",
        prompts="{{ params.prompts }}",
    )
    ask = GenerateWithCacheOperator(
        task_id="ask", cache_name=create_cache.output, prompts="{{ params.prompts }}", max_concurrency=4
    )
    delete_cache = DeleteCacheOperator(task_id="delete_cache", cache_name=create_cache.output)
    create_cache >> ask >> delete_cache.as_teardown(setups=create_cache)
