"""The arithmetic of the bill: what requests, a creation and a cache's storage cost, and baselines.

Each cost belongs to whoever incurred it, once: a request's tokens to the task that sent it, the
creation (the cache's tokens at the input rate) to the task that created the cache, its storage
(tokens x hours, from ``createTime`` to its deletion or expiry) to the task that ended its life.
A request's price tier follows its own ``promptTokenCount`` (cached tokens included).

Baselines price the same requests without an explicit cache: online with no cache at all (a sure
price), online with implicit caching at its best (every request after the first hits the shared
prefix at the cached rate, no storage: possible, never promised), batch without a cache (a sure
price: batch rejects explicit caches), and Vertex batch with implicit hits at their best (a hit's
90% discount replaces the 50% batch discount; they do not stack).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Protocol

from airflow_provider_ctxcache.costs.prices import LONG_CONTEXT_TOKENS, ModelPrice, Rates

PER_MILLION = 1_000_000
SECONDS_PER_HOUR = 3600.0


class UsageLike(Protocol):
    """One response's ``usage_metadata`` (the fan-out's ``Usage`` fits)."""

    @property
    def prompt_token_count(self) -> int: ...
    @property
    def cached_content_token_count(self) -> int: ...
    @property
    def candidates_token_count(self) -> int: ...
    @property
    def thoughts_token_count(self) -> int: ...
    @property
    def tool_use_prompt_token_count(self) -> int: ...


@dataclass
class TierTotals:
    """Token sums of the requests that fell in one price tier."""

    requests: int = 0
    prompt_tokens: int = 0  # cached tokens included, as promptTokenCount counts them
    cached_tokens: int = 0
    tool_use_tokens: int = 0  # billed as input
    output_tokens: int = 0  # candidates + thoughts, billed as output
    thoughts_tokens: int = 0

    @property
    def uncached_input_tokens(self) -> int:
        # A server that reports more cached than prompt tokens gets no negative input.
        return max(0, self.prompt_tokens - self.cached_tokens) + self.tool_use_tokens

    @property
    def input_tokens(self) -> int:
        return self.prompt_tokens + self.tool_use_tokens

    def add(self, other: TierTotals) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


@dataclass
class RequestTotals:
    """The usage of many requests, summed per price tier (prompt up to / over 200k tokens)."""

    standard: TierTotals = field(default_factory=TierTotals)
    above_200k: TierTotals = field(default_factory=TierTotals)
    # One request's prompt and cached tokens: the one an implicit cache would not have hit.
    first_prompt_tokens: int | None = None
    first_cached_tokens: int = 0

    def add(self, usage: UsageLike) -> None:
        """One response's usage, into its tier (called once per request: kept cheap)."""
        prompt = int(usage.prompt_token_count or 0)
        cached = int(usage.cached_content_token_count or 0)
        thoughts = int(usage.thoughts_token_count or 0)
        tier = self.above_200k if prompt > LONG_CONTEXT_TOKENS else self.standard
        tier.requests += 1
        tier.prompt_tokens += prompt
        tier.cached_tokens += cached
        tier.tool_use_tokens += int(usage.tool_use_prompt_token_count or 0)
        tier.output_tokens += int(usage.candidates_token_count or 0) + thoughts
        tier.thoughts_tokens += thoughts
        if self.first_prompt_tokens is None:
            self.first_prompt_tokens, self.first_cached_tokens = prompt, cached

    @classmethod
    def repeated(cls, usage: UsageLike, times: int) -> RequestTotals:
        """``times`` requests of the same usage, as if each had been added (for what-if pricing)."""
        one = cls()
        if times <= 0:
            return one
        one.add(usage)
        for tier in (one.standard, one.above_200k):
            for f in fields(tier):
                setattr(tier, f.name, getattr(tier, f.name) * times)
        return one

    def merge(self, other: RequestTotals) -> None:
        self.standard.add(other.standard)
        self.above_200k.add(other.above_200k)
        if self.first_prompt_tokens is None:
            self.first_prompt_tokens, self.first_cached_tokens = (
                other.first_prompt_tokens,
                other.first_cached_tokens,
            )

    @property
    def total(self) -> TierTotals:
        both = TierTotals()
        both.add(self.standard)
        both.add(self.above_200k)
        return both

    def tiers(self) -> list[tuple[TierTotals, int]]:
        """Each tier with a prompt size that falls in it, to look its rates up by."""
        return [(self.standard, 0), (self.above_200k, LONG_CONTEXT_TOKENS + 1)]

    def to_dict(self) -> dict[str, int]:
        total = self.total
        return {
            "requests": total.requests,
            "requests_above_200k": self.above_200k.requests,
            "prompt_tokens": total.prompt_tokens,
            "cached_tokens": total.cached_tokens,
            "tool_use_prompt_tokens": total.tool_use_tokens,
            "output_tokens": total.output_tokens,
            "thoughts_tokens": total.thoughts_tokens,
        }


