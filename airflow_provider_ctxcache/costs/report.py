"""One task's share of the bill, as a table for the log and as plain numbers for XCom.

A report holds only what its task incurred (``charged``): the requests a fan-out sent, the
creation of the cache it created, or the storage of the cache whose life it ended. Summed over
every task of every run that touched a cache, the reports give the cache's whole bill, once.
A fan-out report also prices its requests against the baselines, with the cache's fixed cost
(creation and storage so far, charged by other tasks) added to make the comparison fair.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from airflow_provider_ctxcache.costs.ledger import (
    BASELINE_LABELS,
    RequestTotals,
    baselines,
    creation_charge,
    first_misses,
    request_charges,
    storage_charge,
)
from airflow_provider_ctxcache.costs.prices import ModelPrice
from airflow_provider_ctxcache.model_facts import model_id

PRICE_UNKNOWN = "price unknown"
_DIGITS = 10  # XCom keeps amounts to 1e-10 USD, so sums over many small reports stay exact enough


def readable_duration(seconds: float) -> str:
    """Seconds, minutes or hours, whichever reads best: '0.27 s', '42 s', '7.5 min', '2 h'."""
    if seconds < 60:
        return f"{seconds:.2g} s" if seconds < 1 else f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.3g} min"
    return f"{seconds / 3600:.3g} h"


def money_places(*amounts: float) -> int:
    """One number of decimals for a whole table, from its largest amount: 2, 4 or 6."""
    largest = max((abs(a) for a in amounts), default=0.0)
    return 2 if largest >= 10 else 4 if largest >= 0.01 else 6


def money(value: float, places: int) -> str:
    # Half-up on the decimal value, so $152.575 shows as 152.58 despite binary floats.
    exact = Decimal(repr(round(value, 9))).quantize(Decimal(1).scaleb(-places), ROUND_HALF_UP)
    return f"{exact + 0:,.{places}f}"


def _plural(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _round(value: float) -> float:
    return round(value, _DIGITS) + 0.0  # + 0.0 turns -0.0 into 0.0


@dataclass(frozen=True)
class CostReport:
    """What one task was charged, with the facts it was computed from."""

    title: str
    model: str
    cache_name: str | None
    price: ModelPrice | None
    charged: dict[str, float] = field(default_factory=dict)
    tokens: dict[str, int] = field(default_factory=dict)
    cache_tokens: int = 0
    storage_seconds: float | None = None
    baselines: dict[str, float] | None = None
    first_misses: dict[str, float] | None = None
    cache_fixed: dict[str, float] | None = None
    notes: tuple[str, ...] = ()
    priced: bool = True  # False: nothing was charged, so no price was needed

    @property
    def total(self) -> float:
        return sum(self.charged.values())

    @property
    def all_in(self) -> float:
        """The requests plus the cache's fixed cost so far: what the baselines are compared with."""
        return self.total + sum((self.cache_fixed or {}).values())

    def savings(self) -> dict[str, float]:
        """What the explicit cache saved against each baseline (negative: it cost more)."""
        return {name: amount - self.all_in for name, amount in (self.baselines or {}).items()}

    def to_dict(self) -> dict[str, Any]:
        """Plain numbers for XCom (USD to 1e-10); amounts are None when the price is unknown."""
        known = self.price is not None or not self.priced
        out: dict[str, Any] = {
            "title": self.title,
            "model": self.model,
            "cache_name": self.cache_name,
            "currency": "USD",
            "price": self.price.to_dict() if self.price else PRICE_UNKNOWN if self.priced else None,
            "tokens": {**self.tokens, "cache_tokens": self.cache_tokens},
            "storage_seconds": None if self.storage_seconds is None else round(self.storage_seconds, 3),
            "charged": {k: _round(v) if known else None for k, v in self.charged.items()},
            "total": _round(self.total) if known else None,
            "notes": list(self.notes),
        }
        if self.baselines is not None:

            def amounts(values: dict[str, float]) -> dict[str, float | None]:
                return {k: _round(v) if known else None for k, v in values.items()}

            out["baselines"] = amounts(self.baselines)
            out["first_misses"] = amounts(self.first_misses or {})
            out["cache_fixed"] = amounts(self.cache_fixed or {})
            out["explicit_all_in"] = _round(self.all_in) if known else None
            out["saved_vs"] = amounts(self.savings())
        return out

    def table(self) -> str:
        """The report for the task log: a heading line, aligned rows, then the notes."""
        head = f"{self.title} on {self.model}"
        if self.cache_name:
            head += f", cache {self.cache_name} ({self.cache_tokens:,} tokens)"
        if self.storage_seconds is not None:
            head += f", held {readable_duration(self.storage_seconds)}"
        lines = [head]
        if self.tokens.get("requests"):
            lines.append(_token_line(self.tokens))
        if not self.priced:
            return "\n".join(lines + [f"note: {note}" for note in self.notes])
        if self.price is None:
            lines.append(f"{PRICE_UNKNOWN} for {self.model}: pass prices= to price it")
            return "\n".join(lines + [f"note: {note}" for note in self.notes])
        amounts = [*self.charged.values(), *(self.baselines or {}).values(), self.all_in]
        places = money_places(*amounts)
        rows: list[tuple[str, ...]] = [("charged here", "USD", "", "")]
        for name, value in self.charged.items():
            rows.append((f"  {name.replace('_', ' ')}", money(value, places), "", ""))
        rows.append(("  total", money(self.total, places), "", ""))
        if self.baselines is not None:
            rows.append(("", "", "", ""))
            rows.append(("compared with", "USD", "saved by cache", "price"))
            fixed = sum((self.cache_fixed or {}).values())
            rows.append(("explicit cache, all-in", money(self.all_in, places), "", ""))
            rows.append(("  of which the cache so far", money(fixed, places), "", ""))
            saved = self.savings()
            for name, amount in self.baselines.items():
                label, kind = BASELINE_LABELS[name]
                rows.append((label, money(amount, places), money(saved[name], places), kind))
        lines += align_rows(rows)
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


