"""What every operator of this provider shares: the connection id and the one hook."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from airflow.sdk import BaseOperator

from airflow_provider_ctxcache.costs import ModelPrice, PriceOverrides, find_price
from airflow_provider_ctxcache.exceptions import CtxCacheConfigError
from airflow_provider_ctxcache.hooks import ContextCacheHook
from airflow_provider_ctxcache.staging import StagingArea


class CtxCacheBaseOperator(BaseOperator):
    """Base for the cache operators.

    :param ctxcache_conn_id: connection of type ``ctxcache`` (default ``ctxcache_default``).
    """

    ui_color = "#e8f0fe"

    def __init__(self, *, ctxcache_conn_id: str = ContextCacheHook.default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ctxcache_conn_id = ctxcache_conn_id

    @cached_property
    def hook(self) -> ContextCacheHook:
        return ContextCacheHook(self.ctxcache_conn_id)

    def staging_area(self, staging_uri: str | None = None) -> StagingArea:
        """Where this connection stages large files, through the hook's clients."""
        hook = self.hook
        return hook.backend.staging_area(hook.get_conn, lambda: hook.storage_client, staging_uri)

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
