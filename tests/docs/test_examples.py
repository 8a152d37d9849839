"""Every Python example in the README and docs/ runs as written, and every DAG in them parses in Airflow.

A block that defines a DAG is written to a DAGs folder of its own and loaded by Airflow's
``DagBag`` (which runs it); any other block is executed. A block marked ``<!-- fragment -->``
on the line before it needs names from elsewhere and is only compiled.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.docs.markdown import Block, blocks, doc_files

EXAMPLES = [block for path in doc_files() for block in blocks(path) if block.lang == "python"]
DEFINES_A_DAG = re.compile(r"\bDAG\(|@dag\b")
DAG_EXAMPLES = [b for b in EXAMPLES if not b.fragment and DEFINES_A_DAG.search(b.code)]
PLAIN_EXAMPLES = [b for b in EXAMPLES if not b.fragment and b not in DAG_EXAMPLES]
FRAGMENTS = [b for b in EXAMPLES if b.fragment]


def ids(examples: list[Block]) -> list[str]:
    return [block.where for block in examples]


def file_name(block: Block) -> str:
    """A module name for the block: where it is, as a valid Python identifier."""
    return re.sub(r"\W", "_", block.where) + ".py"


@pytest.fixture(scope="module")
def parsed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """One DagBag over a folder holding every DAG example, each in its own file."""
    from airflow.dag_processing.dagbag import DagBag

    folder = tmp_path_factory.mktemp("doc-dags")
    for block in DAG_EXAMPLES:
        (folder / file_name(block)).write_text(block.code, encoding="utf-8")
    return DagBag(dag_folder=str(folder)), folder


def test_the_docs_hold_python_examples_of_every_kind() -> None:
    assert len(DAG_EXAMPLES) >= 4, ids(DAG_EXAMPLES)
    assert PLAIN_EXAMPLES, "expected examples that are not DAGs"
    assert len(FRAGMENTS) <= 3, f"fragments are for the rare block that cannot run: {ids(FRAGMENTS)}"


@pytest.mark.parametrize("block", DAG_EXAMPLES, ids=ids(DAG_EXAMPLES))
def test_every_dag_in_the_docs_parses_in_airflow_without_errors(
    block: Block, parsed: tuple[Any, Path]
) -> None:
    bag, folder = parsed
    path = str(folder / file_name(block))
    assert bag.import_errors.get(path) is None, bag.import_errors.get(path)
    defined = [dag_id for dag_id, dag in bag.dags.items() if dag.fileloc == path]
    assert defined, f"{block.where} defines no DAG that Airflow found"


@pytest.mark.parametrize("block", PLAIN_EXAMPLES, ids=ids(PLAIN_EXAMPLES))
def test_every_python_example_in_the_docs_runs_as_written(block: Block) -> None:
    exec(compile(block.code, block.where, "exec"), {"__name__": "docs_example"})


def test_every_fragment_in_the_docs_compiles() -> None:
    for block in FRAGMENTS:
        compile(block.code, block.where, "exec")
