"""Quiet hours: a daily local-time window in which non-urgent messages wait (pure functions)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


def parse_hhmm(text: str) -> time:
    """``"22:00"`` → ``time(22, 0)``; ``ValueError`` for anything else."""
    match = _HHMM.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"{text!r} is not a time of day like 22:00 (HH:MM, 24-hour)")
    return time(int(match[1]), int(match[2]))


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as err:
        raise ValueError(f"{name!r} is not an IANA time zone such as Asia/Tokyo") from err


def quiet_wait(now: datetime, start: time, end: time, tz: ZoneInfo) -> float:
    """Seconds from ``now`` until the quiet window ends, or 0 when ``now`` is outside it.

    The window may cross midnight (22:00–07:00); it includes its start and excludes its end.
    """
    local = now.astimezone(tz)
    t = local.time().replace(tzinfo=None)
    inside = start <= t < end if start < end else (t >= start or t < end)
    if not inside:
        return 0.0
    end_local = datetime.combine(local.date(), end, tzinfo=tz)
    if end_local <= local:
        end_local = datetime.combine(local.date() + timedelta(days=1), end, tzinfo=tz)
    # Subtract in UTC: aware datetimes sharing a tzinfo subtract as wall clocks, which is wrong across DST.
    return (end_local.astimezone(UTC) - now.astimezone(UTC)).total_seconds()
