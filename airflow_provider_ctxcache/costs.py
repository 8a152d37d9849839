"""Cost ledger: what a fan-out cost with its cache, and what the same work would cost without one.

All figures are USD, from per-million-token prices in :data:`PRICES` (one editable table):

- **with cache** = uncached input (prompt - cached tokens, at the input rate) + cached input (at the
  cached rate) + output (candidates + thoughts, at the output rate) + storage (cache size x storage
  rate x hours held) + creation (cache size at the input rate, the one-time write; optional).
- **without cache (online)** = every prompt token (``prompt_token_count`` includes the cached ones)
  at the input rate + the same output: the same online calls sending the context each time.
- **batch (no cache)** = online without cache x :data:`BATCH_DISCOUNT`: batch prediction is 50% off
  but rejects explicit caches, so it is the alternative a cache has to beat.

Savings are negative when caching costs more (few requests, long storage). Break-even counts how
many requests of the observed shape make the cache pay for its fixed cost (storage for the hours
given, plus creation); the storage hours are taken as fixed, not as growing with the request count.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Protocol, TypeAlias

from airflow_provider_ctxcache.exceptions import CtxCacheConfigError
from airflow_provider_ctxcache.models import lookup_keys, model_id

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
class ModelPrice:
    """USD per million tokens (storage: per million tokens per hour). Thinking tokens bill as output."""

    input_per_million: float
    cached_input_per_million: float
    output_per_million: float
    storage_per_million_per_hour: float

    def __post_init__(self) -> None:
        for f in fields(self):
            _check_amount(getattr(self, f.name), f"prices.{f.name}")

    def to_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}


PRICE_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(ModelPrice))

# ---- The one editable price table ---------------------------------------------------------------
# Source: Google's public Gemini API pricing pages (ai.google.dev/gemini-api/docs/pricing and the
# Vertex AI generative AI pricing page), standard paid tier, text input, as given in this project's
# brief and shared API facts; they were not re-checked against the live pages when written.
# These figures CHANGE: check the pricing pages and edit them here (or override them per connection
# with the extra "prices", or per operator with prices=) instead of writing prices anywhere else.
# Cached input is 10% of input on 2.5+ models and 25% on 2.0. Keys are base model ids; a "-NNN"
# version suffix and the backends' resource forms ("models/...", "projects/.../models/...") resolve
# to them.
PRICES: dict[str, ModelPrice] = {
    "gemini-2.5-flash": ModelPrice(0.30, 0.03, 2.50, 1.00),
    "gemini-2.5-flash-lite": ModelPrice(0.10, 0.01, 0.40, 1.00),
    # Prompts over 200k tokens bill at a higher tier on 2.5 Pro; that tier is not modelled here.
    "gemini-2.5-pro": ModelPrice(1.25, 0.125, 10.00, 4.50),
    "gemini-2.0-flash": ModelPrice(0.10, 0.025, 0.40, 1.00),
    # gemini-3-pro-preview was shut down on 2026-03-09; its successor kept its prices.
    "gemini-3.1-pro-preview": ModelPrice(2.00, 0.20, 12.00, 4.50),
    "gemini-3-flash-preview": ModelPrice(0.50, 0.05, 3.00, 1.00),
}
# Batch prediction bills at this fraction of the online price (and accepts no explicit cache).
BATCH_DISCOUNT = 0.5
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
    values: dict[str, float] = base.to_dict() if base else {}
    given: dict[str, float] = {}
    for layer in layers:
        given.update(layer.flat)
        for name in reversed(names):  # base id first, so an entry for the exact version wins
            given.update(layer.per_model.get(name, {}))
    if not base and not given:
        return None
    values.update(given)
    missing = [f for f in PRICE_FIELDS if f not in values]
    if missing:
        raise CtxCacheConfigError(
            f"prices.{names[0]}: the price table has no entry for this model, so an override must give "
            f"all four fields; missing {', '.join(missing)}."
        )
    return ModelPrice(**values)


def price_for(model: str, overrides: PriceOverrides | Sequence[PriceOverrides] = None) -> ModelPrice:
    """Like :func:`find_price`, but a model with no known price raises :class:`CtxCacheConfigError`."""
    price = find_price(model, overrides)
    if price is None:
        example = ", ".join(f'"{name}": ...' for name in PRICE_FIELDS)
        raise CtxCacheConfigError(
            f"prices: no price for model {model!r}; pass prices={{{example}}} to the operator "
            "or set it in the connection extra 'prices'."
        )
    return price


def readable_duration(seconds: float) -> str:
    """Seconds, minutes or hours, whichever reads best: '42 s', '7.5 min', '2 h', '1.25 h'."""
    if seconds < 60:
        return f"{seconds:.2g} s" if seconds < 1 else f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.3g} min"
    return f"{seconds / 3600:.3g} h"


def _usd(tokens: float, per_million: float) -> float:
    return tokens * per_million / PER_MILLION


def _break_even(fixed: float, saving_per_request: float, scale: float) -> int | None:
    """Requests needed to recover ``fixed``; None when a request saves nothing (float noise included)."""
    if saving_per_request <= scale * 1e-9:
        return None
    return max(1, math.ceil(round(fixed / saving_per_request, 9)))


def _plural(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _percent(saved: float, baseline: float) -> float | None:
    return saved / baseline * 100 if baseline > 0 else None


@dataclass(frozen=True)
class CostReport:
    """The cost of one run with its cache, against online without a cache and against batch (USD)."""

    model: str
    price: ModelPrice
    requests: int
    prompt_tokens: int
    cached_tokens: int
    output_tokens: int
    cache_tokens: int
    storage_hours: float
    include_creation: bool
    with_cache: float
    without_cache: float
    batch: float
    breakdown: dict[str, float] = field(default_factory=dict)
    break_even_requests: int | None = None
    break_even_requests_vs_batch: int | None = None

    @property
    def saved_vs_online(self) -> float:
        return self.without_cache - self.with_cache

    @property
    def saved_vs_online_percent(self) -> float | None:
        return _percent(self.saved_vs_online, self.without_cache)

    @property
    def saved_vs_batch(self) -> float:
        return self.batch - self.with_cache

    @property
    def saved_vs_batch_percent(self) -> float | None:
        return _percent(self.saved_vs_batch, self.batch)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable, USD to the micro-dollar and percentages to 0.01, for XCom."""

        def usd(value: float) -> float:
            return round(value, 6) + 0.0  # + 0.0 turns -0.0 into 0.0

        def pct(value: float | None) -> float | None:
            return None if value is None else round(value, 2) + 0.0

        return {
            "model": self.model,
            "currency": "USD",
            "requests": self.requests,
            "prompt_tokens": self.prompt_tokens,
            "cached_tokens": self.cached_tokens,
            "output_tokens": self.output_tokens,
            "cache_tokens": self.cache_tokens,
            "storage_hours": round(self.storage_hours, 4),
            "include_creation": self.include_creation,
            "price": self.price.to_dict(),
            "with_cache": usd(self.with_cache),
            "without_cache": usd(self.without_cache),
            "batch": usd(self.batch),
            "breakdown": {k: usd(v) for k, v in self.breakdown.items()},
            "saved_vs_online": usd(self.saved_vs_online),
            "saved_vs_online_percent": pct(self.saved_vs_online_percent),
            "saved_vs_batch": usd(self.saved_vs_batch),
            "saved_vs_batch_percent": pct(self.saved_vs_batch_percent),
            "break_even_requests": self.break_even_requests,
            "break_even_requests_vs_batch": self.break_even_requests_vs_batch,
        }

    def table(self) -> str:
        """A small aligned text table for the task log."""
        largest = max(abs(self.without_cache), abs(self.with_cache), abs(self.batch))
        places = 2 if largest >= 10 else 4 if largest >= 0.01 else 6

        def money(value: float) -> str:
            # Half-up on the decimal value, so $152.575 shows as 152.58 despite binary floats.
            exact = Decimal(repr(round(value, 9))).quantize(Decimal(1).scaleb(-places), ROUND_HALF_UP)
            return f"{exact + 0:,.{places}f}"

        def pct(value: float | None) -> str:
            return "n/a" if value is None else f"{value:.2f}%"

        rows: list[tuple[str, str, str, str]] = [
            ("", "USD", "saved by cache", "saved %"),
            ("with cache", money(self.with_cache), "", ""),
            *[(f"  {name.replace('_', ' ')}", money(v), "", "") for name, v in self.breakdown.items()],
            (
                "without cache (online)",
                money(self.without_cache),
                money(self.saved_vs_online),
                pct(self.saved_vs_online_percent),
            ),
            (
                "batch (no cache)",
                money(self.batch),
                money(self.saved_vs_batch),
                pct(self.saved_vs_batch_percent),
            ),
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        lines = [
            f"Cost on {self.model}: {_plural(self.requests, 'request')}, "
            f"cache of {self.cache_tokens:,} tokens "
            f"held {readable_duration(self.storage_hours * 3600)}"
        ]
        for row in rows:
            cells = [row[0].ljust(widths[0])] + [row[i].rjust(widths[i]) for i in range(1, 4)]
            lines.append("  ".join(cells).rstrip())

        def requests(n: int | None) -> str:
            return "never" if n is None else _plural(n, "request")

        lines.append(
            f"break-even: {requests(self.break_even_requests)} vs online, "
            f"{requests(self.break_even_requests_vs_batch)} vs batch"
        )
        return "\n".join(lines)


def _count(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"{name}: must be a number >= 0, got {value!r}")


def cost_report(
    *,
    model: str,
    price: ModelPrice | None = None,
    requests: int,
    prompt_tokens: int,
    cached_tokens: int,
    output_tokens: int,
    cache_tokens: int,
    storage_hours: float,
    include_creation: bool = True,
) -> CostReport:
    """Price one run. ``price`` defaults to the table entry for ``model`` (see :func:`price_for`).

    ``prompt_tokens`` includes ``cached_tokens`` (as ``usage_metadata`` reports it);
    ``output_tokens`` is candidates + thoughts; ``cache_tokens`` is the cache's size
    (``usage_metadata.total_token_count``); ``storage_hours`` is how long it was held for this work.
    """
    for name, value in (
        ("requests", requests),
        ("prompt_tokens", prompt_tokens),
        ("cached_tokens", cached_tokens),
        ("output_tokens", output_tokens),
        ("cache_tokens", cache_tokens),
        ("storage_hours", storage_hours),
    ):
        _count(value, name)
    p = price if price is not None else price_for(model)
    # A server that reports more cached than prompt tokens gets no negative uncached input.
    uncached = max(0, prompt_tokens - cached_tokens)
    breakdown = {
        "uncached_input": _usd(uncached, p.input_per_million),
        "cached_input": _usd(cached_tokens, p.cached_input_per_million),
        "output": _usd(output_tokens, p.output_per_million),
        "storage": _usd(cache_tokens, p.storage_per_million_per_hour) * storage_hours,
        "creation": _usd(cache_tokens, p.input_per_million) if include_creation else 0.0,
    }
    with_cache = sum(breakdown.values())
    without_cache = _usd(prompt_tokens, p.input_per_million) + breakdown["output"]
    batch = without_cache * BATCH_DISCOUNT

    fixed = breakdown["storage"] + breakdown["creation"]
    if requests > 0:
        per_request_with_cache = (with_cache - fixed) / requests
        per_request_online = without_cache / requests
        scale = max(per_request_online, per_request_with_cache)
        break_even = _break_even(fixed, per_request_online - per_request_with_cache, scale)
        break_even_batch = _break_even(
            fixed, per_request_online * BATCH_DISCOUNT - per_request_with_cache, scale
        )
    else:
        break_even = break_even_batch = None
    return CostReport(
        model=model_id(model),
        price=p,
        requests=int(requests),
        prompt_tokens=int(prompt_tokens),
        cached_tokens=int(cached_tokens),
        output_tokens=int(output_tokens),
        cache_tokens=int(cache_tokens),
        storage_hours=float(storage_hours),
        include_creation=include_creation,
        with_cache=with_cache,
        without_cache=without_cache,
        batch=batch,
        breakdown=breakdown,
        break_even_requests=break_even,
        break_even_requests_vs_batch=break_even_batch,
    )


class UsageTotals(Protocol):
    """What :func:`report_for_usage` reads: the fan-out engine's ``Usage`` fits."""

    prompt_token_count: int
    cached_content_token_count: int
    candidates_token_count: int
    thoughts_token_count: int
    tool_use_prompt_token_count: int


def report_for_usage(
    usage: UsageTotals,
    *,
    model: str,
    requests: int,
    cache_tokens: int,
    storage_hours: float,
    price: ModelPrice | None = None,
    include_creation: bool = True,
) -> CostReport:
    """:func:`cost_report` from summed ``usage_metadata``.

    Input is the prompt (cached tokens included) plus the tool-use prompt tokens (search results,
    code output fed back to the model), which are billed as input; output is candidates + thoughts.
    """
    return cost_report(
        model=model,
        price=price,
        requests=requests,
        prompt_tokens=usage.prompt_token_count + usage.tool_use_prompt_token_count,
        cached_tokens=usage.cached_content_token_count,
        output_tokens=usage.candidates_token_count + usage.thoughts_token_count,
        cache_tokens=cache_tokens,
        storage_hours=storage_hours,
        include_creation=include_creation,
    )
