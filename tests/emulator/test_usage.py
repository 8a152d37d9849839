"""usageMetadata as today's service shapes it: through the SDK, and raw where the SDK drops a field."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from google.genai import types

from airflow_provider_ctxcache.emulator.process import EmulatorProcess

from .conftest import CACHE_TOKENS, LOCATION, MODEL, PROJECT, Backend, contents_of

PROMPT = "abcdefgh"  # 2 tokens
NO_THINKING = types.ThinkingConfig(thinking_budget=0)


def _blob(size: int, mime_type: str) -> types.Part:
    return types.Part.from_bytes(data=b"\1" * size, mime_type=mime_type)


def _details(details: list[types.ModalityTokenCount] | None) -> dict[str, int]:
    assert details is not None
    return {str(d.modality.value if d.modality else None): d.token_count or 0 for d in details}


def _generate(
    backend: Backend, contents: object = PROMPT, **config: object
) -> types.GenerateContentResponseUsageMetadata:
    response = backend.client.models.generate_content(
        model=MODEL,
        contents=contents,  # type: ignore[arg-type]
        config=types.GenerateContentConfig(thinking_config=NO_THINKING, **config),  # type: ignore[arg-type]
    )
    assert response.usage_metadata is not None
    return response.usage_metadata


def _search_cache(backend: Backend) -> types.CachedContent:
    return backend.create_cache(tools=[types.Tool(google_search=types.GoogleSearch())])


def test_prompt_and_cache_details_count_tokens_by_modality(backend: Backend) -> None:
    media = types.Content(role="user", parts=[_blob(400, "image/png"), _blob(800, "audio/mpeg")])
    cache = backend.create_cache(contents=[*contents_of(CACHE_TOKENS), media])

    usage = _generate(backend, cached_content=cache.name)

    assert _details(usage.cache_tokens_details) == {"TEXT": CACHE_TOKENS, "IMAGE": 100, "AUDIO": 200}
    assert _details(usage.prompt_tokens_details) == {"TEXT": CACHE_TOKENS + 2, "IMAGE": 100, "AUDIO": 200}
    assert usage.prompt_token_count == CACHE_TOKENS + 2 + 300
    assert usage.cached_content_token_count == CACHE_TOKENS + 300


def test_documents_and_videos_in_the_request_have_their_own_modalities(backend: Backend) -> None:
    parts = [_blob(40, "application/pdf"), _blob(80, "video/mp4"), types.Part(text=PROMPT)]

    usage = _generate(backend, [types.Content(role="user", parts=parts)])

    assert _details(usage.prompt_tokens_details) == {"TEXT": 2, "VIDEO": 20, "DOCUMENT": 10}
    assert usage.cache_tokens_details is None
    assert usage.cached_content_token_count is None


def test_candidates_details_are_the_answers_text_tokens(backend: Backend) -> None:
    usage = _generate(backend)

    assert _details(usage.candidates_tokens_details) == {"TEXT": usage.candidates_token_count or 0}


def test_a_cache_declaring_a_built_in_tool_bills_tool_use_tokens(backend: Backend) -> None:
    cache = _search_cache(backend)

    usage = _generate(backend, cached_content=cache.name)

    assert usage.tool_use_prompt_token_count == 64 + 2 * 2  # 64 + 2 per token of the question
    assert _details(usage.tool_use_prompt_tokens_details) == {"TEXT": 68}


def test_each_built_in_tool_of_the_request_bills_tool_use_tokens(backend: Backend) -> None:
    tools = [
        types.Tool(google_search=types.GoogleSearch()),
        types.Tool(code_execution=types.ToolCodeExecution()),
    ]

    usage = _generate(backend, tools=tools)

    assert usage.tool_use_prompt_token_count == 2 * (64 + 2 * 2)


def test_function_declarations_bill_no_tool_use(backend: Backend) -> None:
    tools = [types.Tool(function_declarations=[types.FunctionDeclaration(name="lookup")])]

    assert _generate(backend, tools=tools).tool_use_prompt_token_count is None


def test_the_total_adds_prompt_candidates_thoughts_and_tool_use(backend: Backend) -> None:
    cache = _search_cache(backend)
    response = backend.client.models.generate_content(
        model=MODEL, contents=PROMPT, config=types.GenerateContentConfig(cached_content=cache.name)
    )
    usage = response.usage_metadata
    assert usage is not None

    parts = [
        usage.prompt_token_count,
        usage.candidates_token_count,
        usage.thoughts_token_count,
        usage.tool_use_prompt_token_count,
    ]
    assert all(parts)
    assert usage.total_token_count == sum(p or 0 for p in parts)


def test_vertex_reports_on_demand_traffic_through_the_sdk(vertex: Backend) -> None:
    assert _generate(vertex).traffic_type == types.TrafficType.ON_DEMAND


def test_the_developer_api_reports_the_standard_service_tier_on_the_wire(
    emulator: EmulatorProcess, raw_headers: Callable[[str], dict[str, str]]
) -> None:
    # The SDK has no usageMetadata.serviceTier field (it drops it), so this is read raw.
    response = httpx.post(
        f"{emulator.url}/v1beta/models/{MODEL}:generateContent",
        headers=raw_headers("gemini_api"),
        json={"contents": [{"role": "user", "parts": [{"text": PROMPT}]}]},
    )

    usage = response.json()["usageMetadata"]
    assert usage["serviceTier"] == "standard"
    assert "trafficType" not in usage


def test_vertex_reports_on_demand_traffic_on_the_wire(
    emulator: EmulatorProcess, raw_headers: Callable[[str], dict[str, str]]
) -> None:
    response = httpx.post(
        f"{emulator.url}/v1beta1/projects/{PROJECT}/locations/{LOCATION}/publishers/google/models/"
        f"{MODEL}:generateContent",
        headers=raw_headers("vertex_ai"),
        json={"contents": [{"role": "user", "parts": [{"text": PROMPT}]}]},
    )

    usage = response.json()["usageMetadata"]
    assert usage["trafficType"] == "ON_DEMAND"
    assert "serviceTier" not in usage


def test_every_usage_field_parses_into_the_sdks_usage_metadata(backend: Backend) -> None:
    cache = _search_cache(backend)
    response = backend.client.models.generate_content(
        model=MODEL, contents=PROMPT, config=types.GenerateContentConfig(cached_content=cache.name)
    )
    usage = response.usage_metadata
    assert isinstance(usage, types.GenerateContentResponseUsageMetadata)

    unset = [name for name, value in usage.model_dump().items() if value is None]
    expected_unset = {"gemini_api": ["traffic_type"], "vertex_ai": []}[backend.name]
    assert unset == expected_unset
