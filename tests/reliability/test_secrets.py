"""The secrets audit: after real DAG runs with a secret in the connection, the secret is nowhere.

Two full runs of ``ctxcache_test_secrets`` under ``dag.test()`` (create, a fan-out that fails so
error texts are produced, a deferrable expiry sensor whose trigger row is written, a teardown
delete): one with a Developer-API key, one with a whole service-account JSON (a real RSA key;
google-auth signs a JWT and exchanges it at the emulator's ``/oauth2/token``) on the Vertex
backend. Then the search covers:

- every text and blob column of every table of the session's Airflow metadata DB (SQLite):
  XCom, trigger rows, rendered template fields, task instances, logs, ...;
- the task logs: files under AIRFLOW_HOME/logs and what the in-process task runner printed;
- the texts of exceptions and error events raised with that connection.

The connection itself comes from an ``AIRFLOW_CONN_*`` variable, so it is not a DB row. Each
search has a positive control (the cache name is found where the secret is looked for), so an
empty haystack cannot pass for a clean one.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from airflow_provider_ctxcache.emulator.process import EmulatorProcess
from airflow_provider_ctxcache.exceptions import CacheNotFoundError
from airflow_provider_ctxcache.fanout import FanoutFailedError
from airflow_provider_ctxcache.hooks import ContextCacheHook
from airflow_provider_ctxcache.operators import GenerateWithCacheOperator
from airflow_provider_ctxcache.triggers import CacheExpiryTrigger
from tests.conftest import AIRFLOW_HOME
from tests.dags.conftest import DagRunner, task_states, xcom
from tests.operators.context import task_context
from tests.reliability.conftest import CONTEXT

CONN_ID = "ctxcache_default"  # what the test DAG uses


def service_account(emulator: EmulatorProcess) -> dict[str, Any]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return {
        "type": "service_account",
        "project_id": "sa-audit-project",
        "private_key_id": secrets.token_hex(20),
        "private_key": pem,
        "client_email": "airflow@sa-audit-project.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": f"{emulator.url}/oauth2/token",
    }


def needles(secret_values: list[str]) -> list[str]:
    """The strings that must not appear: each secret whole, and every line of a PEM key on its own."""
    found: list[str] = []
    for value in secret_values:
        found.append(value)
        found += [line for line in value.splitlines() if len(line) >= 32 and "PRIVATE KEY" not in line]
    return found


def metadata_db() -> Path:
    from airflow.settings import SQL_ALCHEMY_CONN

    assert SQL_ALCHEMY_CONN is not None
    assert SQL_ALCHEMY_CONN.startswith("sqlite:///"), SQL_ALCHEMY_CONN
    path = Path(SQL_ALCHEMY_CONN.removeprefix("sqlite:///").split("?")[0])
    assert path.is_file()
    assert path.is_relative_to(AIRFLOW_HOME)
    return path


def db_cells() -> Iterator[tuple[str, str, str]]:
    """(table, column, text) for every non-empty text or blob cell of every table."""
    with sqlite3.connect(f"file:{metadata_db()}?mode=ro", uri=True) as db:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            cursor = db.execute(f'SELECT * FROM "{table}"')  # table names come from the DB itself
            columns = [c[0] for c in cursor.description]
            for row in cursor:
                for column, value in zip(columns, row, strict=True):
                    if isinstance(value, bytes):
                        yield table, column, value.decode("utf-8", errors="replace")
                    elif isinstance(value, str) and value:
                        yield table, column, value


def expire_once_a_trigger_waits(emulator: EmulatorProcess, before: set[int]) -> None:
    """Waits for a new CacheExpiryTrigger row in the metadata DB, then moves the emulator past expiry."""
    while not trigger_ids() - before:
        time.sleep(0.2)
    emulator.admin.advance_clock(2 * 3600)


def trigger_ids() -> set[int]:
    """The ids of the CacheExpiryTrigger rows in the metadata DB (a busy DB reads as none new)."""
    try:
        with sqlite3.connect(f"file:{metadata_db()}?mode=ro", uri=True) as db:
            rows = db.execute("SELECT id, classpath FROM trigger").fetchall()
    except sqlite3.OperationalError:  # locked by a writer, or the table not made yet
        return set()
    return {int(row_id) for row_id, classpath in rows if str(classpath).endswith("CacheExpiryTrigger")}


def log_texts(captured: str) -> list[tuple[str, str]]:
    files = (
        [p for p in (AIRFLOW_HOME / "logs").rglob("*") if p.is_file()]
        if (AIRFLOW_HOME / "logs").exists()
        else []
    )
    return [(str(p), p.read_text(errors="replace")) for p in files] + [("task runner output", captured)]


def leaks(haystack: list[tuple[str, str]], secret_values: list[str]) -> list[str]:
    return [
        f"{where}: {needle[:12]}..."
        for where, text in haystack
        for needle in needles(secret_values)
        if needle in text
    ]


def caught_texts(emulator: EmulatorProcess, cache_name: str) -> list[tuple[str, str]]:
    """Exception texts and error events produced with the secret connection, outside the DAG."""
    texts: list[tuple[str, str]] = []
    hook = ContextCacheHook(CONN_ID)
    missing = cache_name.rsplit("/", 1)[0] + "/doesnotexist0"
    with pytest.raises(CacheNotFoundError) as not_found:
        hook.get_cache(missing)
    texts.append(("CacheNotFoundError", str(not_found.value)))

    emulator.admin.faults(error_rate_503=1.0, ops=["generate_content"])
    with pytest.raises(FanoutFailedError) as failed:
        GenerateWithCacheOperator(
            task_id="ask",
            ctxcache_conn_id=CONN_ID,
            cache_name=cache_name,
            prompts=["a", "b"],
            max_attempts=1,
            progress_interval=0,
            keep_alive=False,
        ).execute(task_context())
    texts.append(("FanoutFailedError", str(failed.value)))
    emulator.admin.faults(error_rate_503=1.0, ops=["list_caches"])
    ok, message = ContextCacheHook(CONN_ID).test_connection()
    assert not ok
    texts.append(("test_connection", message))
    emulator.admin.faults(error_rate_503=1.0, ops=["get_cache"])

    async def event() -> dict[str, Any]:
        trigger = CacheExpiryTrigger(cache_name=cache_name, ctxcache_conn_id=CONN_ID, poll_interval=1)
        runner = trigger.run()
        try:
            return (await anext(runner)).payload  # type: ignore[no-any-return]
        finally:
            await runner.aclose()

    payload = asyncio.run(event())
    assert payload["status"] == "error"
    texts.append(("trigger error event", json.dumps(payload)))
    emulator.admin.faults()
    return texts


@pytest.fixture(params=["api_key", "service_account_json"])
def secret_conn(
    request: pytest.FixtureRequest,
    emulator: EmulatorProcess,
    monkeypatch: pytest.MonkeyPatch,
    default_conn: str,
) -> tuple[str, list[str]]:
    """``ctxcache_default`` with a secret in it; returns its kind and the secret strings to look for.

    It replaces the plain ``default_conn`` that ``run_dag`` sets, so it must come after it.
    """
    extra: dict[str, Any] = {"base_url": emulator.url, "retry_initial_delay": 0.01, "retry_max_delay": 0.05}
    conn: dict[str, Any] = {"conn_type": "ctxcache", "extra": extra}
    if request.param == "api_key":
        key = "AIzaSy" + secrets.token_urlsafe(24)
        conn["password"] = key
        values = [key]
    else:
        info = service_account(emulator)
        extra.update(backend="vertex_ai", service_account_json=json.dumps(info))
        values = [info["private_key"], info["private_key_id"]]
    monkeypatch.setenv(f"AIRFLOW_CONN_{default_conn.upper()}", json.dumps(conn))
    settings = ContextCacheHook(default_conn).settings  # the secret is what the connection now holds
    held = (
        [settings.api_key]
        if request.param == "api_key"
        else [(settings.service_account_info or {}).get(k) for k in ("private_key", "private_key_id")]
    )
    assert held == values
    return str(request.param), values


def test_a_secret_in_the_connection_appears_nowhere_after_a_full_run(
    secret_conn: tuple[str, list[str]],
    run_dag: DagRunner,
    emulator: EmulatorProcess,
    capfd: pytest.CaptureFixture[str],
) -> None:
    kind, secret_values = secret_conn
    # Half the prompts meet a 503 (one try each), so the fan-out fails with error texts.
    emulator.admin.faults(error_rate_503=0.5, seed=2, ops=["generate_content"])
    # The cache lives an hour, so the sensor always defers; once its trigger row is written the
    # emulator's clock jumps past the expiry. States decide the order, not a short TTL.
    before = trigger_ids()
    expirer = threading.Thread(target=expire_once_a_trigger_waits, args=(emulator, before), daemon=True)
    expirer.start()
    run = run_dag("ctxcache_test_secrets")
    expirer.join()
    emulator.admin.faults()
    # The run's state follows its leaf, the all_done sensor; the failure is the ask task's.
    assert run.state == "success"
    assert task_states(run) == {
        "create_cache": "success",
        "ask": "failed",
        "wait_for_expiry": "success",
        "delete_cache": "success",
    }
    cache_name = xcom(run, "create_cache")
    assert xcom(run, "wait_for_expiry")["status"] in {"expired", "gone"}
    assert emulator.admin.state()["caches"] == []
    if kind == "service_account_json":
        assert cache_name.startswith("projects/sa-audit-project/locations/us-central1/cachedContents/")
        assert emulator.admin.state()["tokens_issued"] >= 1  # the key really signed a JWT

    # The metadata DB, every table: the trigger row and the rendered fields are in it, the secret is not.
    cells = list(db_cells())
    tables_with_cache = {table for table, _, text in cells if cache_name in text}
    assert {"xcom", "rendered_task_instance_fields"} <= tables_with_cache
    trigger_rows = [text for table, column, text in cells if table == "trigger" and column == "classpath"]
    assert any(text.endswith("CacheExpiryTrigger") for text in trigger_rows)
    assert leaks([(f"db {table}.{column}", text) for table, column, text in cells], secret_values) == []

    # The task logs: what the runner printed for this run (and any log files).
    printed = capfd.readouterr()
    logs = log_texts(printed.out + printed.err)
    assert any(cache_name in text for _, text in logs)
    assert any("FanoutFailedError" in text for _, text in logs)
    assert leaks(logs, secret_values) == []

    # Exception texts and error events raised with the same connection.
    fresh = ContextCacheHook(CONN_ID).create_cache(model="gemini-2.5-flash", contents=[CONTEXT], ttl="5m")
    assert fresh.name
    texts = caught_texts(emulator, fresh.name)
    assert any(fresh.name in text for _, text in texts)
    assert leaks(texts, secret_values) == []
    assert ContextCacheHook(CONN_ID).delete_cache(fresh.name)
