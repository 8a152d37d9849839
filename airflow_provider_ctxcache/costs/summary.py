"""A run's bill: the cost reports of its tasks added up, against the baselines of its requests.

Each task reports only what it incurred (see :mod:`.report`), so the sum over a run's tasks (or
over every run that touched a cache) is what the cache and its requests cost, counted once. The
baselines are summed from the fan-out reports: the same requests without an explicit cache,
with the implicit ones' first miss counted once for all the tasks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from airflow_provider_ctxcache.costs.ledger import BASELINE_LABELS
from airflow_provider_ctxcache.costs.report import PRICE_UNKNOWN, align_rows, money, money_places

CHARGES = ("creation", "uncached_input", "cached_input", "output", "storage")


def add_up(reports: Iterable[Mapping[str, Any] | None]) -> dict[str, Any]:
    """Plain numbers: ``charged`` per category, ``total``, ``baselines``, ``saved_vs``, ``requests``.

    Amounts are None when any report had no price (a sum with a hole in it is no bill).
    """
    charged = dict.fromkeys(CHARGES, 0.0)
    baselines: dict[str, float] = {}
    misses: dict[str, list[float]] = {}
    requests = 0
    models: set[str] = set()
    priced = True
    for report in reports:
        if not report:
            continue
        if report.get("price") == PRICE_UNKNOWN:
            priced = False
        if report.get("model") and report.get("title") != "No charge":
            models.add(str(report["model"]))
        requests += int((report.get("tokens") or {}).get("requests") or 0)
        for name, amount in (report.get("charged") or {}).items():
            charged[name] = charged.get(name, 0.0) + (amount or 0.0)
        for name, amount in (report.get("baselines") or {}).items():
            baselines[name] = baselines.get(name, 0.0) + (amount or 0.0)
        for name, amount in (report.get("first_misses") or {}).items():
            misses.setdefault(name, []).append(amount or 0.0)
    # Implicit caching at its best misses once for all the tasks, not once per task.
    for name, amounts in misses.items():
        baselines[name] -= sum(amounts) - max(amounts)
    total = sum(charged.values())
    return {
        "models": sorted(models),
        "requests": requests,
        "charged": charged if priced else None,
        "total": total if priced else None,
        "baselines": baselines if priced else None,
        "saved_vs": {k: v - total for k, v in baselines.items()} if priced else None,
    }


def bill_table(reports: Iterable[Mapping[str, Any] | None], *, title: str = "Bill") -> str:
    """The sum of the reports as a text table, with the baselines and what the cache saved."""
    bill = add_up(reports)
    head = f"{title} on {', '.join(bill['models']) or 'no model'}: {bill['requests']:,} requests"
    if bill["charged"] is None:
        return f"{head}\n{PRICE_UNKNOWN} for one of the tasks: pass prices= to price it"
    charged, baselines, saved = bill["charged"], bill["baselines"], bill["saved_vs"]
    places = money_places(*charged.values(), *baselines.values(), bill["total"])
    rows: list[tuple[str, ...]] = [("charged", "USD", "", "")]
    rows += [
        (f"  {name.replace('_', ' ')}", money(amount, places), "", "") for name, amount in charged.items()
    ]
    rows.append(("  total", money(bill["total"], places), "", ""))
    if baselines:
        rows.append(("", "", "", ""))
        rows.append(("the same requests", "USD", "saved by cache", "price"))
        for name, amount in baselines.items():
            label, kind = BASELINE_LABELS[name]
            rows.append((label, money(amount, places), money(saved[name], places), kind))
    return "\n".join([head, *align_rows(rows)])
