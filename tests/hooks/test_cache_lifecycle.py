"""ContextCacheHook drives the whole cache lifecycle on both backends, over HTTP, through google-genai."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from airflow_provider_ctxcache.emulator.process import EmulatorProcess
from airflow_provider_ctxcache.emulator.tokens import text_of_tokens
from airflow_provider_ctxcache.exceptions import CacheNotFoundError
from airflow_provider_ctxcache.hooks import ContextCacheHook

MODEL = "gemini-2.5-flash"
CONTEXT = text_of_tokens(2500)


def create(hook: ContextCacheHook, **kwargs: object) -> str:
    cache = hook.create_cache(model=MODEL, contents=[CONTEXT], **kwargs)  # type: ignore[arg-type]
    assert cache.name
    return cache.name


def live_names(emulator: EmulatorProcess) -> list[str]:
    return [c["name"] for c in emulator.admin.state()["caches"]]


def test_create_cache_returns_the_name_the_emulator_holds(
    hook: ContextCacheHook, emulator: EmulatorProcess
) -> None:
    name = create(hook, display_name="contracts")
    assert live_names(emulator) == [name]
    prefix = (
        "projects/test-project/locations/us-central1/cachedContents/"
        if hook.backend.name == "vertex_ai"
        else "cachedContents/"
    )
    assert name.startswith(prefix)


def test_create_cache_sends_a_human_ttl_as_seconds(hook: ContextCacheHook, emulator: EmulatorProcess) -> None:
    create(hook, ttl="90m")
    (request,) = [r for r in emulator.admin.requests() if r["op"] == "create_cache"]
    assert request["body"]["ttl"] == "5400s"


def test_create_cache_with_expire_time_expires_then(hook: ContextCacheHook) -> None:
    when = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=3)).replace(microsecond=0)
    name = create(hook, expire_time=when)
    assert hook.get_cache(name).expire_time == when


def test_get_cache_reports_model_tokens_and_expiry(hook: ContextCacheHook) -> None:
    name = create(hook, ttl=600, display_name="contracts")
    cache = hook.get_cache(name)
    assert cache.display_name == "contracts"
    assert cache.model is not None
    assert cache.model.endswith(MODEL)
    assert cache.usage_metadata is not None
    assert cache.usage_metadata.total_token_count == 2500
    assert cache.expire_time is not None
    remaining = cache.expire_time - dt.datetime.now(dt.timezone.utc)
    assert dt.timedelta(seconds=590) < remaining <= dt.timedelta(seconds=600)


def test_get_cache_after_expiry_raises_cache_not_found(
    hook: ContextCacheHook, emulator: EmulatorProcess
) -> None:
    name = create(hook, ttl="60s")
    emulator.admin.advance_clock(61)
    with pytest.raises(CacheNotFoundError, match="expired, was deleted"):
        hook.get_cache(name)


def test_list_caches_walks_every_page(hook: ContextCacheHook, emulator: EmulatorProcess) -> None:
    names = {create(hook, display_name=f"c{i}") for i in range(5)}
    listed = hook.list_caches(page_size=2)
    assert {c.name for c in listed} == names
    assert emulator.admin.state()["counts"]["list_caches"] == 3


def test_list_caches_filters_by_display_name(hook: ContextCacheHook) -> None:
    wanted = create(hook, display_name="wanted")
    create(hook, display_name="other")
    assert [c.name for c in hook.list_caches(display_name="wanted")] == [wanted]


def test_update_cache_ttl_replaces_the_expiry(hook: ContextCacheHook) -> None:
    name = create(hook, ttl="60s")
    cache = hook.update_cache_ttl(name, ttl="2h")
    assert cache.expire_time is not None
    remaining = cache.expire_time - dt.datetime.now(dt.timezone.utc)
    assert dt.timedelta(minutes=119) < remaining <= dt.timedelta(hours=2)


def test_update_cache_to_an_expire_time(hook: ContextCacheHook) -> None:
    name = create(hook)
    when = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)).replace(microsecond=0)
    assert hook.update_cache_ttl(name, expire_time=when.isoformat()).expire_time == when


def test_update_of_a_deleted_cache_raises_cache_not_found(hook: ContextCacheHook) -> None:
    name = create(hook)
    hook.delete_cache(name)
    with pytest.raises(CacheNotFoundError) as raised:
        hook.update_cache_ttl(name, ttl="1h")
    assert raised.value.cache_name == name


def test_delete_cache_is_true_once_then_false(hook: ContextCacheHook, emulator: EmulatorProcess) -> None:
    name = create(hook)
    assert hook.delete_cache(name) is True
    assert live_names(emulator) == []
    assert hook.delete_cache(name) is False


def test_count_tokens_counts_contents_and_system_instruction(hook: ContextCacheHook) -> None:
    assert hook.count_tokens(model=MODEL, contents=[CONTEXT]) == 2500
    with_instruction = hook.count_tokens(
        model=MODEL, contents=[CONTEXT], system_instruction=text_of_tokens(100)
    )
    assert with_instruction == 2600


def test_generate_with_cache_bills_the_cached_tokens(hook: ContextCacheHook) -> None:
    name = create(hook)
    response = hook.generate(model=MODEL, contents="What does clause one say?", cache_name=name)
    usage = response.usage_metadata
    assert usage is not None
    assert usage.cached_content_token_count == 2500
    assert usage.prompt_token_count is not None
    assert usage.prompt_token_count > 2500
    assert response.text


def test_generate_answers_depend_on_the_cached_context(hook: ContextCacheHook) -> None:
    first = create(hook, display_name="a")
    second = hook.create_cache(model=MODEL, contents=[text_of_tokens(2400)]).name
    assert second
    prompt = "Summarise the context."
    assert (
        hook.generate(model=MODEL, contents=prompt, cache_name=first).text
        != hook.generate(model=MODEL, contents=prompt, cache_name=second).text
    )
    assert (
        hook.generate(model=MODEL, contents=prompt, cache_name=first).text
        == hook.generate(model=MODEL, contents=prompt, cache_name=first).text
    )


def test_async_methods_share_the_connection(hook: ContextCacheHook, emulator: EmulatorProcess) -> None:
    name = create(hook, ttl="60s")

    async def lifecycle() -> tuple[int | None, bool, bool]:
        cache = await hook.aget_cache(name)
        await hook.aupdate_cache_ttl(name, ttl="1h")
        answer = await hook.agenerate(model=MODEL, contents="hello", cache_name=name)
        assert answer.usage_metadata is not None
        deleted = await hook.adelete_cache(name)
        again = await hook.adelete_cache(name)
        await hook.aclose()
        assert cache.usage_metadata is not None
        return answer.usage_metadata.cached_content_token_count, deleted, again

    assert asyncio.run(lifecycle()) == (2500, True, False)
    counts = emulator.admin.state()["counts"]
    assert counts["update_cache"] == 1
    assert counts["generate_content"] == 1
