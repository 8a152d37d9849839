"""Thinking in generateContent: per-model defaults, budgets and levels, deterministic thought counts.

The emulator's rule: thoughts = factor * (16 + P % 64), P being promptTokenCount; factor 4 for
dynamic thinking (and medium), 1 / 2 / 8 for minimal / low / high; a positive budget caps it.
The prompt "abcdefgh" is 2 tokens, so its base is 18: dynamic 72, high 144.
"""

from __future__ import annotations

import httpx
import pytest
from google.genai import errors, types

from airflow_provider_ctxcache.emulator.process import EmulatorProcess

from .conftest import CACHE_TOKENS, MODEL, Backend

PROMPT = "abcdefgh"  # 2 tokens: base 16 + 2 = 18
DYNAMIC_THOUGHTS = 4 * 18
HIGH_THOUGHTS = 8 * 18


def _usage(
    backend: Backend,
    model: str = MODEL,
    thinking: types.ThinkingConfig | None = None,
    cache: str | None = None,
) -> types.GenerateContentResponseUsageMetadata:
    response = backend.client.models.generate_content(
        model=model,
        contents=PROMPT,
        config=types.GenerateContentConfig(thinking_config=thinking, cached_content=cache),
    )
    assert response.usage_metadata is not None
    return response.usage_metadata


def _refusal(backend: Backend, model: str, thinking: types.ThinkingConfig) -> errors.ClientError:
    with pytest.raises(errors.ClientError) as caught:
        _usage(backend, model, thinking)
    assert (caught.value.code, caught.value.status) == (400, "INVALID_ARGUMENT")
    return caught.value


def test_2_5_flash_thinks_dynamically_by_default(backend: Backend) -> None:
    usage = _usage(backend)

    assert usage.thoughts_token_count == DYNAMIC_THOUGHTS


def test_thoughts_are_included_in_the_total(backend: Backend) -> None:
    usage = _usage(backend)

    assert usage.total_token_count == (
        (usage.prompt_token_count or 0) + (usage.candidates_token_count or 0) + DYNAMIC_THOUGHTS
    )


def test_thoughts_follow_the_prompt_count_which_includes_the_cache(backend: Backend) -> None:
    cache = backend.create_cache()

    usage = _usage(backend, cache=cache.name)

    prompt_tokens = CACHE_TOKENS + 2
    assert usage.prompt_token_count == prompt_tokens
    assert usage.thoughts_token_count == 4 * (16 + prompt_tokens % 64)


def test_the_same_request_thinks_the_same_amount(backend: Backend) -> None:
    assert _usage(backend).thoughts_token_count == _usage(backend).thoughts_token_count


def test_a_budget_of_zero_turns_thinking_off_on_2_5_flash(backend: Backend) -> None:
    usage = _usage(backend, thinking=types.ThinkingConfig(thinking_budget=0))

    assert usage.thoughts_token_count is None
    assert usage.total_token_count == (usage.prompt_token_count or 0) + (usage.candidates_token_count or 0)


@pytest.mark.parametrize("model", ["gemini-2.5-pro", "gemini-3.1-pro-preview"])
def test_a_budget_of_zero_is_refused_by_a_model_that_only_thinks(backend: Backend, model: str) -> None:
    error = _refusal(backend, model, types.ThinkingConfig(thinking_budget=0))

    assert error.message == "Budget 0 is invalid. This model only works in thinking mode."


def test_a_budget_of_zero_turns_thinking_off_on_a_3x_flash_model(backend: Backend) -> None:
    usage = _usage(backend, "gemini-3-flash-preview", types.ThinkingConfig(thinking_budget=0))

    assert usage.thoughts_token_count is None


def test_a_positive_budget_caps_the_thoughts(backend: Backend) -> None:
    usage = _usage(backend, thinking=types.ThinkingConfig(thinking_budget=10))

    assert usage.thoughts_token_count == 10


def test_a_budget_above_what_the_model_wants_changes_nothing(backend: Backend) -> None:
    usage = _usage(backend, thinking=types.ThinkingConfig(thinking_budget=4096))

    assert usage.thoughts_token_count == DYNAMIC_THOUGHTS


def test_2_5_flash_lite_does_not_think_by_default(backend: Backend) -> None:
    assert _usage(backend, "gemini-2.5-flash-lite").thoughts_token_count is None


def test_a_budget_of_minus_one_turns_dynamic_thinking_on_for_2_5_flash_lite(backend: Backend) -> None:
    usage = _usage(backend, "gemini-2.5-flash-lite", types.ThinkingConfig(thinking_budget=-1))

    assert usage.thoughts_token_count == DYNAMIC_THOUGHTS


def test_2_5_pro_thinks_by_default(backend: Backend) -> None:
    assert _usage(backend, "gemini-2.5-pro").thoughts_token_count == DYNAMIC_THOUGHTS


@pytest.mark.parametrize("model", ["gemini-3-flash-preview", "gemini-3.1-pro-preview", "gemini-3.5-flash"])
def test_3x_models_think_at_level_high_by_default(backend: Backend, model: str) -> None:
    assert _usage(backend, model).thoughts_token_count == HIGH_THOUGHTS


@pytest.mark.parametrize(
    ("level", "thoughts"),
    [
        (types.ThinkingLevel.MINIMAL, 18),
        (types.ThinkingLevel.LOW, 36),
        (types.ThinkingLevel.MEDIUM, 72),
        (types.ThinkingLevel.HIGH, 144),
    ],
)
def test_a_thinking_level_sets_how_much_a_3x_model_thinks(
    backend: Backend, level: types.ThinkingLevel, thoughts: int
) -> None:
    usage = _usage(backend, "gemini-3-flash-preview", types.ThinkingConfig(thinking_level=level))

    assert usage.thoughts_token_count == thoughts


def test_a_lowercase_thinking_level_is_accepted_on_the_wire(emulator: EmulatorProcess) -> None:
    response = httpx.post(
        f"{emulator.url}/v1beta/models/gemini-3-flash-preview:generateContent",
        headers={"x-goog-api-key": "k"},
        json={
            "contents": [{"role": "user", "parts": [{"text": PROMPT}]}],
            "generationConfig": {"thinkingConfig": {"thinkingLevel": "low"}},
        },
    )

    assert response.status_code == 200
    assert response.json()["usageMetadata"]["thoughtsTokenCount"] == 36


def test_a_thinking_level_on_a_2_5_model_is_refused(backend: Backend) -> None:
    error = _refusal(backend, MODEL, types.ThinkingConfig(thinking_level=types.ThinkingLevel.LOW))

    assert error.message == "Thinking level is not supported for this model."


def test_a_budget_and_a_level_together_are_refused(backend: Backend) -> None:
    thinking = types.ThinkingConfig(thinking_budget=100, thinking_level=types.ThinkingLevel.LOW)

    error = _refusal(backend, "gemini-3-flash-preview", thinking)

    assert error.message == "Only one of thinking_budget and thinking_level can be set."


def test_2_0_models_do_not_think(backend: Backend) -> None:
    assert _usage(backend, "gemini-2.0-flash").thoughts_token_count is None


def test_a_thinking_budget_on_a_model_that_cannot_think_is_refused(backend: Backend) -> None:
    error = _refusal(backend, "gemini-2.0-flash", types.ThinkingConfig(thinking_budget=512))

    assert error.message == "Thinking is not supported for this model."


def test_a_budget_below_minus_one_is_refused(backend: Backend) -> None:
    _refusal(backend, MODEL, types.ThinkingConfig(thinking_budget=-2))
