"""Every hour, delete the caches that finished or vanished runs left behind.

**When to use:** always, next to DAGs that create caches. A teardown deletes a run's cache even
when its work fails, but not when the run is killed, its DAG is deleted, or the cache was made by
``airflow tasks test``; such a cache bills storage until it expires. This DAG finds them, as
``ctxcache caches gc --delete`` does from a shell, and deletes them with their staged files.

What it deletes (the rule in ``airflow_provider_ctxcache.janitor``): caches this provider made
for one run (``reuse="run"`` or ``"never"``; their display name carries ``@DAG_ID/RUN_ID``)
whose run has finished (success or failed) or no longer exists; and, with ``older_than``, any
cache this provider made longer ago than that. Caches of runs still queued or running are
kept; content-reuse caches, shared across runs on purpose, go only by ``older_than``; caches
the provider did not make are never touched. Every decision is logged with its reason, and the
task returns a summary (``deleted``, ``kept``, ...) to XCom. Set ``dry_run`` to only log.

Shape: one task, ``collect_caches``. Run states come through the Task SDK (a task may not use
the metadata database directly). Connection: the ``conn_id`` param (``ctxcache_default``);
add a task per connection (or trigger with another ``conn_id``) if caches live in several.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import DAG, Param, get_current_context, task

from airflow_provider_ctxcache.exceptions import CtxCacheError
from airflow_provider_ctxcache.hooks import ContextCacheHook
from airflow_provider_ctxcache.janitor import collect, task_run_state
from airflow_provider_ctxcache.validation import parse_ttl

with DAG(
    dag_id="ctxcache_janitor",
    description="Delete the caches of finished or vanished runs (ctxcache caches gc --delete).",
    schedule="@hourly",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["ctxcache", "example"],
    doc_md=__doc__,
    params={
        "conn_id": Param(
            ContextCacheHook.default_conn_name,
            type="string",
            minLength=1,
            description="The ctxcache connection whose caches to collect.",
        ),
        "older_than": Param(
            None,
            type=["null", "string"],
            description="Also delete any cache this provider made longer ago than this (e.g. 1d); "
            "empty: no age limit.",
        ),
        "dry_run": Param(False, type="boolean", description="Only log what would be deleted."),
    },
):

    @task
    def collect_caches() -> dict[str, Any]:
        """Decide for every live cache of the connection, delete what is done, return the summary."""
        context = get_current_context()
        params = context["params"]
        older_than = parse_ttl(params["older_than"], "older_than") if params["older_than"] else None
        done = collect(
            ContextCacheHook(params["conn_id"]),
            task_run_state(context["ti"]),
            older_than=older_than,
            dry_run=bool(params["dry_run"]),
        )
        if done.failed:
            listed = "; ".join(f"{name}: {error}" for name, error in done.failed.items())
            raise CtxCacheError(
                f"{len(done.failed)} cache(s) could not be deleted ({listed}); the next run tries again. "
                f"Deleted: {len(done.deleted)}."
            )
        return done.summary()

    collect_caches()
