"""The cost ledger: price table, overrides, and the with-cache / online / batch comparison."""

from __future__ import annotations

import json
from typing import Any

import pytest

from airflow_provider_ctxcache.costs import (
    BATCH_DISCOUNT,
    PRICES,
    CostReport,
    ModelPrice,
    cost_report,
    find_price,
    price_for,
    readable_duration,
    report_for_usage,
)
from airflow_provider_ctxcache.exceptions import CtxCacheConfigError
from airflow_provider_ctxcache.fanout.records import Usage

FLASH = PRICES["gemini-2.5-flash"]
CENT = 0.005  # "to the cent": within half a cent; the hand-computed figures are exact anyway


# Worked example: 10,000 requests on gemini-2.5-flash against a 100,000-token cache held 2 hours,
# each request adding 50 uncached prompt tokens and producing 200 output tokens.
#   prompt tokens  = 10,000 x (100,000 + 50)      = 1,000,500,000 (includes the cached ones)
#   cached tokens  = 10,000 x 100,000             = 1,000,000,000
#   output tokens  = 10,000 x 200                 =     2,000,000
#   uncached input =       500,000 x $0.30 / 1M   = $  0.15
#   cached input   = 1,000,000,000 x $0.03 / 1M   = $ 30.00
#   output         =     2,000,000 x $2.50 / 1M   = $  5.00
#   storage        = 100,000 x $1.00 / 1M x 2 h   = $  0.20
#   creation       = 100,000 x $0.30 / 1M         = $  0.03
#   with cache                                    = $ 35.38
#   without cache  = 1,000,500,000 x $0.30 / 1M + $5.00 = $300.15 + $5.00 = $305.15
#   batch          = $305.15 x 0.5                = $152.575
#   saved vs online = $269.77 (88.41%); saved vs batch = $117.195 (76.81%)
#   break-even vs online: each request saves 100,000 x ($0.30 - $0.03) / 1M = $0.027 against the
#     fixed $0.23 (storage + creation): 0.23 / 0.027 = 8.5 -> 9 requests.
#   break-even vs batch: batch costs $0.0152575 a request, the cache $0.003515 a request (variable
#     part), so each saves $0.0117425: 0.23 / 0.0117425 = 19.6 -> 20 requests.
def worked_example(**changes: Any) -> CostReport:
    args: dict[str, Any] = {
        "model": "gemini-2.5-flash",
        "price": FLASH,
        "requests": 10_000,
        "prompt_tokens": 10_000 * 100_050,
        "cached_tokens": 10_000 * 100_000,
        "output_tokens": 10_000 * 200,
        "cache_tokens": 100_000,
        "storage_hours": 2.0,
    }
    args.update(changes)
    return cost_report(**args)


def one_request_long_storage() -> CostReport:
    return worked_example(
        requests=1, prompt_tokens=100_050, cached_tokens=100_000, output_tokens=200, storage_hours=10.0
    )


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
    assert PRICES["gemini-2.5-pro"] == ModelPrice(1.25, 0.125, 10.00, 4.50)
    assert PRICES["gemini-2.0-flash"] == ModelPrice(0.10, 0.025, 0.40, 1.00)
    assert PRICES["gemini-3.1-pro-preview"] == ModelPrice(2.00, 0.20, 12.00, 4.50)
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


# ---- the report ----------------------------------------------------------------------------------


def test_worked_example_matches_to_the_cent_in_every_component() -> None:
    report = worked_example()
    assert report.breakdown == {
        "uncached_input": pytest.approx(0.15, abs=CENT),
        "cached_input": pytest.approx(30.00, abs=CENT),
        "output": pytest.approx(5.00, abs=CENT),
        "storage": pytest.approx(0.20, abs=CENT),
        "creation": pytest.approx(0.03, abs=CENT),
    }
    assert report.with_cache == pytest.approx(35.38, abs=CENT)
    assert report.without_cache == pytest.approx(305.15, abs=CENT)
    assert report.batch == pytest.approx(152.575, abs=1e-9)
    assert report.saved_vs_online == pytest.approx(269.77, abs=CENT)
    assert report.saved_vs_online_percent == pytest.approx(88.41, abs=0.005)
    assert report.saved_vs_batch == pytest.approx(117.195, abs=1e-9)
    assert report.saved_vs_batch_percent == pytest.approx(76.81, abs=0.005)


def test_batch_is_half_of_online_without_cache() -> None:
    report = one_request_long_storage()
    assert BATCH_DISCOUNT == 0.5
    assert report.batch == pytest.approx(report.without_cache / 2)


