"""Hardening, round two: caches that leaked, were made twice, or were someone else's (issue 11, 11-14).

Real operators, real HTTP, the real emulator: each test is a way a cache used to stay billed
with no task to delete it, or to answer from content it was not made from.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from airflow_provider_ctxcache.emulator.process import EmulatorProcess
from airflow_provider_ctxcache.emulator.tokens import text_of_tokens
from airflow_provider_ctxcache.exceptions import CtxCacheConfigError
from airflow_provider_ctxcache.hooks import ContextCacheHook
from airflow_provider_ctxcache.operators import CreateCacheOperator
from tests.hooks.conftest import ConnFactory, backend_extra
from tests.operators.context import task_context

MODEL = "gemini-2.5-flash"
CONTENT = text_of_tokens(2200)


def create_op(conn_id: str, **kwargs: Any) -> CreateCacheOperator:
    arguments: dict[str, Any] = {"task_id": "create", "model": MODEL, "contents": [CONTENT], "ttl": "30m"}
    arguments.update(kwargs)
    return CreateCacheOperator(ctxcache_conn_id=conn_id, **arguments)


def live(emulator: EmulatorProcess) -> list[dict[str, Any]]:
    return list(emulator.admin.state()["caches"])


# ---- 11: a create that got no answer, though the service made the cache --------------------------


def test_a_create_that_times_out_after_the_service_made_the_cache_uses_it_instead_of_leaking_it(
    emulator: EmulatorProcess, make_conn: ConnFactory
) -> None:
    conn_id = make_conn("ctxcache_slow_create", **backend_extra("gemini_api", emulator), timeout=1)
    # The service answers after 3 s; the client gives up after 1 s, while the cache is being made.
    emulator.admin.faults(latency_ms=3000, ops=["create_cache"])
    context = task_context()

    name = create_op(conn_id).execute(context)

    assert [cache["name"] for cache in live(emulator)] == [name]
    assert emulator.admin.state()["counts"]["create_cache"] == 1
    assert context["ti"].pushed["reused"] is False


# ---- 12: runs that reuse content, at the same moment -----------------------------------------------


def test_four_simultaneous_runs_with_reuse_content_end_with_one_cache_they_all_use(
    conn: str, emulator: EmulatorProcess
) -> None:
    # Each create takes 2 s, so all four runs look for a cache before any exists, and all create.
    emulator.admin.faults(latency_ms=2000, ops=["create_cache"])
    names: dict[int, str] = {}
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            names[index] = create_op(conn, reuse="content").execute(task_context(run_id=f"run_{index}"))
        except BaseException as error:  # reported below, not lost in the thread
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    (cache,) = live(emulator)
    assert set(names.values()) == {cache["name"]}
    assert emulator.admin.state()["counts"]["create_cache"] == 4


# ---- 13: every cache can be attributed -------------------------------------------------------------


def test_a_cache_made_with_reuse_never_carries_its_key(conn: str, emulator: EmulatorProcess) -> None:
    create_op(conn, reuse="never").execute(task_context())
    (cache,) = live(emulator)
    assert " ctxcache:n:" in f" {cache['displayName']}"


# ---- 14: a cache planted under this task's display name --------------------------------------------


@pytest.fixture
def planted_name(conn: str) -> str:
    """The display name this task gives its cache (from a first run whose cache is then deleted)."""
    hook = ContextCacheHook(conn)
    name = create_op(conn).execute(task_context())
    display_name = hook.get_cache(name).display_name
    assert display_name
    hook.delete_cache(name)
    return display_name


def test_a_planted_cache_with_other_content_is_refused_naming_both_sizes(
    conn: str, emulator: EmulatorProcess, planted_name: str
) -> None:
    ContextCacheHook(conn).create_cache(
        model=MODEL, contents=[text_of_tokens(5000)], ttl="30m", display_name=planted_name
    )

    with pytest.raises(
        CtxCacheConfigError, match=r"^reuse: .*holds 5,\d{3} tokens, while this content counts 2,2"
    ):
        create_op(conn).execute(task_context())
    assert len(live(emulator)) == 1


def test_a_planted_cache_of_another_model_is_refused_naming_it(
    conn: str, emulator: EmulatorProcess, planted_name: str
) -> None:
    ContextCacheHook(conn).create_cache(
        model="gemini-2.5-pro", contents=[CONTENT], ttl="30m", display_name=planted_name
    )

    with pytest.raises(
        CtxCacheConfigError, match=r"^reuse: .*model 'gemini-2.5-pro', not 'gemini-2.5-flash'"
    ):
        create_op(conn).execute(task_context())
