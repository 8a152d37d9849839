"""Prices, the ledger's arithmetic and the reports: the figures a bill would show."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from airflow_provider_ctxcache.costs import (
    LONG_CONTEXT_TOKENS,
    PRICES,
    ModelPrice,
    RequestTotals,
    add_up,
    baselines,
    bill_table,
    creation_charge,
    creation_report,
    fanout_report,
    find_price,
    no_charge_report,
    price_for,
    readable_duration,
    request_charges,
    storage_charge,
    storage_report,
)
from airflow_provider_ctxcache.exceptions import CtxCacheConfigError
from airflow_provider_ctxcache.fanout.records import Usage

FLASH = PRICES["gemini-2.5-flash"]
PRO = PRICES["gemini-2.5-pro"]


def requests(
    n: int, *, prompt: int, cached: int, output: int, thoughts: int = 0, tool: int = 0
) -> RequestTotals:
    totals = RequestTotals()
    for _ in range(n):
        totals.add(
            Usage(
                prompt_token_count=prompt,
                cached_content_token_count=cached,
                candidates_token_count=output,
                thoughts_token_count=thoughts,
                tool_use_prompt_token_count=tool,
            )
        )
    return totals


# ---- the table -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "gemini-2.5-flash",
        "gemini-2.5-flash-001",
        "models/gemini-2.5-flash",
        "models/gemini-2.5-flash-002",
        "publishers/google/models/gemini-2.5-flash",
        "projects/p/locations/us-central1/publishers/google/models/gemini-2.5-flash",
        "projects/p/locations/us-central1/publishers/google/models/gemini-2.5-flash-001",
        " Gemini-2.5-Flash ",
    ],
)
def test_table_resolves_every_name_form_to_the_base_entry(name: str) -> None:
    assert price_for(name) == FLASH


def test_versioned_lite_resolves_to_lite_not_flash() -> None:
    assert price_for("models/gemini-2.5-flash-lite-001") == PRICES["gemini-2.5-flash-lite"]


def test_table_holds_the_documented_figures() -> None:
    assert PRICES["gemini-2.5-flash"] == ModelPrice(0.30, 0.03, 2.50, 1.00)
    assert PRICES["gemini-2.5-flash-lite"] == ModelPrice(0.10, 0.01, 0.40, 1.00)
    assert PRICES["gemini-2.5-pro"] == ModelPrice(1.25, 0.125, 10.00, 4.50, 2.50, 0.25, 15.00)
    assert PRICES["gemini-2.0-flash"] == ModelPrice(0.10, 0.025, 0.40, 1.00)
    assert PRICES["gemini-3.1-pro-preview"] == ModelPrice(2.00, 0.20, 12.00, 4.50, 4.00, 0.40, 18.00)
    assert "gemini-3-pro-preview" not in PRICES  # shut down on 2026-03-09
    assert PRICES["gemini-3-flash-preview"] == ModelPrice(0.50, 0.05, 3.00, 1.00)


@pytest.mark.parametrize("name", sorted(PRICES))
def test_cached_input_is_a_tenth_of_input_except_a_quarter_on_2_0(name: str) -> None:
    share = 0.25 if name.startswith("gemini-2.0") else 0.10
    price = PRICES[name]
    assert price.cached_input_per_million == pytest.approx(price.input_per_million * share)


def test_unknown_model_has_no_price_when_found_softly() -> None:
    assert find_price("gemini-9-ultra") is None


def test_unknown_model_price_for_raises_naming_prices_and_the_fix() -> None:
    with pytest.raises(CtxCacheConfigError, match=r"^prices: no price for model 'gemini-9-ultra'.*prices="):
        price_for("gemini-9-ultra")


# ---- overrides -----------------------------------------------------------------------------------


def test_flat_partial_override_replaces_only_the_given_field() -> None:
    price = price_for("gemini-2.5-flash", {"storage_per_million_per_hour": 2.0})
    assert price == ModelPrice(0.30, 0.03, 2.50, 2.0)


def test_flat_override_accepts_integers() -> None:
    assert price_for("gemini-2.5-flash", {"output_per_million": 3}).output_per_million == 3.0


def test_per_model_override_applies_to_that_model_only() -> None:
    overrides = {"gemini-2.5-pro": {"input_per_million": 2.50}}
    assert price_for("gemini-2.5-pro", overrides).input_per_million == 2.50
    assert price_for("gemini-2.5-flash", overrides) == FLASH


def test_per_model_override_key_may_use_a_backend_form() -> None:
    overrides = {"models/gemini-2.5-pro": {"output_per_million": 15.0}}
    price = price_for("projects/p/locations/l/publishers/google/models/gemini-2.5-pro-002", overrides)
    assert price.output_per_million == 15.0


def test_override_for_the_exact_version_wins_over_the_base_entry() -> None:
    overrides = {
        "gemini-2.5-flash": {"input_per_million": 0.40},
        "gemini-2.5-flash-001": {"input_per_million": 0.50},
    }
    assert price_for("gemini-2.5-flash-001", overrides).input_per_million == 0.50
    assert price_for("gemini-2.5-flash-002", overrides).input_per_million == 0.40


def test_later_override_layer_wins_field_by_field() -> None:
    connection = {"gemini-2.5-flash": {"input_per_million": 0.40, "output_per_million": 3.0}}
    operator = {"input_per_million": 0.35}
    price = price_for("gemini-2.5-flash", [connection, operator])
    assert price == ModelPrice(0.35, 0.03, 3.0, 1.00)


def test_unknown_model_is_priced_by_a_full_override() -> None:
    fields = {
        "input_per_million": 1.0,
        "cached_input_per_million": 0.1,
        "output_per_million": 4.0,
        "storage_per_million_per_hour": 2.0,
    }
    assert find_price("my-tuned-model", {"my-tuned-model": fields}) == ModelPrice(1.0, 0.1, 4.0, 2.0)


def test_unknown_model_partial_override_names_the_missing_fields() -> None:
    with pytest.raises(CtxCacheConfigError, match=r"^prices\.my-model: .*missing cached_input_per_million"):
        find_price("my-model", {"input_per_million": 1.0, "output_per_million": 2.0})


def test_overrides_accept_the_connection_extra_as_json_text() -> None:
    text = json.dumps({"gemini-2.5-flash": {"cached_input_per_million": 0.05}})
    assert price_for("gemini-2.5-flash", text).cached_input_per_million == 0.05


def test_empty_overrides_change_nothing() -> None:
    assert price_for("gemini-2.5-flash", {}) == FLASH
    assert price_for("gemini-2.5-flash", "") == FLASH
    assert price_for("gemini-2.5-flash", [None, {}]) == FLASH


@pytest.mark.parametrize(
    ("overrides", "starts_with"),
    [
        ({"input_per_million": -0.1}, r"prices\.input_per_million: "),
        ({"input_per_million": "0.30"}, r"prices\.input_per_million: "),
        ({"input_per_million": True}, r"prices\.input_per_million: "),
        ({"input_per_million": float("nan")}, r"prices\.input_per_million: "),
        ({"input_per_million": float("inf")}, r"prices\.input_per_million: "),
        ({"input": 0.3}, r"prices\.input: unknown price field"),
        (
            {"gemini-2.5-flash": {"output_per_million": -1}},
            r"prices\.gemini-2\.5-flash\.output_per_million: ",
        ),
        ({"gemini-2.5-flash": {"outputs": 1.0}}, r"prices\.gemini-2\.5-flash\.outputs: unknown price field"),
        (
            {"gemini-2.5-flash": {"input_per_million": None}},
            r"prices\.gemini-2\.5-flash\.input_per_million: ",
        ),
        ({"gemini-2.5-flash": {"input_per_million": 1.0}, "output_per_million": 1.0}, r"prices: mixes"),
        ([["input_per_million", 1.0]], r"prices: expected a mapping"),
        ("{not json", r"prices: not valid JSON"),
        ("[1, 2]", r"prices: expected a mapping"),
    ],
)
def test_each_bad_override_names_its_field(overrides: Any, starts_with: str) -> None:
    with pytest.raises(CtxCacheConfigError, match=f"^{starts_with}"):
        price_for("gemini-2.5-flash", overrides)


def test_bad_override_for_another_model_still_fails() -> None:
    overrides = {"gemini-2.5-pro": {"input_per_million": -1}}
    with pytest.raises(CtxCacheConfigError, match=r"^prices\.gemini-2\.5-pro\.input_per_million: "):
        price_for("gemini-2.5-flash", overrides)


def test_two_keys_naming_the_same_model_are_refused() -> None:
    overrides = {"gemini-2.5-flash": {"input_per_million": 1.0}, "models/gemini-2.5-flash": {}}
    with pytest.raises(CtxCacheConfigError, match=r"^prices\.models/gemini-2\.5-flash: names the same model"):
        price_for("gemini-2.5-flash", overrides)


# ---- tiers, batch and sources -------------------------------------------------------------------


def test_a_prompt_of_exactly_200k_tokens_is_in_the_standard_tier() -> None:
    assert PRO.rates(LONG_CONTEXT_TOKENS).input == 1.25
    assert PRO.rates(LONG_CONTEXT_TOKENS + 1).input == 2.50


def test_a_model_with_one_tier_keeps_its_rates_over_200k() -> None:
    assert FLASH.rates(1_000_000) == FLASH.rates(10)


def test_the_higher_tier_can_be_overridden() -> None:
    price = price_for("gemini-2.5-pro", {"input_per_million_above_200k": 3.0})
    assert price.rates(300_000).input == 3.0
    assert price.rates(300_000).cached_input == 0.25


def test_batch_discount_can_be_overridden_and_is_a_share() -> None:
    assert price_for("gemini-2.5-flash", {"batch_discount": 0.6}).batch_share == pytest.approx(0.4)
    with pytest.raises(CtxCacheConfigError, match=r"^prices\.batch_discount: "):
        price_for("gemini-2.5-flash", {"batch_discount": 1.5})


def test_every_table_row_says_where_its_figures_come_from_and_when() -> None:
    for name, price in PRICES.items():
        assert re.search(r"pricing.*20\d\d", price.source), name


def test_an_override_says_so_in_the_source() -> None:
    assert price_for("gemini-2.5-flash", {"output_per_million": 3}).source.endswith("with overrides")


# ---- the ledger: worked example --------------------------------------------------------------------
# 10,000 requests on gemini-2.5-flash against a 100,000-token cache held 2 hours, each request adding
# 50 uncached prompt tokens and producing 200 output tokens.
#   uncached input =       500,000 x $0.30 / 1M   = $  0.15
#   cached input   = 1,000,000,000 x $0.03 / 1M   = $ 30.00
#   output         =     2,000,000 x $2.50 / 1M   = $  5.00
#   creation       =       100,000 x $0.30 / 1M   = $  0.03  (charged to the task that created it)
#   storage        = 100,000 x $1.00 / 1M x 2 h   = $  0.20  (charged to the task that ended it)
#   online, no cache       = 1,000,500,000 x $0.30 / 1M + $5.00            = $305.15
#   online, implicit best  = $35.15 + the first request's 100,000 x ($0.30 - $0.03) / 1M = $35.177
#   batch, no cache        = $305.15 x 0.5                                  = $152.575
#   Vertex batch, implicit = 0.5 x ($0.15 + $5.00) + $30.00 + 100,000 x ($0.15 - $0.03) / 1M = $32.587
WORKED = requests(10_000, prompt=100_050, cached=100_000, output=200)


def flash_report(totals: RequestTotals = WORKED, **changes: Any) -> Any:
    """A fan-out report on gemini-2.5-flash against a 100,000-token cache held 2 hours."""
    arguments: dict[str, Any] = {
        "model": "gemini-2.5-flash",
        "cache_name": "cachedContents/a",
        "price": FLASH,
        "cache_tokens": 100_000,
        "creation": True,
        "cache_seconds": 7200,
    }
    arguments.update(changes)
    return fanout_report(totals, **arguments)


def test_worked_example_request_charges() -> None:
    assert request_charges(WORKED, FLASH) == pytest.approx(
        {"uncached_input": 0.15, "cached_input": 30.00, "output": 5.00}
    )


def test_worked_example_creation_and_storage() -> None:
    assert creation_charge(100_000, FLASH) == pytest.approx(0.03)
    assert storage_charge(100_000, 2 * 3600, FLASH) == pytest.approx(0.20)


def test_worked_example_baselines() -> None:
    assert baselines(WORKED, FLASH) == pytest.approx(
        {
            "online_no_cache": 305.15,
            "online_implicit_best": 35.177,
            "batch_no_cache": 152.575,
            "vertex_batch_implicit_best": 32.587,
        }
    )


def test_thoughts_bill_as_output_and_tool_use_tokens_as_input() -> None:
    totals = requests(1, prompt=1_000, cached=800, output=100, thoughts=50, tool=30)
    charges = request_charges(totals, FLASH)
    assert charges["uncached_input"] == pytest.approx((200 + 30) * 0.30 / 1e6)
    assert charges["output"] == pytest.approx((100 + 50) * 2.50 / 1e6)


def test_more_cached_than_prompt_tokens_gives_no_negative_input() -> None:
    totals = requests(1, prompt=100, cached=150, output=0)
    assert request_charges(totals, FLASH)["uncached_input"] == 0.0


# A 300,000-token cache on gemini-2.5-pro puts every request over 200k: 2.50 / 0.25 / 15.00.
#   one request of 300,050 prompt tokens (300,000 cached) and 200 output tokens:
#   uncached 50 x 2.50 + cached 300,000 x 0.25 + output 200 x 15.00 = 0.000125 + 0.075 + 0.003 = 0.078125
#   at the standard rates it would read 0.0000625 + 0.0375 + 0.002 = 0.0395625: about half.
def test_a_cache_over_200k_puts_each_request_in_the_higher_tier() -> None:
    totals = requests(1, prompt=300_050, cached=300_000, output=200)
    assert sum(request_charges(totals, PRO).values()) == pytest.approx(0.078125)
    assert totals.to_dict()["requests_above_200k"] == 1


def test_the_creation_of_a_cache_over_200k_is_at_the_higher_input_rate() -> None:
    assert creation_charge(300_000, PRO) == pytest.approx(300_000 * 2.50 / 1e6)


def test_storage_has_one_rate_whatever_the_size() -> None:
    assert storage_charge(300_000, 3600, PRO) == pytest.approx(300_000 * 4.50 / 1e6)


def test_requests_are_priced_each_in_its_own_tier() -> None:
    totals = requests(1, prompt=300_000, cached=0, output=0)
    totals.merge(requests(1, prompt=100_000, cached=0, output=0))
    assert request_charges(totals, PRO)["uncached_input"] == pytest.approx(0.75 + 0.125)


def test_explicit_caching_never_beats_implicit_at_its_best_when_creation_is_charged() -> None:
    for n in (1, 10, 10_000):
        totals = requests(n, prompt=100_050, cached=100_000, output=200)
        explicit = sum(request_charges(totals, FLASH).values()) + creation_charge(100_000, FLASH)
        assert explicit > baselines(totals, FLASH)["online_implicit_best"]


# ---- reports -------------------------------------------------------------------------------------


def test_a_fanout_report_charges_only_its_requests() -> None:
    report = flash_report()
    out = report.to_dict()
    assert out["charged"] == pytest.approx({"uncached_input": 0.15, "cached_input": 30.0, "output": 5.0})
    assert out["total"] == pytest.approx(35.15)
    assert out["cache_fixed"] == pytest.approx({"creation": 0.03, "storage": 0.20})
    assert out["explicit_all_in"] == pytest.approx(35.38)
    assert out["saved_vs"]["online_no_cache"] == pytest.approx(305.15 - 35.38)
    assert out["saved_vs"]["batch_no_cache"] == pytest.approx(152.575 - 35.38)


def test_a_fanout_report_table_uses_one_number_of_decimals() -> None:
    report = flash_report(
        requests(2, prompt=2_150, cached=2_100, output=30), cache_tokens=2_100, cache_seconds=12
    )
    amounts = re.findall(r"-?\d+\.(\d+)(?!\s*(?:s|min|h)\b)", report.table().split("\n", 2)[2])
    assert amounts
    assert {len(decimals) for decimals in amounts} == {6}


def test_a_report_for_a_model_without_a_price_gives_tokens_and_says_price_unknown() -> None:
    report = flash_report(
        requests(3, prompt=2_150, cached=2_100, output=30),
        model="gemini-9-ultra",
        price=find_price("gemini-9-ultra"),
        cache_tokens=2_100,
        cache_seconds=12,
    )
    out = report.to_dict()
    assert out["price"] == "price unknown"
    assert out["total"] is None
    assert out["tokens"]["requests"] == 3
    assert "price unknown for gemini-9-ultra" in report.table()
    assert not re.search(r"\d\.\d{4}", report.table())


def test_a_creation_report_charges_the_creator_only() -> None:
    created = creation_report(
        model="gemini-2.5-flash", cache_name="c", price=FLASH, cache_tokens=100_000, created=True
    )
    reused = creation_report(
        model="gemini-2.5-flash", cache_name="c", price=FLASH, cache_tokens=100_000, created=False
    )
    assert created.to_dict()["charged"] == pytest.approx({"creation": 0.03})
    assert reused.to_dict()["charged"] == {"creation": 0.0}
    assert "reused" in reused.table()


def test_a_storage_report_prices_the_whole_life() -> None:
    report = storage_report(
        model="gemini-2.5-flash",
        cache_name="c",
        price=FLASH,
        cache_tokens=100_000,
        seconds=5400,
        how="deleted",
    )
    assert report.to_dict()["charged"] == pytest.approx({"storage": 0.15})
    assert "held 1.5 h" in report.table()


def test_a_no_charge_report_is_zero_and_says_why() -> None:
    out = no_charge_report(model="", cache_name="c", reason="already gone").to_dict()
    assert out["total"] == 0.0
    assert out["notes"] == ["already gone"]


def test_report_amounts_survive_json() -> None:
    report = flash_report(cache_name="c", creation=False, cache_seconds=0)
    assert json.loads(json.dumps(report.to_dict())) == report.to_dict()


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(0.27, "0.27 s"), (42, "42 s"), (450, "7.5 min"), (7200, "2 h"), (4500, "1.25 h")],
)
def test_durations_read_in_seconds_minutes_or_hours(seconds: float, shown: str) -> None:
    assert readable_duration(seconds) == shown


# ---- adding up a run -----------------------------------------------------------------------------


def shard_report(n: int) -> dict[str, Any]:
    return flash_report(
        requests(n, prompt=100_050, cached=100_000, output=200), cache_name="c", cache_seconds=3600
    ).to_dict()


def test_a_run_adds_up_what_its_tasks_were_charged() -> None:
    creation = creation_report(
        model="gemini-2.5-flash", cache_name="c", price=FLASH, cache_tokens=100_000, created=True
    )
    storage = storage_report(
        model="gemini-2.5-flash", cache_name="c", price=FLASH, cache_tokens=100_000, seconds=3600, how="x"
    )
    bill = add_up([creation.to_dict(), shard_report(3), shard_report(2), storage.to_dict()])
    # 5 requests: 5 x (50 x 0.30 + 100,000 x 0.03 + 200 x 2.50) / 1M = 5 x 0.003515 = 0.017575;
    # creation 0.03; storage 0.10
    assert bill["requests"] == 5
    assert bill["total"] == pytest.approx(0.017575 + 0.03 + 0.10)
    assert bill["charged"]["creation"] == pytest.approx(0.03)


def test_adding_up_shards_counts_the_implicit_first_miss_once() -> None:
    two_shards = add_up([shard_report(3), shard_report(2)])
    one_task = add_up([shard_report(5)])
    assert two_shards["baselines"] == pytest.approx(one_task["baselines"])


def test_a_run_with_an_unpriced_task_has_no_total() -> None:
    unknown = flash_report(
        requests(1, prompt=3000, cached=2100, output=5),
        model="gemini-9-ultra",
        cache_name="c",
        price=None,
        cache_tokens=2100,
        cache_seconds=1,
    ).to_dict()
    assert add_up([shard_report(1), unknown])["total"] is None
    assert "price unknown" in bill_table([unknown])
