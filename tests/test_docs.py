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
