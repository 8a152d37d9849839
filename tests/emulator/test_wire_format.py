"""Quirks of the wire format a faithful server accepts (API_FACTS.md, "Wire format")."""

from __future__ import annotations

import httpx
from google.genai import types

from airflow_provider_ctxcache.emulator.process import EmulatorProcess
from airflow_provider_ctxcache.emulator.tokens import text_of_tokens

from .conftest import CACHE_TOKENS, LOCATION, MODEL, PROJECT, Backend, contents_of

VERTEX_CACHES = f"/v1beta1/projects/{PROJECT}/locations/{LOCATION}/cachedContents"
BEARER = {"Authorization": "Bearer emulator"}


def test_vertex_accepts_a_snake_case_encryption_spec_and_shows_it(
    vertex: Backend, emulator: EmulatorProcess
) -> None:
    key = f"projects/{PROJECT}/locations/{LOCATION}/keyRings/r/cryptoKeys/k"

    cache = vertex.create_cache(kms_key_name=key)

    shown = httpx.get(f"{emulator.url}/v1beta1/{cache.name}", headers=BEARER).json()
    assert shown["encryptionSpec"] == {"kmsKeyName": key}
    (logged,) = emulator.admin.requests()[:1]
    assert logged["body"]["encryption_spec"] == {"kmsKeyName": key}


def test_file_data_is_accepted_in_snake_and_camel_case(emulator: EmulatorProcess) -> None:
    parts = [
        {"text": text_of_tokens(CACHE_TOKENS)},
        {"fileData": {"file_uri": "gs://b/one.pdf", "mime_type": "application/pdf"}},
        {"fileData": {"fileUri": "gs://b/two.pdf", "mimeType": "application/pdf"}},
    ]
    body = {
        "model": f"projects/{PROJECT}/locations/{LOCATION}/publishers/google/models/{MODEL}",
        "contents": [{"role": "user", "parts": parts}],
    }

    response = httpx.post(f"{emulator.url}{VERTEX_CACHES}", json=body, headers=BEARER)

    assert response.status_code == 200
    assert response.json()["usageMetadata"]["totalTokenCount"] == CACHE_TOKENS + 2 * 258


def test_inline_bytes_arrive_url_safe_base64_and_count_by_decoded_size(backend: Backend) -> None:
    data = b"\xfb\xff\xfe" * 400  # encodes to '-' and '_' in URL-safe base64
    contents = [types.Content(role="user", parts=[types.Part.from_bytes(data=data, mime_type="image/png")])]

    result = backend.client.models.count_tokens(model=MODEL, contents=contents)

    assert result.total_tokens == len(data) // 4


def test_a_plain_string_system_instruction_counts_like_contents(backend: Backend) -> None:
    cache = backend.create_cache(tokens=CACHE_TOKENS, system_instruction="x" * 40)

    assert cache.usage_metadata is not None
    assert cache.usage_metadata.total_token_count == CACHE_TOKENS + 10


def test_developer_models_may_be_named_with_or_without_the_prefix(emulator: EmulatorProcess) -> None:
    for model in (MODEL, f"models/{MODEL}"):
        response = httpx.post(
            f"{emulator.url}/v1beta/cachedContents",
            json={"model": model, "contents": [{"parts": [{"text": text_of_tokens(CACHE_TOKENS)}]}]},
            headers={"x-goog-api-key": "k"},
        )
        assert response.json()["model"] == f"models/{MODEL}"


def test_large_request_bodies_are_logged_by_size_only(developer: Backend, emulator: EmulatorProcess) -> None:
    developer.create_cache(contents=contents_of(100_000))

    (entry,) = emulator.admin.requests()

    assert entry["body"]["_truncated"] is True
    assert entry["body"]["bytes"] > 400_000


def test_the_developer_api_refuses_an_encryption_spec(emulator: EmulatorProcess) -> None:
    # The SDK refuses kms_key_name before sending on the Developer API; a raw client is told off too.
    response = httpx.post(
        f"{emulator.url}/v1beta/cachedContents",
        json={
            "model": f"models/{MODEL}",
            "contents": [{"parts": [{"text": text_of_tokens(CACHE_TOKENS)}]}],
            "encryption_spec": {"kmsKeyName": "k"},
        },
        headers={"x-goog-api-key": "k"},
    )

    assert (response.status_code, response.json()["error"]["status"]) == (400, "INVALID_ARGUMENT")
