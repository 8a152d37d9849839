"""What the cache operators charge, and the break-even advice that can stop a cache before it is paid for.

The creation is charged to the task that created the cache, the storage of its whole life to the
task that deletes it (or to a sensor that sees it lapse); the advice is given before the create.
A 2,200-token cache on gemini-2.5-flash held 30 min costs 0.00066 to create (2,200 x $0.30/1M)
and 0.0011 to keep (2,200 x $1.00/1M x 0.5 h); each request saves 2,200 x ($0.30 - $0.03)/1M =
$0.000594 against asking online without a cache, so it pays from 0.00176 / 0.000594 = 2.96 -> 3
requests on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import pytest
from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowSkipException

from airflow_provider_ctxcache.emulator.process import EmulatorProcess
from airflow_provider_ctxcache.exceptions import CacheNotWorthItError, CtxCacheConfigError
from airflow_provider_ctxcache.hooks import ContextCacheHook
from airflow_provider_ctxcache.operators import DeleteCacheOperator
from airflow_provider_ctxcache.sensors import CacheExpirySensor
from tests.billing import seconds
from tests.operators.context import task_context
from tests.operators.test_create_cache_operator import create_op

MODEL = "gemini-2.5-flash"
TOKENS = 2200  # the size of the cache create_op makes
BREAK_EVEN = 3


def calls(emulator: EmulatorProcess, op: str) -> int:
    return int(emulator.admin.state()["counts"].get(op, 0))


# ---- creation ------------------------------------------------------------------------------------


def test_the_creating_task_is_charged_the_creation(conn_id: str) -> None:
    context = task_context()
    create_op(conn_id).execute(context)
    cost = context["ti"].pushed["cost"]
    assert cost["charged"] == {"creation": pytest.approx(TOKENS * 0.30 / 1e6)}
    assert cost["tokens"]["cache_tokens"] == TOKENS


def test_a_task_that_reuses_the_cache_is_charged_nothing(conn_id: str) -> None:
    create_op(conn_id, reuse="content").execute(task_context(run_id="a"))
    context = task_context(run_id="b")
    create_op(conn_id, reuse="content").execute(context)
    assert context["ti"].pushed["reused"] is True
    assert context["ti"].pushed["cost"]["charged"] == {"creation": 0.0}


# ---- the break-even advice -----------------------------------------------------------------------


def test_advice_is_pushed_with_the_break_even_before_the_create(conn_id: str) -> None:
    context = task_context()
    create_op(conn_id, expected_requests=BREAK_EVEN).execute(context)
    advice = context["ti"].pushed["advice"]
    assert advice["break_even"]["online_no_cache"] == BREAK_EVEN
    assert advice["worth_it"] is True


def test_a_cache_not_worth_it_fails_with_fail_and_is_never_created(
    conn_id: str, emulator: EmulatorProcess
) -> None:
    with pytest.raises(CacheNotWorthItError, match=r"if_not_worth_it='fail'.*break-even: 3 requests"):
        create_op(conn_id, expected_requests=BREAK_EVEN - 1, if_not_worth_it="fail").execute(task_context())
    assert calls(emulator, "create_cache") == 0


def test_a_cache_not_worth_it_is_skipped_with_skip(conn_id: str, emulator: EmulatorProcess) -> None:
    with pytest.raises(AirflowSkipException, match="if_not_worth_it='skip'"):
        create_op(conn_id, expected_requests=BREAK_EVEN - 1, if_not_worth_it="skip").execute(task_context())
    assert calls(emulator, "create_cache") == 0


def test_a_cache_not_worth_it_is_created_with_a_warning_by_default(
    conn_id: str, emulator: EmulatorProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    create_op(conn_id, expected_requests="2").execute(task_context())
    assert calls(emulator, "create_cache") == 1
    assert "Creating it anyway (if_not_worth_it='warn')" in capsys.readouterr().out


def test_a_cache_worth_it_gives_no_warning(conn_id: str, capsys: pytest.CaptureFixture[str]) -> None:
    create_op(conn_id, expected_requests=100, if_not_worth_it="fail").execute(task_context())
    assert "if_not_worth_it" not in capsys.readouterr().out


def test_the_pending_prompts_are_the_request_count(conn_id: str) -> None:
    context = task_context()
    create_op(conn_id, prompts=["a?", "b?", "c?"]).execute(context)
    assert context["ti"].pushed["advice"]["requests"] == 3


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"expected_requests": -1}, "expected_requests"),
        ({"expected_requests": "many"}, "expected_requests"),
        ({"if_not_worth_it": "ignore"}, "if_not_worth_it"),
        ({"prompts": ["a?"], "input_uri": "/tmp/x.jsonl"}, "prompts, input_uri"),
        ({"prices": {"input_per_million": -1}}, r"prices\.input_per_million"),
    ],
)
def test_bad_advice_arguments_are_refused_before_any_call(
    conn_id: str, emulator: EmulatorProcess, arguments: dict[str, Any], field: str
) -> None:
    with pytest.raises(CtxCacheConfigError, match=f"^{field}"):
        create_op(conn_id, **arguments).execute(task_context())
    assert calls(emulator, "count_tokens") + calls(emulator, "create_cache") == 0


# ---- nothing to do, bad input --------------------------------------------------------------------


def test_nothing_pending_skips_without_any_call(
    conn_id: str, emulator: EmulatorProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW__CTXCACHE__ALLOWED_ROOTS", str(tmp_path))
    (tmp_path / "in.jsonl").write_text(json.dumps({"key": "k1", "request": {"contents": "Hi?"}}) + "\n")
    (tmp_path / "out").mkdir()
    answer = {"key": "k1", "response": {"candidates": [{"content": {"parts": [{"text": "Hello"}]}}]}}
    (tmp_path / "out" / "part-20260101T000000000000Z-00000000-00000.jsonl").write_text(
        json.dumps(answer) + "\n"
    )
    operator = create_op(conn_id, input_uri=str(tmp_path / "in.jsonl"), output_uri=str(tmp_path / "out"))

    with pytest.raises(AirflowSkipException, match="Nothing to ask"):
        operator.execute(task_context())
    assert sum(emulator.admin.state()["counts"].values()) == 0


def test_a_bad_prompt_fails_before_any_call(conn_id: str, emulator: EmulatorProcess) -> None:
    with pytest.raises(CtxCacheConfigError, match=r"^prompts\[1\]"):
        create_op(conn_id, prompts=["fine?", 42]).execute(task_context())
    assert sum(emulator.admin.state()["counts"].values()) == 0


# ---- storage -------------------------------------------------------------------------------------


def test_the_deleting_task_is_charged_the_storage_of_the_whole_life(
    conn_id: str, emulator: EmulatorProcess
) -> None:
    name = create_op(conn_id, ttl="2h").execute(task_context())
    emulator.admin.faults(clock_skip_s=5400, ops=["delete_cache"])  # deleted 1.5 h after its creation
    context = task_context()

    assert DeleteCacheOperator(task_id="delete", cache_name=name, ctxcache_conn_id=conn_id).execute(context)

    life = emulator.admin.usage_summary()["caches"][name]
    held = seconds(life["ended"]) - seconds(life["created"])
    cost = context["ti"].pushed["cost"]
    assert cost["storage_seconds"] == pytest.approx(held, abs=1.0)
    assert cost["charged"]["storage"] == pytest.approx(TOKENS * 1.00 / 1e6 * held / 3600, rel=1e-3)


def test_a_delete_that_finds_the_cache_gone_is_charged_nothing_and_says_why(conn_id: str) -> None:
    name = create_op(conn_id).execute(task_context())
    ContextCacheHook(conn_id).delete_cache(name)
    context = task_context()

    assert (
        DeleteCacheOperator(task_id="delete", cache_name=name, ctxcache_conn_id=conn_id).execute(context)
        is False
    )

    cost = context["ti"].pushed["cost"]
    assert cost["total"] == 0.0
    assert "already gone" in cost["notes"][0]


def test_a_bad_price_override_does_not_stop_the_delete(
    conn_id: str, emulator: EmulatorProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    name = create_op(conn_id).execute(task_context())
    operator = DeleteCacheOperator(
        task_id="delete", cache_name=name, ctxcache_conn_id=conn_id, prices={"input_per_million": -1}
    )
    context = task_context()

    assert operator.execute(context) is True

    assert emulator.admin.state()["caches"] == []
    assert context["ti"].pushed["cost"]["price"] == "price unknown"
    assert "prices.input_per_million" in capsys.readouterr().out


def test_a_sensor_that_sees_the_cache_lapse_is_charged_its_storage(
    conn_id: str, emulator: EmulatorProcess
) -> None:
    name = create_op(conn_id, ttl="2s").execute(task_context())
    context = task_context()
    sensor = CacheExpirySensor(
        task_id="wait",
        cache_name=name,
        ctxcache_conn_id=conn_id,
        deferrable=False,
        poke_interval=0.2,
        timeout=60,
    )

    sensor.execute(cast(Context, context))

    (created,) = [e for e in emulator.admin.usage() if e["type"] == "cache_created"]
    life = seconds(created["expireTime"]) - seconds(created["createTime"])
    cost = context["ti"].pushed["cost"]
    assert cost["storage_seconds"] == pytest.approx(life, abs=1e-3)
    assert cost["charged"]["storage"] == pytest.approx(TOKENS * 1.00 / 1e6 * life / 3600, rel=1e-3)
