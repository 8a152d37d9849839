"""The emulator's model table: which models each backend serves, their cache minimums and thinking.

A plain importable structure (:data:`MODEL_FACTS`) because the provider keeps its own copy and a
test compares the two. Each row names its source and the date it was checked; the newest
facts are API_FACTS.md "What changed" (checked 2026-11-29). Servers deviate from the docs
(a public report shows Vertex enforcing 1,024 on a 3.1 Pro preview), so these are the
emulator's choices, not guarantees about production.

- ``min_cache_tokens``: per backend (``gemini_api``, ``vertex_ai``); a backend missing means the
  model is not served there at all (404 like an unknown model).
- ``caching``: whether explicit context caching is offered on the model.
- ``shut_down``: the ISO date the model was shut down; a shut-down model answers 404 everywhere.
- ``thinking_default``: what a request without a thinking config gets: ``"none"`` (the model
  cannot think), ``"off"`` (it can, when asked), ``"dynamic"`` (a 2.5 model choosing its own
  budget, ``thinkingBudget: -1``) or a 3.x ``thinkingLevel`` such as ``"high"``.
- ``thinking_can_be_off``: whether ``thinkingBudget: 0`` is accepted (else 400).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace

GEMINI_API = "gemini_api"
VERTEX_AI = "vertex_ai"
BACKENDS: tuple[str, ...] = (GEMINI_API, VERTEX_AI)

THINKING_NONE = "none"
THINKING_OFF = "off"
THINKING_DYNAMIC = "dynamic"
THINKING_LEVELS: tuple[str, ...] = ("minimal", "low", "medium", "high")


@dataclass(frozen=True)
class ModelFacts:
    """What the emulator knows about one model id."""

    min_cache_tokens: dict[str, int]
    caching: bool
    shut_down: str | None
    thinking_default: str
    thinking_can_be_off: bool

    @property
    def thinks_at_all(self) -> bool:
        """Whether the model can produce thoughts."""
        return self.thinking_default != THINKING_NONE

    @property
    def takes_levels(self) -> bool:
        """Whether the model takes ``thinkingLevel`` (the 3.x models)."""
        return self.thinking_default in THINKING_LEVELS


def _both(minimum: int) -> dict[str, int]:
    return {GEMINI_API: minimum, VERTEX_AI: minimum}


def _two_zero() -> ModelFacts:
    return ModelFacts(_both(2048), True, None, THINKING_NONE, True)


def _two_five(thinking: str, *, can_be_off: bool) -> ModelFacts:
    return ModelFacts(_both(2048), True, None, thinking, can_be_off)


def _three(*, can_be_off: bool, shut_down: str | None = None) -> ModelFacts:
    return ModelFacts(_both(4096), True, shut_down, "high", can_be_off)


def _one_five() -> ModelFacts:
    return ModelFacts({VERTEX_AI: 32769}, True, None, THINKING_NONE, True)


MODEL_FACTS: dict[str, ModelFacts] = {
    # Minimum 2,048 on Vertex (Vertex caching overview, checked 2026-11-29). On the Developer API
    # the 2,048 is UNDOCUMENTED (its caching page gives no number for 2.0): assumed equal to
    # Vertex. 2.0 models do not think (thinking docs, checked 2026-11-29).
    "gemini-2.0-flash": _two_zero(),
    "gemini-2.0-flash-001": _two_zero(),
    # Caching "Supported" on the Developer API model page (updated 2026-02-18; not in API_FACTS).
    "gemini-2.0-flash-lite": _two_zero(),
    # Developer API caching page (after about May 2026) and Vertex overview: 2,048 (checked
    # 2026-11-29). Thinking docs: 2.5 Flash thinks by default (dynamic, -1), budget 0 turns it off.
    "gemini-2.5-flash": _two_five(THINKING_DYNAMIC, can_be_off=True),
    # Same minimums (checked 2026-11-29). Flash-Lite does not think unless given a budget.
    "gemini-2.5-flash-lite": _two_five(THINKING_OFF, can_be_off=True),
    # Developer API caching page: 4,096 until about May 2026, then 2,048; Vertex 2,048 (checked
    # 2026-11-29). 2.5 Pro thinks by default and cannot turn it off.
    "gemini-2.5-pro": _two_five(THINKING_DYNAMIC, can_be_off=False),
    # 3.x: 4,096 on both backends (Developer API caching page, Vertex overview; checked
    # 2026-11-29). Gemini 3 takes thinkingLevel, default high; the Pro models cannot turn it off.
    "gemini-3-flash-preview": _three(can_be_off=True),
    "gemini-3.1-pro-preview": _three(can_be_off=False),
    "gemini-3.5-flash": _three(can_be_off=True),
    "gemini-3.1-flash-lite": _three(can_be_off=True),
    "gemini-3.1-flash-lite-preview": _three(can_be_off=True),
    # Shut down on 2026-03-09, replaced by gemini-3.1-pro-preview (Developer API models page,
    # checked 2026-11-29): 404 model not found on both backends.
    "gemini-3-pro-preview": _three(can_be_off=False, shut_down="2026-03-09"),
    # 1.5-era models: Vertex only, minimum 32,769 (Vertex caching overview, checked 2026-11-29).
    "gemini-1.5-flash-002": _one_five(),
    "gemini-1.5-pro-002": _one_five(),
}

_VERSION_SUFFIX = re.compile(r"-\d{3}$")


def model_id(model: str) -> str:
    """The bare model id of any model name form (``models/X``, ``.../publishers/google/models/X``)."""
    return model.rsplit("/", 1)[-1]


def canonical_id(model: str, table: Mapping[str, ModelFacts]) -> str | None:
    """The table key of ``model``: itself, else its base without a ``-NNN`` version; None if unknown."""
    mid = model_id(model)
    if mid in table:
        return mid
    base = _VERSION_SUFFIX.sub("", mid)
    if base != mid and base in table:
        return base
    return None


def facts_for(model: str, table: Mapping[str, ModelFacts]) -> ModelFacts | None:
    """The facts of ``model`` (a ``-NNN`` version shares its base's), or None if unknown."""
    key = canonical_id(model, table)
    return None if key is None else table[key]


def with_min_tokens(table: Mapping[str, ModelFacts], overrides: Mapping[str, int]) -> dict[str, ModelFacts]:
    """The table with each override's minimum on every backend serving the model.

    An unknown model is added: served on both backends, caching, not thinking.
    """
    merged = dict(table)
    for model, minimum in overrides.items():
        mid = model_id(model)
        known = merged.get(mid)
        if known is None:
            merged[mid] = ModelFacts(_both(minimum), True, None, THINKING_NONE, True)
        else:
            merged[mid] = replace(known, min_cache_tokens=dict.fromkeys(known.min_cache_tokens, minimum))
    return merged
