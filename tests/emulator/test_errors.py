"""Every documented error, with the real code and status, through the real SDK."""

from __future__ import annotations

import httpx
import pytest
from google.genai import errors, types

from airflow_provider_ctxcache.emulator.process import EmulatorProcess

from .conftest import CACHE_TOKENS, MIN_TOKENS, MODEL, Backend, contents_of

INLINE_LIMIT = 10 * 1024 * 1024


def _client_error(call: object) -> errors.ClientError:
    assert callable(call)
    with pytest.raises(errors.ClientError) as caught:
        call()
    return caught.value


def test_a_missing_cache_is_permission_denied_on_the_developer_api(developer: Backend) -> None:
    error = _client_error(lambda: developer.client.caches.get(name="cachedContents/nosuchcache"))

    assert (error.code, error.status) == (403, "PERMISSION_DENIED")


def test_a_missing_cache_is_not_found_on_vertex(vertex: Backend) -> None:
    error = _client_error(lambda: vertex.client.caches.get(name="cachedContents/123"))

    assert (error.code, error.status) == (404, "NOT_FOUND")


def test_deleting_a_missing_cache_fails_like_get(backend: Backend) -> None:
    cache = backend.create_cache()
    assert cache.name is not None
    backend.client.caches.delete(name=cache.name)

    error = _client_error(lambda: backend.client.caches.delete(name=str(cache.name)))

    assert (error.code, error.status) == (backend.missing_code, backend.missing_status)


def test_generating_with_a_missing_cache_fails_like_get(backend: Backend) -> None:
    name = f"{backend.cache_prefix()}1234567"

    error = _client_error(
        lambda: backend.client.models.generate_content(
            model=MODEL, contents="hi", config=types.GenerateContentConfig(cached_content=name)
        )
    )

    assert (error.code, error.status) == (backend.missing_code, backend.missing_status)


def test_below_the_minimum_the_developer_api_says_too_small_with_both_counts(
    developer: Backend, emulator: EmulatorProcess
) -> None:
    error = _client_error(lambda: developer.create_cache(tokens=MIN_TOKENS - 1))

    assert (error.code, error.status) == (400, "INVALID_ARGUMENT")
    assert error.message == (
        f"Cached content is too small. total_token_count={MIN_TOKENS - 1}, min_total_token_count={MIN_TOKENS}"
    )
    assert emulator.admin.state()["caches"] == []


def test_below_the_minimum_vertex_names_both_counts_in_its_own_form(
    vertex: Backend, emulator: EmulatorProcess
) -> None:
    error = _client_error(lambda: vertex.create_cache(tokens=MIN_TOKENS - 1))

    assert (error.code, error.status) == (400, "INVALID_ARGUMENT")
    assert error.message == (
        f"The cached content is of {MIN_TOKENS - 1} tokens. "
        f"The minimum token count to start caching is {MIN_TOKENS}."
    )
    assert emulator.admin.state()["caches"] == []


@pytest.mark.parametrize(
    "config",
    [
        types.GenerateContentConfig(system_instruction="Be terse."),
        types.GenerateContentConfig(
            tools=[types.Tool(function_declarations=[types.FunctionDeclaration(name="f")])]
        ),
        types.GenerateContentConfig(
            tool_config=types.ToolConfig(
                function_calling_config=types.FunctionCallingConfig(mode=types.FunctionCallingConfigMode.NONE)
            )
        ),
    ],
    ids=["system_instruction", "tools", "tool_config"],
)
def test_a_request_with_a_cache_cannot_set_system_instruction_tools_or_tool_config(
    backend: Backend, config: types.GenerateContentConfig
) -> None:
    cache = backend.create_cache()
    config.cached_content = cache.name

    error = _client_error(
        lambda: backend.client.models.generate_content(model=MODEL, contents="hi", config=config)
    )

    assert (error.code, error.status) == (400, "INVALID_ARGUMENT")
    assert str(error.message).startswith(
        "CachedContent can not be used with GenerateContent request setting "
        "system_instruction, tools or tool_config."
    )


def test_the_request_model_must_be_the_cache_model(backend: Backend) -> None:
    cache = backend.create_cache()

    error = _client_error(
        lambda: backend.client.models.generate_content(
            model="gemini-2.5-pro",
            contents="hi",
            config=types.GenerateContentConfig(cached_content=cache.name),
        )
    )

    assert (error.code, error.status) == (400, "INVALID_ARGUMENT")
    assert str(error.message).endswith("has to be the same.")


