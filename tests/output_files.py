"""Reading what the fan-out wrote to a local output folder, as a test sees it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def output_lines(folder: Path) -> list[dict[str, Any]]:
    """Every parseable result line in the output folder (a torn last line is skipped)."""
    lines = []
    for part in sorted(folder.glob("part-*.jsonl")) if folder.exists() else []:
        for raw in part.read_text().splitlines():
            try:
                lines.append(json.loads(raw))
            except ValueError:
                continue
    return lines
