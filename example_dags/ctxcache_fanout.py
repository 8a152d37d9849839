"""Ask many questions of one cached context, then delete the cache.

**When to use:** you have one large context (here a sample services contract) and a list of
questions, and you want each question answered online with the context billed at the cached
rate. Trigger it from the UI and edit the params: the model, how long the cache may live, the
questions, and how many questions each mapped task instance takes.

Shape: ``create_cache`` -> ``chunk_prompts`` -> ``ask`` (one mapped instance per chunk, each
fanning out its questions concurrently) -> ``delete_cache`` (a teardown: it runs even when
``ask`` fails, so the cache never outlives the run).

Connection: ``ctxcache_default``. Replace ``CONTENTS`` with your own files or ``gs://`` URIs and
list their folder in ``allowed_roots``.
"""

from __future__ import annotations

import datetime as dt
from importlib import resources
from typing import Any

import pendulum
from airflow.sdk import DAG, Param, get_current_context, task

from airflow_provider_ctxcache.operators import (
    CreateCacheOperator,
    DeleteCacheOperator,
    GenerateWithCacheOperator,
)

SAMPLE_DIR = str(resources.files("airflow_provider_ctxcache") / "data")
CONTENTS = [{"file": f"{SAMPLE_DIR}/sample_contract.txt"}]
SYSTEM_INSTRUCTION = "You answer questions about the contract below and quote the clause you rely on."
QUESTIONS = [
    "How many days does the Customer have to pay an undisputed invoice?",
    "What notice period applies to termination for convenience?",
    "Where may the Supplier keep personal data?",
    "What is the cap on service credits?",
    "Which law governs the agreement?",
    "How long does the confidentiality obligation last?",
]

with DAG(
    dag_id="ctxcache_fanout",
    description="Cache a context once, fan out questions against it, delete the cache.",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["ctxcache", "example"],
    doc_md=__doc__,
    params={
        "model": Param("gemini-2.5-flash", type="string", description="Gemini model that holds the cache."),
        "ttl": Param("30m", type="string", description="How long the cache may live, e.g. 30m or 2h."),
        "prompts": Param(
            QUESTIONS,
            type="array",
            minItems=1,
            description="Questions (strings) or batch-style requests ({'key': ..., 'request': {...}}).",
        ),
        "chunk_size": Param(
            3, type="integer", minimum=1, maximum=10000, description="Questions per mapped task instance."
        ),
    },
):
    create_cache = CreateCacheOperator(
        task_id="create_cache",
        model="{{ params.model }}",
        contents=CONTENTS,
        system_instruction=SYSTEM_INSTRUCTION,
        ttl="{{ params.ttl }}",
        display_name="ctxcache_fanout",
        allowed_roots=[SAMPLE_DIR],
        # For the break-even advice in the log before anything is paid for.
        expected_requests="{{ params.prompts | length }}",
    )

    @task
    def chunk_prompts() -> list[list[Any]]:
        """One list per mapped instance: mapping one instance per prompt does not scale."""
        params = get_current_context()["params"]
        prompts, size = list(params["prompts"]), int(params["chunk_size"])
        return [prompts[start : start + size] for start in range(0, len(prompts), size)]

    chunks = chunk_prompts()
    ask = GenerateWithCacheOperator.partial(
        task_id="ask",
        cache_name=create_cache.output,
        model="{{ params.model }}",
        max_concurrency=8,
        # A lost worker or a passing outage fails the chunk; its retry asks the prompts again
        # (with output_uri it would skip the answered ones). Bad input is not retried.
        retries=2,
        retry_delay=dt.timedelta(seconds=30),
    ).expand(prompts=chunks)
    delete_cache = DeleteCacheOperator(task_id="delete_cache", cache_name=create_cache.output)

    create_cache >> chunks >> ask >> delete_cache.as_teardown(setups=create_cache)