def _token_line(tokens: dict[str, int]) -> str:
    text = (
        f"{_plural(tokens['requests'], 'request')}: {tokens['prompt_tokens']:,} prompt tokens "
        f"({tokens['cached_tokens']:,} cached), {tokens['output_tokens']:,} output tokens "
        f"({tokens['thoughts_tokens']:,} thinking)"
    )
    if tokens.get("tool_use_prompt_tokens"):
        text += f", {tokens['tool_use_prompt_tokens']:,} tool-use tokens"
    if tokens.get("requests_above_200k"):
        text += f"; {tokens['requests_above_200k']:,} over 200k tokens, at the higher rates"
    return text


def align_rows(rows: list[tuple[str, ...]]) -> list[str]:
    """Labels left, figures right, the last column (a word) left: the layout of every cost table."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    out = []
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [row[i].rjust(widths[i]) for i in range(1, len(row) - 1)]
        out.append("  ".join([*cells, row[-1]]).rstrip())
    return out


def fanout_report(
    totals: RequestTotals,
    *,
    model: str,
    cache_name: str | None,
    price: ModelPrice | None,
    cache_tokens: int,
    creation: bool,
    cache_seconds: float,
) -> CostReport:
    """A fan-out's requests, and the baselines with the cache's fixed cost so far added.

    ``creation``: whether the cache was created (not found on the backend some other way);
    ``cache_seconds``: its life so far. Both are charged by other tasks; here they only make the
    comparison fair: a cache is worth it when its requests save more than it costs to keep.
    """
    notes = [
        "creation is charged to the task that created the cache, storage to the one that ends its life",
        "'best case' baselines assume every request after the first hits the shared prefix; "
        "implicit caching promises no hit",
    ]
    if price is None:
        return CostReport("Fan-out", model_id(model), cache_name, None, {}, totals.to_dict(), cache_tokens)
    fixed = {
        "creation": creation_charge(cache_tokens, price) if creation else 0.0,
        "storage": storage_charge(cache_tokens, cache_seconds, price),
    }
    return CostReport(
        title="Fan-out",
        model=model_id(model),
        cache_name=cache_name,
        price=price,
        charged=request_charges(totals, price),
        tokens=totals.to_dict(),
        cache_tokens=cache_tokens,
        baselines=baselines(totals, price),
        first_misses=first_misses(totals, price),
        cache_fixed=fixed,
        notes=tuple(notes),
    )


def creation_report(
    *,
    model: str,
    cache_name: str,
    price: ModelPrice | None,
    cache_tokens: int,
    created: bool,
    storage_seconds: float | None = None,
) -> CostReport:
    """The creation, charged to the task that created the cache; nothing for one that reused it.

    ``storage_seconds``: the task also ended the cache's life (it deleted a duplicate at once).
    """
    note = (
        "storage is charged to the task that ends the cache's life"
        if created
        else "reused: the creation was charged to the run that created this cache"
    )
    charged = {"creation": creation_charge(cache_tokens, price) if created else 0.0} if price else {}
    if price and storage_seconds is not None:
        charged["storage"] = storage_charge(cache_tokens, storage_seconds, price)
        note = "a duplicate of another run's cache, deleted at once: its creation and storage"
    return CostReport(
        "Cache creation", model_id(model), cache_name, price, charged, {}, cache_tokens, notes=(note,)
    )


def storage_report(
    *,
    model: str,
    cache_name: str,
    price: ModelPrice | None,
    cache_tokens: int,
    seconds: float,
    how: str,
) -> CostReport:
    """The storage of a cache's whole life, charged once, by the task that ended (or saw the end of) it."""
    charged = {"storage": storage_charge(cache_tokens, seconds, price)} if price else {}
    return CostReport(
        "Cache storage", model_id(model), cache_name, price, charged, {}, cache_tokens, seconds, notes=(how,)
    )


def no_charge_report(*, model: str, cache_name: str, reason: str) -> CostReport:
    """A task that touched a cache but incurred nothing, saying why (e.g. it was already gone)."""
    name = model_id(model) if model else "an unknown model"
    return CostReport("No charge", name, cache_name, None, notes=(reason,), priced=False)
