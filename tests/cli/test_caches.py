"""``ctxcache caches list|delete|gc``, run for real as ``python -m airflow_provider_ctxcache``.

Each call is a separate process, as a user's shell runs it: it reads the connection the way
Airflow does (the environment here, or the metadata DB) and run states from the session's
SQLite metadata DB, where ``dag.test()`` left real runs. Caches live in the session's emulator.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_ctxcache.cli import DEFAULT_CONN_ID
from airflow_provider_ctxcache.emulator.process import EmulatorProcess
from airflow_provider_ctxcache.emulator.tokens import text_of_tokens
from airflow_provider_ctxcache.hooks import ContextCacheHook
from tests.dags.conftest import DagRunner, xcom
from tests.dags.leftovers import COLLECTED, KEPT, live_names, make_leftovers, run_leftover, set_run_state

COMMAND = [sys.executable, "-m", "airflow_provider_ctxcache"]


def ctxcache(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*COMMAND, *args], capture_output=True, text=True, timeout=300, check=False)


def new_cache(display_name: str | None, ttl: str = "1d") -> str:
    made = ContextCacheHook(DEFAULT_CONN_ID).create_cache(
        model="gemini-2.5-flash", contents=[text_of_tokens(2100)], ttl=ttl, display_name=display_name
    )
    return str(made.name)


@pytest.fixture
def db_conn(airflow_db: None, emulator: EmulatorProcess) -> Iterator[str]:
    """A connection stored only in Airflow's metadata DB, as `airflow connections add` leaves it."""
    from airflow.models.connection import Connection
    from airflow.utils.session import create_session

    conn_id = "ctxcache_in_metadata_db"
    extra = {"backend": "gemini_api", "base_url": emulator.url}
    with create_session() as session:
        session.add(
            Connection(conn_id=conn_id, conn_type="ctxcache", password="db-test-key", extra=json.dumps(extra))
        )
    yield conn_id
    with create_session() as session:
        session.query(Connection).filter_by(conn_id=conn_id).delete()


def test_the_default_conn_id_is_the_hooks() -> None:
    assert ContextCacheHook.default_conn_name == DEFAULT_CONN_ID


def test_python_dash_m_runs_the_command_and_hands_emulator_options_to_the_emulator() -> None:
    main_help = ctxcache("--help")
    assert main_help.returncode == 0, main_help.stderr
    assert all(command in main_help.stdout for command in ("advise", "caches", "emulator"))
    emulator_help = ctxcache("emulator", "--help")
    assert emulator_help.returncode == 0, emulator_help.stderr
    assert "ctxcache-emulator" in emulator_help.stdout
    assert "--min-tokens" in emulator_help.stdout


def test_list_shows_each_cache_with_the_run_that_made_it_as_json_and_as_a_table(
    run_dag: DagRunner, emulator: EmulatorProcess, db_conn: str
) -> None:
    run = run_leftover(run_dag)
    made_by_run = xcom(run, "create_cache")
    foreign = new_cache("made by someone else")

    listed = ctxcache("caches", "list", "--json")

    assert listed.returncode == 0, listed.stderr
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    assert set(rows) == {made_by_run, foreign}
    ours = rows[made_by_run]
    assert (ours["dag_id"], ours["run_id"], ours["key_kind"]) == ("ctxcache_test_leftover", run.run_id, "r")
    assert ours["model"] == "gemini-2.5-flash"
    assert ours["tokens"] >= 2100
    assert 0 < ours["seconds_left"] <= 86400
    assert (rows[foreign]["dag_id"], rows[foreign]["key_kind"]) == (None, None)

    # The same caches through a connection that only the metadata DB holds, as a table.
    table = ctxcache("caches", "list", "--conn-id", db_conn)

    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == [
        "NAME",
        "MODEL",
        "TOKENS",
        "EXPIRES",
        "(UTC)",
        "LEFT",
        "DAG",
        "RUN",
        "DISPLAY",
        "NAME",
    ]
    (row,) = [line for line in lines if line.startswith(made_by_run)]
    assert f"ctxcache_test_leftover  {run.run_id}" in row
    assert lines[-1].startswith("2 live cache(s)")


