"""The hook is a plain API wrapper: one SDK call per method, retried only where the caller asks.

Staging, reuse and fan-out live in the operators and the engine that call it; the hook builds
no second hook, and deleting a cache deletes the cache only.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from airflow_provider_ctxcache.emulator.process import EmulatorProcess
from airflow_provider_ctxcache.emulator.tokens import text_of_tokens
from airflow_provider_ctxcache.exceptions import CtxCacheApiError, CtxCacheConfigError
from airflow_provider_ctxcache.hooks import ContextCacheHook
from airflow_provider_ctxcache.operators import CreateCacheOperator
from tests.hooks.conftest import ConnFactory, backend_extra
from tests.in_flight import wait_until_idle
from tests.operators.context import task_context

MODEL = "gemini-2.5-flash"
MB = 1024 * 1024


def generate_calls(emulator: EmulatorProcess) -> int:
    return len([r for r in emulator.admin.requests() if r["op"] == "generate_content"])


@pytest.mark.parametrize(
    ("retries", "calls"),
    [(False, 1), (True, 4)],
    ids=["without-retries-one-attempt", "by-default-the-connections-retries"],
)
def test_agenerate_retries_only_when_asked(
    emulator: EmulatorProcess, make_conn: ConnFactory, retries: bool, calls: int
) -> None:
    hook = ContextCacheHook(make_conn("plain_gen", retry_attempts=4, **backend_extra("gemini_api", emulator)))
    emulator.admin.faults(error_rate_503=1.0, ops=["generate_content"])

    with pytest.raises(CtxCacheApiError) as raised:
        asyncio.run(hook.agenerate(model=MODEL, contents="hi", retries=retries))

    assert raised.value.code == 503
    assert generate_calls(emulator) == calls


def test_a_prepared_generation_config_serves_every_call_unchanged(
    emulator: EmulatorProcess, make_conn: ConnFactory
) -> None:
    hook = ContextCacheHook(make_conn("plain_prepared", **backend_extra("gemini_api", emulator)))
    cache = hook.create_cache(model=MODEL, contents=[text_of_tokens(2100)], ttl="600s").name
    assert cache
    prepared = hook.generation_config({"temperature": 0.2}, cache)
    assert hook.generation_config(prepared, cache) is prepared  # prepared once, never copied again

    async def ask_twice() -> list[int | None]:
        answers = []
        for _ in range(2):
            response = await hook.agenerate(
                model=MODEL, contents="hi", cache_name=cache, config=prepared, retries=False
            )
            answers.append(
                response.usage_metadata.cached_content_token_count if response.usage_metadata else None
            )
        await hook.aclose()
        return answers

    assert asyncio.run(ask_twice()) == [2100, 2100]
    sent = [r["body"] for r in emulator.admin.requests() if r["op"] == "generate_content"]
    assert [(b["cachedContent"], b["generationConfig"]["temperature"]) for b in sent] == [(cache, 0.2)] * 2
    assert prepared.cached_content == cache
    assert prepared.automatic_function_calling is not None
    assert prepared.automatic_function_calling.disable


def test_the_test_button_makes_one_list_call_on_a_failing_server(
    emulator: EmulatorProcess, make_conn: ConnFactory
) -> None:
    hook = ContextCacheHook(
        make_conn("plain_test", retry_attempts=4, **backend_extra("gemini_api", emulator))
    )
    emulator.admin.faults(error_rate_503=1.0, ops=["list_caches"])

    ok, message = hook.test_connection()

    assert not ok
    assert "503" in message
    assert len([r for r in emulator.admin.requests() if r["op"] == "list_caches"]) == 1


def test_deleting_a_cache_through_the_hook_leaves_its_staged_files_to_the_operator(
    emulator: EmulatorProcess, make_conn: ConnFactory, tmp_path: Path
) -> None:
    conn_id = make_conn("plain_staged", **backend_extra("gemini_api", emulator))
    video = tmp_path / "talk.mp4"
    video.write_bytes(os.urandom(11 * MB))
    name = CreateCacheOperator(
        task_id="create_cache",
        ctxcache_conn_id=conn_id,
        model=MODEL,
        contents=[text_of_tokens(2100), {"file": str(video)}],
        allowed_roots=[str(tmp_path)],
    ).execute(task_context())

    assert ContextCacheHook(conn_id).delete_cache(name)

    state = emulator.admin.state()
    assert state["caches"] == []
    assert [f["sizeBytes"] for f in state["files"]] == [str(11 * MB)]


def test_agenerate_checks_the_model_and_cache_of_every_call(
    emulator: EmulatorProcess, make_conn: ConnFactory
) -> None:
    """A good call before does not let a shut-down model or a bad cache name through."""
    hook = ContextCacheHook(make_conn("plain_checks", **backend_extra("gemini_api", emulator)))

    async def calls() -> None:
        await hook.agenerate(model=MODEL, contents="hi", retries=False)
        with pytest.raises(CtxCacheConfigError, match=r"^model: 'gemini-3-pro-preview' was shut down"):
            await hook.agenerate(model="gemini-3-pro-preview", contents="hi", retries=False)
        with pytest.raises(CtxCacheConfigError, match=r"^cache_name: 'not a cache!' is not a cache name"):
            await hook.agenerate(model=MODEL, contents="hi", cache_name="not a cache!", retries=False)
        await hook.agenerate(model=MODEL, contents="hi", retries=False)

    asyncio.run(calls())

    assert generate_calls(emulator) == 2


def test_a_single_attempt_call_ends_at_the_connections_timeout(
    emulator: EmulatorProcess, make_conn: ConnFactory
) -> None:
    hook = ContextCacheHook(make_conn("plain_deadline", timeout=1, **backend_extra("gemini_api", emulator)))
    emulator.admin.faults(latency_ms=3000, ops=["generate_content"])  # past the 1 s deadline

    with pytest.raises(TimeoutError, match=r"no answer within 1 s \(the connection's extra.timeout\)"):
        asyncio.run(hook.agenerate(model=MODEL, contents="hi", retries=False))
    wait_until_idle(emulator)  # the abandoned call, still held by the emulator


@pytest.mark.parametrize("retries", [False, True], ids=["single-attempt", "with-retries"])
def test_every_call_tells_the_service_its_deadline(
    emulator: EmulatorProcess, make_conn: ConnFactory, retries: bool
) -> None:
    conn = make_conn(f"plain_header_{retries}", timeout=7.5, **backend_extra("gemini_api", emulator))
    hook = ContextCacheHook(conn)

    asyncio.run(hook.agenerate(model=MODEL, contents="hi", retries=retries))

    [call] = [r for r in emulator.admin.requests() if r["op"] == "generate_content"]
    assert call["server_timeout"] == "8"  # whole seconds, rounded up, as google-genai sends it
