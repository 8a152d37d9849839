"""The provider on a real Airflow 3 deployment: REST triggers with conf, the triggerer, backfill.

One ``airflow standalone`` (api-server, scheduler with the LocalExecutor, dag-processor,
triggerer) on SQLite serves the whole module; its DAGs folder holds the shipped example DAGs and
its ``ctxcache_default`` connection points at an emulator of its own.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

import pytest

from airflow_provider_ctxcache.emulator.process import EmulatorProcess
from tests.e2e.deployment import AirflowDeployment

pytestmark = pytest.mark.e2e

SHARED = "ctxcache_shared_daily"
# Short enough for a test, long enough that a task started a few seconds late still finds the
# cache alive: the sensor waits until 5 s before the expiry, 25 s after the last extension.
SHORT_TTL_CONF = {"ttl": "30s", "min_remaining_ttl": "1s", "expiry_margin": "5s"}


def test_fanout_triggered_with_conf_overriding_params(
    airflow: AirflowDeployment, e2e_emulator: EmulatorProcess
) -> None:
    prompts = [
        "E2E question one: how many days does the Customer have to pay an undisputed invoice?",
        "E2E question two: which law governs the agreement?",
        "E2E question three: what is the cap on service credits?",
        "E2E question four: where may the Supplier keep personal data?",
        "E2E question five: how long does confidentiality last?",
    ]
    airflow.wait_for_dag("ctxcache_fanout")
    e2e_emulator.admin.reset()
    airflow.unpause("ctxcache_fanout")

    # What the UI's trigger form sends: every param, some of them edited.
    run_id = airflow.trigger(
        "ctxcache_fanout",
        {"model": "gemini-2.5-flash", "ttl": "10m", "prompts": prompts, "chunk_size": 2},
    )
    run = airflow.wait_for_run("ctxcache_fanout", run_id)

    states = airflow.task_states("ctxcache_fanout", run_id)
    assert run["state"] == "success", states
    # chunk_size=2 over five prompts: three mapped instances, not the default's two.
    assert states == {
        "create_cache": "success",
        "chunk_prompts": "success",
        "ask[0]": "success",
        "ask[1]": "success",
        "ask[2]": "success",
        "delete_cache": "success",
    }
    state = e2e_emulator.admin.state()
    assert state["caches"] == [], "the teardown must leave no cache behind"
    assert state["counts"]["create_cache"] == 1
    assert state["counts"]["delete_cache"] == 1
    assert state["counts"]["generate_content"] == len(prompts)
    asked = [
        json.dumps(entry["body"])
        for entry in e2e_emulator.admin.requests()
        if entry["op"] == "generate_content"
    ]
    for prompt in prompts:
        assert sum(prompt in body for body in asked) == 1, f"{prompt!r} was not asked exactly once"


@dataclass
class BackfillOutcome:
    logical_dates: list[str]
    runs: list[dict[str, Any]]
    states: dict[str, dict[str, str | None]]
    emulator_state: dict[str, Any]


@pytest.fixture(scope="module")
def shared_daily_backfill(
    airflow_deployment: AirflowDeployment, e2e_emulator: EmulatorProcess
) -> BackfillOutcome:
    """``airflow backfill create`` over the last three daily runs (up to today's), run to the end.

    ``@daily`` is a cron trigger in Airflow 3: the run of day D has logical date D 00:00 and is
    due then, so today's run is already due. The DAG has ``catchup=True`` and a start date in
    the past: unpausing it first would make the scheduler catch up every day since. So the
    backfill is created while it is paused, and once the dag-processor has moved the next
    scheduled run to tomorrow, unpausing starts only the backfill's runs.
    """
    airflow = airflow_deployment
    airflow.wait_for_dag(SHARED)
    today = dt.datetime.now(dt.timezone.utc).date()
    first, last = today - dt.timedelta(days=2), today
    assert first >= dt.date(2026, 11, 1), f"the machine's clock ({today}) is before the DAG's start"
    e2e_emulator.admin.reset()

    airflow.cli(
        "backfill",
        "create",
        "--dag-id",
        SHARED,
        "--from-date",
        first.isoformat(),
        "--to-date",
        last.isoformat(),
        "--dag-run-conf",
        json.dumps(SHORT_TTL_CONF),
    )

    def next_run_after_backfill() -> str | None:
        upcoming = airflow.api("GET", f"/api/v2/dags/{SHARED}").get("next_dagrun_logical_date")
        return upcoming if upcoming and upcoming[:10] > last.isoformat() else None

    airflow.wait_for("the next scheduled run to move past the backfill", next_run_after_backfill, timeout=60)
    airflow.unpause(SHARED)

    def backfill_runs() -> list[dict[str, Any]]:
        runs = airflow.api("GET", f"/api/v2/dags/{SHARED}/dagRuns?limit=100")["dag_runs"]
        return [run for run in runs if run["run_type"] == "backfill"]

    def all_finished() -> list[dict[str, Any]] | None:
        runs = backfill_runs()
        done = len(runs) == 3 and all(run["state"] in ("success", "failed") for run in runs)
        return runs if done else None

    try:
        runs = airflow.wait_for("the three backfill runs to finish", all_finished, timeout=180, interval=2)
    except Exception as error:
        states = {run["dag_run_id"]: run["state"] for run in backfill_runs()}
        raise AssertionError(f"{error}; backfill runs: {states}") from None
    runs.sort(key=lambda run: run["logical_date"])
    return BackfillOutcome(
        logical_dates=[run["logical_date"][:10] for run in runs],
        runs=runs,
        states={run["dag_run_id"]: airflow.task_states(SHARED, run["dag_run_id"]) for run in runs},
        emulator_state=e2e_emulator.admin.state(),
    )


def test_backfill_reuses_one_cache_across_three_days(
    airflow: AirflowDeployment, shared_daily_backfill: BackfillOutcome
) -> None:
    outcome = shared_daily_backfill
    today = dt.datetime.now(dt.timezone.utc).date()
    assert outcome.logical_dates == [(today - dt.timedelta(days=d)).isoformat() for d in (2, 1, 0)]
    assert [run["state"] for run in outcome.runs] == ["success"] * 3, outcome.states
    for run in outcome.runs:
        assert run["conf"] == SHORT_TTL_CONF
    counts = outcome.emulator_state["counts"]
    assert counts["create_cache"] == 1, f"one cache for the three days, not {counts['create_cache']}"
    assert counts["generate_content"] == 3 * 2  # two questions a day
    assert outcome.emulator_state["caches"] == [], "the last cleanup must delete the shared cache"
    # No scheduled catch-up run slipped in besides the backfill (tomorrow's may, after midnight).
    runs = airflow.api("GET", f"/api/v2/dags/{SHARED}/dagRuns?limit=100")["dag_runs"]
    scheduled = [run["logical_date"] for run in runs if run["run_type"] == "scheduled"]
    assert all(date[:10] > outcome.logical_dates[-1] for date in scheduled), scheduled


def test_expiry_sensor_defers_and_the_triggerer_resumes_it(
    airflow: AirflowDeployment, e2e_emulator: EmulatorProcess, shared_daily_backfill: BackfillOutcome
) -> None:
    # The backfill fixture has unpaused the DAG safely (no catch-up) and its runs are over.
    e2e_emulator.admin.reset()
    # With a logical date, as the UI's trigger form sends by default: the DAG's questions use
    # {{ ds }}, which Airflow 3 leaves undefined for a run triggered without one.
    now = dt.datetime.now(dt.timezone.utc).isoformat()
    run_id = airflow.trigger(SHARED, SHORT_TTL_CONF, logical_date=now)
    seen: list[str | None] = []

    def record(states: dict[str, str | None]) -> None:
        state = states.get("wait_for_expiry")
        if not seen or seen[-1] != state:
            seen.append(state)

    run = airflow.wait_for_run(SHARED, run_id, on_poll=record, interval=0.5)

    states = airflow.task_states(SHARED, run_id)
    assert run["state"] == "success", states
    assert "deferred" in seen, f"wait_for_expiry went through {seen}, never deferred"
    assert seen[-1] == "success"
    assert states["final_cleanup"] == "success"
    emulator_state = e2e_emulator.admin.state()
    assert emulator_state["caches"] == []
    assert emulator_state["counts"]["create_cache"] == 1
    # The trigger read the cache from the triggerer process; then the cleanup deleted it, or, on a
    # machine so busy that the cleanup started after the cache's last 5 s, it had expired: either
    # way it ended, and only once.
    assert emulator_state["counts"]["get_cache"] >= 1
    (life,) = e2e_emulator.admin.usage_summary()["caches"].values()
    assert life["ended_by"] == ("deleted" if emulator_state["counts"]["delete_cache"] else "expired")
