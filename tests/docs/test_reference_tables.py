"""Tables in the docs that restate the code: each must say what the code says."""

from __future__ import annotations

import re

from airflow_provider_ctxcache.connection_defaults import GEMINI_API, VERTEX_AI
from airflow_provider_ctxcache.get_provider_info import CONN_FIELDS
from airflow_provider_ctxcache.model_facts import MODEL_FACTS
from tests.docs.markdown import DOCS, README, REPO, text_under

SETTINGS = REPO / "airflow_provider_ctxcache" / "hooks" / "settings.py"


def table_rows(text: str) -> list[list[str]]:
    """The cells of every row of the Markdown tables in ``text``, header and rule lines left out."""
    rows = []
    for line in text.splitlines():
        if line.startswith("|") and not re.match(r"^\|[-| :]+\|$", line):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows[1:] if rows else rows


def test_the_documented_minimum_cache_sizes_are_the_model_table() -> None:
    """docs/operators.md lists, per model and backend, the documented minimum and the pre-check's."""

    def cell(model: str, backend: str) -> str:
        facts = MODEL_FACTS[model]
        documented = facts.min_cache_tokens.get(backend)
        if documented is None:
            return "not served"
        return f"{documented:,} / {facts.precheck_minimum(backend):,}"

    text = text_under(DOCS / "operators.md", "### Minimum cache sizes")
    documented = {row[0].strip("`"): (row[1], row[2]) for row in table_rows(text)}
    served = {model for model, facts in MODEL_FACTS.items() if not facts.shut_down}
    expected = {model: (cell(model, GEMINI_API), cell(model, VERTEX_AI)) for model in served}
    assert documented == expected
    for model, facts in MODEL_FACTS.items():
        if facts.shut_down:
            assert f"`{model}` was shut down on {facts.shut_down}" in " ".join(text.split())


def documented_connection_fields() -> set[str]:
    rows = table_rows(text_under(DOCS / "connection.md", "## Fields"))
    fields = {name for row in rows for name in re.findall(r"`(\w+)`", row[0])}
    assert rows[0][0].startswith("password")
    return fields


def test_the_documented_connection_fields_are_the_extras_the_hook_reads() -> None:
    read = set(re.findall(r"\(\s*extras,\s*\"(\w+)\"", SETTINGS.read_text(encoding="utf-8")))
    assert documented_connection_fields() == read


def test_the_connection_form_shows_every_documented_field() -> None:
    """docs/connection.md says the UI form shows these fields."""
    assert documented_connection_fields() - set(CONN_FIELDS) == set()


def test_the_readme_asks_for_the_python_the_package_requires() -> None:
    required = re.search(
        r'^requires-python = ">=([\d.]+)"', (REPO / "pyproject.toml").read_text(), flags=re.M
    )
    assert required is not None
    assert f"Python {required[1]}+" in text_under(README, "## Try it")
