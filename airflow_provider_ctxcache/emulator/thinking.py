"""Thinking in generateContent: which ``thinkingConfig`` a model takes, and the thoughts it spends.

What a model accepts follows the model table (:mod:`.models`):

- no ``thinkingBudget`` and no ``thinkingLevel``: the model's default (none or off: no
  thoughts; dynamic: as budget -1; a level: that level);
- ``thinkingBudget`` and ``thinkingLevel`` together: 400;
- ``thinkingBudget`` 0 turns thinking off, except on a model that cannot (400 "Budget 0 is
  invalid. This model only works in thinking mode."); -1 is dynamic; N > 0 is dynamic with at
  most N thoughts; any budget but 0 on a model that cannot think at all is a 400;
- ``thinkingLevel`` (``minimal``, ``low``, ``medium``, ``high``, any case) only on the models
  that take levels (3.x); elsewhere 400 "Thinking level is not supported for this model.".

Thought tokens are deterministic, from the request's ``promptTokenCount`` P (cached tokens
included): a base of ``16 + P % 64`` times a factor: 1 (minimal), 2 (low), 4 (medium or
dynamic), 8 (high); a positive budget caps the result. They are billed as output and add to
``totalTokenCount``; they do not use up ``maxOutputTokens`` here (the real service's do).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .content import pick
from .errors import invalid_argument
from .model_facts import THINKING_DYNAMIC, THINKING_LEVELS, ModelFacts

DYNAMIC_BUDGET = -1
LEVEL_FACTORS: dict[str, int] = {"minimal": 1, "low": 2, "medium": 4, "high": 8}
DYNAMIC_FACTOR = 4

BUDGET_ZERO_MESSAGE = "Budget 0 is invalid. This model only works in thinking mode."
LEVEL_UNSUPPORTED_MESSAGE = "Thinking level is not supported for this model."
THINKING_UNSUPPORTED_MESSAGE = "Thinking is not supported for this model."
BOTH_SET_MESSAGE = "Only one of thinking_budget and thinking_level can be set."
_UNSPECIFIED_LEVEL = "thinking_level_unspecified"


@dataclass(frozen=True)
class ThinkingPlan:
    """How much a request thinks: ``factor`` times the base, at most ``cap`` (0: no thinking)."""

    factor: int
    cap: int | None = None

    def thoughts(self, prompt_tokens: int) -> int:
        """The thought tokens of a request whose ``promptTokenCount`` is ``prompt_tokens``."""
        spent = self.factor * (16 + prompt_tokens % 64)
        return spent if self.cap is None else min(self.cap, spent)


NO_THINKING = ThinkingPlan(0)


def plan_thinking(facts: ModelFacts, config: Mapping[str, Any]) -> ThinkingPlan:
    """The plan for a request's ``generationConfig.thinkingConfig`` on a model, or a 400."""
    budget = _budget(pick(config, "thinkingBudget", "thinking_budget"))
    level = _level(pick(config, "thinkingLevel", "thinking_level"))
    if budget is not None and level is not None:
        raise invalid_argument(BOTH_SET_MESSAGE)
    if level is not None:
        if not facts.takes_levels:
            raise invalid_argument(LEVEL_UNSUPPORTED_MESSAGE)
        return ThinkingPlan(LEVEL_FACTORS[level])
    if budget is None:
        return _default(facts)
    if budget == 0:
        if not facts.thinking_can_be_off:
            raise invalid_argument(BUDGET_ZERO_MESSAGE)
        return NO_THINKING
    if not facts.thinks_at_all:
        raise invalid_argument(THINKING_UNSUPPORTED_MESSAGE)
    return ThinkingPlan(DYNAMIC_FACTOR, None if budget == DYNAMIC_BUDGET else budget)


def _default(facts: ModelFacts) -> ThinkingPlan:
    if facts.thinking_default == THINKING_DYNAMIC:
        return ThinkingPlan(DYNAMIC_FACTOR)
    if facts.thinking_default in THINKING_LEVELS:
        return ThinkingPlan(LEVEL_FACTORS[facts.thinking_default])
    return NO_THINKING


def _budget(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise invalid_argument(
            "Invalid value at 'generation_config.thinking_config.thinking_budget' (TYPE_INT32)."
        )
    try:
        budget = int(value)
    except ValueError as exc:
        raise invalid_argument(
            "Invalid value at 'generation_config.thinking_config.thinking_budget' (TYPE_INT32)."
        ) from exc
    if budget < DYNAMIC_BUDGET:
        raise invalid_argument(
            f"thinking_budget must be -1 (dynamic), 0 (off) or a positive number of tokens, got {budget}."
        )
    return budget


def _level(value: Any) -> str | None:
    if value is None:
        return None
    level = str(value).lower()
    if level == _UNSPECIFIED_LEVEL:
        return None
    if level not in LEVEL_FACTORS:
        raise invalid_argument(
            f"Invalid value at 'generation_config.thinking_config.thinking_level', {value!r}: "
            f"expected one of {', '.join(THINKING_LEVELS)}."
        )
    return level
