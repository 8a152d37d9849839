"""The cost reports add up: summed over every task of every run, they are the bill.

Each test runs real DAGs with ``dag.test()`` against the emulator, then computes the bill on its
own from ``GET /_emulator/usage`` (:mod:`tests.billing`) and compares it with what the tasks
reported, category by category, to 0.1%. The emulator's clock skips half an hour before each
delete, so every cache has lived long enough for its storage to be checked that closely (the
deleting task reads the time from the server's ``Date`` header when the clocks disagree).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pendulum
import pytest

from airflow_provider_ctxcache.costs import bill_table
from airflow_provider_ctxcache.emulator.process import EmulatorProcess
from tests.billing import assert_same_bill, bill, reported
from tests.dags.conftest import DagRunner, cost_reports, task_states, xcom
from tests.dags.test_example_dags import batch_file

HALF_AN_HOUR = 1800


@pytest.fixture
def long_lives(emulator: EmulatorProcess) -> None:
    emulator.admin.faults(clock_skip_s=HALF_AN_HOUR, ops=["delete_cache"])


def created(emulator: EmulatorProcess) -> list[dict[str, Any]]:
    return [e for e in emulator.admin.usage() if e["type"] == "cache_created"]


def all_reports(runs: list[Any]) -> dict[str, dict[str, Any]]:
    return {f"{run.run_id}/{task}": report for run in runs for task, report in cost_reports(run).items()}


def test_a_three_day_backfill_sharing_one_cache_is_billed_one_creation_and_its_storage_once(
    run_dag: DagRunner, emulator: EmulatorProcess, long_lives: None
) -> None:
    # Days no other test runs: dag.test() on a logical date that already has a run reuses its conf.
    days = [pendulum.datetime(2026, 11, d, tz="UTC") for d in (12, 13, 14)]
    conf = {"ttl": "2h"}
    # The first two runs hand the cache on (in a real backfill their sensors would still be
    # waiting); the last one's sensor is due at once (margin > ttl) and its cleanup deletes it.
    hand_on = "wait_for_expiry|final_cleanup"
    runs = [
        run_dag("ctxcache_shared_daily", logical_date=day, conf=conf, mark_success_pattern=hand_on)
        for day in days[:2]
    ]
    runs.append(run_dag("ctxcache_shared_daily", logical_date=days[2], conf={**conf, "expiry_margin": "3h"}))

    assert [run.state for run in runs] == ["success"] * 3
    assert len(created(emulator)) == 1
    assert [xcom(run, "create_cache", "reused") for run in runs] == [False, True, True]
    reports = all_reports(runs)
    creations = {k: r["charged"]["creation"] for k, r in reports.items() if "creation" in r["charged"]}
    assert [amount > 0 for amount in creations.values()] == [True, False, False]
    storage = [k for k, r in reports.items() if "storage" in r["charged"]]
    assert storage == [f"{runs[2].run_id}/final_cleanup"]
    assert_same_bill(reported(reports.values()), bill(emulator.admin.usage()))


def test_a_fanout_over_four_shards_is_billed_one_creation_and_its_storage_once(
    run_dag: DagRunner,
    emulator: EmulatorProcess,
    long_lives: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AIRFLOW__CTXCACHE__ALLOWED_ROOTS", str(tmp_path))
    run = run_dag("ctxcache_batch_file", conf={**batch_file(tmp_path, 8), "shard_size": 2})

    assert run.state == "success"
    reports = cost_reports(run)
    assert sorted(reports) == ["ask[0]", "ask[1]", "ask[2]", "ask[3]", "create_cache", "delete_cache"]
    assert [r["tokens"]["requests"] for k, r in sorted(reports.items()) if k.startswith("ask")] == [2] * 4
    assert all("creation" not in r["charged"] for k, r in reports.items() if k != "create_cache")
    assert reports["delete_cache"]["storage_seconds"] > HALF_AN_HOUR
    assert_same_bill(reported(reports.values()), bill(emulator.admin.usage()))


def test_a_cache_over_200k_tokens_bills_every_request_at_the_higher_tier(
    run_dag: DagRunner, emulator: EmulatorProcess, long_lives: None
) -> None:
    run = run_dag("ctxcache_test_ledger", conf={"model": "gemini-2.5-pro", "tokens": 300_000})

    assert run.state == "success"
    reports = cost_reports(run)
    assert reports["ask"]["tokens"]["requests_above_200k"] == 2
    assert reports["ask"]["price"]["cached_input_per_million_above_200k"] == 0.25
    assert_same_bill(reported(reports.values()), bill(emulator.admin.usage()))


def test_a_run_with_every_key_answered_creates_no_cache(
    run_dag: DagRunner, emulator: EmulatorProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW__CTXCACHE__ALLOWED_ROOTS", str(tmp_path))
    conf = {**batch_file(tmp_path, 4), "shard_size": 2}
    assert run_dag("ctxcache_batch_file", conf=conf).state == "success"
    emulator.admin.reset()

    again = run_dag("ctxcache_batch_file", conf=conf)

    assert again.state == "success"
    states = task_states(again)
    assert states["create_cache"] == "skipped"
    assert {states[k] for k in states if k.startswith("ask")} == {"skipped"}
    assert emulator.admin.state()["counts"].get("create_cache", 0) == 0
    assert emulator.admin.usage() == []


def test_a_bad_input_line_fails_before_a_cache_is_paid_for(
    run_dag: DagRunner, emulator: EmulatorProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW__CTXCACHE__ALLOWED_ROOTS", str(tmp_path))
    conf = {**batch_file(tmp_path, 4), "shard_size": 2}
    with Path(conf["input_uri"]).open("a") as file:
        file.write(
            json.dumps({"key": "bad", "request": {"contents": "not a list of contents", "tools": []}}) + "\n"
        )

    run = run_dag("ctxcache_batch_file", conf=conf)

    assert run.state == "failed"
    assert task_states(run)["create_cache"] == "failed"
    counts = emulator.admin.state()["counts"]
    assert counts.get("create_cache", 0) == 0
    assert counts.get("count_tokens", 0) == 0
    assert emulator.admin.usage() == []


def amounts(lines: list[str]) -> dict[str, str]:
    """``{row label: its USD column}`` of a cost table."""
    found = {}
    for line in lines:
        match = re.match(r"^\s*(?P<label>[A-Za-z][A-Za-z ,]*?)\s{2,}(?P<usd>-?[\d,]+\.\d+)", line)
        if match:
            found[match["label"]] = match["usd"]
    return found


def test_the_readme_cost_report_is_what_the_demo_run_reports(run_dag: DagRunner, dag_bag: Any) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    shown = amounts(
        readme.split("    The run on ", 1)[1].split("\n\n\n", 1)[0].split("\n\nThe baselines")[0].splitlines()
    )
    # What make demo runs: the DAG's own params, given explicitly (another test's run may have
    # left its conf where dag.test() picks it up).
    defaults = {name: param.value for name, param in dag_bag.get_dag("ctxcache_fanout").params.items()}
    run = run_dag("ctxcache_fanout", conf=defaults)

    table = amounts(bill_table(cost_reports(run).values(), title="The run").splitlines())

    # The storage (so the total) depends on how long the run took; every other figure does not.
    timeless = {label: usd for label, usd in shown.items() if label not in ("storage", "total")}
    assert len(timeless) == 8
    assert {label: table[label] for label in timeless} == timeless
