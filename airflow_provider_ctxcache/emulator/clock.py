"""The emulator clock and RFC 3339 / Duration parsing and formatting.

Time is kept as integer nanoseconds since the epoch so Vertex-style nanosecond timestamps
round-trip exactly. The clock is real time plus an offset that only moves forward
(``POST /_emulator/clock``), which is how tests make caches expire without sleeping.
"""

from __future__ import annotations

import calendar
import re
import time
from datetime import datetime

NANOS = 1_000_000_000
# protobuf Duration's maximum (about 10,000 years).
MAX_DURATION_SECONDS = 315_576_000_000

_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"(?:(?P<z>[Zz])|(?P<sign>[+-])(?P<oh>\d{2}):(?P<om>\d{2}))?$"
)
_DURATION = re.compile(r"^(-?)(\d+)(?:\.(\d{1,9}))?s$")


class Clock:
    """Real time plus a forward-only offset."""

    def __init__(self) -> None:
        self.offset_ns = 0

    def now_ns(self) -> int:
        """The emulator's current time."""
        return time.time_ns() + self.offset_ns

    def advance(self, seconds: float) -> None:
        """Move the clock forward (never backward: expired caches stay expired)."""
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        self.offset_ns += int(seconds * NANOS)

    def reset(self) -> None:
        """Back to real time."""
        self.offset_ns = 0


def format_timestamp(ns: int, *, nanos: bool = False) -> str:
    """RFC 3339 UTC with ``Z``: microseconds (Developer API) or nanoseconds (Vertex)."""
    seconds, frac = divmod(ns, NANOS)
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{base}.{frac:09d}Z" if nanos else f"{base}.{frac // 1000:06d}Z"


class TimestampError(ValueError):
    """A timestamp that is not RFC 3339; ``naive`` when only the offset is missing."""

    def __init__(self, message: str, *, naive: bool = False) -> None:
        super().__init__(message)
        self.naive = naive


def parse_timestamp(value: str) -> int:
    """Nanoseconds since the epoch of an RFC 3339 timestamp, which must carry an offset."""
    match = _RFC3339.match(value)
    if not match:
        raise TimestampError("not an RFC 3339 timestamp")
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    try:
        datetime(year, month, day, hour, minute, second)
    except ValueError as exc:
        raise TimestampError(str(exc)) from exc
    if not match.group("z") and not match.group("sign"):
        raise TimestampError("the timestamp has no UTC offset", naive=True)
    frac = int((match.group(7) or "0").ljust(9, "0"))
    seconds = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
    if match.group("sign"):
        offset = int(match.group("oh")) * 3600 + int(match.group("om")) * 60
        seconds -= offset if match.group("sign") == "+" else -offset
    return seconds * NANOS + frac


def parse_duration(value: str) -> int:
    """Nanoseconds of a protobuf Duration in JSON form (``"3600s"``, ``"1.5s"``, ``"-2s"``)."""
    match = _DURATION.match(value)
    if not match:
        raise ValueError("not a Duration")
    sign, whole, frac = match.groups()
    if int(whole) > MAX_DURATION_SECONDS:
        raise ValueError("Duration out of range")
    ns = int(whole) * NANOS + int((frac or "0").ljust(9, "0"))
    return -ns if sign else ns
