"""What caching costs and saves: prices (the table), ledger (the arithmetic), report (the text).

See docs/costs.md for who is charged what, the baselines and the break-even advisor.
"""

from airflow_provider_ctxcache.costs.advise import Advice, advise
from airflow_provider_ctxcache.costs.ledger import (
    BASELINE_LABELS,
    RequestTotals,
    TierTotals,
    baselines,
    creation_charge,
    first_misses,
    request_charges,
    storage_charge,
)
from airflow_provider_ctxcache.costs.prices import (
    LONG_CONTEXT_TOKENS,
    PRICE_FIELDS,
    PRICES,
    REQUIRED_FIELDS,
    ModelPrice,
    PriceOverrides,
    Rates,
    check_overrides,
    find_price,
    price_for,
)
from airflow_provider_ctxcache.costs.report import (
    PRICE_UNKNOWN,
    CostReport,
    creation_report,
    fanout_report,
    money,
    money_places,
    no_charge_report,
    readable_duration,
    storage_report,
)
from airflow_provider_ctxcache.costs.summary import add_up, bill_table

__all__ = [
    "BASELINE_LABELS",
    "LONG_CONTEXT_TOKENS",
    "PRICES",
    "PRICE_FIELDS",
    "PRICE_UNKNOWN",
    "REQUIRED_FIELDS",
    "Advice",
    "CostReport",
    "ModelPrice",
    "PriceOverrides",
    "Rates",
    "RequestTotals",
    "TierTotals",
    "add_up",
    "advise",
    "baselines",
    "bill_table",
    "check_overrides",
    "creation_charge",
    "creation_report",
    "fanout_report",
    "find_price",
    "first_misses",
    "money",
    "money_places",
    "no_charge_report",
    "price_for",
    "readable_duration",
    "request_charges",
    "storage_charge",
    "storage_report",
]
