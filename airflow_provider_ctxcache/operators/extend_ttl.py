"""ExtendCacheTTLOperator: give a cache more life before long work starts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_ctxcache.operators.base import CtxCacheBaseOperator

if TYPE_CHECKING:
    from airflow.sdk import Context


class ExtendCacheTTLOperator(CtxCacheBaseOperator):
    """Set a cache's lifetime anew: ``ttl`` counts from now, ``expire_time`` is absolute.

    :param cache_name: the cache, usually ``create_cache.output``.
    :param ttl: ``"2h"``, ``"90m"``, ``"3600s"``, seconds or a timedelta.
    :param expire_time: a timezone-aware time in the future, instead of ``ttl``.
    :return: ``{"cache_name", "expire_time"}``.
    """

    template_fields: Sequence[str] = ("cache_name", "ttl", "expire_time")

    def __init__(self, *, cache_name: str, ttl: Any = None, expire_time: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cache_name = cache_name
        self.ttl = ttl
        self.expire_time = expire_time

    def execute(self, context: Context) -> dict[str, Any]:
        # The hook checks the name, the duration and the instant before it sends anything.
        cache = self.hook.update_cache_ttl(self.cache_name, ttl=self.ttl, expire_time=self.expire_time)
        return {
            "cache_name": cache.name,
            "expire_time": cache.expire_time.isoformat() if cache.expire_time else None,
        }
