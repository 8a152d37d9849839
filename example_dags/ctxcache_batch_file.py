"""Run the JSONL file your batch job could not run (batch rejects explicit caches), sharded.

**When to use:** you have a file of requests in the Gemini batch format
(``{"key": ..., "request": {"contents": [...], "generationConfig": {...}}}``, one per line,
local or ``gs://``) and want them answered against a cache, spread over several workers.
``shard_input`` splits the file; each mapped ``ask`` instance streams one shard and writes
batch-output lines (``{"key", "response"}`` / ``{"key", "error"}``) under its own output prefix,
so a retried or re-run shard skips the keys it already answered. The cache is kept alive while
work remains and deleted by the teardown at the end. ``create_cache`` reads the file first:
a bad line fails the run before anything is paid for, and a re-run whose keys are all answered
creates no cache (it and ``ask`` are skipped).

Quotas are per project and per model, so the shards running at once share them: give the
project's limits as ``rpm_limit`` / ``tpm_limit`` (0 = let each shard adapt to its 429s) and
each shard is given its share (``split_quota``); at most ``ASK_PARALLELISM`` run at once.

Local paths must sit under ``[ctxcache] allowed_roots`` (env ``AIRFLOW__CTXCACHE__ALLOWED_ROOTS``).
"""

from __future__ import annotations

import datetime as dt
from importlib import resources

import pendulum
from airflow.sdk import DAG, Param, get_current_context, task

from airflow_provider_ctxcache.contents import configured_allowed_roots
from airflow_provider_ctxcache.fanout.shards import shard_input, split_quota
from airflow_provider_ctxcache.hooks import ContextCacheHook
from airflow_provider_ctxcache.operators import (
    CreateCacheOperator,
    DeleteCacheOperator,
    GenerateWithCacheOperator,
)

SAMPLE_DIR = str(resources.files("airflow_provider_ctxcache") / "data")
ASK_PARALLELISM = 4  # shards asking at once; they split the project's quota between them

with DAG(
    dag_id="ctxcache_batch_file",
    description="A batch-format JSONL file answered online against one cache, in shards.",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["ctxcache", "example"],
    doc_md=__doc__,
    params={
        "input_uri": Param(
            "/data/requests.jsonl", type="string", description="JSONL requests, local or gs://"
        ),
        "output_uri": Param(
            "/data/answers/", type="string", description="folder or gs:// prefix for answers"
        ),
        "shard_size": Param(10000, type="integer", minimum=1, description="requests per mapped instance"),
        "rpm_limit": Param(
            0,
            type="integer",
            minimum=0,
            description="the project's requests per minute for the model; 0: adapt",
        ),
        "tpm_limit": Param(
            0,
            type="integer",
            minimum=0,
            description="the project's input tokens per minute for the model (cached tokens count); 0: adapt",
        ),
    },
):
    create_cache = CreateCacheOperator(
        task_id="create_cache",
        model="gemini-2.5-flash",
        contents=[{"file": f"{SAMPLE_DIR}/sample_contract.txt"}],
        system_instruction="You answer questions about the contract below.",
        ttl="1h",
        display_name="ctxcache_batch_file",
        allowed_roots=[SAMPLE_DIR],
        # Checked and counted before the cache is paid for: a bad line fails here, and a file whose
        # keys all have answers under output_uri (shard folders included) creates no cache at all.
        input_uri="{{ params.input_uri }}",
        output_uri="{{ params.output_uri }}",
    )

    @task
    def shards() -> list[dict[str, object]]:
        """One ``{"input_uri", "output_uri"}`` per shard, next to the answers, with its quota share."""
        params = get_current_context()["params"]
        output = params["output_uri"].rstrip("/")
        split = shard_input(
            params["input_uri"],
            shard_size=params["shard_size"],
            shards_uri=f"{output}/_shards/",
            output_uri=output,
            storage_client_factory=lambda: ContextCacheHook().storage_client,
            allowed_roots=configured_allowed_roots(),
        )
        return split_quota(
            split,
            rpm_limit=params["rpm_limit"] or None,
            tpm_limit=params["tpm_limit"] or None,
            concurrent=ASK_PARALLELISM,
        )

    ask = GenerateWithCacheOperator.partial(
        task_id="ask",
        cache_name=create_cache.output,
        max_concurrency=32,
        output_part_size=5000,
        max_active_tis_per_dagrun=ASK_PARALLELISM,
        # A shard whose worker is lost (or that meets an outage) is retried, on any worker, and
        # resumes from its own output prefix: only keys without an answer there are asked again.
        retries=2,
        retry_delay=dt.timedelta(seconds=30),
    ).expand_kwargs(shards())
    delete_cache = DeleteCacheOperator(task_id="delete_cache", cache_name=create_cache.output)
    create_cache >> ask >> delete_cache.as_teardown(setups=create_cache)
