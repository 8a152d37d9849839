"""normalize_prompts: every accepted form becomes a keyed request; every bad one is refused by path."""

from __future__ import annotations

from typing import Any

import pytest
from google.genai import types

from airflow_provider_ctxcache.exceptions import CtxCacheConfigError, ForbiddenWithCacheError
from airflow_provider_ctxcache.prompts import (
    PromptRequest,
    _plain_text_turn,
    cache_id,
    iter_normalized,
    normalize_prompts,
    sent_contents,
)

CACHE = "cachedContents/abc"
FORUM_LINE: dict[str, Any] = {
    "key": "request-1",
    "request": {
        "contents": [{"parts": [{"text": "What does clause 4 say?"}], "role": "user"}],
        "generationConfig": {"temperature": 0.2, "thinking_config": {"thinking_budget": 0}},
        "cachedContent": "cachedContents/abc",
    },
}


def batch(key: str, **request: Any) -> dict[str, Any]:
    return {"key": key, "request": {"contents": "question", **request}}


def refused(prompts: Any, **kwargs: Any) -> str:
    with pytest.raises(CtxCacheConfigError) as caught:
        normalize_prompts(prompts, cache_name=kwargs.pop("cache_name", CACHE), **kwargs)
    return str(caught.value)


# -- accepted forms -------------------------------------------------------------------------------


def test_plain_strings_get_positional_keys() -> None:
    requests = normalize_prompts(["first?", "second?"], cache_name=CACHE)
    assert requests == [
        PromptRequest(key="prompt-00000", contents="first?"),
        PromptRequest(key="prompt-00001", contents="second?"),
    ]
    assert requests[0].config is None


def test_forum_thread_line_is_accepted_unchanged() -> None:
    (request,) = normalize_prompts([FORUM_LINE], cache_name=CACHE)
    assert request.key == "request-1"
    assert request.contents == [{"parts": [{"text": "What does clause 4 say?"}], "role": "user"}]
    assert request.generation_config == {"temperature": 0.2, "thinking_config": {"thinking_budget": 0}}
    assert request.config is not None
    assert request.config.temperature == 0.2
    assert request.config.thinking_config == types.ThinkingConfig(thinking_budget=0)


def test_camel_case_thinking_config_is_the_same_config() -> None:
    camel, snake = normalize_prompts(
        [
            batch("a", generationConfig={"thinkingConfig": {"thinkingBudget": 0}, "maxOutputTokens": 64}),
            batch(
                "b", generation_config={"thinking_config": {"thinking_budget": 0}, "max_output_tokens": 64}
            ),
        ],
        cache_name=CACHE,
    )
    assert camel.generation_config == snake.generation_config
    assert camel.config is snake.config


def test_snake_case_request_fields_are_accepted() -> None:
    (request,) = normalize_prompts(
        [{"key": "k", "request": {"contents": ["hello"], "cached_content": "abc"}}], cache_name=CACHE
    )
    assert request.contents == ["hello"]


def test_a_batch_request_without_key_gets_a_positional_key() -> None:
    requests = normalize_prompts(["a", {"request": {"contents": "b"}}], cache_name=CACHE)
    assert [r.key for r in requests] == ["prompt-00000", "prompt-00001"]


def test_a_part_dict_in_contents_is_accepted() -> None:
    (request,) = normalize_prompts([batch("k", contents=[{"text": "hi"}])], cache_name=CACHE)
    assert request.contents == [types.Part(text="hi")]


def test_request_config_is_merged_over_the_operator_config_and_wins() -> None:
    (request,) = normalize_prompts(
        [batch("k", generationConfig={"temperature": 0.9})],
        cache_name=CACHE,
        generation_config={"temperature": 0.1, "maxOutputTokens": 100},
    )
    assert request.generation_config == {"temperature": 0.9, "max_output_tokens": 100}


def test_operator_config_applies_to_plain_strings() -> None:
    (request,) = normalize_prompts(["q"], cache_name=CACHE, generation_config={"max_output_tokens": 5})
    assert request.config is not None
    assert request.config.max_output_tokens == 5


def test_one_config_object_per_distinct_config() -> None:
    requests = normalize_prompts(
        ["a", "b", batch("c", generationConfig={"temperature": 0.5}), batch("d", generationConfig={})],
        cache_name=CACHE,
        generation_config={"temperature": 0.1},
    )
    configs = [r.config for r in requests]
    assert configs[0] is configs[1] is configs[3]
    assert configs[2] is not configs[0]


def test_an_sdk_config_object_is_accepted_as_the_operator_config() -> None:
    (request,) = normalize_prompts(
        ["q"], cache_name=CACHE, generation_config=types.GenerateContentConfig(temperature=0.3)
    )
    assert request.generation_config == {"temperature": 0.3}