def usd(tokens: float, per_million: float) -> float:
    return tokens * per_million / PER_MILLION


def request_charges(totals: RequestTotals, price: ModelPrice) -> dict[str, float]:
    """Uncached input (tool-use tokens included), cached input and output, each tier at its rates."""
    charges = {"uncached_input": 0.0, "cached_input": 0.0, "output": 0.0}
    for tier, prompt in totals.tiers():
        rates = price.rates(prompt)
        charges["uncached_input"] += usd(tier.uncached_input_tokens, rates.input)
        charges["cached_input"] += usd(tier.cached_tokens, rates.cached_input)
        charges["output"] += usd(tier.output_tokens, rates.output)
    return charges


def creation_charge(cache_tokens: int, price: ModelPrice) -> float:
    """Writing the cache: its tokens once at the input rate (the higher tier for a cache over 200k)."""
    return usd(cache_tokens, price.rates(cache_tokens).input)


def storage_charge(cache_tokens: int, seconds: float, price: ModelPrice) -> float:
    """Holding the cache: tokens x hours at the storage rate (no tiers)."""
    return usd(cache_tokens, price.storage_per_million_per_hour) * max(0.0, seconds) / SECONDS_PER_HOUR


def _first_rates(totals: RequestTotals, price: ModelPrice) -> Rates:
    return price.rates(totals.first_prompt_tokens or 0)


def first_misses(totals: RequestTotals, price: ModelPrice) -> dict[str, float]:
    """What the implicit baselines pay for their one miss: the first request's prefix at full price.

    Adding up several tasks' baselines keeps one miss, not one per task (see ``summary.add_up``).
    """
    if not totals.total.requests:
        return {"online_implicit_best": 0.0, "vertex_batch_implicit_best": 0.0}
    first = _first_rates(totals, price)
    missed = totals.first_cached_tokens  # the first request finds nothing to hit
    return {
        "online_implicit_best": usd(missed, first.input - first.cached_input),
        "vertex_batch_implicit_best": usd(missed, price.batch_share * first.input - first.cached_input),
    }


def baselines(totals: RequestTotals, price: ModelPrice) -> dict[str, float]:
    """The same requests priced without an explicit cache (see the module docstring)."""
    online = batch_implicit = 0.0
    share = price.batch_share
    for tier, prompt in totals.tiers():
        rates = price.rates(prompt)
        output = usd(tier.output_tokens, rates.output)
        online += usd(tier.input_tokens, rates.input) + output
        batch_implicit += share * (usd(tier.uncached_input_tokens, rates.input) + output) + usd(
            tier.cached_tokens, rates.cached_input
        )
    charged = sum(request_charges(totals, price).values())
    misses = first_misses(totals, price)
    return {
        "online_no_cache": online,
        "online_implicit_best": charged + misses["online_implicit_best"],
        "batch_no_cache": online * share,
        "vertex_batch_implicit_best": batch_implicit + misses["vertex_batch_implicit_best"],
    }


BASELINE_LABELS: dict[str, tuple[str, str]] = {
    "online_no_cache": ("online, no cache", "sure"),
    "online_implicit_best": ("online, implicit caching", "best case"),
    "batch_no_cache": ("batch, no cache", "sure"),
    "vertex_batch_implicit_best": ("Vertex batch, implicit hits", "best case"),
}
"""Each baseline's label and whether its price is sure or only a best case."""
