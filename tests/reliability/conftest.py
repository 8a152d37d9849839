"""Shared pieces of the hardening suites: a connection on the emulator, inputs, outputs, a fast fan-out.

Everything here is real: the connection is an ``AIRFLOW_CONN_*`` variable, the operators run
their own ``execute()``, and every call crosses real HTTP to the session's emulator.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_ctxcache.emulator.process import EmulatorProcess
from airflow_provider_ctxcache.emulator.tokens import text_of_tokens
from airflow_provider_ctxcache.fanout.job import FanoutJob
from airflow_provider_ctxcache.hooks import ContextCacheHook
from airflow_provider_ctxcache.operators import GenerateWithCacheOperator
from tests.dags.conftest import airflow_db, dag_bag, default_conn, run_dag
from tests.hooks.conftest import ConnFactory, backend_extra, make_conn
from tests.output_files import output_lines

# Fixtures re-exported so pytest finds them in this package.
__all__ = ["airflow_db", "dag_bag", "default_conn", "make_conn", "output_lines", "run_dag"]

MODEL = "gemini-2.5-flash"
CONTEXT = text_of_tokens(2100)


@pytest.fixture
def conn(emulator: EmulatorProcess, make_conn: ConnFactory) -> str:
    """A Developer-API connection on the emulator with fast SDK retries."""
    return make_conn("ctxcache_reliability", **backend_extra("gemini_api", emulator))


def new_cache(conn_id: str, ttl: str = "30m") -> str:
    name = ContextCacheHook(conn_id).create_cache(model=MODEL, contents=[CONTEXT], ttl=ttl).name
    assert name
    return name


def keys(n: int) -> list[str]:
    return [f"q{i:05d}" for i in range(n)]


def write_input(path: Path, n: int) -> Path:
    with path.open("w") as out:
        for key in keys(n):
            request = {"contents": [{"role": "user", "parts": [{"text": f"Question {key}?"}]}]}
            out.write(json.dumps({"key": key, "request": request}) + "\n")
    return path


def raw_output(folder: Path) -> dict[str, str]:
    return {part.name: part.read_text() for part in sorted(folder.glob("part-*.jsonl"))}


class FastRetryGenerate(GenerateWithCacheOperator):
    """The real operator, with the engine's backoff shortened so a retrying test takes ms, not s.

    The operator does not expose the backoff (a production run wants the 1 s default); the test
    sets it on the job the operator built, after all of the operator's own checks ran.
    """

    def _job(self, context: Any) -> FanoutJob:
        job = super()._job(context)
        job.options = dataclasses.replace(job.options, backoff_initial=0.02, backoff_max=0.2)
        return job


def fan_out(conn_id: str, cache_name: str, tmp_path: Path, **kwargs: Any) -> FastRetryGenerate:
    arguments: dict[str, Any] = {
        "input_uri": str(tmp_path / "in.jsonl"),
        "output_uri": str(tmp_path / "out"),
        "allowed_roots": [str(tmp_path)],
        "progress_interval": 0,
        "max_concurrency": 8,
    }
    arguments.update(kwargs)
    return FastRetryGenerate(task_id="ask", ctxcache_conn_id=conn_id, cache_name=cache_name, **arguments)


def billable(emulator: EmulatorProcess) -> dict[str, int]:
    counts = emulator.admin.state()["counts"]
    return {"create_cache": counts["create_cache"], "generate_content": counts["generate_content"]}