def test_cached_content_naming_the_same_cache_by_full_vertex_name_is_accepted() -> None:
    (request,) = normalize_prompts(
        [batch("k", cachedContent="projects/p/locations/l/cachedContents/abc")], cache_name="abc"
    )
    assert request.key == "k"


def test_cache_id_is_the_trailing_segment() -> None:
    assert cache_id("projects/p/locations/l/cachedContents/xyz") == cache_id("xyz") == "xyz"


# -- rejections -----------------------------------------------------------------------------------


def test_empty_prompts_list_is_refused() -> None:
    assert refused([]).startswith("prompts: the list is empty")


def test_a_single_string_instead_of_a_list_is_refused() -> None:
    assert refused("what?").startswith("prompts: a str is not a list of prompts")


@pytest.mark.parametrize("prompt", [42, None, ["nested"], "  "])
def test_a_prompt_that_is_neither_string_nor_request_is_refused(prompt: Any) -> None:
    assert refused(["ok", prompt]).startswith("prompts[1]:")


def test_a_dict_without_request_is_refused() -> None:
    message = refused([{"key": "k"}])
    assert message.startswith("prompts[0].request: is missing")


def test_a_dict_with_unknown_top_level_fields_is_refused() -> None:
    assert refused([{"key": "k", "contents": "q"}]).startswith("prompts[0].contents: not a field")


@pytest.mark.parametrize("contents", [None, [], ""])
def test_missing_or_empty_contents_are_refused(contents: Any) -> None:
    request: dict[str, Any] = {} if contents is None else {"contents": contents}
    message = refused(["ok", {"key": "k", "request": request}])
    assert message.startswith("prompts[1].request.contents:")


def test_a_malformed_content_is_refused_with_its_path() -> None:
    message = refused([batch("k", contents=[{"parts": [{"text": "a"}], "role": "user", "bogus": 1}])])
    assert message.startswith("prompts[0].request.contents[0].bogus:")


@pytest.mark.parametrize(
    "field", ["systemInstruction", "system_instruction", "tools", "toolConfig", "tool_config"]
)
def test_fields_that_belong_in_the_cache_are_refused(field: str) -> None:
    prompts: list[Any] = ["a", "b", "c", batch("k", **{field: {"parts": [{"text": "x"}]}})]
    with pytest.raises(ForbiddenWithCacheError) as caught:
        normalize_prompts(prompts, cache_name=CACHE)
    message = str(caught.value)
    assert message.startswith(f"prompts[3].request.{field}:")
    assert "CreateCacheOperator" in message


def test_a_system_instruction_in_the_operator_config_is_refused() -> None:
    message = refused(["q"], generation_config={"system_instruction": "Be brief."})
    assert message.startswith("generation_config.system_instruction:")
    assert "CreateCacheOperator" in message


def test_a_system_instruction_inside_a_request_generation_config_is_refused() -> None:
    message = refused([batch("k", generationConfig={"systemInstruction": "Be brief."})])
    assert message.startswith("prompts[0].request.generationConfig.systemInstruction:")


def test_cached_content_naming_another_cache_is_refused() -> None:
    message = refused([batch("k", cachedContent="cachedContents/other")])
    assert message.startswith("prompts[0].request.cachedContent:")
    assert "'cachedContents/other'" in message
    assert CACHE in message


def test_duplicate_keys_are_refused_naming_the_key() -> None:
    message = refused([batch("same"), batch("other"), batch("same")])
    assert message.startswith("prompts[2].key:")
    assert "'same'" in message
    assert "prompts[0]" in message


def test_a_content_dict_is_checked_but_sent_as_the_dict_it_is() -> None:
    # The SDK reads a dict faster than it re-validates a model (about 0.25 ms a call).
    content = {"role": "user", "parts": [{"text": "What does clause 4 say?"}]}
    (request,) = normalize_prompts([{"key": "k", "request": {"contents": [content]}}], cache_name=CACHE)
    assert request.contents == [content]
    assert type(request.contents[0]) is dict
    assert refused([{"key": "k", "request": {"contents": [{"role": "user", "parts": "no"}]}}]).startswith(
        "prompts[0].request.contents[0].parts"
    )


@pytest.mark.parametrize(
    "content",
    [
        {"role": "user", "parts": [{"text": "q"}]},
        {"role": "model", "parts": [{"text": "a"}, {"text": ""}]},
        {"parts": [{"text": "no role"}]},
    ],
)
def test_a_plain_text_turn_accepted_by_its_shape_is_one_the_sdk_model_accepts(
    content: dict[str, Any],
) -> None:
    # Text-only turns skip the model's validation in the first reading; they must be ones it accepts.
    assert _plain_text_turn(content)
    assert types.Content.model_validate(content).parts
    (request,) = normalize_prompts([{"key": "k", "request": {"contents": [content]}}], cache_name=CACHE)
    assert request.contents == [content]


