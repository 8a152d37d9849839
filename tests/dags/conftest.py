"""Real Airflow for DAG tests: a migrated SQLite database, the DAGs folder, ``dag.test()``.

One database per session (``airflow db migrate`` takes ~5 s); the first task a session runs
starts Airflow's in-process API (~6 s), later ones cost a fraction of a second.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_ctxcache.emulator.process import EmulatorProcess
from tests.conftest import DAGS_FOLDER

DagRunner = Callable[..., Any]


@pytest.fixture(scope="session")
def airflow_db() -> None:
    airflow = Path(sys.executable).with_name("airflow")
    subprocess.run([str(airflow), "db", "migrate"], check=True, capture_output=True, timeout=300)


@pytest.fixture(scope="session")
def dag_bag(airflow_db: None) -> Any:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS_FOLDER))
    assert not bag.import_errors, bag.import_errors
    return bag


@pytest.fixture
def default_conn(emulator: EmulatorProcess, monkeypatch: pytest.MonkeyPatch) -> str:
    """``ctxcache_default`` on the emulator, as a deployment would set it in the environment."""
    monkeypatch.setenv(
        "AIRFLOW_CONN_CTXCACHE_DEFAULT",
        json.dumps(
            {
                "conn_type": "ctxcache",
                "password": "dag-test-key",
                "extra": {"backend": "gemini_api", "base_url": emulator.url, "retry_initial_delay": 0.01},
            }
        ),
    )
    return "ctxcache_default"


@pytest.fixture
def run_dag(dag_bag: Any, default_conn: str) -> DagRunner:
    """Runs a DAG from the DAGs folder with ``dag.test()``; returns the finished DagRun."""

    def run(
        dag_id: str,
        *,
        conf: dict[str, Any] | None = None,
        logical_date: Any = None,
        run_after: Any = None,
        mark_success_pattern: str | None = None,
    ) -> Any:
        dag = dag_bag.get_dag(dag_id)
        assert dag is not None, f"{dag_id} is not in {DAGS_FOLDER}"
        return dag.test(
            run_conf=conf,
            logical_date=logical_date,
            run_after=run_after,
            mark_success_pattern=mark_success_pattern,
        )

    return run


def task_states(dag_run: Any) -> dict[str, str]:
    """``{task_id or task_id[i]: state}`` of a finished run, read from the metadata DB."""
    from airflow.settings import Session

    with Session() as session:
        tis = dag_run.get_task_instances(session=session)
        return {
            (ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"): str(ti.state) for ti in tis
        }


def xcom(dag_run: Any, task_id: str, key: str = "return_value", map_index: int = -1) -> Any:
    from airflow.models.xcom import XComModel
    from airflow.settings import Session

    with Session() as session:
        row = (
            session.query(XComModel)
            .filter_by(
                dag_id=dag_run.dag_id, run_id=dag_run.run_id, task_id=task_id, key=key, map_index=map_index
            )
            .one_or_none()
        )
        return None if row is None else row.value


def cost_reports(dag_run: Any) -> dict[str, dict[str, Any]]:
    """Every cost report a run's tasks pushed: ``{task_id or task_id[i]: report}``.

    Cache tasks push theirs under the XCom key ``cost``; a fan-out returns it in its result.
    """
    from airflow.models.xcom import XComModel
    from airflow.settings import Session

    with Session() as session:
        rows = session.query(XComModel).filter_by(dag_id=dag_run.dag_id, run_id=dag_run.run_id).all()
        found: dict[str, dict[str, Any]] = {}
        for row in rows:
            name = row.task_id if row.map_index < 0 else f"{row.task_id}[{row.map_index}]"
            value = row.value
            if row.key == "cost":
                found[name] = value
            elif (
                row.key == "return_value" and isinstance(value, dict) and isinstance(value.get("cost"), dict)
            ):
                found[name] = value["cost"]
        return found
