"""When did the server do it? The worker's clock, unless the server's ``Date`` says they differ.

A cache's storage is billed from its ``createTime`` to its deletion, both on the server's clock.
The delete's answer carries no time but its HTTP ``Date`` header (whole seconds). When the
worker's clock agrees with it, the worker's clock is the precise one; when it does not (a skewed
worker, or an emulator whose clock was moved on), the server's ``Date`` is the one to trust.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any

AGREE_SECONDS = 1.5  # Date is truncated to the second; the round trip adds a little more


def server_date(headers: Mapping[str, Any] | None) -> dt.datetime | None:
    """The ``Date`` header as an aware UTC time, or None when it is missing or unreadable."""
    if not headers:
        return None
    value = next((v for k, v in headers.items() if str(k).lower() == "date"), None)
    if not isinstance(value, str):
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    return parsed.astimezone(dt.timezone.utc)


def server_now(headers: Mapping[str, Any] | None, local: dt.datetime) -> dt.datetime:
    """The server's time when it answered: ``local`` (received) unless ``Date`` disagrees with it."""
    date = server_date(headers)
    if date is None:
        return local
    # Date D means the server's clock read [D, D + 1 s) when it answered.
    if abs((local - date).total_seconds() - 0.5) <= AGREE_SECONDS:
        return local
    return date + dt.timedelta(seconds=0.5)