def test_delete_deletes_exactly_the_named_caches_and_reports_a_missing_one_with_exit_1(
    emulator: EmulatorProcess, default_conn: str
) -> None:
    first, second, other = new_cache("a"), new_cache("b"), new_cache("c")
    missing = "cachedContents/doesnotexist123"

    result = ctxcache("caches", "delete", first, second, missing)

    assert result.returncode == 1
    assert result.stdout.splitlines() == [f"deleted {first}", f"deleted {second}"]
    assert result.stderr.splitlines() == [
        f"ctxcache caches delete: {missing}: no such cache: it expired, was deleted, or these "
        "credentials cannot see it"
    ]
    assert live_names(emulator) == {other}


def test_delete_with_a_malformed_name_exits_2_before_deleting_anything(
    emulator: EmulatorProcess, default_conn: str
) -> None:
    kept = new_cache("a")

    result = ctxcache("caches", "delete", kept, "not a/cache name", "--json")

    assert result.returncode == 2
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("ctxcache caches delete: error: NAME: 'not a/cache name' is not a cache name")
    assert live_names(emulator) == {kept}


def test_gc_is_a_dry_run_until_told_to_delete_then_deletes_exactly_the_caches_of_finished_or_missing_runs(
    run_dag: DagRunner, emulator: EmulatorProcess
) -> None:
    names = make_leftovers(run_dag)
    collected = {names[role] for role in COLLECTED}

    dry = ctxcache("caches", "gc")

    assert dry.returncode == 0, dry.stderr
    assert live_names(emulator) == set(names.values())
    assert dry.stdout.startswith("Dry run: nothing was deleted.")
    for role, name in names.items():
        (line,) = [line for line in dry.stdout.splitlines() if f" {name} " in line]
        assert line.startswith("would delete" if role in COLLECTED else "keep"), line
    assert dry.stdout.splitlines()[-1] == f"{len(COLLECTED)} to delete, {len(KEPT)} kept."

    done = ctxcache("caches", "gc", "--delete", "--json")

    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert set(report["deleted"]) == collected
    assert (report["kept"], report["failed"], report["dry_run"]) == (len(KEPT), {}, False)
    assert live_names(emulator) == {names[role] for role in KEPT}
    reasons = {cache["name"]: cache["reason"] for cache in report["caches"]}
    assert reasons[names["succeeded"]].endswith("finished (success)")
    assert reasons[names["failed"]].endswith("finished (failed)")
    assert reasons[names["run_deleted"]].endswith("no longer exists")
    assert reasons[names["running"]].endswith("is running")


def test_gc_older_than_also_takes_old_caches_of_live_runs_and_content_caches_but_no_foreign_one(
    run_dag: DagRunner, emulator: EmulatorProcess
) -> None:
    running = run_leftover(run_dag)
    set_run_state(running, "running")
    content = run_leftover(run_dag, reuse="content")
    names = {"running": xcom(running, "create_cache"), "content": xcom(content, "create_cache")}
    foreign = new_cache("made by someone else")

    young = ctxcache("caches", "gc", "--older-than", "1h", "--delete", "--json")

    assert young.returncode == 0, young.stderr
    assert json.loads(young.stdout)["deleted"] == []
    time.sleep(2.5)  # every cache is now older than 2 s
    old = ctxcache("caches", "gc", "--older-than", "2s", "--delete", "--json")

    assert old.returncode == 0, old.stderr
    report: dict[str, Any] = json.loads(old.stdout)
    assert set(report["deleted"]) == set(names.values())
    assert live_names(emulator) == {foreign}


def test_a_missing_connection_exits_2_naming_it_and_how_to_add_it(airflow_db: None) -> None:
    result = ctxcache("caches", "list", "--conn-id", "ctxcache_nowhere")

    assert result.returncode == 2
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith(
        "ctxcache caches list: error: --conn-id: connection 'ctxcache_nowhere' is not defined"
    )
    assert "airflow connections add ctxcache_nowhere --conn-type ctxcache" in line
    assert "AIRFLOW_CONN_CTXCACHE_NOWHERE" in line


def test_an_api_failure_exits_1_with_one_line_and_no_traceback(
    emulator: EmulatorProcess, default_conn: str
) -> None:
    emulator.admin.faults(error_rate_503=1.0, ops=["list_caches"])

    result = ctxcache("caches", "gc", "--delete")

    assert result.returncode == 1
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("ctxcache caches gc: error: ")
    assert "503" in line
