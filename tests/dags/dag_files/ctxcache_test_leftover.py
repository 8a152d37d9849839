"""Test DAG: creates a cache and never deletes it, as a killed or failed run without a teardown would.

The janitor tests run it in several runs (``reuse`` and ``fail`` from the params) and then
collect what the finished ones left.
"""

from __future__ import annotations

from airflow.sdk import DAG, get_current_context, task

from airflow_provider_ctxcache.emulator.tokens import text_of_tokens
from airflow_provider_ctxcache.operators.create_cache import CreateCacheOperator

with DAG(
    "ctxcache_test_leftover",
    schedule=None,
    catchup=False,
    params={"reuse": "run", "fail": False, "display_name": "leftover"},
):
    create_cache = CreateCacheOperator(
        task_id="create_cache",
        model="gemini-2.5-flash",
        contents=[text_of_tokens(2100)],
        ttl="1d",
        reuse="{{ params.reuse }}",
        display_name="{{ params.display_name }}",
    )

    @task
    def work() -> None:
        """Fails when asked to, so the run ends failed with its cache still there."""
        if get_current_context()["params"]["fail"]:
            raise RuntimeError("the work failed, and this DAG has no teardown to delete the cache")

    create_cache >> work()
