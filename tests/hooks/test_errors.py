"""The SDK's errors arrive as the provider's named cases, with what a user needs to act."""

from __future__ import annotations

import pytest
from google.genai import Client, errors, types

from airflow_provider_ctxcache.emulator.process import EmulatorProcess
from airflow_provider_ctxcache.emulator.tokens import text_of_tokens
from airflow_provider_ctxcache.exceptions import (
    CacheNotFoundError,
    CacheTooSmallError,
    CtxCacheApiError,
    ForbiddenWithCacheError,
    ModelNotFoundError,
    QuotaExceededError,
    translate_api_error,
)
from airflow_provider_ctxcache.hooks import ContextCacheHook
from tests.hooks.conftest import ConnFactory, backend_extra

MODEL = "gemini-2.5-flash"


def test_content_below_the_minimum_raises_too_small_with_both_counts(hook: ContextCacheHook) -> None:
    with pytest.raises(CacheTooSmallError) as raised:
        hook.create_cache(model=MODEL, contents=[text_of_tokens(300)])
    assert (raised.value.token_count, raised.value.minimum) == (300, 1024)
    assert "300 tokens" in str(raised.value)
    assert "1024" in str(raised.value)


def test_missing_cache_is_cache_not_found_on_each_backend(
    hook: ContextCacheHook, emulator: EmulatorProcess
) -> None:
    name = hook.create_cache(model=MODEL, contents=[text_of_tokens(1100)]).name
    assert name
    hook.delete_cache(name)
    with pytest.raises(CacheNotFoundError):
        hook.get_cache(name)
    with pytest.raises(CacheNotFoundError):
        hook.generate(model=MODEL, contents="hi", cache_name=name)
    statuses = emulator.admin.state()["status_counts"]["get_cache"]
    missing = "404" if hook.backend == "vertex_ai" else "403"
    assert statuses[missing] == 1


def test_forbidden_fields_are_refused_before_any_call(
    hook: ContextCacheHook, emulator: EmulatorProcess
) -> None:
    name = hook.create_cache(model=MODEL, contents=[text_of_tokens(1100)]).name
    assert name
    with pytest.raises(ForbiddenWithCacheError, match="system_instruction, tools") as raised:
        hook.generate(
            model=MODEL,
            contents="hi",
            cache_name=name,
            config={"system_instruction": "be terse", "tools": [{"code_execution": {}}]},
        )
    assert raised.value.fields == ["system_instruction", "tools"]
    assert emulator.admin.state()["counts"].get("generate_content", 0) == 0


def test_server_side_forbidden_fields_error_maps_to_the_same_case(emulator: EmulatorProcess) -> None:
    client = Client(api_key="k", http_options=types.HttpOptions(base_url=emulator.url, api_version="v1beta"))
    cache = client.caches.create(model=MODEL, config={"contents": [text_of_tokens(1100)]})
    with pytest.raises(errors.APIError) as raised:
        client.models.generate_content(
            model=MODEL, contents="hi", config={"cached_content": cache.name, "system_instruction": "x"}
        )
    assert isinstance(translate_api_error(raised.value, cache_name=cache.name), ForbiddenWithCacheError)


def test_quota_error_keeps_the_servers_retry_delay(
    backend: str, emulator: EmulatorProcess, make_conn: ConnFactory
) -> None:
    conn_id = make_conn("ctxcache_quota", **backend_extra(backend, emulator))
    hook = ContextCacheHook(conn_id, retry_attempts=1)
    emulator.admin.faults(error_rate_429=1.0, retry_delay_s=7, seed=1)
    with pytest.raises(QuotaExceededError) as raised:
        hook.count_tokens(model=MODEL, contents="hello")
    assert raised.value.retry_delay == 7.0
    assert "retry after 7s" in str(raised.value)


def test_transient_503s_are_retried_by_the_sdk(hook: ContextCacheHook, emulator: EmulatorProcess) -> None:
    emulator.admin.faults(error_rate_503=0.5, seed=3, ops=["count_tokens"])
    for _ in range(6):
        assert hook.count_tokens(model=MODEL, contents=text_of_tokens(10)) == 10
    statuses = emulator.admin.state()["status_counts"]["count_tokens"]
    assert statuses["200"] == 6
    assert statuses.get("503", 0) > 0


def test_unknown_model_is_a_config_error_naming_the_model(hook: ContextCacheHook) -> None:
    with pytest.raises(
        ModelNotFoundError, match=r"^model: 'gemini-0-nonexistent' is not a model this backend serves"
    ):
        hook.count_tokens(model="gemini-0-nonexistent", contents="hello")


def test_other_api_errors_keep_their_code_and_status() -> None:
    error = errors.ServerError(500, {"error": {"code": 500, "status": "INTERNAL", "message": "boom"}})
    translated = translate_api_error(error, model="gemini-2.5-flash")
    assert isinstance(translated, CtxCacheApiError)
    assert (translated.code, translated.status) == (500, "INTERNAL")


def test_vertex_invalid_resource_state_means_the_cache_is_gone() -> None:
    # Vertex may answer a deleted cache this way; the emulator does not, so the body is built here.
    error = errors.ClientError(
        400,
        {
            "error": {
                "code": 400,
                "status": "INVALID_ARGUMENT",
                "message": "Invalid resource state for cache content.",
            }
        },
    )
    translated = translate_api_error(error, cache_name="projects/p/locations/l/cachedContents/1")
    assert isinstance(translated, CacheNotFoundError)


def test_non_api_errors_pass_through_unchanged() -> None:
    error = TimeoutError("slow")
    assert translate_api_error(error) is error