def test_savings_are_negative_for_one_request_with_ten_hours_of_storage() -> None:
    report = one_request_long_storage()
    # with cache: 0.000015 + 0.003 + 0.0005 + 1.00 storage + 0.03 creation = $1.033515
    # without:    100,050 x $0.30 / 1M + $0.0005 = $0.030515
    assert report.with_cache == pytest.approx(1.033515)
    assert report.without_cache == pytest.approx(0.030515)
    assert report.saved_vs_online == pytest.approx(-1.003)
    assert report.saved_vs_online_percent is not None
    assert report.saved_vs_online_percent < 0
    assert report.saved_vs_batch < 0


def test_break_even_of_the_worked_example() -> None:
    report = worked_example()
    assert report.break_even_requests == 9
    assert report.break_even_requests_vs_batch == 20


def test_break_even_is_the_first_request_count_where_the_cache_pays() -> None:
    def at(n: int) -> CostReport:
        return worked_example(
            requests=n, prompt_tokens=n * 100_050, cached_tokens=n * 100_000, output_tokens=n * 200
        )

    n = worked_example().break_even_requests
    assert n is not None
    assert at(n).saved_vs_online >= 0 > at(n - 1).saved_vs_online


def test_break_even_is_none_when_cached_input_costs_as_much_as_input() -> None:
    no_discount = ModelPrice(0.30, 0.30, 2.50, 1.00)
    report = worked_example(price=no_discount)
    assert report.break_even_requests is None
    assert report.break_even_requests_vs_batch is None


def test_break_even_is_none_without_requests() -> None:
    report = worked_example(requests=0, prompt_tokens=0, cached_tokens=0, output_tokens=0)
    assert report.break_even_requests is None
    assert report.saved_vs_online_percent is None


def test_excluding_creation_leaves_it_out_of_the_total() -> None:
    report = worked_example(include_creation=False)
    assert report.breakdown["creation"] == 0.0
    assert report.with_cache == pytest.approx(35.35, abs=CENT)


def test_report_uses_the_table_price_when_none_is_given() -> None:
    report = worked_example(model="models/gemini-2.5-flash-001", price=None)
    assert report.price == FLASH
    assert report.model == "gemini-2.5-flash-001"


def test_more_cached_than_prompt_tokens_gives_no_negative_input() -> None:
    report = worked_example(prompt_tokens=10, cached_tokens=20)
    assert report.breakdown["uncached_input"] == 0.0


def test_negative_counts_are_refused() -> None:
    with pytest.raises(ValueError, match=r"^storage_hours: "):
        worked_example(storage_hours=-1)


def test_report_for_usage_bills_thoughts_as_output() -> None:
    usage = Usage(
        prompt_token_count=100_050,
        cached_content_token_count=100_000,
        candidates_token_count=150,
        thoughts_token_count=50,
    )
    report = report_for_usage(
        usage, model="gemini-2.5-flash", requests=1, cache_tokens=100_000, storage_hours=10.0
    )
    assert report.output_tokens == 200
    assert report == one_request_long_storage()


def test_to_dict_is_json_serialisable() -> None:
    data = json.loads(json.dumps(worked_example().to_dict()))
    assert data["with_cache"] == 35.38
    assert data["batch"] == 152.575
    assert data["breakdown"]["storage"] == 0.2
    assert data["break_even_requests"] == 9
    assert data["price"]["cached_input_per_million"] == 0.03


def test_table_contains_the_three_rows_with_amounts_and_savings() -> None:
    text = worked_example().table()
    lines = text.splitlines()
    assert any(line.startswith("with cache") and line.endswith("35.38") for line in lines)
    assert any(
        line.startswith("without cache (online)") and "305.15" in line and "88.41%" in line for line in lines
    )
    assert any(
        line.startswith("batch (no cache)") and "152.58" in line and "76.81%" in line for line in lines
    )
    assert "storage" in text
    assert "creation" in text


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(0.1587, "0.16 s"), (42.4, "42 s"), (450, "7.5 min"), (7200, "2 h"), (4500, "1.25 h")],
)
def test_durations_read_in_seconds_minutes_or_hours(seconds: float, shown: str) -> None:
    assert readable_duration(seconds) == shown


def test_a_short_run_shows_its_storage_time_in_seconds_not_in_scientific_hours() -> None:
    report = cost_report(
        model="gemini-2.5-flash",
        requests=1,
        prompt_tokens=2100,
        cached_tokens=2000,
        output_tokens=10,
        cache_tokens=2000,
        storage_hours=0.27 / 3600,
    )
    assert "held 0.27 s" in report.table().splitlines()[0]
