"""The shipped example DAGs, run by the real Airflow (``dag.test()`` on SQLite) against the emulator."""

from __future__ import annotations

import json
from pathlib import Path

import pendulum
import pytest

from airflow_provider_ctxcache.emulator.process import EmulatorProcess
from airflow_provider_ctxcache.hooks import ContextCacheHook
from tests.dags.conftest import DagRunner, task_states, xcom

EXAMPLE_DAGS = (
    "ctxcache_fanout",
    "ctxcache_shared_daily",
    "ctxcache_asset_keeper",
    "ctxcache_asset_consumer",
    "ctxcache_janitor",
)


def test_every_example_dag_loads_with_a_docstring(dag_bag: object) -> None:
    for dag_id in EXAMPLE_DAGS:
        dag = dag_bag.get_dag(dag_id)  # type: ignore[attr-defined]
        assert dag is not None, dag_id
        assert "When to use" in (dag.doc_md or "")


def test_fanout_answers_every_prompt_and_leaves_no_cache(
    run_dag: DagRunner, emulator: EmulatorProcess
) -> None:
    prompts = [
        "What is the cap on service credits?",
        "Which law governs the agreement?",
        "Who owns deliverables?",
    ]
    run = run_dag("ctxcache_fanout", conf={"prompts": prompts, "chunk_size": 2, "ttl": "20m"})
    assert run.state == "success"
    states = task_states(run)
    assert states == {
        "create_cache": "success",
        "chunk_prompts": "success",
        "ask[0]": "success",
        "ask[1]": "success",
        "delete_cache": "success",
    }
    state = emulator.admin.state()
    assert state["caches"] == []
    assert state["counts"]["create_cache"] == 1
    assert state["counts"]["generate_content"] == 3
    assert state["counts"]["delete_cache"] == 1
    first = xcom(run, "ask", map_index=0)
    answers = list(first["results"].values())
    assert len(answers) == 2
    assert all(a["usage"]["cached_content_token_count"] > 1000 for a in answers)


def test_fanout_failure_still_deletes_the_cache_and_fails_the_run(
    run_dag: DagRunner, emulator: EmulatorProcess
) -> None:
    bad = {
        "key": "bad",
        "request": {
            "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
            "systemInstruction": {"parts": [{"text": "not allowed with a cache"}]},
        },
    }
    run = run_dag("ctxcache_fanout", conf={"prompts": ["fine question", bad], "chunk_size": 1})
    assert run.state == "failed"
    states = task_states(run)
    assert states["ask[1]"] == "failed"
    assert states["delete_cache"] == "success"
    assert emulator.admin.state()["caches"] == []
    assert emulator.admin.state()["counts"]["delete_cache"] == 1


def test_fanout_renders_ui_params_into_the_cache(run_dag: DagRunner, emulator: EmulatorProcess) -> None:
    run = run_dag("ctxcache_fanout", conf={"ttl": "45m", "prompts": ["One question?"]})
    assert run.state == "success"
    (create,) = [r for r in emulator.admin.requests() if r["op"] == "create_cache"]
    assert create["body"]["ttl"] == "2700s"


def test_create_task_run_twice_in_one_dag_run_makes_one_cache(
    run_dag: DagRunner, emulator: EmulatorProcess
) -> None:
    logical_date, run_after = pendulum.datetime(2026, 3, 1, tz="UTC"), pendulum.now("UTC")
    first = run_dag("ctxcache_test_create_only", logical_date=logical_date, run_after=run_after)
    second = run_dag("ctxcache_test_create_only", logical_date=logical_date, run_after=run_after)
    assert first.run_id == second.run_id
    assert emulator.admin.state()["counts"]["create_cache"] == 1
    assert len(emulator.admin.state()["caches"]) == 1
    assert xcom(second, "create_cache") == xcom(first, "create_cache")
    assert xcom(second, "create_cache", key="reused") is True


def test_reuse_by_content_across_two_logical_dates_makes_one_cache(
    run_dag: DagRunner, emulator: EmulatorProcess
) -> None:
    runs = [
        run_dag(
            "ctxcache_test_create_only",
            conf={"reuse": "content"},
            logical_date=pendulum.datetime(2026, 3, d, tz="UTC"),
        )
        for d in (1, 2)
    ]
    assert [r.state for r in runs] == ["success", "success"]
    assert runs[0].run_id != runs[1].run_id
    assert emulator.admin.state()["counts"]["create_cache"] == 1
    assert xcom(runs[1], "create_cache") == xcom(runs[0], "create_cache")


