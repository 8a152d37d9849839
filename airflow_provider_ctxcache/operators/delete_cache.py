"""DeleteCacheOperator: stop the storage bill; safe as a teardown and on retries."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_ctxcache.operators.base import CtxCacheBaseOperator

if TYPE_CHECKING:
    from airflow.sdk import Context


class DeleteCacheOperator(CtxCacheBaseOperator):
    """Delete a cache; one that is already gone (expired, deleted by a retry) counts as success.

    Use it as a teardown so the cache is deleted even when the work between fails::

        DeleteCacheOperator(task_id="delete_cache", cache_name=create.output).as_teardown(setups=create)

    :param cache_name: the cache, usually ``create_cache.output``.
    :return: True if this task deleted it, False if it was already gone.
    """

    template_fields: Sequence[str] = ("cache_name",)
    ui_color = "#fce8e6"

    def __init__(self, *, cache_name: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cache_name = cache_name

    def execute(self, context: Context) -> bool:
        return self.hook.delete_cache(self.cache_name)
