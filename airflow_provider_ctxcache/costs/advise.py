"""The break-even advisor: whether an explicit cache would pay, priced before spending anything.

It prices ``requests`` identical requests (``context_tokens`` cached, ``prompt_tokens`` more each,
``output_tokens`` out) with the ledger's own functions, so the long-context tier and the batch and
implicit-caching rules are exactly those of the cost reports. The explicit cache pays its creation
(unless the cache already exists), its storage for the TTL, and its requests; each baseline is the
same requests without an explicit cache (see :mod:`~airflow_provider_ctxcache.costs.ledger`).

Every cost is a constant plus a per-request amount (a baseline's first request may differ from
the others), so the break-even is solved exactly from the costs of one and of two requests.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from airflow_provider_ctxcache.costs.ledger import (
    BASELINE_LABELS,
    RequestTotals,
    baselines,
    creation_charge,
    request_charges,
    storage_charge,
)
from airflow_provider_ctxcache.costs.prices import (
    LONG_CONTEXT_TOKENS,
    REQUIRED_FIELDS,
    ModelPrice,
    PriceOverrides,
    find_price,
)
from airflow_provider_ctxcache.costs.report import (
    PRICE_UNKNOWN,
    align_rows,
    money,
    money_places,
    readable_duration,
)
from airflow_provider_ctxcache.exceptions import CtxCacheConfigError
from airflow_provider_ctxcache.model_facts import model_id
from airflow_provider_ctxcache.validation import parse_ttl

EXPLICIT = "explicit"
COMPARED_WITH = "online_no_cache"
"""The baseline that decides ``worth_it``: what the same requests cost with no cache at all."""
_DIGITS = 10  # USD in to_dict, as in the cost reports
_RELATIVE_NOISE = 1e-9  # differences this small next to the amounts are float noise, not money


def _count(value: Any, field: str, minimum: int, example: str) -> int:
    """A whole number >= ``minimum``; bools and floats are refused rather than guessed at."""
    if not isinstance(value, bool):
        try:
            number = operator.index(value)
        except TypeError:
            pass
        else:
            if number >= minimum:
                return number
    raise CtxCacheConfigError(f"{field}: {value!r} must be a whole number >= {minimum}; give e.g. {example}.")


@dataclass(frozen=True)
class _Usage:
    """One planned request's usage, in the fields the ledger reads."""

    prompt_token_count: int
    cached_content_token_count: int
    candidates_token_count: int
    thoughts_token_count: int = 0
    tool_use_prompt_token_count: int = 0


def _costs(totals: RequestTotals, fixed: float, price: ModelPrice) -> dict[str, float]:
    return {EXPLICIT: fixed + sum(request_charges(totals, price).values()), **baselines(totals, price)}


def _noise(*amounts: float) -> float:
    return _RELATIVE_NOISE * max((abs(a) for a in amounts), default=0.0)


def _break_even(one: dict[str, float], two: dict[str, float], baseline: str) -> int | None:
    """The smallest N >= 1 at which explicit costs no more than ``baseline``, or None if never.

    The gap explicit - baseline is ``gap1 + (N - 1) * step``: solved for gap <= 0, not searched.
    """
    gap1 = one[EXPLICIT] - one[baseline]
    if gap1 <= _noise(one[EXPLICIT], one[baseline]):
        return 1
    explicit_step = two[EXPLICIT] - one[EXPLICIT]
    baseline_step = two[baseline] - one[baseline]
    step = explicit_step - baseline_step
    if step >= -_noise(explicit_step, baseline_step):
        return None  # each further request saves nothing, so the first request's gap stays
    return 1 + math.ceil(round(gap1 / -step, 9))


