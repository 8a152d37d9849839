"""Argument checks that run before any billable call, each naming the field and the fix.

Kept apart from the hook so operators can validate rendered templates in ``execute`` (and a
UI-triggered run with bad params fails in milliseconds) with the very rules the hook applies.
Cache names differ per backend, so their rule lives in ``hooks.backend`` (``hook.cache_name``).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from airflow_provider_ctxcache.exceptions import CtxCacheConfigError

_TTL_TEXT = re.compile(
    r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|secs|seconds?|m|min|mins|minutes?|h|hr|hrs|hours?|d|days?)?\s*$", re.I
)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

TTL_FORMS = "'3600s', '90m', '2h', '1d', a number of seconds, or a timedelta"


def parse_ttl(value: Any, field: str = "ttl") -> dt.timedelta:
    """A positive duration from the forms users write in DAGs and in UI params."""
    if isinstance(value, bool) or value is None:
        raise CtxCacheConfigError(f"{field}: {value!r} is not a duration; use {TTL_FORMS}.")
    if isinstance(value, dt.timedelta):
        duration = value
    elif isinstance(value, (int, float)):
        duration = dt.timedelta(seconds=value)
    elif isinstance(value, str):
        match = _TTL_TEXT.match(value)
        if not match:
            raise CtxCacheConfigError(f"{field}: {value!r} is not a duration; use {TTL_FORMS}.")
        unit = (match.group(2) or "s")[0].lower()
        duration = dt.timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[unit])
    else:
        raise CtxCacheConfigError(f"{field}: a {type(value).__name__} is not a duration; use {TTL_FORMS}.")
    if duration.total_seconds() <= 0:
        raise CtxCacheConfigError(f"{field}: {value!r} must be longer than zero; use {TTL_FORMS}.")
    return duration


def api_duration(duration: dt.timedelta) -> str:
    """The API's duration string: whole seconds where possible, since '3600s' is what users read."""
    seconds = duration.total_seconds()
    return f"{int(seconds)}s" if seconds == int(seconds) else f"{seconds:.3f}s"


def parse_expire_time(
    value: Any, field: str = "expire_time", *, now: dt.datetime | None = None
) -> dt.datetime:
    """A timezone-aware instant in the future: a naive one would be sent without an offset."""
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise CtxCacheConfigError(
                f"{field}: {value!r} is not an ISO 8601 timestamp; use e.g. '2030-01-02T03:04:05+00:00'."
            ) from None
    elif isinstance(value, dt.datetime):
        parsed = value
    else:
        raise CtxCacheConfigError(
            f"{field}: a {type(value).__name__} is not a timestamp; pass a timezone-aware datetime "
            "or an ISO 8601 string with an offset."
        )
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise CtxCacheConfigError(
            f"{field}: {parsed.isoformat()} has no timezone; give it an offset, "
            "e.g. pendulum.now('UTC').add(hours=2) or '...+00:00'."
        )
    current = now or dt.datetime.now(dt.timezone.utc)
    if parsed <= current:
        raise CtxCacheConfigError(
            f"{field}: {parsed.isoformat()} is not in the future (now is {current.isoformat()}); "
            "pick a later time or use ttl."
        )
    return parsed


def one_expiry(ttl: Any, expire_time: Any) -> None:
    """The API takes a TTL or an expire time, never both."""
    if ttl is not None and expire_time is not None:
        raise CtxCacheConfigError("ttl, expire_time: set one of them, not both.")
