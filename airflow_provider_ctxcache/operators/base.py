"""What every operator of this provider shares: the connection id and the one hook."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from airflow.sdk import BaseOperator

from airflow_provider_ctxcache.hooks import ContextCacheHook


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
