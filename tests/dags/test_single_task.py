"""``airflow tasks test`` of one task, through the real CLI in a subprocess (the session's home).

A create run alone leaves a cache no teardown deletes: it lives 10 minutes and the log says how
to delete it. An ask run alone has no upstream XCom: the error says so and how to pass the
name, and passing it with ``-t`` works.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_provider_ctxcache.emulator.process import EmulatorProcess
from airflow_provider_ctxcache.emulator.tokens import text_of_tokens
from airflow_provider_ctxcache.hooks import ContextCacheHook
from tests.conftest import REPO

DAG_ID = "ctxcache_test_single_task"
DATE = "2026-11-02"
HANG_GUARD = 280  # seconds; one `tasks test` takes about 30 s here, the guard only stops a hang

AIRFLOW = Path(sys.executable).with_name("airflow")
DEFAULT_CONN = "ctxcache_default"  # the DAG's connection, set by tests/dags/conftest.py


@pytest.fixture(scope="module")
def serialized(airflow_db: None) -> None:
    """`tasks test` reads the DAG from the metadata DB, as a deployment's dag-processor writes it."""
    airflow(["dags", "reserialize"])


def airflow(arguments: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(AIRFLOW), *arguments],
        env=os.environ.copy(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD,
        check=False,
    )


def tasks_test(task_id: str, *extra: str) -> str:
    """The whole output of one `airflow tasks test DAG TASK ...` (it exits 0 even when the task fails)."""
    done = airflow(["tasks", "test", DAG_ID, task_id, *extra])
    return done.stdout + done.stderr


@pytest.mark.usefixtures("serialized", "default_conn")
def test_tasks_test_of_create_makes_a_ten_minute_cache_and_logs_how_to_delete_it(
    emulator: EmulatorProcess,
) -> None:
    output = tasks_test("create_cache", DATE)

    (cache,) = emulator.admin.state()["caches"]
    name = cache["name"]
    assert "it lives 10 min instead of 1 h" in output, output[-3000:]
    assert f"Delete it when done: ctxcache caches delete {name} --conn-id {DEFAULT_CONN}" in output
    held = ContextCacheHook(DEFAULT_CONN).get_cache(name)
    assert held.create_time is not None
    assert held.expire_time is not None
    assert held.expire_time - held.create_time == dt.timedelta(minutes=10)


@pytest.mark.usefixtures("serialized", "default_conn")
def test_tasks_test_of_ask_without_the_create_says_there_is_no_upstream_xcom_and_how_to_pass_one(
    emulator: EmulatorProcess,
) -> None:
    output = tasks_test("ask", DATE)

    assert (
        "cache_name: is None: it comes from the XCom of task 'create_cache', and this run has none "
        "(that task did not run in this run, as under `airflow tasks test`" in output
    ), output[-3000:]
    assert f"""`airflow tasks test {DAG_ID} ask -t '{{"cache_name": "cachedContents/ID"}}'`""" in output
    assert "None is not a cache name" not in output
    assert sum(emulator.admin.state()["counts"].values()) == 0  # refused before any call


@pytest.mark.usefixtures("serialized", "default_conn")
def test_tasks_test_of_ask_with_the_cache_name_as_a_param_asks_against_that_cache(
    emulator: EmulatorProcess,
) -> None:
    cache = ContextCacheHook(DEFAULT_CONN).create_cache(
        model="gemini-2.5-flash", contents=[text_of_tokens(2100)], ttl="10m"
    )

    # The command line the error above prints, with no date: a run is made for now.
    output = tasks_test("ask", "-t", json.dumps({"cache_name": cache.name}))

    assert f"using the cache_name param {cache.name!r}" in output, output[-3000:]
    asked = [r for r in emulator.admin.requests() if r["op"] == "generate_content"]
    assert len(asked) == 1
    assert asked[0]["body"]["cachedContent"] == cache.name
