"""CacheExpirySensor: wait until a cache expires (or is about to), then let downstream work run.

Typical uses: refresh a cache shortly before it lapses (``margin="10m"`` ahead of an
``ExtendCacheTTLOperator`` or a re-create), or hold a cleanup step until a shared cache is
surely gone. Deferrable by default where ``[operators] default_deferrable`` says so: then the
sensor reads the cache once in the worker, returns at once when the wait is already over, and
otherwise defers: the wait costs no worker slot, only a trigger that re-reads the cache at most
every ``poll_interval``.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue
from airflow.sdk.configuration import conf
from airflow.sdk.exceptions import AirflowException, AirflowSkipException

from airflow_provider_ctxcache.costs import find_price, storage_report
from airflow_provider_ctxcache.exceptions import CacheNotFoundError, CtxCacheConfigError, CtxCacheError
from airflow_provider_ctxcache.operators.base import CtxCacheHookMixin
from airflow_provider_ctxcache.triggers.cache_expiry import (
    DEFAULT_POLL_INTERVAL,
    EXPIRED,
    GONE,
    MARGIN_REACHED,
    CacheExpiryTrigger,
    ExpiryOutcome,
    expiry_outcome,
    lapsed_facts,
)
from airflow_provider_ctxcache.validation import TTL_FORMS, parse_ttl

if TYPE_CHECKING:
    from airflow.sdk import Context

_ZERO_TEXT = re.compile(r"^\s*0+(?:\.0*)?\s*([A-Za-z]*)\s*$")


def parse_margin(value: Any, field: str = "margin") -> float:
    """Seconds ahead of the expiry to fire: any ``parse_ttl`` form, or zero; never negative."""
    negative = CtxCacheConfigError(f"{field}: {value!r} is negative; use zero or a positive duration.")
    if value is None:
        return 0.0
    if isinstance(value, dt.timedelta):
        if value < dt.timedelta(0):
            raise negative
        return value.total_seconds()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise CtxCacheConfigError(f"{field}: {value!r} is not a duration; use {TTL_FORMS}.")
        if value < 0:
            raise negative
        return float(value)
    if isinstance(value, str):
        if value.strip().startswith("-"):
            raise negative
        zero = _ZERO_TEXT.match(value)
        if zero:  # parse_ttl rejects zero, which is a fine margin; still check the unit is one it knows
            parse_ttl(f"1{zero.group(1)}", field)
            return 0.0
    return parse_ttl(value, field).total_seconds()


class CacheExpirySensor(CtxCacheHookMixin, BaseSensorOperator):
    """Succeeds once ``now >= expireTime - margin``, or as soon as the cache is gone.

    The expiry is read anew on every check, so a TTL extended meanwhile pushes the wait out.
    Returns (and pushes as XCom) ``{"cache_name", "status", "expire_time", "seconds_left"}``:

    - ``margin_reached``: the cache is alive and inside the margin; ``seconds_left`` (> 0) is
      what it had left at that reading;
    - ``expired``: its expiry has passed (``seconds_left`` 0). With no margin the cache has
      lapsed by the time it is due, so one seen alive earlier in this try and missing once its
      expiry passed reports ``expired``;
    - ``gone``: missing before its expiry was seen (deleted, or expired unseen);
      ``expire_time`` and ``seconds_left`` are None.

    In deferrable mode the cache is read once before deferring, so a wait already over ends
    in the worker without a trigger.

    :param cache_name: the cache's full name, usually ``create_cache.output``. (templated)
    :param margin: fire this long before the expiry: ``'10m'``, ``'600s'``, seconds or a
        timedelta; default 0. (templated)
    :param ctxcache_conn_id: connection of type ``ctxcache``.
    :param deferrable: wait in the triggerer instead of a worker slot.
    :param poll_interval: in deferrable mode, the longest the trigger sleeps between two reads.
    """

    template_fields: Sequence[str] = ("cache_name", "margin")
    ui_color = "#e8f0fe"

    def __init__(
        self,
        *,
        cache_name: str,
        margin: Any = 0,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.cache_name = cache_name
        self.margin = margin
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        # The expiry seen by the last poke of this try: a cache found missing after that moment
        # expired as announced rather than being deleted (the trigger keeps the same memory).
        self._known_expire_time: dt.datetime | None = None
        self._seen: Any = None  # the last reading of the cache, to price its storage if it lapses

    def _checked(self) -> tuple[str, float]:
        """The rendered cache name and margin, validated before any API call."""
        margin = parse_margin(self.margin, "margin")
        name = self.hook.cache_name(self.cache_name, "cache_name")
        return name, margin

    def execute(self, context: Context) -> Any:
        """Pokes in this worker when not deferrable; else reads once, then defers if not yet due.

        The one read makes a wait that is already over (inside the margin, expired, gone) end
        here, with no trigger: a trigger that fires at once races the scheduler's handling of
        the deferral, which Airflow may report as a state mismatch and fail the task.
        """
        name, margin = self._checked()
        if not self.deferrable:
            return super().execute(context)
        try:
            done = self.poke(context)
        except AirflowException as error:  # as if the trigger had failed: soft_fail / never_fail apply
            if self.soft_fail or self.never_fail:
                flag = "soft_fail" if self.soft_fail else "never_fail"
                raise AirflowSkipException(f"Skipping due to {flag} is set to True.") from error
            raise
        if isinstance(done, PokeReturnValue) and done.is_done:
            return done.xcom_value
        self.defer(
            trigger=CacheExpiryTrigger(
                cache_name=name,
                ctxcache_conn_id=self.ctxcache_conn_id,
                margin_seconds=margin,
                poll_interval=self.poll_interval,
            ),
            method_name="execute_complete",
            timeout=dt.timedelta(seconds=self.timeout),
        )

    def poke(self, context: Context) -> bool | PokeReturnValue:
        """One read: done when the expiry mark has passed or the cache is gone, as the trigger decides."""
        name, margin = self._checked()
        read_at = dt.datetime.now(dt.timezone.utc)
        try:
            cache = self.hook.get_cache(name)
        except CacheNotFoundError:
            expire_time = None
        else:
            if cache.expire_time is None:
                raise CtxCacheError(f"cache_name: the API returned no expireTime for cache {name!r}")
            expire_time = cache.expire_time.astimezone(dt.timezone.utc)
            self._seen = cache
        outcome = expiry_outcome(
            expire_time,
            known=self._known_expire_time,
            read_at=read_at,
            margin_seconds=margin,
            answered_at=dt.datetime.now(dt.timezone.utc),
        )
        if outcome is None:
            assert expire_time is not None  # no outcome means a live cache not yet due
            self._known_expire_time = expire_time
            left = (expire_time - read_at).total_seconds()
            self.log.info(
                "Cache %s expires %s (%.0fs left); margin %.0fs: not yet", name, expire_time, left, margin
            )
            return False
        self.log.info("Cache %s: %s", name, outcome.describe(margin))
        if outcome.status == EXPIRED and expire_time is None and self._seen is not None:
            self._report_lapsed(context, name, lapsed_facts(self._seen))
        return PokeReturnValue(is_done=True, xcom_value=outcome.result(name))

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Back from the trigger: the same dict poke mode returns, or a failure that says why."""
        event = event or {}
        status = event.get("status")
        name = str(event.get("cache_name") or self.cache_name)
        if status in (MARGIN_REACHED, EXPIRED, GONE):
            if isinstance(event.get("lapsed"), dict):
                self._report_lapsed(context, name, event["lapsed"])
            expire_time = event.get("expire_time")
            outcome = ExpiryOutcome(
                status,
                dt.datetime.fromisoformat(expire_time) if isinstance(expire_time, str) else None,
                _seconds_or_none(event.get("seconds_left")),
            )
            self.log.info("Cache %s: %s", name, outcome.describe(parse_margin(self.margin)))
            return outcome.result(name)
        if status == "error":
            raise CtxCacheError(
                f"CacheExpirySensor could not watch cache {name!r}: {event.get('message', 'unknown error')}"
            )
        raise CtxCacheError(f"CacheExpirySensor got an unexpected event for cache {name!r}: {event!r}")

    def _report_lapsed(self, context: Context, name: str, facts: dict[str, Any]) -> None:
        """The cache lapsed while watched: no task deleted it, so this one reports its storage.

        Billed from its ``createTime`` to its ``expireTime``; pushed to XCom as ``cost``.
        """
        try:
            created = dt.datetime.fromisoformat(str(facts["create_time"]))
            expired = dt.datetime.fromisoformat(str(facts["expire_time"]))
            model = str(facts.get("model") or "")
            price = find_price(model, self.hook.settings.prices or None)
        except (KeyError, TypeError, ValueError, CtxCacheConfigError) as error:
            self.log.warning("Cache %s lapsed; its storage could not be priced: %s", name, error)
            return
        report = storage_report(
            model=model,
            cache_name=name,
            price=price,
            cache_tokens=int(facts.get("cache_tokens") or 0),
            seconds=max(0.0, (expired - created).total_seconds()),
            how="lapsed while this sensor watched it: storage from its createTime to its expireTime",
        )
        self.log.info("Cost:\n%s", report.table())
        context["ti"].xcom_push(key="cost", value=report.to_dict())


def _seconds_or_none(value: Any) -> float | None:
    """The event's ``seconds_left``; an event from before it existed has none."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None
