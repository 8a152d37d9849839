"""The SDK's errors arrive as the provider's named cases, with what a user needs to act."""

from __future__ import annotations

from typing import Any

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
from airflow_provider_ctxcache.hooks.backend import DeveloperApi, VertexAi
from airflow_provider_ctxcache.hooks.settings import ConnectionSettings
from tests.hooks.conftest import ConnFactory, backend_extra

MODEL = "gemini-2.5-flash"


def test_content_below_the_minimum_raises_too_small_with_both_counts(hook: ContextCacheHook) -> None:
    with pytest.raises(CacheTooSmallError) as raised:
        hook.create_cache(model=MODEL, contents=[text_of_tokens(300)])
    assert (raised.value.token_count, raised.value.minimum) == (300, 2048)
    assert "300 tokens" in str(raised.value)
    assert "2048" in str(raised.value)


def test_missing_cache_is_cache_not_found_on_each_backend(
    hook: ContextCacheHook, emulator: EmulatorProcess
) -> None:
    name = hook.create_cache(model=MODEL, contents=[text_of_tokens(2100)]).name
    assert name
    hook.delete_cache(name)
    with pytest.raises(CacheNotFoundError):
        hook.get_cache(name)
    with pytest.raises(CacheNotFoundError):
        hook.generate(model=MODEL, contents="hi", cache_name=name)
    statuses = emulator.admin.state()["status_counts"]["get_cache"]
    missing = "404" if hook.backend.name == "vertex_ai" else "403"
    assert statuses[missing] == 1


def test_forbidden_fields_are_refused_before_any_call(
    hook: ContextCacheHook, emulator: EmulatorProcess
) -> None:
    name = hook.create_cache(model=MODEL, contents=[text_of_tokens(2100)]).name
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
    cache = client.caches.create(model=MODEL, config={"contents": [text_of_tokens(2100)]})
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


def client_error(code: int, message: str, details: list[dict[str, Any]] | None = None) -> errors.ClientError:
    body: dict[str, Any] = {"code": code, "status": STATUS[code], "message": message}
    if details is not None:
        body["details"] = details
    return errors.ClientError(code, {"error": body})


