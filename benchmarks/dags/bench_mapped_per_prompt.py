"""The anti-pattern the benchmark measures: one mapped task instance per prompt.

Conf: ``cache_name`` and ``prompts`` (a list); every prompt becomes its own task instance.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import DAG, get_current_context, task

from airflow_provider_ctxcache.operators import GenerateWithCacheOperator

with DAG(
    "bench_mapped_per_prompt",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
):

    @task
    def one_prompt_each() -> list[list[Any]]:
        return [[prompt] for prompt in get_current_context()["params"]["prompts"]]

    GenerateWithCacheOperator.partial(
        task_id="ask", cache_name="{{ params.cache_name }}", model="gemini-2.5-flash", progress_interval=0
    ).expand(prompts=one_prompt_each())
