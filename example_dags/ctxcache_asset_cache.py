"""A keeper DAG owns the cache; consumer DAGs use it through an Airflow Asset.

**When to use:** several teams or DAGs ask questions of the same context at different times.
The keeper creates the cache and records its name and expire time in an asset event; every
consumer is scheduled on that asset (or triggered from the UI), reads the latest event and
fans out against the cache without knowing how it was made. The keeper's deferrable sensor
waits until the cache is about to expire and then deletes it, so the storage bill ends on time.

- ``ctxcache_asset_keeper``: ``create_cache`` -> ``publish_cache`` (asset event) ->
  ``wait_for_expiry`` -> ``delete_cache``.
- ``ctxcache_asset_consumer``: ``latest_cache`` (reads the newest event) -> ``ask``.
"""

from __future__ import annotations

import datetime as dt
from importlib import resources
from typing import Any

import pendulum
from airflow.sdk import DAG, Asset, Param, get_current_context, task

from airflow_provider_ctxcache.operators import (
    CreateCacheOperator,
    DeleteCacheOperator,
    GenerateWithCacheOperator,
)
from airflow_provider_ctxcache.sensors import CacheExpirySensor

SAMPLE_DIR = str(resources.files("airflow_provider_ctxcache") / "data")
CONTRACT_CACHE = Asset("ctxcache://contracts/sample", extra={"what": "the sample contract, cached"})

with DAG(
    dag_id="ctxcache_asset_keeper",
    description="Create the shared cache, publish it as an asset event, delete it at expiry.",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=False,
    tags=["ctxcache", "example"],
    doc_md=__doc__,
    params={
        "ttl": Param("8h", type="string", description="How long consumers may use the cache."),
        "expiry_margin": Param("10m", type="string", description="Delete this long before expiry."),
    },
):
    create_cache = CreateCacheOperator(
        task_id="create_cache",
        model="gemini-2.5-flash",
        contents=[{"file": f"{SAMPLE_DIR}/sample_contract.txt"}],
        system_instruction="You answer questions about the contract below.",
        ttl="{{ params.ttl }}",
        display_name="ctxcache_asset_keeper",
        allowed_roots=[SAMPLE_DIR],
    )

    @task(outlets=[CONTRACT_CACHE])
    def publish_cache(cache_name: str) -> dict[str, Any]:
        """The asset event carries what a consumer needs: the cache's name, model and expiry."""
        context = get_current_context()
        ti = context["ti"]
        event = {
            "cache_name": cache_name,
            "model": ti.xcom_pull(task_ids="create_cache", key="model"),
            "expire_time": ti.xcom_pull(task_ids="create_cache", key="expire_time"),
        }
        context["outlet_events"][CONTRACT_CACHE].extra = event
        return event

    published = publish_cache(create_cache.output)
    wait_for_expiry = CacheExpirySensor(
        task_id="wait_for_expiry",
        cache_name=create_cache.output,
        margin="{{ params.expiry_margin }}",
        deferrable=True,
    )
    delete_cache = DeleteCacheOperator(task_id="delete_cache", cache_name=create_cache.output)
    create_cache >> published >> wait_for_expiry >> delete_cache


with DAG(
    dag_id="ctxcache_asset_consumer",
    description="Ask questions of the cache the keeper published.",
    schedule=[CONTRACT_CACHE],
    render_template_as_native_obj=True,  # "{{ params.prompts }}" renders to the list itself
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=False,
    tags=["ctxcache", "example"],
    doc_md=__doc__,
    params={
        "prompts": Param(
            ["Which law governs the agreement?", "What insurance must the Supplier hold?"],
            type="array",
            minItems=1,
        ),
    },
):

    @task(inlets=[CONTRACT_CACHE])
    def latest_cache() -> str:
        """The newest event wins; a UI-triggered run reads it the same way."""
        events = get_current_context()["inlet_events"][CONTRACT_CACHE]
        if not events:
            raise ValueError(
                "ctxcache_asset_consumer: no cache published yet; run ctxcache_asset_keeper first."
            )
        name: str = events[-1].extra["cache_name"]
        return name

    GenerateWithCacheOperator(
        task_id="ask",
        cache_name=latest_cache(),
        prompts="{{ params.prompts }}",
        # A lost worker or a passing outage fails the task; bad input is not retried.
        retries=2,
        retry_delay=dt.timedelta(seconds=30),
    )
