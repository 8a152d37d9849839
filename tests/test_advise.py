"""The break-even advisor: explicit cache against the baselines, priced by hand, spending nothing."""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

import pytest

from airflow_provider_ctxcache.costs import BASELINE_LABELS, Advice, advise
from airflow_provider_ctxcache.exceptions import CtxCacheConfigError

BASELINES = list(BASELINE_LABELS)


# (a) gemini-2.5-flash (input $0.30, cached $0.03, storage $1.00 per 1M tokens per hour), a
# 100,000-token cache held 1 h, no uncached prompt tokens, no output:
#   creation = 100,000 x $0.30 / 1M          = $0.03
#   storage  = 100,000 x $1.00 / 1M x 1 h    = $0.10
#   fixed                                    = $0.13
#   a request with the cache  = 100,000 x $0.03 / 1M = $0.003
#   a request without a cache = 100,000 x $0.30 / 1M = $0.03, so each saves $0.027
#   break-even vs online: 0.13 / 0.027 = 4.81 -> 5 requests
#     (4 requests: 0.13 + 0.012 = $0.142 > $0.12; 5 requests: 0.13 + 0.015 = $0.145 <= $0.15)
#   break-even vs batch: a batch request is $0.015, each saves $0.012: 0.13 / 0.012 = 10.8 -> 11
#   without creation: fixed = $0.10, 0.10 / 0.027 = 3.7 -> 4 requests
def flash_100k(**changes: Any) -> Advice:
    args: dict[str, Any] = {
        "model": "gemini-2.5-flash",
        "context_tokens": 100_000,
        "requests": 5,
        "ttl": "1h",
    }
    return advise(**{**args, **changes})


def test_flash_break_even_against_online_without_a_cache() -> None:
    assert flash_100k().break_even == {
        "online_no_cache": 5,
        "online_implicit_best": None,
        "batch_no_cache": 11,
        "vertex_batch_implicit_best": None,
    }


def test_flash_costs_at_the_break_even() -> None:
    costs = flash_100k(requests=5).costs
    assert costs is not None
    assert costs["explicit"] == pytest.approx(0.145)
    assert costs["online_no_cache"] == pytest.approx(0.15)


# (b) gemini-2.5-pro, a 300,000-token cache held 2 h, 40 requests each adding 500 uncached prompt
# tokens and 1,000 output tokens. Every prompt is 300,500 tokens, over 200k, so every request
# bills at the higher tier: input $2.50, cached $0.25, output $15.00; storage $4.50 per 1M per hour.
#   creation = 300,000 x $2.50 / 1M (the cache itself is over 200k) = $0.75
#   storage  = 300,000 x $4.50 / 1M x 2 h                           = $2.70
#   one request with the cache: 500 x $2.50 / 1M = $0.00125 uncached, 300,000 x $0.25 / 1M = $0.075
#     cached, 1,000 x $15.00 / 1M = $0.015 output: $0.09125; x 40 = $3.65
#   explicit                 = 0.75 + 2.70 + 3.65                                   = $7.10
#   online, no cache         = 40 x (300,500 x $2.50 / 1M + $0.015) = 40 x $0.76625 = $30.65
#   online, implicit best    = $3.65 + the first request's miss, 300,000 x ($2.50 - $0.25) / 1M
#                            = 3.65 + 0.675                                         = $4.325
#   batch, no cache          = $30.65 x 50%                                         = $15.325
#   Vertex batch, implicit   = 40 x (50% x ($0.00125 + $0.015) + $0.075) = 40 x $0.083125 = $3.325,
#                              + the first miss at the batch rate, 300,000 x ($1.25 - $0.25) / 1M
#                              = 3.325 + 0.30                                       = $3.625
#   break-even vs online: each request saves 0.76625 - 0.09125 = $0.675 of the fixed $3.45:
#     3.45 / 0.675 = 5.1 -> 6 requests (5: $3.90625 > $3.83125; 6: $3.9975 <= $4.5975)
#   break-even vs batch: each saves 0.383125 - 0.09125 = $0.291875: 3.45 / 0.291875 = 11.8 -> 12
def pro_300k(**changes: Any) -> Advice:
    args: dict[str, Any] = {
        "model": "gemini-2.5-pro",
        "context_tokens": 300_000,
        "requests": 40,
        "ttl": "2h",
        "prompt_tokens": 500,
        "output_tokens": 1_000,
    }
    return advise(**{**args, **changes})


