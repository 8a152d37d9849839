"""One cache shared by every daily run and backfill of the same content.

**When to use:** the context changes rarely but questions arrive every day, and you backfill
past days. ``reuse="content"`` makes every run with the same model and content find the live
cache instead of paying for a new one; each run extends its life while it works; the expiry
sensor (deferrable: it holds no worker slot) waits until the cache is about to expire, and the
final cleanup deletes it then, so the last run to finish stops the storage bill. The cost
reports add up across runs: only the creating run's ``create_cache`` is charged the creation,
each ``ask`` its own requests, and the task that deletes the cache its whole storage.

Shape: ``create_cache`` (reuse by content) -> ``extend_cache`` -> ``ask`` -> ``wait_for_expiry``
-> ``final_cleanup``. The questions are templated with the run's day (``ds``), so a backfill asks each
day's questions.
"""

from __future__ import annotations

import datetime as dt
from importlib import resources

import pendulum
from airflow.sdk import DAG, Param

from airflow_provider_ctxcache.operators import (
    CreateCacheOperator,
    DeleteCacheOperator,
    ExtendCacheTTLOperator,
    GenerateWithCacheOperator,
)
from airflow_provider_ctxcache.sensors import CacheExpirySensor

SAMPLE_DIR = str(resources.files("airflow_provider_ctxcache") / "data")
# The run's day: its logical date, or when it was queued for a run triggered without one.
REPORT_DAY = "{{ (dag_run.logical_date or dag_run.run_after) | ds }}"
PROMPTS = [
    f"For the report of {REPORT_DAY}: how many days does the Customer have to pay an invoice?",
    f"For the report of {REPORT_DAY}: what availability must the pipelines reach?",
]

with DAG(
    dag_id="ctxcache_shared_daily",
    description="Daily questions against one cache shared by runs and backfills.",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=True,
    max_active_runs=3,
    tags=["ctxcache", "example"],
    doc_md=__doc__,
    params={
        "model": Param("gemini-2.5-flash", type="string"),
        "ttl": Param("2h", type="string", description="Life of the cache after this run extends it."),
        "min_remaining_ttl": Param(
            "30m", type="string", description="Reuse a cache only with this much left."
        ),
        "expiry_margin": Param("5m", type="string", description="Clean up this long before expiry."),
    },
):
    create_cache = CreateCacheOperator(
        task_id="create_cache",
        model="{{ params.model }}",
        contents=[{"file": f"{SAMPLE_DIR}/sample_contract.txt"}],
        system_instruction="You answer questions about the contract below.",
        ttl="{{ params.ttl }}",
        reuse="content",
        min_remaining_ttl="{{ params.min_remaining_ttl }}",
        display_name="ctxcache_shared_daily",
        allowed_roots=[SAMPLE_DIR],
        # The day's questions: checked before the cache is paid for, and counted for the
        # break-even advice in the log (a creating run only; a reusing one pays no creation).
        prompts=PROMPTS,
        # One create at a time across all runs: concurrent backfill runs would otherwise each
        # look for a live cache at the same moment, find none, and create one each. In turn,
        # the second run finds the first run's cache and reuses it.
        max_active_tis_per_dag=1,
    )
    extend_cache = ExtendCacheTTLOperator(
        task_id="extend_cache", cache_name=create_cache.output, ttl="{{ params.ttl }}"
    )
    ask = GenerateWithCacheOperator(
        task_id="ask",
        cache_name=create_cache.output,
        model="{{ params.model }}",
        prompts=PROMPTS,
        # A lost worker or a passing outage fails the task; bad input is not retried.
        retries=2,
        retry_delay=dt.timedelta(seconds=30),
    )
    wait_for_expiry = CacheExpirySensor(
        task_id="wait_for_expiry",
        cache_name=create_cache.output,
        margin="{{ params.expiry_margin }}",
        deferrable=True,
        poll_interval=60,
    )
    final_cleanup = DeleteCacheOperator(task_id="final_cleanup", cache_name=create_cache.output)

    create_cache >> extend_cache >> ask >> wait_for_expiry >> final_cleanup