def test_shared_daily_reuses_extends_asks_then_cleans_up_at_expiry(
    run_dag: DagRunner, emulator: EmulatorProcess
) -> None:
    # An expiry margin as long as the TTL: the sensor is done at its first look, so nothing here
    # races a real expiry (a 4 s TTL once ran out between two tasks on a busy machine).
    conf = {"ttl": "1h", "min_remaining_ttl": "1s", "expiry_margin": "1h"}
    run = run_dag("ctxcache_shared_daily", conf=conf, logical_date=pendulum.datetime(2026, 11, 2, tz="UTC"))
    assert run.state == "success"
    assert set(task_states(run).values()) == {"success"}
    counts = emulator.admin.state()["counts"]
    assert counts["update_cache"] == 1
    assert counts["generate_content"] == 2
    asked = [
        r["body"]["contents"][0]["parts"][0]["text"]
        for r in emulator.admin.requests()
        if r["op"] == "generate_content"
    ]
    assert all("2026-11-02" in text for text in asked)
    assert emulator.admin.state()["caches"] == []
    waited = xcom(run, "wait_for_expiry")
    assert waited["status"] == "margin_reached"  # alive, inside the 1h margin: not "expired"
    assert waited["seconds_left"] > 0


def test_shared_daily_triggered_without_a_logical_date_reports_the_day_it_was_queued(
    run_dag: DagRunner, emulator: EmulatorProcess
) -> None:
    # A run triggered from the UI has no logical date; the report day falls back to run_after.
    conf = {"ttl": "1h", "min_remaining_ttl": "1s", "expiry_margin": "1h"}
    queued = pendulum.datetime(2026, 11, 5, 9, 30, tz="UTC")
    run = run_dag("ctxcache_shared_daily", conf=conf, logical_date=None, run_after=queued)
    assert run.state == "success"
    assert run.logical_date is None
    asked = [
        r["body"]["contents"][0]["parts"][0]["text"]
        for r in emulator.admin.requests()
        if r["op"] == "generate_content"
    ]
    assert asked
    assert all("2026-11-05" in text for text in asked)


def test_asset_keeper_publishes_and_consumer_uses_the_cache(
    run_dag: DagRunner, emulator: EmulatorProcess
) -> None:
    # The keeper's sensor would wait for the cache's real expiry, hours away: mark it and the
    # delete as done, as a test of the publish/consume hand-over, then delete through the hook.
    keeper = run_dag(
        "ctxcache_asset_keeper", conf={"ttl": "1h"}, mark_success_pattern="wait_for_expiry|delete_cache"
    )
    assert keeper.state == "success"
    published = xcom(keeper, "publish_cache")
    assert published["cache_name"] == xcom(keeper, "create_cache")
    assert published["model"] == "gemini-2.5-flash"

    consumer = run_dag("ctxcache_asset_consumer", conf={"prompts": ["Which law governs the agreement?"]})
    assert consumer.state == "success"
    assert xcom(consumer, "ask")["cache_name"] == published["cache_name"]
    (request,) = [r for r in emulator.admin.requests() if r["op"] == "generate_content"]
    assert request["body"]["cachedContent"] == published["cache_name"]
    assert ContextCacheHook("ctxcache_default").delete_cache(published["cache_name"])


def batch_file(folder: Path, n: int) -> dict[str, str]:
    """A JSONL file of n batch-format requests in ``folder``; the DAG's input and output params."""
    lines = [
        {"key": f"r{i}", "request": {"contents": [{"role": "user", "parts": [{"text": f"Clause {i}?"}]}]}}
        for i in range(n)
    ]
    (folder / "requests.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return {"input_uri": str(folder / "requests.jsonl"), "output_uri": str(folder / "answers")}


def test_batch_file_dag_answers_every_line_once_across_shards(
    run_dag: DagRunner, emulator: EmulatorProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW__CTXCACHE__ALLOWED_ROOTS", str(tmp_path))
    conf = {**batch_file(tmp_path, 25), "shard_size": 10}
    run = run_dag("ctxcache_batch_file", conf=conf)
    assert run.state == "success"
    assert {k: v for k, v in task_states(run).items() if k.startswith("ask")} == {
        "ask[0]": "success",
        "ask[1]": "success",
        "ask[2]": "success",
    }
    answered = [
        json.loads(line)["key"]
        for part in sorted((tmp_path / "answers").glob("shard-*/part-*.jsonl"))
        for line in part.read_text().splitlines()
    ]
    assert sorted(answered) == sorted(f"r{i}" for i in range(25))
    assert emulator.admin.state()["caches"] == []


def test_batch_file_dag_gives_each_running_shard_its_share_of_the_project_quota(
    run_dag: DagRunner, emulator: EmulatorProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW__CTXCACHE__ALLOWED_ROOTS", str(tmp_path))
    conf = {**batch_file(tmp_path, 6), "shard_size": 2, "rpm_limit": 3000, "tpm_limit": 9_000_000}
    run = run_dag("ctxcache_batch_file", conf=conf)
    assert run.state == "success"
    # Three shards run at once (fewer than the DAG's parallelism of 4): each gets a third.
    for index in range(3):
        pacing = xcom(run, "ask", map_index=index)["summary"]["pacing"]
        assert (pacing["mode"], pacing["rpm_limit"], pacing["tpm_limit"]) == ("given", 1000, 3_000_000)