def test_pro_over_200k_costs_of_every_strategy_at_40_requests() -> None:
    advice = pro_300k()
    assert advice.fixed == pytest.approx({"creation": 0.75, "storage": 2.70})
    assert advice.costs == pytest.approx(
        {
            "explicit": 7.10,
            "online_no_cache": 30.65,
            "online_implicit_best": 4.325,
            "batch_no_cache": 15.325,
            "vertex_batch_implicit_best": 3.625,
        }
    )


def test_pro_over_200k_break_even_against_online_and_batch() -> None:
    break_even = pro_300k().break_even
    assert break_even is not None
    assert break_even["online_no_cache"] == 6
    assert break_even["batch_no_cache"] == 12


def test_pro_over_200k_is_worth_it_against_online() -> None:
    assert pro_300k().worth_it is True


# (c) gemini-2.5-flash, a 100,000-token cache held only 5 minutes, 1,000 requests of 200 uncached
# prompt tokens and 300 output tokens. Explicit caching never beats implicit caching at its best:
#   per request, both pay the same: 200 x $0.30/1M + 100,000 x $0.03/1M + 300 x $2.50/1M = $0.00381
#   the explicit cache pays its creation, 100,000 x $0.30 / 1M = $0.03, where implicit caching's
#   first request misses, 100,000 x ($0.30 - $0.03) / 1M = $0.027: the creation is the same input
#   plus the cached rate, $0.003, and the explicit cache also pays storage, 100,000 x $1.00 / 1M x
#   5/60 h = $0.008333. So it costs 0.003 + 0.008333 = $0.011333 more at 1 request and at every N:
#   explicit at 1,000 = 0.03 + 0.008333 + 3.81 = $3.848333; implicit best = 3.81 + 0.027 = $3.837.
def test_explicit_never_beats_implicit_caching_at_its_best() -> None:
    advice = advise(
        model="gemini-2.5-flash",
        context_tokens=100_000,
        requests=1_000,
        ttl="5m",
        prompt_tokens=200,
        output_tokens=300,
    )
    assert advice.costs is not None
    assert advice.costs["explicit"] == pytest.approx(3.848333, abs=1e-6)
    assert advice.costs["online_implicit_best"] == pytest.approx(3.837)
    assert advice.break_even is not None
    assert advice.break_even["online_implicit_best"] is None
    # against online without a cache the fixed $0.038333 is more than one request's $0.027 saving
    assert advice.break_even["online_no_cache"] == 2


def test_without_creation_the_break_even_comes_sooner() -> None:
    advice = flash_100k(include_creation=False)
    assert advice.fixed == pytest.approx({"creation": 0.0, "storage": 0.10})
    assert advice.break_even is not None
    assert advice.break_even["online_no_cache"] == 4  # 5 with the $0.03 creation


@pytest.mark.parametrize(
    "advice",
    [
        flash_100k(),
        flash_100k(include_creation=False),
        pro_300k(),
        pro_300k(ttl="30m", prompt_tokens=0),
        advise(model="gemini-2.0-flash", context_tokens=40_000, requests=1, ttl="10h", output_tokens=5_000),
    ],
    ids=["flash", "flash-no-creation", "pro", "pro-30m", "2.0-flash-10h"],
)
def test_break_even_is_the_first_request_count_where_the_cache_costs_no_more(advice: Advice) -> None:
    assert advice.break_even is not None
    for name, n in advice.break_even.items():
        if n is None:
            continue
        at_n = advise(**_args_of(advice, requests=n)).costs
        assert at_n is not None
        assert at_n["explicit"] <= at_n[name] + 1e-12
        if n > 1:
            before = advise(**_args_of(advice, requests=n - 1)).costs
            assert before is not None
            assert before["explicit"] > before[name]


def _args_of(advice: Advice, **changes: Any) -> dict[str, Any]:
    args = {
        "model": advice.model,
        "context_tokens": advice.context_tokens,
        "requests": advice.requests,
        "ttl": advice.storage_seconds,
        "prompt_tokens": advice.prompt_tokens,
        "output_tokens": advice.output_tokens,
        "include_creation": advice.include_creation,
    }
    return {**args, **changes}


def test_a_million_requests_cost_a_million_times_one() -> None:
    # (a) at 1,000,000 requests: 0.13 + 1,000,000 x 0.003 = $3,000.13; online 1,000,000 x 0.03 = $30,000
    costs = flash_100k(requests=1_000_000).costs
    assert costs is not None
    assert costs["explicit"] == pytest.approx(3_000.13)
    assert costs["online_no_cache"] == pytest.approx(30_000.0)


def test_zero_requests_cost_the_cache_alone_and_are_not_worth_it() -> None:
    advice = flash_100k(requests=0)
    assert advice.costs == pytest.approx(
        {"explicit": 0.13, **dict.fromkeys(BASELINES, 0.0)},
    )
    assert advice.worth_it is False


