"""Every Python example in docs/ runs as written: a doc whose example breaks fails the suite."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.M | re.S)


def _examples() -> list[tuple[str, str]]:
    found = []
    for doc in sorted(DOCS.glob("*.md")):
        for index, block in enumerate(_BLOCK.findall(doc.read_text())):
            found.append((f"{doc.name}#{index}", block))
    return found


@pytest.mark.parametrize(("where", "code"), _examples(), ids=[w for w, _ in _examples()])
def test_the_python_examples_in_docs_run_as_written(where: str, code: str) -> None:
    exec(compile(code, where, "exec"), {"__name__": "docs_example"})


_TEST_NAME = re.compile(r"\btest_[a-z0-9_]+\b(\*)?")
_NOT_TESTS = {"test_connection"}  # the hook's method, named in the docs as such


def test_every_test_the_docs_cite_exists() -> None:
    """The reliability tables cite tests as their proof: a renamed or deleted test fails here."""
    tests = Path(__file__).resolve().parent
    defined: set[str] = set()
    modules = {path.stem for path in tests.rglob("test_*.py")}
    for path in tests.rglob("*.py"):
        defined.update(re.findall(r"def (test_[a-z0-9_]+)", path.read_text(encoding="utf-8")))
    missing = []
    for doc in [*sorted(DOCS.glob("*.md")), DOCS.parent / "README.md"]:
        for match in _TEST_NAME.finditer(doc.read_text(encoding="utf-8")):
            name, prefix = match.group(0).rstrip("*"), match.group(1)
            if prefix:
                found = any(d.startswith(name) for d in defined)
            else:
                found = name in defined or name in modules or name in _NOT_TESTS
            if not found:
                missing.append(f"{doc.name}: {name}")
    assert missing == []
