"""Prices: one editable table of USD per million tokens, with its sources, and the overrides.

A price has the standard rates, the higher rates a model charges when a request's prompt
(``promptTokenCount``, which includes the cached tokens) is over :data:`LONG_CONTEXT_TOKENS`, the
storage rate per hour, and the batch discount. A model the table does not know has no price:
reports then give token counts and say "price unknown", never a made-up figure.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, TypeAlias

from airflow_provider_ctxcache.exceptions import CtxCacheConfigError
from airflow_provider_ctxcache.model_facts import lookup_keys

PER_MILLION = 1_000_000
_FIX = "set it in the connection extra 'prices' or the operator's prices="


def _check_amount(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CtxCacheConfigError(
            f"{path}: {value!r} is not a number; give USD per million tokens as a number >= 0 ({_FIX})."
        )
    if not math.isfinite(value) or value < 0:
        raise CtxCacheConfigError(
            f"{path}: {value!r} must be a finite number >= 0 (USD per million tokens); {_FIX}."
        )
    return float(value)


@dataclass(frozen=True)
class Rates:
    """The three per-request rates of one price tier (USD per million tokens)."""

    input: float
    cached_input: float
    output: float


@dataclass(frozen=True)
class ModelPrice:
    """USD per million tokens (storage: per million tokens per hour). Thinking tokens bill as output.

    The ``*_above_200k`` rates apply to a request whose prompt is over :data:`LONG_CONTEXT_TOKENS`
    (None: the model has one tier). ``batch_discount`` is the share batch prediction takes off
    the online price. ``source`` says where the figures come from and when they were read.
    """

    input_per_million: float
    cached_input_per_million: float
    output_per_million: float
    storage_per_million_per_hour: float
    input_per_million_above_200k: float | None = None
    cached_input_per_million_above_200k: float | None = None
    output_per_million_above_200k: float | None = None
    batch_discount: float = 0.5
    source: str = field(default="override", compare=False)

    def __post_init__(self) -> None:
        for name in PRICE_FIELDS:
            value = getattr(self, name)
            if value is not None or name in REQUIRED_FIELDS:
                _check_amount(value, f"prices.{name}")
        if not self.batch_discount <= 1:
            raise CtxCacheConfigError(
                f"prices.batch_discount: {self.batch_discount!r} is a share of the price; "
                "give 0..1, e.g. 0.5."
            )

    @property
    def tiered(self) -> bool:
        return self.input_per_million_above_200k is not None

    def rates(self, prompt_tokens: int) -> Rates:
        """The rates of the tier a request falls in, chosen by its prompt size (cached tokens included)."""
        if prompt_tokens > LONG_CONTEXT_TOKENS and self.tiered:
            return Rates(
                _or(self.input_per_million_above_200k, self.input_per_million),
                _or(self.cached_input_per_million_above_200k, self.cached_input_per_million),
                _or(self.output_per_million_above_200k, self.output_per_million),
            )
        return Rates(self.input_per_million, self.cached_input_per_million, self.output_per_million)

    @property
    def batch_share(self) -> float:
        """What batch prediction pays of the online price."""
        return 1.0 - self.batch_discount

    def to_dict(self) -> dict[str, Any]:
        values: dict[str, Any] = {name: getattr(self, name) for name in PRICE_FIELDS}
        return {**{k: None if v is None else float(v) for k, v in values.items()}, "source": self.source}


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


LONG_CONTEXT_TOKENS = 200_000
"""Prompts over this many tokens (cached ones included) bill at a model's higher tier, if it has one."""
REQUIRED_FIELDS = (
    "input_per_million",
    "cached_input_per_million",
    "output_per_million",
    "storage_per_million_per_hour",
)
PRICE_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(ModelPrice) if f.name != "source")

# ---- The one editable price table ---------------------------------------------------------------
# USD per 1M tokens, standard paid tier, text input; storage per 1M tokens per hour. Batch prediction
# is 50% off on both backends and takes no explicit cache. These figures CHANGE: check the pricing
# pages and edit them here (or override them per connection with the extra "prices", or per operator
# with prices=) instead of writing prices anywhere else. Vertex list prices are assumed equal to the
# Developer API's (not confirmed). Keys are base model ids; a "-NNN" version suffix and the
# backends' resource forms ("models/...", "projects/.../models/...") resolve to them.
_PAGE = "ai.google.dev/gemini-api/docs/pricing"
_CHECKED = f"{_PAGE}, as read 2026-03 (team API facts, checked 2026-11-29)"
_BRIEF = f"{_PAGE}, from the project brief (2025); not re-checked since"
PRICES: dict[str, ModelPrice] = {
    "gemini-2.5-flash": ModelPrice(0.30, 0.03, 2.50, 1.00, source=_CHECKED),
    "gemini-2.5-pro": ModelPrice(1.25, 0.125, 10.00, 4.50, 2.50, 0.25, 15.00, source=_CHECKED),
    # gemini-3-pro-preview was shut down on 2026-03-09; its successor kept its prices.
    "gemini-3.1-pro-preview": ModelPrice(2.00, 0.20, 12.00, 4.50, 4.00, 0.40, 18.00, source=_CHECKED),
    "gemini-2.5-flash-lite": ModelPrice(0.10, 0.01, 0.40, 1.00, source=_BRIEF),
    "gemini-2.0-flash": ModelPrice(0.10, 0.025, 0.40, 1.00, source=_BRIEF),
    "gemini-3-flash-preview": ModelPrice(0.50, 0.05, 3.00, 1.00, source=_BRIEF),
}
# --------------------------------------------------------------------------------------------------

