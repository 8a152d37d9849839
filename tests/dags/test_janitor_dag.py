"""The ``ctxcache_janitor`` example DAG under ``dag.test()``: it collects what finished runs left."""

from __future__ import annotations

from airflow_provider_ctxcache.emulator.process import EmulatorProcess
from tests.dags.conftest import DagRunner, task_states, xcom
from tests.dags.leftovers import COLLECTED, KEPT, live_names, make_leftovers

# Every param on every run: under dag.test() one run's conf stays in the DAG's params for the next.
JANITOR_DEFAULTS = {"conn_id": "ctxcache_default", "older_than": None, "dry_run": False}


def test_janitor_deletes_the_caches_of_finished_and_vanished_runs_and_keeps_the_rest(
    run_dag: DagRunner, emulator: EmulatorProcess
) -> None:
    names = make_leftovers(run_dag)

    run = run_dag("ctxcache_janitor", conf=JANITOR_DEFAULTS)

    assert run.state == "success"
    assert task_states(run) == {"collect_caches": "success"}
    assert live_names(emulator) == {names[role] for role in KEPT}
    summary = xcom(run, "collect_caches")
    assert sorted(summary["deleted"]) == sorted(names[role] for role in COLLECTED)
    assert summary["kept"] == len(KEPT)
    assert summary["failed"] == {}
    assert summary["dry_run"] is False


def test_janitor_dry_run_deletes_nothing_and_names_what_it_would(
    run_dag: DagRunner, emulator: EmulatorProcess
) -> None:
    names = make_leftovers(run_dag)

    run = run_dag("ctxcache_janitor", conf={**JANITOR_DEFAULTS, "dry_run": True})

    assert run.state == "success"
    assert live_names(emulator) == set(names.values())
    summary = xcom(run, "collect_caches")
    assert sorted(summary["to_delete"]) == sorted(names[role] for role in COLLECTED)
    assert summary["deleted"] == []
