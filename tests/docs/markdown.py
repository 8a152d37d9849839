"""Just enough Markdown for the docs tests: fenced blocks, headings (as GitHub anchors) and links."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
DOCS = REPO / "docs"
FRAGMENT = "<!-- fragment -->"
"""On the line before a ```python block: the block needs names from elsewhere; it is only compiled."""

_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,})(?P<lang>[\w+-]*)\s*$")
_HEADING = re.compile(r"^(?P<level>#{1,6})\s+(?P<text>.+?)\s*#*\s*$")
_LINK = re.compile(r"(?<!!)\[(?P<text>[^\]]*)\]\((?P<target>[^)\s]+)\)")
_CODE_SPAN = re.compile(r"`+[^`]*`+")


def doc_files() -> list[Path]:
    """The README and every page under docs/."""
    return [README, *sorted(DOCS.rglob("*.md"))]


def shown(path: Path) -> str:
    """A path as the tests name it: relative to the repository."""
    return str(path.relative_to(REPO))


@dataclass(frozen=True)
class Block:
    """A fenced code block; ``line`` is the 1-based line of its opening fence."""

    path: Path
    line: int
    lang: str
    code: str
    fragment: bool

    @property
    def where(self) -> str:
        return f"{shown(self.path)}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """Every fenced block of a Markdown file, in order."""
    found: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        end = index + 1
        while end < len(lines) and not lines[end].strip().startswith(opening["fence"]):
            end += 1
        previous = next((line.strip() for line in reversed(lines[:index]) if line.strip()), "")
        found.append(
            Block(
                path=path,
                line=index + 1,
                lang=opening["lang"].lower(),
                code="\n".join(lines[index + 1 : end]) + "\n",
                fragment=previous == FRAGMENT,
            )
        )
        index = end + 1
    return found


def _prose(path: Path) -> list[tuple[int, str]]:
    """(1-based line number, text) of every line outside fenced blocks."""
    inside: str | None = None
    kept = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fence = _FENCE.match(line)
        if inside is None and fence is not None:
            inside = fence["fence"]
        elif inside is not None and line.strip().startswith(inside):
            inside = None
        elif inside is None:
            kept.append((number, line))
    return kept


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading's anchor; a repeated heading gets ``-1``, ``-2``, ... as on GitHub."""
    seen: dict[str, int] = {}
    found = set()
    for _number, line in _prose(path):
        heading = _HEADING.match(line)
        if heading is None:
            continue
        base = slug(heading["text"])
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: Path) -> list[tuple[int, str]]:
    """(line, target) of every Markdown link outside code blocks and code spans."""
    found = []
    for number, line in _prose(path):
        for match in _LINK.finditer(_CODE_SPAN.sub("", line)):
            found.append((number, match["target"]))
    return found


def section_lines(path: Path, heading: str) -> range:
    """The 1-based line numbers under ``heading`` (a whole heading line, e.g. ``## Your first DAG``)
    up to the next heading of the same or a higher level."""
    level = len(heading) - len(heading.lstrip("#"))
    prose = _prose(path)
    numbers = [number for number, line in prose if line == heading]
    assert numbers, f"{shown(path)} has no heading {heading!r}"
    start = numbers[0] + 1
    for number, line in prose:
        found = _HEADING.match(line)
        if number >= start and found is not None and len(found["level"]) <= level:
            return range(start, number)
    return range(start, len(path.read_text(encoding="utf-8").splitlines()) + 1)


def blocks_under(path: Path, heading: str, lang: str) -> list[Block]:
    """The fenced blocks of language ``lang`` in the section under ``heading``, in order."""
    lines = section_lines(path, heading)
    return [block for block in blocks(path) if block.lang == lang and block.line in lines]


def text_under(path: Path, heading: str) -> str:
    """The section's text, code blocks included."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found = section_lines(path, heading)
    return "\n".join(lines[found.start - 1 : found.stop - 1]) + "\n"
