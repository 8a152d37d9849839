"""docs/operations.md: ``{{ ds }}`` fails in a run without a logical date; the documented
``(logical_date or dag_run.run_after) | ds`` renders a day in every run.

The page's DAG is written to the session's DAGs folder and run by ``dag.test()``, once without
a logical date (as the REST API or a trigger form left empty starts it) and once with one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pendulum
import pytest

from tests.conftest import DAGS_FOLDER
from tests.dags.conftest import airflow_db, task_states, xcom  # noqa: F401  (shared fixture)
from tests.docs.markdown import DOCS, blocks_under

HEADING = "## `ds` in runs triggered without a logical date"


@pytest.fixture(scope="module")
def which_day(airflow_db: None) -> Iterator[Any]:  # noqa: F811
    from airflow.dag_processing.dagbag import DagBag

    (block,) = blocks_under(DOCS / "operations.md", HEADING, "python")
    path = DAGS_FOLDER / "docs_operations_which_day.py"
    path.write_text(block.code, encoding="utf-8")
    try:
        bag = DagBag(dag_folder=str(path))
        assert not bag.import_errors, bag.import_errors
        yield bag.get_dag("which_day")
    finally:
        path.unlink()


def test_ds_fails_and_the_run_day_renders_when_a_run_has_no_logical_date(which_day: Any) -> None:
    queued_at = pendulum.datetime(2026, 11, 29, 13, 5, tz="UTC")
    run = which_day.test(logical_date=None, run_after=queued_at)
    assert run.logical_date is None
    assert task_states(run) == {"ds": "failed", "run_day": "success"}
    assert xcom(run, "run_day") == "2026-11-29"


def test_both_render_the_logical_date_when_a_run_has_one(which_day: Any) -> None:
    run = which_day.test(logical_date=pendulum.datetime(2026, 11, 2, tz="UTC"))
    assert task_states(run) == {"ds": "success", "run_day": "success"}
    assert xcom(run, "ds") == xcom(run, "run_day") == "2026-11-02"
