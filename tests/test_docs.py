"""The docs cite tests as their proof: every test they name must exist.

The docs' examples, links and the README's first DAG are checked in ``tests/docs/``.
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.docs.markdown import doc_files, shown

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
    for doc in doc_files():
        for match in _TEST_NAME.finditer(doc.read_text(encoding="utf-8")):
            name, prefix = match.group(0).rstrip("*"), match.group(1)
            if prefix:
                found = any(d.startswith(name) for d in defined)
            else:
                found = name in defined or name in modules or name in _NOT_TESTS
            if not found:
                missing.append(f"{shown(doc)}: {name}")
    assert missing == []
