"""The ``ctxcache caches`` commands against the emulator, with real DAG runs in Airflow's DB."""

from __future__ import annotations

from tests.dags.conftest import airflow_db, dag_bag, default_conn, run_dag

# Fixtures re-exported so pytest finds them in this package.
__all__ = ["airflow_db", "dag_bag", "default_conn", "run_dag"]