@dataclass(frozen=True)
class Advice:
    """What an explicit cache would cost against each baseline for ``requests`` requests.

    ``costs`` maps ``"explicit"`` and each baseline to USD at ``requests`` requests; ``break_even``
    maps each baseline to the request count from which the cache costs no more, None for never.
    Both are None when the model's price is unknown: no figure is made up.
    """

    model: str
    context_tokens: int
    requests: int
    storage_seconds: float
    price: ModelPrice | None
    costs: dict[str, float] | None
    break_even: dict[str, int | None] | None
    prompt_tokens: int = 0
    output_tokens: int = 0
    include_creation: bool = True
    fixed: dict[str, float] | None = None  # the explicit cache's creation and storage

    @property
    def worth_it(self) -> bool | None:
        """Whether the cache costs no more than online calls without one, at ``requests``."""
        if self.costs is None:
            return None
        explicit, online = self.costs[EXPLICIT], self.costs[COMPARED_WITH]
        return explicit - online <= _noise(explicit, online)

    def saved(self) -> dict[str, float] | None:
        """What the explicit cache saves against each baseline (negative: it costs more)."""
        if self.costs is None:
            return None
        return {
            name: amount - self.costs[EXPLICIT] for name, amount in self.costs.items() if name != EXPLICIT
        }

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON numbers (USD to 1e-10); amounts are None when the price is unknown."""

        def rounded(amounts: dict[str, float] | None) -> dict[str, float] | None:
            return None if amounts is None else {k: round(v, _DIGITS) + 0.0 for k, v in amounts.items()}

        return {
            "model": self.model,
            "currency": "USD",
            "price": self.price.to_dict() if self.price else PRICE_UNKNOWN,
            "context_tokens": self.context_tokens,
            "prompt_tokens": self.prompt_tokens,
            "output_tokens": self.output_tokens,
            "requests": self.requests,
            "storage_seconds": round(self.storage_seconds, 3),
            "include_creation": self.include_creation,
            "fixed": rounded(self.fixed),
            "costs": rounded(self.costs),
            "saved_vs": rounded(self.saved()),
            "break_even": None if self.break_even is None else dict(self.break_even),
            "worth_it": self.worth_it,
        }

    def table(self) -> str:
        """The advice as text: the setting, one row per strategy, then the verdict."""
        lines = [self._heading(), self._token_line()]
        if self.costs is None or self.break_even is None or self.fixed is None:
            fields = ", ".join(f'"{name}": ...' for name in REQUIRED_FIELDS)
            lines.append(f"{PRICE_UNKNOWN} for {self.model}: pass prices={{{fields}}} (CLI: --prices JSON)")
            return "\n".join(lines)
        saved = self.saved() or {}
        places = money_places(*self.costs.values(), *saved.values(), *self.fixed.values())
        fixed_label = " + ".join(self.fixed) if self.include_creation else "storage"
        rows: list[tuple[str, ...]] = [
            ("strategy", f"USD at {self.requests:,}", "saved by cache", "break-even", "price"),
            ("explicit cache", money(self.costs[EXPLICIT], places), "", "", "sure"),
            (f"  of which {fixed_label}", money(sum(self.fixed.values()), places), "", "", ""),
        ]
        for name, (label, kind) in BASELINE_LABELS.items():
            rows.append(
                (
                    label,
                    money(self.costs[name], places),
                    money(saved[name], places),
                    _n(self.break_even[name]),
                    kind,
                )
            )
        lines += align_rows(rows)
        lines.append(self._verdict(saved[COMPARED_WITH], places))
        lines.append(
            "note: against implicit caching, an explicit cache buys the guarantee of the cached rate, not a "
            "lower price; 'best case' assumes every request after the first hits, which is never promised"
        )
        return "\n".join(lines)

    def _heading(self) -> str:
        creation = "" if self.include_creation else " (already created: no creation charged)"
        return (
            f"Explicit cache advice for {self.model}: {self.context_tokens:,}-token cache"
            f"{creation} held {readable_duration(self.storage_seconds)}, {_n(self.requests, 'request')}"
        )

    def _token_line(self) -> str:
        prompt = self.context_tokens + self.prompt_tokens
        line = (
            f"each request: {prompt:,} prompt tokens ({self.context_tokens:,} cached, "
            f"{self.prompt_tokens:,} not), {self.output_tokens:,} output tokens (thinking included)"
        )
        if prompt > LONG_CONTEXT_TOKENS and self.price is not None and self.price.tiered:
            line += "; over 200k tokens, at the higher rates"
        return line

    def _verdict(self, saved: float, places: int) -> str:
        when = _n(self.break_even[COMPARED_WITH] if self.break_even else None, "request")
        at = f"at {_n(self.requests, 'request')}"
        if self.worth_it:
            return (
                f"worth it: yes, {at} the cache saves {money(saved, places)} USD against online calls "
                f"without a cache (break-even: {when})"
            )
        return (
            f"worth it: no, {at} the cache costs {money(-saved, places)} USD more than online calls "
            f"without a cache (break-even: {when})"
        )


def _n(count: int | None, noun: str = "request") -> str:
    if count is None:
        return "never"
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def advise(
    *,
    model: str,
    context_tokens: int,
    requests: int,
    ttl: Any,
    prompt_tokens: int = 0,
    output_tokens: int = 0,
    prices: PriceOverrides | Sequence[PriceOverrides] = None,
    include_creation: bool = True,
) -> Advice:
    """Price an explicit cache against the baselines for ``requests`` requests, spending nothing.

    ``context_tokens``: the cache's size; ``prompt_tokens``: the uncached tokens each request adds;
    ``output_tokens``: each request's output, thinking included; ``ttl``: how long the cache is
    stored (``'2h'``, ``'90m'``, seconds, a timedelta). ``include_creation=False`` prices a cache
    that already exists. Bad input raises :class:`CtxCacheConfigError` naming the field.
    """
    if not isinstance(model, str) or not model.strip():
        raise CtxCacheConfigError(f"model: {model!r} is not a model name; give e.g. 'gemini-2.5-flash'.")
    context_tokens = _count(context_tokens, "context_tokens", 1, "300000 (the cache's size in tokens)")
    requests = _count(requests, "requests", 0, "40 (how many requests would use the cache)")
    prompt_tokens = _count(prompt_tokens, "prompt_tokens", 0, "500 (uncached tokens per request)")
    output_tokens = _count(output_tokens, "output_tokens", 0, "1000 (output per request, thinking included)")
    seconds = parse_ttl(ttl, "ttl").total_seconds()
    price = find_price(model, prices)
    name = model_id(model)
    if price is None:
        return Advice(
            model=name,
            context_tokens=context_tokens,
            requests=requests,
            storage_seconds=seconds,
            price=None,
            costs=None,
            break_even=None,
            prompt_tokens=prompt_tokens,
            output_tokens=output_tokens,
            include_creation=include_creation,
        )
    fixed = {
        "creation": creation_charge(context_tokens, price) if include_creation else 0.0,
        "storage": storage_charge(context_tokens, seconds, price),
    }
    usage = _Usage(
        prompt_token_count=context_tokens + prompt_tokens,
        cached_content_token_count=context_tokens,
        candidates_token_count=output_tokens,
    )
    fixed_total = sum(fixed.values())
    one, two = (_costs(RequestTotals.repeated(usage, n), fixed_total, price) for n in (1, 2))
    return Advice(
        model=name,
        context_tokens=context_tokens,
        requests=requests,
        storage_seconds=seconds,
        price=price,
        costs=_costs(RequestTotals.repeated(usage, requests), fixed_total, price),
        break_even={baseline: _break_even(one, two, baseline) for baseline in BASELINE_LABELS},
        prompt_tokens=prompt_tokens,
        output_tokens=output_tokens,
        include_creation=include_creation,
        fixed=fixed,
    )