def test_an_unknown_model_is_not_found(backend: Backend) -> None:
    calls = [
        lambda: backend.client.models.generate_content(model="gemini-0-nonexistent", contents="hi"),
        lambda: backend.client.models.count_tokens(model="gemini-0-nonexistent", contents="hi"),
        lambda: backend.create_cache(model="gemini-0-nonexistent"),
    ]
    for call in calls:
        error = _client_error(call)
        assert (error.code, error.status) == (404, "NOT_FOUND")


def test_the_developer_api_names_the_version_in_the_unknown_model_message(developer: Backend) -> None:
    error = _client_error(lambda: developer.client.models.generate_content(model="gemini-0-x", contents="hi"))

    assert str(error.message).startswith(
        "models/gemini-0-x is not found for API version v1beta, or is not supported for generateContent."
    )


def test_a_cache_over_the_inline_limit_is_refused(backend: Backend, emulator: EmulatorProcess) -> None:
    blob = types.Part.from_bytes(data=b"\0" * (INLINE_LIMIT + 1), mime_type="application/octet-stream")

    error = _client_error(lambda: backend.create_cache(contents=[types.Content(role="user", parts=[blob])]))

    assert (error.code, error.status) == (400, "INVALID_ARGUMENT")
    assert error.message == "Request payload size exceeds the limit: 10485760 bytes."
    assert emulator.admin.state()["caches"] == []


def test_inline_data_and_text_add_up_toward_the_limit(backend: Backend) -> None:
    parts = [
        types.Part.from_bytes(data=b"\1" * (INLINE_LIMIT - 10), mime_type="application/octet-stream"),
        types.Part(text="x" * 11),
    ]

    error = _client_error(
        lambda: backend.client.models.generate_content(
            model=MODEL, contents=[types.Content(role="user", parts=parts)]
        )
    )

    assert (error.code, error.status) == (400, "INVALID_ARGUMENT")


def test_inline_data_up_to_the_limit_is_accepted(backend: Backend) -> None:
    blob = types.Part.from_bytes(data=b"\0" * INLINE_LIMIT, mime_type="application/octet-stream")

    cache = backend.create_cache(contents=[types.Content(role="user", parts=[blob])])

    assert cache.usage_metadata is not None
    assert cache.usage_metadata.total_token_count == INLINE_LIMIT // 4


def test_a_cloud_storage_uri_is_refused_by_the_developer_api(developer: Backend) -> None:
    part = types.Part.from_uri(file_uri="gs://bucket/contract.pdf", mime_type="application/pdf")

    error = _client_error(
        lambda: developer.create_cache(
            contents=[*contents_of(CACHE_TOKENS), types.Content(role="user", parts=[part])]
        )
    )

    assert (error.code, error.status) == (400, "INVALID_ARGUMENT")
    assert "Files API" in str(error.message)


def test_a_cloud_storage_uri_is_accepted_by_vertex_and_counts_258_tokens(vertex: Backend) -> None:
    part = types.Part.from_uri(file_uri="gs://bucket/contract.pdf", mime_type="application/pdf")

    cache = vertex.create_cache(
        contents=[*contents_of(CACHE_TOKENS), types.Content(role="user", parts=[part])]
    )

    assert cache.usage_metadata is not None
    assert cache.usage_metadata.total_token_count == CACHE_TOKENS + 258


def test_the_developer_api_without_a_key_is_permission_denied(emulator: EmulatorProcess) -> None:
    response = httpx.get(f"{emulator.url}/v1beta/cachedContents")

    error = response.json()["error"]
    assert (response.status_code, error["code"], error["status"]) == (403, 403, "PERMISSION_DENIED")


def test_vertex_without_a_bearer_token_is_unauthenticated(emulator: EmulatorProcess) -> None:
    response = httpx.get(f"{emulator.url}/v1beta1/projects/p/locations/us-central1/cachedContents")

    error = response.json()["error"]
    assert (response.status_code, error["code"], error["status"]) == (401, 401, "UNAUTHENTICATED")


def test_an_api_key_in_the_query_is_accepted(emulator: EmulatorProcess) -> None:
    response = httpx.get(f"{emulator.url}/v1beta/cachedContents", params={"key": "k"})

    assert response.status_code == 200


def test_an_unknown_route_answers_a_google_shaped_not_found(emulator: EmulatorProcess) -> None:
    response = httpx.get(f"{emulator.url}/v1beta/noSuchCollection", headers={"x-goog-api-key": "k"})

    assert response.status_code == 404
    assert response.json()["error"]["status"] == "NOT_FOUND"


def test_invalid_json_is_invalid_argument(emulator: EmulatorProcess) -> None:
    response = httpx.post(
        f"{emulator.url}/v1beta/cachedContents", content=b"{not json", headers={"x-goog-api-key": "k"}
    )

    assert (response.status_code, response.json()["error"]["status"]) == (400, "INVALID_ARGUMENT")
