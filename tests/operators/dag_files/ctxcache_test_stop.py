"""Test DAGs: a fan-out into a ``gs://`` output that is stopped mid-run, by SIGTERM or its timeout.

Not in the session's DAGs folder: ``tests/operators/test_output_flush.py`` links this file in for
the tests that run it. Every answer waits in the output's buffer (``output_flush_seconds=3600``,
parts of 1000 lines), so only the stop itself can upload what was received.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG

from airflow_provider_ctxcache.operators import GenerateWithCacheOperator

CONN_ID = "ctxcache_stop"
MAX_CONCURRENCY = 4
TIMEOUT_SECONDS = 5
PARAMS = {"cache": "", "input_uri": "", "output_uri": ""}

for dag_id, timeout in (
    ("ctxcache_test_stop_sigterm", None),
    ("ctxcache_test_stop_timeout", dt.timedelta(seconds=TIMEOUT_SECONDS)),
):
    with DAG(dag_id, schedule=None, catchup=False, params=PARAMS):
        GenerateWithCacheOperator(
            task_id="ask",
            ctxcache_conn_id=CONN_ID,
            cache_name="{{ params.cache }}",
            input_uri="{{ params.input_uri }}",
            output_uri="{{ params.output_uri }}",
            max_concurrency=MAX_CONCURRENCY,
            output_part_size=1000,
            output_flush_seconds=3600,
            progress_interval=0,
            execution_timeout=timeout,
        )