STATUS = {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED"}
VERTEX = VertexAi(ConnectionSettings(conn_id="v", backend="vertex_ai", project="p", location="l"))
DEVELOPER = DeveloperApi(ConnectionSettings(conn_id="d", backend="gemini_api", api_key="k"))


def vertex_cache(emulator: EmulatorProcess, make_conn: ConnFactory) -> tuple[ContextCacheHook, str]:
    """A Vertex hook on the emulator and a fresh 60 s cache of its."""
    hook = ContextCacheHook(make_conn("ctxcache_vertex_errors", **backend_extra("vertex_ai", emulator)))
    name = hook.create_cache(model=MODEL, contents=[text_of_tokens(2100)], ttl="60s").name
    assert name
    return hook, name


def test_a_vertex_cache_in_an_invalid_resource_state_is_not_found(
    emulator: EmulatorProcess, make_conn: ConnFactory
) -> None:
    # Vertex may answer a cache whose deletion is completing with 400 "Invalid resource state".
    hook, name = vertex_cache(emulator, make_conn)
    emulator.admin.faults(deleted_state_s=300)
    hook.get_conn().caches.delete(name=name)

    with pytest.raises(CacheNotFoundError) as raised:
        hook.generate(model=MODEL, contents="hello", cache_name=name)
    assert raised.value.cache_name == name
    assert "Invalid resource state" in str(raised.value)
    assert emulator.admin.state()["status_counts"]["generate_content"] == {"400": 1}  # final: no retry
    assert hook.delete_cache(name) is False  # a teardown sees it as already gone


@pytest.mark.parametrize(
    ("message", "counts"),
    [
        (
            "The cached content is of 300 tokens. The minimum token count to start caching is 2048.",
            (300, 2048),
        ),
        ("Cached content is too small. total_token_count=16, min_total_token_count=1024", (16, 1024)),
    ],
    ids=["is-of-n-tokens", "total-token-count"],
)
def test_both_forms_of_too_small_carry_both_counts(message: str, counts: tuple[int, int]) -> None:
    for backend in (VERTEX, DEVELOPER):
        translated = backend.translate_error(client_error(400, message), model=MODEL)
        assert isinstance(translated, CacheTooSmallError)
        assert (translated.token_count, translated.minimum, translated.model) == (*counts, MODEL)


def test_each_backends_own_too_small_answer_is_mapped(hook: ContextCacheHook) -> None:
    with pytest.raises(errors.APIError) as raised:
        hook.get_conn().caches.create(model=MODEL, config={"contents": [text_of_tokens(300)]})
    message = str(raised.value.message)
    second_form = "total_token_count=300, min_total_token_count=2048" in message
    first_form = "is of 300 tokens" in message and "start caching is 2048" in message
    # The Developer API answers with the newer form, Vertex with the documented one.
    assert (second_form, first_form) == (
        (True, False) if hook.backend.name == "gemini_api" else (False, True)
    )
    translated = hook.backend.translate_error(raised.value, model=MODEL)
    assert isinstance(translated, CacheTooSmallError)
    assert (translated.token_count, translated.minimum) == (300, 2048)


def test_a_vertex_cache_that_just_expired_is_not_found_at_once(
    emulator: EmulatorProcess, make_conn: ConnFactory
) -> None:
    hook, name = vertex_cache(emulator, make_conn)
    emulator.admin.advance_clock(61)

    with pytest.raises(CacheNotFoundError) as raised:
        hook.get_cache(name)
    assert raised.value.cache_name == name
    assert "is expired" in str(raised.value)
    with pytest.raises(CacheNotFoundError) as raised:
        hook.generate(model=MODEL, contents="hello", cache_name=name)
    assert raised.value.cache_name == name
    state = emulator.admin.state()["status_counts"]
    assert state["get_cache"] == {"400": 1}
    assert state["generate_content"] == {"400": 1}  # a 400 is final: no retry

    emulator.admin.advance_clock(3600)  # past the grace period: 404
    with pytest.raises(CacheNotFoundError):
        hook.get_cache(name)
    assert emulator.admin.state()["status_counts"]["get_cache"] == {"400": 1, "404": 1}


def test_the_expired_answer_is_a_vertex_shape() -> None:
    error = client_error(400, "Cache content 5589162453544222720 is expired.")
    name = "projects/p/locations/l/cachedContents/5589162453544222720"
    assert isinstance(VERTEX.translate_error(error, cache_name=name), CacheNotFoundError)
    assert isinstance(translate_api_error(error, cache_name=name), CacheNotFoundError)
    # Without a cache in the call, a 400 stays a plain API error.
    assert isinstance(VERTEX.translate_error(error), CtxCacheApiError)


@pytest.mark.parametrize(
    ("limit", "word"), [({"rpm_limit": 1}, "Requests"), ({"tpm_limit": 40}, "Token")], ids=["rpm", "tpm"]
)
def test_quota_errors_expose_the_violated_quota_and_its_limit(
    backend: str, emulator: EmulatorProcess, make_conn: ConnFactory, limit: dict[str, int], word: str
) -> None:
    hook = ContextCacheHook(
        make_conn("ctxcache_quota_info", **backend_extra(backend, emulator)), retry_attempts=1
    )
    emulator.admin.faults(quota_window_s=30, **limit)
    hook.generate(model=MODEL, contents=text_of_tokens(30))
    with pytest.raises(QuotaExceededError) as raised:
        hook.generate(model=MODEL, contents=text_of_tokens(30))
    error = raised.value
    assert error.quota_value == next(iter(limit.values()))
    assert error.quota_id is not None
    assert word in error.quota_id
    service = "aiplatform" if backend == "vertex_ai" else "generativelanguage"
    assert error.quota_metric is not None
    assert error.quota_metric.startswith(f"{service}.googleapis.com/")
    assert error.retry_delay is not None
    assert 0 < error.retry_delay <= 30
    assert f"({error.quota_id}, limit {error.quota_value})" in str(error)


def test_quota_failure_details_are_read_defensively() -> None:
    retry = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1.5s"}
    failure = {
        "@type": "type.googleapis.com/google.rpc.QuotaFailure",
        "violations": [
            {"quotaMetric": "m/one", "quotaId": "IdOne", "quotaValue": "15"},
            {"quotaMetric": "m/two", "quotaId": "IdTwo", "quotaValue": "99"},
        ],
    }
    error = translate_api_error(client_error(429, "Resource exhausted.", [failure, retry]))
    assert isinstance(error, QuotaExceededError)
    assert (error.quota_metric, error.quota_id, error.quota_value, error.retry_delay) == (
        "m/one",
        "IdOne",
        15,
        1.5,
    )

    bare = translate_api_error(client_error(429, "Resource exhausted. Please try again later."))
    assert isinstance(bare, QuotaExceededError)
    assert (bare.quota_metric, bare.quota_id, bare.quota_value, bare.retry_delay) == (None, None, None, None)

    odd = {**failure, "violations": [{"quotaId": "IdOne", "quotaValue": "lots"}]}
    strange = translate_api_error(client_error(429, "x", [odd]))
    assert isinstance(strange, QuotaExceededError)
    assert (strange.quota_metric, strange.quota_id, strange.quota_value) == (None, "IdOne", None)


def test_non_api_errors_pass_through_unchanged() -> None:
    error = TimeoutError("slow")
    assert translate_api_error(error) is error
