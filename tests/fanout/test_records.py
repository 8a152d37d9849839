"""A response's three shapes (key result, batch-output line, XCom answer) agree, thoughts left out."""

from __future__ import annotations

import dataclasses

from google.genai import types

from airflow_provider_ctxcache.fanout.records import (
    Usage,
    answer_of,
    error_record,
    response_json,
    response_record,
    xcom_answer,
)
from airflow_provider_ctxcache.hooks import ContextCacheHook
from tests.fanout.conftest import MODEL, create_cache


def test_the_xcom_answer_read_back_from_a_batch_line_equals_the_key_result(
    gemini_hook: ContextCacheHook,
) -> None:
    name = create_cache(gemini_hook)
    response = gemini_hook.generate(model=MODEL, contents="What does record 3 say?", cache_name=name)
    assert response.usage_metadata
    assert response.usage_metadata.thoughts_token_count  # gemini-2.5-flash thinks by default

    result = answer_of("k", response, keep_response=True)
    line = result.to_batch_line()

    assert line == response_record("k", response_json(response))
    assert xcom_answer(line) == result.to_dict()
    assert result.to_dict()["usage"]["thoughts_token_count"] == response.usage_metadata.thoughts_token_count


def test_thought_parts_are_never_part_of_the_answer_text() -> None:
    response = types.GenerateContentResponse(
        candidates=[
            types.Candidate(
                content=types.Content(
                    role="model",
                    parts=[types.Part(text="let me think", thought=True), types.Part(text="Port Royal.")],
                ),
                finish_reason=types.FinishReason.STOP,
            )
        ]
    )
    assert answer_of("k", response).text == "Port Royal."
    assert xcom_answer(response_record("k", response))["text"] == "Port Royal."


def test_an_error_line_reads_back_as_its_message() -> None:
    line = error_record("k", code=503, status="UNAVAILABLE", message="overloaded")
    assert line == {"key": "k", "error": {"code": 503, "status": "UNAVAILABLE", "message": "overloaded"}}
    assert xcom_answer(line) == {"error": "overloaded"}


def test_adding_usages_sums_every_field_of_usage() -> None:
    # add spells its fields out (it runs once per response): a field added to Usage must be summed too.
    names = [f.name for f in dataclasses.fields(Usage)]
    one = Usage(*range(1, len(names) + 1))
    total = Usage(*(10 for _ in names))
    total.add(one)
    assert total.to_dict() == {name: 10 + value for name, value in one.to_dict().items()}


def test_usage_of_a_response_reads_every_field_by_its_sdk_name() -> None:
    metadata = types.GenerateContentResponseUsageMetadata(
        prompt_token_count=20010,
        cached_content_token_count=20000,
        candidates_token_count=8,
        thoughts_token_count=3,
        tool_use_prompt_token_count=2,
        total_token_count=20023,
    )
    assert Usage.of(metadata) == Usage(20010, 20000, 8, 3, 2, 20023)
    assert Usage.of(None) == Usage()