PriceOverrides: TypeAlias = Mapping[str, Any] | str | None
"""A flat mapping of price fields (for the model in use), ``{model: {fields}}``, or that as JSON."""


def _names(model: str) -> list[str]:
    """Lookup keys for a model, most specific first: its id, then its id without a version suffix."""
    return lookup_keys(model)


def _check_fields(values: Any, path: str) -> dict[str, float]:
    if not isinstance(values, Mapping):
        raise CtxCacheConfigError(
            f"{path}: expected a mapping of price fields ({', '.join(PRICE_FIELDS)}), "
            f"got {type(values).__name__}."
        )
    checked: dict[str, float] = {}
    for name, value in values.items():
        if name not in PRICE_FIELDS:
            raise CtxCacheConfigError(
                f"{path}.{name}: unknown price field; use one of {', '.join(PRICE_FIELDS)}."
            )
        checked[name] = _check_amount(value, f"{path}.{name}")
    return checked


@dataclass(frozen=True)
class _Layer:
    flat: dict[str, float]
    per_model: dict[str, dict[str, float]]


def _parse_layer(overrides: PriceOverrides) -> _Layer:
    """Validate one override mapping in full, so a typo for any model fails, not only the one in use."""
    if overrides is None:
        return _Layer({}, {})
    if isinstance(overrides, str):
        if not overrides.strip():
            return _Layer({}, {})
        try:
            overrides = json.loads(overrides)
        except ValueError as exc:
            raise CtxCacheConfigError(
                f"prices: not valid JSON ({exc}); give a mapping of price fields."
            ) from exc
    if not isinstance(overrides, Mapping):
        raise CtxCacheConfigError(
            f"prices: expected a mapping, either {{field: USD}} for the model in use or "
            f"{{model: {{field: USD}}}}, got {type(overrides).__name__}."
        )
    nested = [k for k, v in overrides.items() if isinstance(v, Mapping)]
    if not nested:
        return _Layer(_check_fields(overrides, "prices"), {})
    if len(nested) != len(overrides):
        flat_keys = sorted(str(k) for k, v in overrides.items() if not isinstance(v, Mapping))
        raise CtxCacheConfigError(
            f"prices: mixes model entries ({', '.join(map(str, nested))}) with plain values "
            f"({', '.join(flat_keys)}); give either {{field: USD}} or {{model: {{field: USD}}}}."
        )
    per_model: dict[str, dict[str, float]] = {}
    written: dict[str, str] = {}
    for key, values in overrides.items():
        checked = _check_fields(values, f"prices.{key}")
        name = _names(str(key))[0]
        if name in written:
            raise CtxCacheConfigError(
                f"prices.{key}: names the same model as prices.{written[name]}; keep one entry."
            )
        written[name] = str(key)
        per_model[name] = checked
    return _Layer({}, per_model)


def _layers(overrides: PriceOverrides | Sequence[PriceOverrides]) -> list[_Layer]:
    if overrides is None or isinstance(overrides, (str, Mapping)):
        return [_parse_layer(overrides)]
    return [_parse_layer(layer) for layer in overrides]


def check_overrides(overrides: PriceOverrides | Sequence[PriceOverrides]) -> None:
    """Raise :class:`CtxCacheConfigError` for a bad override now, before anything is spent."""
    _layers(overrides)


def find_price(model: str, overrides: PriceOverrides | Sequence[PriceOverrides] = None) -> ModelPrice | None:
    """The price of ``model``: the table entry with ``overrides`` applied, or None if none is known.

    ``overrides`` is one mapping or a sequence of them applied in order, later winning (e.g.
    ``[connection_extra_prices, operator_prices]``). Each is either a flat ``{field: USD}`` for the
    model in use or ``{model: {field: USD}}``; given fields replace only themselves. A model missing
    from the table needs all four fields. Bad overrides raise :class:`CtxCacheConfigError`.
    """
    layers = _layers(overrides)
    names = _names(model)
    base = next((PRICES[n] for n in names if n in PRICES), None)
    values: dict[str, Any] = {name: getattr(base, name) for name in PRICE_FIELDS} if base else {}
    given: dict[str, float] = {}
    for layer in layers:
        given.update(layer.flat)
        for name in reversed(names):  # base id first, so an entry for the exact version wins
            given.update(layer.per_model.get(name, {}))
    if not base and not given:
        return None
    values.update(given)
    missing = [f for f in REQUIRED_FIELDS if f not in values]
    if missing:
        raise CtxCacheConfigError(
            f"prices.{names[0]}: the price table has no entry for this model, so an override must give "
            f"all four base fields; missing {', '.join(missing)}."
        )
    source = base.source if base and not given else f"{base.source}, with overrides" if base else "override"
    return ModelPrice(**values, source=source)


def price_for(model: str, overrides: PriceOverrides | Sequence[PriceOverrides] = None) -> ModelPrice:
    """Like :func:`find_price`, but a model with no known price raises :class:`CtxCacheConfigError`."""
    price = find_price(model, overrides)
    if price is None:
        example = ", ".join(f'"{name}": ...' for name in REQUIRED_FIELDS)
        raise CtxCacheConfigError(
            f"prices: no price for model {model!r}; pass prices={{{example}}} to the operator "
            "or set it in the connection extra 'prices'."
        )
    return price
