"""DeleteCacheOperator: stop the storage bill; safe as a teardown and on retries."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_ctxcache.costs import no_charge_report, storage_report
from airflow_provider_ctxcache.hooks import CacheRemoval, ContextCacheHook
from airflow_provider_ctxcache.operators.base import CtxCacheBaseOperator, staging_area_of
from airflow_provider_ctxcache.staging import key_of, remove_staged

if TYPE_CHECKING:
    from airflow.sdk import Context

ALREADY_GONE = (
    "the cache was already gone: another task deleted it (its report holds the storage) or it "
    "expired (billed until its expireTime; CacheExpirySensor reports that when it sees it lapse)"
)


def delete_with_staged(
    hook: ContextCacheHook, cache_name: str, log: logging.Logger | Any
) -> tuple[CacheRemoval, int]:
    """Delete the cache, then what the provider staged for it; the removal and how many objects.

    Staged files are found through the reuse key in the cache's display name, read just before
    the delete: this operator and the janitor (``ctxcache caches gc``) clean up the same way.
    """
    removal = hook.remove_cache(cache_name)
    cache = removal.cache
    key = key_of(cache.display_name) if removal.deleted and cache is not None else None
    staged = remove_staged(staging_area_of(hook), key, log) if key is not None else 0
    return removal, staged


class DeleteCacheOperator(CtxCacheBaseOperator):
    """Delete a cache; one that is already gone (expired, deleted by a retry) counts as success.

    Use it as a teardown so the cache is deleted even when the work between fails::

        DeleteCacheOperator(task_id="delete_cache", cache_name=create.output).as_teardown(setups=create)

    Files the provider staged for the cache (large local files, found through the reuse key in
    its display name) are removed with it. The task that deletes a cache is charged its storage
    for its whole life, from its ``createTime`` to now, once: the report is logged and pushed to
    XCom as ``cost``.

    :param cache_name: the cache, usually ``create_cache.output``.
    :param prices: price overrides for the storage report; default the connection extra ``prices``.
    :return: True if this task deleted it, False if it was already gone.
    """

    template_fields: Sequence[str] = ("cache_name",)
    ui_color = "#fce8e6"

    def __init__(self, *, cache_name: str, prices: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cache_name = cache_name
        self.prices = prices

    def execute(self, context: Context) -> bool:
        removal, _ = delete_with_staged(self.hook, self.cache_name, self.log)
        cache = removal.cache
        if removal.deleted and cache is not None and removal.ended_at and cache.create_time:
            model = cache.model or ""
            seconds = (removal.ended_at - cache.create_time).total_seconds()
            report = storage_report(
                model=model,
                cache_name=str(cache.name),
                price=self.report_price(model),
                cache_tokens=(cache.usage_metadata.total_token_count or 0) if cache.usage_metadata else 0,
                seconds=max(0.0, seconds),
                how="deleted by this task: storage from its createTime to now, its whole life",
            )
        else:
            report = no_charge_report(
                model=(cache.model or "") if cache else "",
                cache_name=str(self.cache_name),
                reason=ALREADY_GONE,
            )
        self.log.info("Cost:\n%s", report.table())
        context["ti"].xcom_push(key="cost", value=report.to_dict())
        return removal.deleted
