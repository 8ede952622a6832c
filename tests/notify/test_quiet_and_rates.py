"""Quiet hours windows (across midnight, time zones) and the per-channel token bucket."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from society5.notify.quiet import parse_hhmm, quiet_wait, zone
from society5.notify.ratelimit import TokenBucket

TOKYO = zone("Asia/Tokyo")


def jst(hour: int, minute: int = 0) -> datetime:
    return datetime(2025, 1, 15, hour, minute, tzinfo=TOKYO).astimezone(UTC)


@pytest.mark.parametrize("now,start,end,expected_h", [
    (jst(23, 30), "22:00", "07:00", 7.5),   # inside, before midnight
    (jst(2, 0), "22:00", "07:00", 5.0),     # inside, after midnight
    (jst(22, 0), "22:00", "07:00", 9.0),    # the start is inside
    (jst(7, 0), "22:00", "07:00", 0.0),     # the end is outside
    (jst(12, 0), "22:00", "07:00", 0.0),
    (jst(12, 30), "12:00", "13:00", 0.5),   # a window within one day
    (jst(13, 0), "12:00", "13:00", 0.0),
])
def test_quiet_wait(now: datetime, start: str, end: str, expected_h: float) -> None:
    assert quiet_wait(now, parse_hhmm(start), parse_hhmm(end), TOKYO) == pytest.approx(expected_h * 3600)


def test_quiet_hours_are_local_to_the_recipients_zone() -> None:
    # 23:30 in Tokyo is 14:30 UTC: quiet for a Tokyo recipient, not for one whose hours are in UTC.
    assert quiet_wait(jst(23, 30), parse_hhmm("22:00"), parse_hhmm("07:00"), zone("UTC")) == 0.0


@pytest.mark.parametrize("text", ["24:00", "7:00", "07:60", "", "noon"])
def test_bad_times_of_day(text: str) -> None:
    with pytest.raises(ValueError, match="HH:MM"):
        parse_hhmm(text)


def test_unknown_zone() -> None:
    with pytest.raises(ValueError, match="IANA"):
        zone("Hokkaido/Sapporo")


def test_token_bucket_grants_a_burst_then_reserves_slots() -> None:
    now = [100.0]
    bucket = TokenBucket(rate=2.0, capacity=2.0, clock=lambda: now[0])
    assert bucket.take("a") == 0.0 and bucket.take("b") == 0.0
    assert bucket.take("c") == pytest.approx(0.5)  # the next free slot, held for c
    assert bucket.take("d") == pytest.approx(1.0)  # a backlog is spread out, not polled
    now[0] += 0.5
    assert bucket.take("c") == 0.0  # back at its slot: passes without taking another
    assert bucket.take("d") == pytest.approx(0.5)  # early: still waits for its own slot
    assert bucket.take("e") == pytest.approx(1.0)
    now[0] += 10
    assert bucket.take("f") == 0.0 and bucket.take("g") == 0.0  # the burst is back after a pause
    assert TokenBucket(rate=0).take("x") == 0.0  # 0 means unlimited


@pytest.mark.parametrize("rate", [3.0, 10.0, 7.0, 0.3])
def test_a_burst_of_exactly_the_capacity_passes_at_one_instant(rate: float) -> None:
    bucket = TokenBucket(rate=rate, capacity=10.0, clock=lambda: 500.0)
    # 1/rate added up ten times is not exactly 10/rate in floating point: the tenth must still pass.
    assert [bucket.take(str(i)) == 0.0 for i in range(11)] == [True] * 10 + [False]
