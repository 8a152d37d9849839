"""What every task of this provider shares: the connection id and the one hook.

:class:`CtxCacheHookMixin` holds them for the operators and ``CacheExpirySensor`` alike;
:class:`CtxCacheBaseOperator` adds what only operators need (staging, prices).
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.bases.operator import BaseOperatorMeta

from airflow_provider_ctxcache.costs import ModelPrice, PriceOverrides, find_price
from airflow_provider_ctxcache.exceptions import CtxCacheConfigError
from airflow_provider_ctxcache.hooks import ContextCacheHook
from airflow_provider_ctxcache.staging import StagingArea


def staging_area_of(hook: ContextCacheHook, staging_uri: str | None = None) -> StagingArea:
    """Where ``hook``'s connection stages large files, through the hook's clients."""
    return hook.backend.staging_area(hook.get_conn, lambda: hook.storage_client, staging_uri)


class CtxCacheHookMixin(metaclass=BaseOperatorMeta):
    """The ``ctxcache_conn_id`` argument and the task's one hook, built from it when first used.

    Put it first among the bases (``class X(CtxCacheHookMixin, BaseSensorOperator)``). Its
    metaclass is Airflow's, so ``default_args={"ctxcache_conn_id": ...}``, ``.partial()`` and
    ``.expand()`` see the argument as they see any operator's own.

    :param ctxcache_conn_id: connection of type ``ctxcache`` (default ``ctxcache_default``).
    """

    ui_color = "#e8f0fe"

    def __init__(self, *, ctxcache_conn_id: str = ContextCacheHook.default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ctxcache_conn_id = ctxcache_conn_id

    @cached_property
    def hook(self) -> ContextCacheHook:
        return ContextCacheHook(self.ctxcache_conn_id)


class CtxCacheBaseOperator(CtxCacheHookMixin, BaseOperator):
    """Base for the cache operators: the mixin's connection and hook, plus staging and prices.

    :param ctxcache_conn_id: connection of type ``ctxcache`` (default ``ctxcache_default``).
    """

    def staging_area(self, staging_uri: str | None = None) -> StagingArea:
        """Where this connection stages large files, through the hook's clients."""
        return staging_area_of(self.hook, staging_uri)

    def price_overrides(self) -> list[PriceOverrides]:
        """The connection's ``prices``, then the operator's own (``prices=``), later winning."""
        return [p for p in (self.hook.settings.prices, getattr(self, "prices", None)) if p]

    def report_price(self, model: str) -> ModelPrice | None:
        """The price for a cost report, or None: a bad override must not fail work already done."""
        try:
            return find_price(model, self.price_overrides())
        except CtxCacheConfigError as error:
            self.log.warning("%s The cost is reported without a price.", error)
            return None
