"""What the provider knows about each Gemini model, in one table; the server stays the authority.

The table feeds two checks that run before any billable call: a shut-down model is refused
(naming its replacement), and CreateCacheOperator refuses content below a model's minimum
cache size. That pre-check only ever saves a round trip, so it must never refuse content the
service would take: it uses the lowest credible minimum when sources disagree, and it is
skipped for models the table does not know (the server decides, and its answer is mapped).

This module also holds the provider's one model-id normalisation: every other module that
compares, prices or fingerprints a model name calls :func:`model_id` or :func:`lookup_keys`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import functools
import re
from collections.abc import Mapping

from airflow_provider_ctxcache.connection_defaults import GEMINI_API, VERTEX_AI
from airflow_provider_ctxcache.exceptions import CtxCacheConfigError

THINKING_DEFAULTS = ("none", "off", "dynamic", "high")
# A typo's suggestions: names at least this similar (difflib's ratio), and within WINDOW of the
# best one, so "gemini-2.5-pr" gets gemini-2.5-pro alone and "gpt-4" gets nothing.
SIMILAR_CUTOFF = 0.75
SIMILAR_WINDOW = 0.05
SIMILAR_LIMIT = 3

_PREFIX = re.compile(r"^(?:projects/[^/]+/locations/[^/]+/)?(?:publishers/google/)?(?:models/)?")
_VERSION_SUFFIX = re.compile(r"(?:-\d{3}|@\d+)$")


@dataclasses.dataclass(frozen=True)
class ModelFacts:
    """One model's published facts, per backend.

    :param min_cache_tokens: the documented minimum cache size per backend (``gemini_api``,
        ``vertex_ai``); a backend missing here does not serve the model.
    :param caching: whether explicit caches can be created for the model.
    :param shut_down: ISO date the model stopped being served, if it has (or is announced to).
    :param replaced_by: the model Google names as its successor.
    :param thinking_default: what a request that says nothing about thinking gets: ``none``
        (the model cannot think), ``off`` (it thinks only when asked), ``dynamic`` (a budget the
        model picks, ``thinkingBudget: -1``) or ``high`` (Gemini 3's ``thinkingLevel``). Thought
        tokens are billed as output.
    :param thinking_can_be_off: whether a request can turn thinking off (``thinkingBudget: 0``).
    :param lower_min_tokens: per backend, a smaller minimum than the docs state, from another
        credible source (a server seen enforcing it, or a table the docs have not replaced for
        this model); the pre-check takes the lower of the two.
    """

    min_cache_tokens: Mapping[str, int]
    caching: bool = True
    shut_down: str | None = None
    replaced_by: str | None = None
    thinking_default: str = "none"
    thinking_can_be_off: bool = True
    lower_min_tokens: Mapping[str, int] = dataclasses.field(default_factory=dict)

    def precheck_minimum(self, backend: str) -> int | None:
        """The lowest credible minimum on ``backend``; None where the table cannot say."""
        documented = self.min_cache_tokens.get(backend)
        if documented is None or not self.caching:
            return None
        return min(documented, self.lower_min_tokens.get(backend, documented))

    def shut_down_by(self, today: dt.date) -> bool:
        return self.shut_down is not None and dt.date.fromisoformat(self.shut_down) <= today


# Sources, all read 2026-11-29 (API_FACTS.md, "What changed"):
#   DEV:   ai.google.dev/gemini-api/docs/caching, minimums table as revised about May 2026
#          (2,048 for 2.5 Flash / Flash-Lite / Pro, 4,096 for the 3.x models).
#   VTX:   cloud.google.com/vertex-ai/generative-ai/docs/context-cache/context-cache-overview#limits
#          (2,048 for 2.0 and 2.5, 4,096 for 3 and 3.1; 32,769 for the 1.5-era -002 models).
#   THINK: ai.google.dev/gemini-api/docs/thinking and the Vertex model pages (2.5 Flash dynamic
#          and can be off, 2.5 Flash-Lite off, 2.5 Pro and 3.x Pro cannot be off, 3.x thinkingLevel
#          defaults to high, 2.0 and 1.5 do not think).
#   LIFE:  ai.google.dev/gemini-api/docs/deprecations (gemini-3-pro-preview shut down 2026-03-09).


def _both(tokens: int) -> dict[str, int]:
    return {GEMINI_API: tokens, VERTEX_AI: tokens}


MODEL_FACTS: dict[str, ModelFacts] = {
    # DEV's page gives no number for 2.0; VTX 2,048, taken for both backends (2026-11-29).
    # Caching on 2.0 Flash-Lite: "Supported" on the Developer API model page (updated 2026-02-18).
    "gemini-2.0-flash": ModelFacts(_both(2048)),
    "gemini-2.0-flash-001": ModelFacts(_both(2048)),
    "gemini-2.0-flash-lite": ModelFacts(_both(2048)),
    # DEV 2,048 / VTX 2,048 (2026-11-29); the Developer API's second "too small" message, as
    # quoted in public reports (API_FACTS, 2026-11-29), names min_total_token_count=1024, and the
    # docs gave 1,024 until about May 2026: the pre-check uses 1,024.
    "gemini-2.5-flash": ModelFacts(
        _both(2048), thinking_default="dynamic", lower_min_tokens={GEMINI_API: 1024}
    ),
    # DEV 2,048 (seen enforced, same report) / VTX 2,048 (2026-11-29); thinks only when asked.
    "gemini-2.5-flash-lite": ModelFacts(_both(2048), thinking_default="off"),
    # DEV 2,048 (4,096 until about May 2026) / VTX 2,048 (2026-11-29).
    "gemini-2.5-pro": ModelFacts(_both(2048), thinking_default="dynamic", thinking_can_be_off=False),
    # DEV 4,096 for 3.x (2026-11-29), but its 2026 table no longer names 3 Flash Preview and the
    # table before it gave 1,024 for it: the pre-check uses 1,024 / VTX 4,096 (2026-11-29).
    "gemini-3-flash-preview": ModelFacts(
        _both(4096), thinking_default="high", lower_min_tokens={GEMINI_API: 1024}
    ),
    # LIFE: shut down 2026-03-09, replaced by gemini-3.1-pro-preview (same prices).
    "gemini-3-pro-preview": ModelFacts(
        _both(4096),
        shut_down="2026-03-09",
        replaced_by="gemini-3.1-pro-preview",
        thinking_default="high",
        thinking_can_be_off=False,
    ),
    # DEV 4,096 / VTX 4,096 (2026-11-29); a public report (cited in API_FACTS, 2026-11-29) shows
    # Vertex enforcing 1,024 on a 3.1 Pro preview: the pre-check uses 1,024 there.
    "gemini-3.1-pro-preview": ModelFacts(
        _both(4096), thinking_default="high", thinking_can_be_off=False, lower_min_tokens={VERTEX_AI: 1024}
    ),
    # DEV 4,096 / VTX 4,096 (2026-11-29).
    "gemini-3.5-flash": ModelFacts(_both(4096), thinking_default="high"),
    "gemini-3.1-flash-lite": ModelFacts(_both(4096), thinking_default="high"),
    "gemini-3.1-flash-lite-preview": ModelFacts(_both(4096), thinking_default="high"),
    # VTX only, 32,769 (2026-11-29).
    "gemini-1.5-flash-002": ModelFacts({VERTEX_AI: 32769}),
    "gemini-1.5-pro-002": ModelFacts({VERTEX_AI: 32769}),
}


def model_id(model: str) -> str:
    """``gemini-2.5-flash`` from any form the two backends use for the same model.

    ``models/X``, ``publishers/google/models/X`` and ``projects/P/locations/L/publishers/google/models/X``
    all name X; ids are lower-case on both backends.
    """
    return _PREFIX.sub("", model.strip()).lower()


def lookup_keys(model: str) -> list[str]:
    """Keys to look a model up by, most specific first: its id, then its id without a version suffix."""
    exact = model_id(model)
    base = _VERSION_SUFFIX.sub("", exact)
    return [exact] if base == exact else [exact, base]


def facts_for(model: str) -> ModelFacts | None:
    """The table's row for ``model`` (a ``-001`` version shares its family's row), or None."""
    # Only names are remembered; anything else takes the same lookup uncached and fails as before.
    return _facts_by_name(model) if isinstance(model, str) else _facts_by_name.__wrapped__(model)


@functools.lru_cache(maxsize=256)
def _facts_by_name(model: str) -> ModelFacts | None:
    # The fan-out checks its model on every call (``check_not_shut_down``): the table is fixed, so
    # each spelling of a name is parsed (three regex passes) once per process, not once a call.
    return next((MODEL_FACTS[key] for key in lookup_keys(model) if key in MODEL_FACTS), None)


def precheck_min_tokens(model: str, backend: str) -> int | None:
    """The size below which ``backend`` surely refuses a cache of ``model``; None means "ask the server"."""
    facts = facts_for(model)
    return facts.precheck_minimum(backend) if facts is not None else None


def check_not_shut_down(model: str, field: str = "model", *, today: dt.date | None = None) -> None:
    """Refuses a model that is no longer served, before any call, naming its replacement."""
    facts = facts_for(model)
    if facts is None or not facts.shut_down_by(today or dt.datetime.now(dt.timezone.utc).date()):
        return
    instead = f"use {facts.replaced_by!r} instead" if facts.replaced_by else "pick a current model"
    raise CtxCacheConfigError(f"{field}: {model_id(model)!r} was shut down on {facts.shut_down}; {instead}.")


def similar_models(model: str, backend: str | None = None) -> list[str]:
    """The table's names closest to a model id the server did not know, best first (at most 3).

    Only models served on ``backend`` (any, when None); a shut-down model that matches is
    suggested as its replacement. Empty when nothing is close: no guess beats a wrong one.
    """
    wanted = model_id(model)
    scored = sorted(
        (
            (difflib.SequenceMatcher(None, wanted, name).ratio(), name)
            for name, facts in MODEL_FACTS.items()
            if backend is None or backend in facts.min_cache_tokens
        ),
        reverse=True,
    )
    if not scored:
        return []
    floor = max(SIMILAR_CUTOFF, scored[0][0] - SIMILAR_WINDOW)
    found: list[str] = []
    for ratio, name in scored:
        if ratio < floor:
            break
        suggestion = MODEL_FACTS[name].replaced_by or name
        if suggestion != wanted and suggestion not in found:
            found.append(suggestion)
    return found[:SIMILAR_LIMIT]


def current_models(backend: str | None = None) -> list[str]:
    """The table's models still served (on ``backend``, when given), for a message listing them."""
    today = dt.datetime.now(dt.timezone.utc).date()
    return [
        name
        for name, facts in MODEL_FACTS.items()
        if not facts.shut_down_by(today) and (backend is None or backend in facts.min_cache_tokens)
    ]