@pytest.mark.parametrize(
    ("content", "path"),
    [
        ({"role": 7, "parts": [{"text": "q"}]}, "contents[0].role"),
        ({"role": "user", "parts": [{"text": 7}]}, "contents[0].parts.0.text"),
        ({"role": "user", "parts": [{"text": "q", "bogus": 1}]}, "contents[0].parts.0.bogus"),
        ({"role": "user", "parts": [{"text": "q"}], "bogus": 1}, "contents[0].bogus"),
    ],
)
def test_a_turn_outside_the_plain_text_shape_is_still_checked_by_the_sdk_model(
    content: dict[str, Any], path: str
) -> None:
    message = refused([{"key": "k", "request": {"contents": [content]}}])
    assert message.startswith(f"prompts[0].request.{path}:"), message


def test_a_bare_part_dict_is_sent_as_a_part() -> None:
    (request,) = normalize_prompts([{"key": "k", "request": {"contents": [{"text": "q"}]}}], cache_name=CACHE)
    assert request.contents == [types.Part(text="q")]


def test_a_checked_reading_sends_the_same_requests_without_validating_again() -> None:
    entries = [
        ("line 1", FORUM_LINE),
        ("line 2", "plain?"),
        ("line 3", {"request": {"contents": [{"text": "q"}]}}),
    ]
    first = list(iter_normalized(entries, cache_name=CACHE))
    again = list(iter_normalized(entries, cache_name=CACHE, checked=True))
    assert [(r.key, r.contents, r.generation_config, r.fingerprint) for r in again] == [
        (r.key, r.contents, r.generation_config, r.fingerprint) for r in first
    ]


def test_duplicate_keys_are_refused_naming_both_places_in_a_one_shot_input() -> None:
    entries = iter([("line 1", batch("same")), ("line 2", batch("other")), ("line 3", batch("same"))])
    with pytest.raises(CtxCacheConfigError) as caught:
        list(iter_normalized(entries, cache_name=CACHE))
    assert str(caught.value).startswith("line 3.key: 'same' is already the key of line 1")


def test_a_hundred_thousand_distinct_keys_are_not_taken_for_repeats() -> None:
    # The key check keeps a fixed-size bit filter; a suspect is settled by reading the input again.
    prompts = [f"question {i}?" for i in range(100_000)]
    assert len(normalize_prompts(prompts, cache_name=CACHE)) == 100_000
    message = refused([*prompts, batch("prompt-99999")])
    assert message.startswith("prompts[100000].key: 'prompt-99999' is already the key of prompts[99999]")


def test_a_user_key_colliding_with_a_positional_key_is_refused() -> None:
    assert refused(["a", batch("prompt-00000")]).startswith("prompts[1].key: 'prompt-00000'")


def test_an_invalid_generation_config_value_is_refused() -> None:
    message = refused([batch("k", generationConfig={"temperature": "hot"})])
    assert message.startswith("prompts[0].request.generationConfig: not a valid generation config")
    assert "temperature" in message


def test_an_unknown_generation_config_field_is_refused() -> None:
    message = refused(["q"], generation_config={"temprature": 0.2})
    assert message.startswith("generation_config: not a valid generation config")
    assert "temprature" in message


def test_an_unknown_request_field_is_refused() -> None:
    assert refused([batch("k", model="gemini-2.5-pro")]).startswith("prompts[0].request.model:")


def test_a_non_string_key_is_refused() -> None:
    assert refused([{"key": 7, "request": {"contents": "q"}}]).startswith("prompts[0].key:")


# -- what the fan-out hands the SDK ----------------------------------------------------------------


def test_one_user_turn_of_one_text_part_is_sent_as_its_text() -> None:
    # google-genai makes the same user turn of a string, for less CPU than reading the dict.
    assert sent_contents([{"role": "user", "parts": [{"text": "What does clause 4 say?"}]}]) == (
        "What does clause 4 say?"
    )


@pytest.mark.parametrize(
    "contents",
    [
        [{"parts": [{"text": "no role"}]}],
        [{"role": "model", "parts": [{"text": "a model turn"}]}],
        [{"role": "user", "parts": [{"text": "one"}, {"text": "two"}]}],
        [{"role": "user", "parts": [{"text": "   "}]}],
        [{"role": "user", "parts": [{"text": "q", "thought": False}]}],
        [{"role": "user", "parts": [{"text": "q"}]}, {"role": "model", "parts": [{"text": "a"}]}],
        [types.Part(text="a part")],
        "already a string",
    ],
    ids=["no-role", "model-turn", "two-parts", "blank", "part-with-more", "two-turns", "sdk-part", "str"],
)
def test_every_other_shape_is_sent_as_it_is(contents: Any) -> None:
    assert sent_contents(contents) is contents
