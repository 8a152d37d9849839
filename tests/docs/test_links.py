"""Every relative link in the README and docs/ leads to a file of the repository, and to a heading
of it when the link names one."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.docs.markdown import REPO, anchors, doc_files, links, shown

_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)  # http:, https:, mailto:


def broken_links(doc: Path) -> list[str]:
    broken = []
    for line, target in links(doc):
        if _SCHEME.match(target):
            continue
        path_part, _, anchor = target.partition("#")
        destination = (doc.parent / path_part).resolve() if path_part else doc
        where = f"{shown(doc)}:{line}: {target}"
        if not destination.is_relative_to(REPO) or not destination.exists():
            broken.append(f"{where} (no such file)")
        elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            broken.append(f"{where} (no heading #{anchor} in {shown(destination)})")
    return broken


@pytest.mark.parametrize("doc", doc_files(), ids=shown)
def test_every_relative_link_resolves_to_a_file_and_its_heading(doc: Path) -> None:
    assert broken_links(doc) == []


def test_the_readme_links_every_page_under_docs() -> None:
    linked = {(REPO / target.partition("#")[0]).resolve() for _, target in links(REPO / "README.md")}
    pages = set((REPO / "docs").glob("*.md"))
    assert pages - linked == set()
