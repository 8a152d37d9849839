"""The run a cache's display name carries: written by the create operator, read back by the janitor."""

from __future__ import annotations

import pytest

from airflow_provider_ctxcache.cache_owner import DISPLAY_NAME_LIMIT, display_name, owner_of
from airflow_provider_ctxcache.operators.create_cache import cache_key
from airflow_provider_ctxcache.staging import key_of

RUN_KEY = "ctxcache:r:0123456789abcdef:fedcba9876543210"
NEVER_KEY = "ctxcache:n:00112233445566ff"
CONTENT_KEY = "ctxcache:c:0123456789abcdef01234567"
RUN_ID = "manual__2026-11-30T10:00:00.123456+00:00"


def test_a_run_cache_names_its_dag_and_run_between_the_prefix_and_the_key() -> None:
    name = display_name(RUN_KEY, prefix="contracts", dag_id="review", run_id=RUN_ID)

    assert name == f"contracts @review/{RUN_ID} {RUN_KEY}"
    owner = owner_of(name)
    assert owner is not None
    assert (owner.kind, owner.dag_id, owner.run_id, owner.prefix) == ("r", "review", RUN_ID, "contracts")
    assert owner.run_owned
    assert owner.attributed
    assert key_of(name) == RUN_KEY


def test_the_name_is_the_same_on_every_try_of_a_run_so_a_retry_finds_its_cache() -> None:
    key = cache_key("run", fingerprint_hex="ab" * 32, dag_id="d", task_id="t", run_id=RUN_ID, map_index=-1)
    first = display_name(key, prefix="x", dag_id="d", run_id=RUN_ID)
    assert display_name(key, prefix="x", dag_id="d", run_id=RUN_ID) == first


@pytest.mark.parametrize("prefix", [None, "", "review"])
def test_no_prefix_or_the_dag_id_as_prefix_is_left_out(prefix: str | None) -> None:
    name = display_name(NEVER_KEY, prefix=prefix, dag_id="review", run_id=RUN_ID)
    assert name == f"@review/{RUN_ID} {NEVER_KEY}"
    owner = owner_of(name)
    assert owner is not None
    assert (owner.kind, owner.dag_id, owner.run_id) == ("n", "review", RUN_ID)


def test_a_long_prefix_is_cut_first_and_the_run_kept() -> None:
    name = display_name(RUN_KEY, prefix="p" * 200, dag_id="review", run_id=RUN_ID)

    assert len(name) == DISPLAY_NAME_LIMIT
    owner = owner_of(name)
    assert owner is not None
    assert (owner.dag_id, owner.run_id) == ("review", RUN_ID)
    assert owner.prefix == "p" * (DISPLAY_NAME_LIMIT - len(f" @review/{RUN_ID} {RUN_KEY}"))


def test_ids_too_long_to_fit_drop_the_run_and_leave_a_run_cache_without_one() -> None:
    dag_id = "d" * 90
    name = display_name(RUN_KEY, prefix="contracts", dag_id=dag_id, run_id=RUN_ID)

    assert name == f"contracts {RUN_KEY}"
    owner = owner_of(name)
    assert owner is not None
    assert owner.run_owned
    assert not owner.attributed
    # Without a prefix, the DAG id leads as before, cut to fit.
    bare = display_name(RUN_KEY, prefix=None, dag_id=dag_id, run_id=RUN_ID)
    assert len(bare) <= DISPLAY_NAME_LIMIT
    assert bare.endswith(f" {RUN_KEY}")
    assert bare.startswith("ddd")


def test_a_prefix_that_looks_like_a_run_is_not_read_as_one_when_the_real_run_was_dropped() -> None:
    name = display_name(RUN_KEY, prefix="see @other_dag/other_run", dag_id="d" * 90, run_id=RUN_ID)
    owner = owner_of(name)
    assert owner is not None
    assert not owner.attributed


@pytest.mark.parametrize(
    "run_id",
    ["scheduled__2026-11-30T00:00:00+00:00", "my run/with slash", "50% done", "été ☀", "a@b:c+d~e"],
)
def test_any_run_id_reads_back_exactly(run_id: str) -> None:
    name = display_name(RUN_KEY, prefix="contracts", dag_id="my.dag-1", run_id=run_id)
    owner = owner_of(name)
    assert owner is not None
    assert (owner.dag_id, owner.run_id) == ("my.dag-1", run_id)
    assert " " not in name.removeprefix("contracts ").removesuffix(f" {RUN_KEY}")


def test_content_caches_keep_the_name_they_had_and_carry_no_run() -> None:
    name = display_name(CONTENT_KEY, prefix="shared", dag_id="daily", run_id=RUN_ID)

    assert name == f"shared {CONTENT_KEY}"
    assert display_name(CONTENT_KEY, prefix=None, dag_id="daily", run_id=RUN_ID) == f"daily {CONTENT_KEY}"
    owner = owner_of(name)
    assert owner is not None
    assert owner.kind == "c"
    assert not owner.run_owned
    assert not owner.attributed


def test_a_content_name_that_looks_attributed_is_still_not_run_owned() -> None:
    owner = owner_of(f"@review/{RUN_ID} {CONTENT_KEY}")
    assert owner is not None
    assert owner.dag_id is None


def test_names_written_before_runs_were_recorded_are_run_caches_without_a_run() -> None:
    owner = owner_of(f"review {RUN_KEY}")
    assert owner is not None
    assert owner.kind == "r"
    assert not owner.attributed


@pytest.mark.parametrize("name", [None, "", "contracts", "someone's cache @dag/run"])
def test_names_without_the_providers_key_have_no_owner(name: str | None) -> None:
    assert owner_of(name) is None


def test_the_ui_caches_view_shows_the_dag_and_run_that_made_a_cache() -> None:
    import datetime as dt

    from google.genai import types

    from airflow_provider_ctxcache.plugins.caches_view import _row

    now = dt.datetime.now(dt.timezone.utc)
    name = display_name(RUN_KEY, prefix="contracts", dag_id="review", run_id=RUN_ID)
    row = _row(types.CachedContent(name="cachedContents/a", display_name=name), now)
    assert (row["dag_id"], row["run_id"]) == ("review", RUN_ID)
    foreign = _row(types.CachedContent(name="cachedContents/b", display_name="someone's"), now)
    assert (foreign["dag_id"], foreign["run_id"]) == (None, None)