def test_below_the_break_even_it_is_not_worth_it() -> None:
    assert flash_100k(requests=4).worth_it is False
    assert flash_100k(requests=5).worth_it is True


def test_unknown_model_gives_no_numbers() -> None:
    advice = advise(model="gemini-9-ultra", context_tokens=100_000, requests=10, ttl="1h")
    assert advice.price is None
    assert advice.costs is None
    assert advice.break_even is None
    assert advice.worth_it is None
    data = advice.to_dict()
    assert (data["costs"], data["break_even"], data["worth_it"], data["price"]) == (
        None,
        None,
        None,
        "price unknown",
    )


def test_unknown_model_table_asks_for_prices_and_shows_the_tokens() -> None:
    table = advise(
        model="gemini-9-ultra", context_tokens=100_000, requests=10, ttl="1h", prompt_tokens=50
    ).table()
    assert "price unknown for gemini-9-ultra: pass prices=" in table
    assert "100,050 prompt tokens (100,000 cached, 50 not)" in table
    assert not re.search(r"\d\.\d\d", table)  # no amount of any kind


def test_a_full_price_override_prices_an_unknown_model() -> None:
    # flash's figures under another name give flash's answer: break-even 5 as in (a)
    prices = {
        "input_per_million": 0.30,
        "cached_input_per_million": 0.03,
        "output_per_million": 2.50,
        "storage_per_million_per_hour": 1.00,
    }
    advice = flash_100k(model="my-tuned-model", prices=json.dumps(prices))
    assert advice.break_even is not None
    assert advice.break_even["online_no_cache"] == 5


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"context_tokens": -1}, "context_tokens"),
        ({"context_tokens": 0}, "context_tokens"),
        ({"context_tokens": 1.5}, "context_tokens"),
        ({"context_tokens": "100000"}, "context_tokens"),
        ({"requests": -1}, "requests"),
        ({"requests": 2.0}, "requests"),
        ({"requests": True}, "requests"),
        ({"prompt_tokens": -5}, "prompt_tokens"),
        ({"output_tokens": None}, "output_tokens"),
        ({"ttl": "soon"}, "ttl"),
        ({"ttl": 0}, "ttl"),
        ({"model": ""}, "model"),
        ({"prices": {"input_per_million": -1}}, "prices"),
    ],
)
def test_bad_input_names_the_field_and_the_fix(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(CtxCacheConfigError, match=rf"^{field}\b.*(give|use|set) "):
        flash_100k(**changes)


def _money_cells(table: str) -> list[str]:
    """The amounts of the strategy rows and the verdict (not the heading, which names gemini-2.5-x)."""
    rows = table.splitlines()[3:-1]
    return [cell for row in rows for cell in re.findall(r"-?\d[\d,]*\.\d+", row)]


@pytest.mark.parametrize(("advice", "places"), [(pro_300k(), 2), (flash_100k(requests=1), 4)])
def test_table_shows_one_number_of_decimals_throughout(advice: Advice, places: int) -> None:
    cells = _money_cells(advice.table())
    assert len(cells) == 2 + 4 * 2 + 1  # explicit, its fixed part, 4 baselines x (cost, saved), verdict
    assert {len(cell.split(".")[1]) for cell in cells} == {places}


def test_table_shows_each_strategy_with_its_break_even_or_never() -> None:
    lines = pro_300k().table().splitlines()
    online = next(line for line in lines if line.startswith("online, no cache"))
    implicit = next(line for line in lines if line.startswith("online, implicit caching"))
    assert online.split() == ["online,", "no", "cache", "30.65", "23.55", "6", "requests", "sure"]
    assert implicit.split() == ["online,", "implicit", "caching", "4.33", "-2.78", "never", "best", "case"]


def test_table_says_whether_it_is_worth_it_and_what_explicit_buys_over_implicit() -> None:
    table = pro_300k().table()
    assert "held 2 h" in table
    assert "worth it: yes, at 40 requests the cache saves 23.55 USD" in table
    assert "break-even: 6 requests" in table
    assert "guarantee" in table.splitlines()[-1]


def test_to_dict_is_plain_json_with_usd_to_1e_10() -> None:
    data = flash_100k(requests=3, ttl=dt.timedelta(minutes=7)).to_dict()
    assert json.loads(json.dumps(data)) == data
    # storage 100,000 x $1.00 / 1M x 7/60 h = $0.011666..., kept to 10 places
    assert data["fixed"]["storage"] == 0.0116666667
    assert data["storage_seconds"] == 420.0
