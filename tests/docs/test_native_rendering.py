"""The README's first DAG needs ``render_template_as_native_obj=True``: without it, its templated
``prompts`` arrive as a string and ``ask`` fails, as the README says, before any question is asked."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_ctxcache.emulator.process import EmulatorProcess
from tests.conftest import DAGS_FOLDER
from tests.dags.conftest import airflow_db, default_conn, task_states  # noqa: F401  (shared fixtures)
from tests.docs.markdown import README, blocks_under, text_under

HEADING = "## Your first DAG"
NATIVE = "    render_template_as_native_obj=True,"
DAG_ID = "first_cache_rendered_as_text"


@pytest.fixture(scope="module")
def rendered_as_text(airflow_db: None) -> Iterator[Any]:  # noqa: F811
    from airflow.dag_processing.dagbag import DagBag

    (block,) = blocks_under(README, HEADING, "python")
    lines = block.code.splitlines(keepends=True)
    kept = [line for line in lines if not line.startswith(NATIVE)]
    assert len(kept) == len(lines) - 1, "the README's DAG sets render_template_as_native_obj=True"
    code = "".join(kept).replace('dag_id="first_cache"', f'dag_id="{DAG_ID}"')
    path = DAGS_FOLDER / "docs_readme_rendered_as_text.py"
    path.write_text(code, encoding="utf-8")
    try:
        bag = DagBag(dag_folder=str(path))
        assert not bag.import_errors, bag.import_errors
        yield bag.get_dag(DAG_ID)
    finally:
        path.unlink()


def test_without_native_rendering_the_first_dags_prompts_are_a_string_and_ask_fails(
    rendered_as_text: Any,
    default_conn: str,  # noqa: F811
    emulator: EmulatorProcess,
    capfd: pytest.CaptureFixture[str],
) -> None:
    run = rendered_as_text.test()
    states = task_states(run)
    assert states["ask"] == "failed"
    assert states["delete_cache"] == "success"
    counts = emulator.admin.state()["counts"]
    assert counts["generate_content"] == 0
    assert emulator.admin.state()["caches"] == []
    printed = capfd.readouterr()
    quoted = " ".join(text_under(README, HEADING).split())
    assert "`ask` fails with `prompts: a str is not a list of prompts`" in quoted
    assert "prompts: a str is not a list of prompts" in printed.out + printed.err
