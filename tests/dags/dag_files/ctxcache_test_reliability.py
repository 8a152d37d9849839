"""Test DAGs of the hardening suites (tests/reliability): a fan-out whose failure must still clean up.

``ctxcache_test_fault_teardown``: create -> ask (one try per prompt, so an injected outage fails
it at once) -> delete as a teardown. ``ctxcache_test_secrets``: the same, plus a deferrable
expiry sensor that runs even when ``ask`` failed, so a trigger row is written; the cache lives a
few seconds so the sensor returns quickly.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from airflow_provider_ctxcache.emulator.tokens import text_of_tokens
from airflow_provider_ctxcache.operators import (
    CreateCacheOperator,
    DeleteCacheOperator,
    GenerateWithCacheOperator,
)
from airflow_provider_ctxcache.sensors import CacheExpirySensor

CONTEXT = text_of_tokens(2100)
START = pendulum.datetime(2026, 1, 1, tz="UTC")

with DAG(
    "ctxcache_test_fault_teardown",
    schedule=None,
    start_date=START,
    catchup=False,
    render_template_as_native_obj=True,
    params={"prompts": ["One?", "Two?", "Three?"], "ttl": "10m"},
):
    create = CreateCacheOperator(
        task_id="create_cache", model="gemini-2.5-flash", contents=[CONTEXT], ttl="{{ params.ttl }}"
    )
    ask = GenerateWithCacheOperator(
        task_id="ask",
        cache_name=create.output,
        prompts="{{ params.prompts }}",
        max_concurrency=4,
        max_attempts=1,
        keep_alive=False,
        progress_interval=0,
    )
    delete = DeleteCacheOperator(task_id="delete_cache", cache_name=create.output)
    create >> ask >> delete.as_teardown(setups=create)

with DAG(
    "ctxcache_test_secrets",
    schedule=None,
    start_date=START,
    catchup=False,
    render_template_as_native_obj=True,
    params={"prompts": ["One?", "Two?", "Three?", "Four?"], "ttl": "1h"},
):
    create = CreateCacheOperator(
        task_id="create_cache", model="gemini-2.5-flash", contents=[CONTEXT], ttl="{{ params.ttl }}"
    )
    ask = GenerateWithCacheOperator(
        task_id="ask",
        cache_name=create.output,
        prompts="{{ params.prompts }}",
        max_concurrency=4,
        max_attempts=1,
        keep_alive=False,
        progress_interval=0,
    )
    wait = CacheExpirySensor(
        task_id="wait_for_expiry",
        # Pulled by template, not create.output: a task right after a setup must use all_success.
        cache_name="{{ ti.xcom_pull(task_ids='create_cache') }}",
        deferrable=True,
        poll_interval=1,
        trigger_rule="all_done",
    )
    delete = DeleteCacheOperator(task_id="delete_cache", cache_name=create.output)
    create >> ask >> wait >> delete.as_teardown(setups=create)
