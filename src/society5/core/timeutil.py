"""Time: stored as UTC ISO 8601 with Z, shown in Asia/Tokyo."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

JST = ZoneInfo("Asia/Tokyo")


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(dt: datetime) -> str:
    """UTC ISO 8601 with microseconds and Z (fixed width, so strings sort like times)."""
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_second: tuple[int, str] = (0, "")


def now_iso() -> str:
    """The current UTC time, ISO 8601 with microseconds and Z (fixed width)."""
    # Called on every write: formatting the date part once per second makes it a few times cheaper.
    global _second
    t = time.time()
    whole = int(t)
    cached = _second
    if cached[0] != whole:
        cached = _second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
    return f"{cached[1]}.{min(999_999, int((t - whole) * 1_000_000)):06d}Z"


def parse_iso(text: str) -> datetime:
    """Parse an ISO 8601 date-time; naive values are taken as UTC. Raises ValueError."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


def to_jst(text: str) -> str:
    return parse_iso(text).astimezone(JST).strftime("%Y-%m-%d %H:%M")
