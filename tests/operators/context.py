"""The smallest task context the operators read, for unit tests that need no metadata DB.

DAG tests (tests/dags) run the same operators inside real Airflow; these keep the fast,
many-case checks (bad input, reuse rules) out of the slower ``dag.test()`` path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class RecordingTaskInstance:
    """Keeps what an operator pushes to XCom so a test can read it back."""

    map_index: int = -1
    pushed: dict[str, Any] = field(default_factory=dict)

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


def task_context(run_id: str = "manual__2026-01-01T00:00:00+00:00", map_index: int = -1) -> dict[str, Any]:
    return {"ti": RecordingTaskInstance(map_index=map_index), "run_id": run_id}
