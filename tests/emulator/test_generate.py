"""generateContent and countTokens: real-shaped usage, deterministic context-dependent answers."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from google.genai import types

from airflow_provider_ctxcache.emulator.process import EmulatorProcess
from airflow_provider_ctxcache.emulator.tokens import text_of_tokens

from .conftest import CACHE_TOKENS, LOCATION, MODEL, PROJECT, Backend, developer_client, vertex_client

FACTS = (
    "The lighthouse keeper is named Orla Brennan. "
    "The harbour toll is nine silver coins. "
    "Ships from Varn arrive every Tuesday. "
)


def _cache_with_facts(backend: Backend) -> types.CachedContent:
    text = FACTS + text_of_tokens(CACHE_TOKENS)
    return backend.client.caches.create(
        model=MODEL,
        config=types.CreateCachedContentConfig(
            contents=[types.Content(role="user", parts=[types.Part(text=text)])]
        ),
    )


def _ask(
    backend: Backend, prompt: str, cache: types.CachedContent | None = None, **config: object
) -> types.GenerateContentResponse:
    return backend.client.models.generate_content(
        model=MODEL,
        contents=prompt,
        config=types.GenerateContentConfig(cached_content=cache.name if cache else None, **config),  # type: ignore[arg-type]
    )


def test_usage_counts_the_cached_tokens_inside_the_prompt(backend: Backend) -> None:
    cache = backend.create_cache(tokens=CACHE_TOKENS)

    response = _ask(backend, "What is in the archive?", cache)  # 23 characters: 6 tokens

    usage = response.usage_metadata
    assert usage is not None
    assert cache.usage_metadata is not None
    assert usage.cached_content_token_count == cache.usage_metadata.total_token_count == CACHE_TOKENS
    assert usage.prompt_token_count == CACHE_TOKENS + 6
    assert usage.candidates_token_count is not None
    assert usage.candidates_token_count > 0


def test_without_a_cache_there_are_no_cached_tokens(backend: Backend) -> None:
    response = _ask(backend, "abcdefgh")

    assert response.usage_metadata is not None
    assert response.usage_metadata.prompt_token_count == 2
    assert response.usage_metadata.cached_content_token_count is None


def test_the_answer_quotes_the_context_sentence_that_matches_the_prompt(backend: Backend) -> None:
    cache = _cache_with_facts(backend)

    keeper = _ask(backend, "Who is the lighthouse keeper?", cache).text
    toll = _ask(backend, "How much is the harbour toll?", cache).text

    assert keeper is not None
    assert keeper.startswith("The lighthouse keeper is named Orla Brennan.")
    assert toll is not None
    assert toll.startswith("The harbour toll is nine silver coins.")


def test_the_same_question_gets_the_same_answer(backend: Backend) -> None:
    cache = _cache_with_facts(backend)

    first = _ask(backend, "When do ships from Varn arrive?", cache)
    second = _ask(backend, "When do ships from Varn arrive?", cache)

    assert first.text == second.text
    assert first.response_id != second.response_id


def test_the_answer_depends_on_the_cached_context(backend: Backend) -> None:
    one = backend.create_cache(tokens=CACHE_TOKENS)
    other = backend.client.caches.create(
        model=MODEL,
        config=types.CreateCachedContentConfig(
            contents=[
                types.Content(
                    role="user",
                    parts=[types.Part(text="A different corpus. " + text_of_tokens(CACHE_TOKENS))],
                )
            ]
        ),
    )

    assert (
        _ask(backend, "What is in the archive?", one).text
        != _ask(backend, "What is in the archive?", other).text
    )


def test_inline_context_in_the_request_is_used(backend: Backend) -> None:
    document = types.Part.from_bytes(data=FACTS.encode(), mime_type="text/plain")
    contents = [types.Content(role="user", parts=[document, types.Part(text="What is the harbour toll?")])]

    response = backend.client.models.generate_content(model=MODEL, contents=contents)

    assert response.text is not None
    assert response.text.startswith("The harbour toll is nine silver coins.")


def test_without_context_the_answer_says_so_and_echoes_the_prompt(backend: Backend) -> None:
    response = _ask(backend, "Is anyone there?")

    assert response.text is not None
    assert response.text.startswith("No context was provided. You asked: Is anyone there?")


def test_max_output_tokens_truncates_and_reports_max_tokens(backend: Backend) -> None:
    cache = _cache_with_facts(backend)

    response = _ask(backend, "Who is the lighthouse keeper?", cache, max_output_tokens=3)

    assert response.text == "The lighthou"
    assert response.candidates
    assert response.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    assert response.usage_metadata is not None
    assert response.usage_metadata.candidates_token_count == 3


def test_a_complete_answer_finishes_with_stop(backend: Backend) -> None:
    response = _ask(backend, "hello")

    assert response.candidates
    assert response.candidates[0].finish_reason == types.FinishReason.STOP
    assert response.candidates[0].content is not None
    assert response.candidates[0].content.role == "model"
    assert response.model_version == MODEL


def test_json_mode_answers_a_json_object(backend: Backend) -> None:
    cache = _cache_with_facts(backend)

    response = _ask(backend, "Who is the lighthouse keeper?", cache, response_mime_type="application/json")

    assert response.text is not None
    answer = json.loads(response.text)
    assert answer["answer"] == "The lighthouse keeper is named Orla Brennan."
    assert answer["source"] == "context"


def test_the_async_client_generates_concurrently(backend: Backend) -> None:
    cache = _cache_with_facts(backend)

    async def ask_all() -> list[str | None]:
        config = types.GenerateContentConfig(cached_content=cache.name)
        responses = await asyncio.gather(
            *(
                backend.client.aio.models.generate_content(model=MODEL, contents=f"q{i}", config=config)
                for i in range(20)
            )
        )
        return [r.text for r in responses]

    texts = asyncio.run(ask_all())

    assert len(texts) == 20
    assert all(texts)


def test_count_tokens_follows_the_documented_rule(backend: Backend) -> None:
    contents = [types.Content(role="user", parts=[types.Part(text="x" * 4001)])]

    assert backend.client.models.count_tokens(model=MODEL, contents=contents).total_tokens == 1001


def test_count_tokens_on_vertex_counts_the_system_instruction(vertex: Backend) -> None:
    result = vertex.client.models.count_tokens(
        model=MODEL, contents="abcd", config=types.CountTokensConfig(system_instruction="abcdefgh")
    )

    assert result.total_tokens == 3


def test_count_tokens_with_a_generate_request_naming_a_cache(
    developer: Backend, emulator: EmulatorProcess
) -> None:
    # The SDK has no way to send this form, so it goes over plain httpx.
    cache = developer.create_cache(tokens=CACHE_TOKENS)

    response = httpx.post(
        f"{emulator.url}/v1beta/models/{MODEL}:countTokens",
        headers={"x-goog-api-key": "k"},
        json={
            "generateContentRequest": {
                "model": f"models/{MODEL}",
                "contents": [{"role": "user", "parts": [{"text": "abcd"}]}],
                "cachedContent": cache.name,
            }
        },
    )

    assert response.json() == {"totalTokens": CACHE_TOKENS + 1, "cachedContentTokenCount": CACHE_TOKENS}


@pytest.mark.parametrize("api_version", ["v1", "v1beta"])
def test_the_developer_api_answers_on_each_version(emulator: EmulatorProcess, api_version: str) -> None:
    client = developer_client(emulator.url, api_version=api_version)
    cache = client.caches.create(
        model=MODEL,
        config=types.CreateCachedContentConfig(
            contents=[types.Content(role="user", parts=[types.Part(text=text_of_tokens(CACHE_TOKENS))])]
        ),
    )
    assert cache.name is not None

    response = client.models.generate_content(
        model=MODEL, contents="hi", config=types.GenerateContentConfig(cached_content=cache.name)
    )

    assert response.usage_metadata is not None
    assert response.usage_metadata.cached_content_token_count == CACHE_TOKENS
    assert [r["path"].split("/")[1] for r in emulator.admin.requests()] == [api_version, api_version]


@pytest.mark.parametrize("api_version", ["v1", "v1beta1"])
def test_vertex_answers_on_each_version(emulator: EmulatorProcess, api_version: str) -> None:
    client = vertex_client(emulator.url, api_version=api_version)
    cache = client.caches.create(
        model=MODEL,
        config=types.CreateCachedContentConfig(
            contents=[types.Content(role="user", parts=[types.Part(text=text_of_tokens(CACHE_TOKENS))])]
        ),
    )
    assert cache.name is not None
    assert cache.name.startswith(f"projects/{PROJECT}/locations/{LOCATION}/")

    response = client.models.generate_content(
        model=MODEL, contents="hi", config=types.GenerateContentConfig(cached_content=cache.name)
    )

    assert response.usage_metadata is not None
    assert response.usage_metadata.cached_content_token_count == CACHE_TOKENS
    assert [r["path"].split("/")[1] for r in emulator.admin.requests()] == [api_version, api_version]
