"""The bill, computed from the emulator's own usage events with none of the provider's code.

Tests compare what the provider's tasks reported (summed over every task of every run) with
this, to 0.1%. The rates are written out here again on purpose, from the pricing page as the
team's API facts give it (2026-03), so a wrong entry in the provider's table shows up.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterable
from typing import Any

# USD per 1M tokens: (input, cached input, output) up to 200k prompt tokens, then over 200k.
RATES: dict[str, dict[str, Any]] = {
    "gemini-2.5-flash": {"standard": (0.30, 0.03, 2.50), "over_200k": None, "storage": 1.00},
    "gemini-2.5-pro": {"standard": (1.25, 0.125, 10.00), "over_200k": (2.50, 0.25, 15.00), "storage": 4.50},
}
CATEGORIES = ("creation", "uncached_input", "cached_input", "output", "storage")
_TIME = re.compile(r"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d+))?Z$")


def seconds(stamp: str) -> float:
    """An RFC 3339 UTC time (nanoseconds allowed) as seconds since the epoch."""
    match = _TIME.match(stamp)
    assert match, stamp
    *whole, fraction = match.groups()
    base = calendar.timegm((*(int(x) for x in whole), 0, 0, 0))
    return base + float(f"0.{fraction or 0}")


def _rates(model: str, prompt_tokens: int) -> tuple[float, float, float]:
    row = RATES[model.removeprefix("models/")]
    if prompt_tokens > 200_000 and row["over_200k"]:
        return row["over_200k"]  # type: ignore[no-any-return]
    return row["standard"]  # type: ignore[no-any-return]


def bill(events: Iterable[dict[str, Any]]) -> dict[str, float]:
    """USD per category for every billable event the emulator served."""
    total = dict.fromkeys(CATEGORIES, 0.0)
    lives: dict[str, dict[str, Any]] = {}
    for event in events:
        kind, cache = event["type"], event.get("cache")
        if kind == "cache_created":
            tokens = event["totalTokenCount"]
            total["creation"] += tokens * _rates(event["model"], tokens)[0] / 1e6
            lives[cache] = {
                "model": event["model"],
                "tokens": tokens,
                "start": seconds(event["createTime"]),
                "expire": seconds(event["expireTime"]),
                "end": None,
            }
        elif kind == "cache_ttl_changed":
            lives[cache]["expire"] = seconds(event["expireTime"])
        elif kind == "cache_deleted":
            lives[cache]["end"] = seconds(event["time"])
        elif kind == "generate":
            usage = event["usageMetadata"]
            prompt = usage.get("promptTokenCount", 0)
            cached = usage.get("cachedContentTokenCount", 0)
            tool = usage.get("toolUsePromptTokenCount", 0)
            output = usage.get("candidatesTokenCount", 0) + usage.get("thoughtsTokenCount", 0)
            rate_in, rate_cached, rate_out = _rates(event["model"], prompt)
            total["uncached_input"] += (prompt - cached + tool) * rate_in / 1e6
            total["cached_input"] += cached * rate_cached / 1e6
            total["output"] += output * rate_out / 1e6
    for life in lives.values():
        end = life["end"] if life["end"] is not None else life["expire"]
        hours = (end - life["start"]) / 3600
        total["storage"] += life["tokens"] * RATES[life["model"]]["storage"] / 1e6 * hours
    return total


def reported(costs: Iterable[dict[str, Any] | None]) -> dict[str, float]:
    """The provider's ``cost`` reports (XCom), summed per category; None entries are tasks without one."""
    total = dict.fromkeys(CATEGORIES, 0.0)
    for cost in costs:
        for name, amount in ((cost or {}).get("charged") or {}).items():
            total[name] += amount
    return total


def assert_same_bill(provider: dict[str, float], oracle: dict[str, float]) -> None:
    """Every category to 0.1% (and nothing where the oracle has nothing)."""
    for name in CATEGORIES:
        expected, got = oracle[name], provider[name]
        assert abs(got - expected) <= 1e-3 * abs(expected) + 1e-12, (name, got, expected)
