"""Leftover caches of real DAG runs in every state the janitor must tell apart.

Each cache is made by ``CreateCacheOperator`` in a ``dag.test()`` run of
``ctxcache_test_leftover`` (which never deletes it), and the runs are then left in, or moved
to, the state under test in Airflow's metadata DB. The janitor (``ctxcache caches gc`` and the
``ctxcache_janitor`` DAG) is expected to collect the first four and keep the rest.
"""

from __future__ import annotations

import itertools
from typing import Any

import pendulum

from airflow_provider_ctxcache.emulator.tokens import text_of_tokens
from airflow_provider_ctxcache.hooks import ContextCacheHook
from tests.dags.conftest import DagRunner, xcom

DAG_ID = "ctxcache_test_leftover"
COLLECTED = ("succeeded", "failed", "never_reused", "run_deleted")
KEPT = ("running", "queued", "content", "foreign", "unnamed")
# dag.test() on a logical date that already has a run reuses that run: every run gets its own hour.
_HOURS = itertools.count()


def run_leftover(run_dag: DagRunner, **conf: Any) -> Any:
    """One run of the leftover DAG, on an hour no other run has; ``conf`` overrides its params."""
    when = pendulum.datetime(2031, 1, 1, tz="UTC").add(hours=next(_HOURS))
    # Every param, every time: in dag.test() one run's conf stays in the DAG's params for the next.
    params = {"reuse": "run", "fail": False, "display_name": "leftover", **conf}
    return run_dag(DAG_ID, conf=params, logical_date=when)


def set_run_state(run: Any, state: str) -> None:
    """As if the run were still going (the scheduler's write, done here directly)."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.query(DagRun).filter_by(dag_id=run.dag_id, run_id=run.run_id).one()
        row.state = state


def delete_run(run: Any) -> None:
    """As the UI's or the API's "delete run" (or deleting the DAG) does: the row is gone."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        session.delete(session.query(DagRun).filter_by(dag_id=run.dag_id, run_id=run.run_id).one())


def make_leftovers(run_dag: DagRunner, conn_id: str = "ctxcache_default") -> dict[str, str]:
    """``{role: cache name}`` for every role in COLLECTED and KEPT."""
    runs = {
        "succeeded": run_leftover(run_dag),
        "failed": run_leftover(run_dag, fail=True),
        "never_reused": run_leftover(run_dag, reuse="never"),
        "run_deleted": run_leftover(run_dag),
        "running": run_leftover(run_dag),
        "queued": run_leftover(run_dag),
        "content": run_leftover(run_dag, reuse="content", display_name="shared corpus"),
    }
    assert runs["failed"].state == "failed"
    assert all(run.state == "success" for role, run in runs.items() if role != "failed")
    names = {role: xcom(run, "create_cache") for role, run in runs.items()}
    set_run_state(runs["running"], "running")
    set_run_state(runs["queued"], "queued")
    delete_run(runs["run_deleted"])

    hook = ContextCacheHook(conn_id)
    for role, display_name in (("foreign", "made by someone else"), ("unnamed", None)):
        made = hook.create_cache(
            model="gemini-2.5-flash", contents=[text_of_tokens(2100)], ttl="1d", display_name=display_name
        )
        names[role] = str(made.name)
    assert len(set(names.values())) == len(COLLECTED) + len(KEPT)
    return names


def live_names(emulator: Any) -> set[str]:
    return {cache["name"] for cache in emulator.admin.state()["caches"]}
