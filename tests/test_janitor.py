"""The gc rule on its own: which caches go, which stay, and the reason given for each."""

from __future__ import annotations

import datetime as dt

from google.genai import types

from airflow_provider_ctxcache.cache_owner import display_name
from airflow_provider_ctxcache.janitor import DELETE, KEEP, decide

NOW = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.timezone.utc)
RUN_KEY = "ctxcache:r:0123456789abcdef:fedcba9876543210"
STATES = {("d", "ok"): "success", ("d", "bad"): "failed", ("d", "busy"): "running", ("d", "wait"): "queued"}


def cache(name: str, display: str | None, *, age_hours: float = 0.1) -> types.CachedContent:
    return types.CachedContent(
        name=f"cachedContents/{name}", display_name=display, create_time=NOW - dt.timedelta(hours=age_hours)
    )


def run_cache(name: str, run_id: str, *, age_hours: float = 0.1) -> types.CachedContent:
    return cache(name, display_name(RUN_KEY, prefix=None, dag_id="d", run_id=run_id), age_hours=age_hours)


def verdicts(caches: list[types.CachedContent], older_than: dt.timedelta | None = None) -> dict[str, str]:
    decided = decide(caches, lambda d, r: STATES.get((d, r)), now=NOW, older_than=older_than)
    return {d.name.split("/")[1]: f"{d.verdict}: {d.reason}" for d in decided}


def test_finished_and_missing_runs_go_live_runs_stay() -> None:
    got = verdicts(
        [
            run_cache("ok", "ok"),
            run_cache("bad", "bad"),
            run_cache("gone", "gone"),
            run_cache("busy", "busy"),
            run_cache("wait", "wait"),
        ]
    )
    assert got == {
        "ok": f"{DELETE}: run d/ok finished (success)",
        "bad": f"{DELETE}: run d/bad finished (failed)",
        "gone": f"{DELETE}: run d/gone no longer exists",
        "busy": f"{KEEP}: run d/busy is running",
        "wait": f"{KEEP}: run d/wait is queued",
    }


def test_content_foreign_and_unattributed_caches_stay_without_an_age_limit() -> None:
    got = verdicts(
        [
            cache("content", "shared ctxcache:c:0123456789abcdef01234567", age_hours=100),
            cache("foreign", "someone's", age_hours=100),
            cache("unnamed", None, age_hours=100),
            cache("legacy", f"d {RUN_KEY}", age_hours=100),
        ]
    )
    assert {name: text.split(":")[0] for name, text in got.items()} == dict.fromkeys(
        ("content", "foreign", "unnamed", "legacy"), KEEP
    )
    assert "shared across runs" in got["content"]
    assert "not made by this provider" in got["foreign"]


def test_older_than_takes_any_provider_cache_past_it_even_of_a_running_run_but_never_a_foreign_one() -> None:
    got = verdicts(
        [
            cache("content", "shared ctxcache:c:0123456789abcdef01234567", age_hours=3),
            run_cache("busy", "busy", age_hours=3),
            cache("legacy", f"d {RUN_KEY}", age_hours=3),
            run_cache("young", "busy", age_hours=1),
            cache("foreign", "someone's", age_hours=3),
        ],
        older_than=dt.timedelta(hours=2),
    )
    assert got["content"] == f"{DELETE}: older than 2 h (made 3 h ago)"
    assert got["busy"] == f"{DELETE}: older than 2 h (made 3 h ago); its run d/busy is running"
    assert got["legacy"].startswith(DELETE)
    assert got["young"] == f"{KEEP}: run d/busy is running"
    assert got["foreign"].startswith(KEEP)


def test_each_run_is_looked_up_once() -> None:
    asked: list[tuple[str, str]] = []

    def lookup(dag_id: str, run_id: str) -> str:
        asked.append((dag_id, run_id))
        return "running"

    decide([run_cache("a", "busy"), run_cache("b", "busy")], lookup, now=NOW)
    assert asked == [("d", "busy")]
