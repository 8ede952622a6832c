"""The persistent outbox: transactional enqueue, retries with backoff, leases, and claims across processes."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
import sqlalchemy as sa

from society5.core.outbox import DEAD, DONE, PENDING, Defer, GiveUp, Message, Outbox, RetryPolicy
from society5.core.platform import Platform
from society5.core.tables import outbox as outbox_table


def _status(platform: Platform) -> list[tuple[str, int]]:
    with platform.engine.connect() as conn:
        t = outbox_table
        rows = conn.execute(sa.select(t.c.status, t.c.attempts).order_by(t.c.id))
        return [(r.status, r.attempts) for r in rows]


def _fast(platform: Platform, **kw: object) -> Outbox:
    return Outbox(platform.engine, policy=RetryPolicy(base_s=0.0, max_s=0.0, max_attempts=3), **kw)  # type: ignore[arg-type]


def test_only_committed_messages_are_delivered(platform: Platform) -> None:
    box = _fast(platform)
    seen: list[object] = []
    box.register("t", lambda m: seen.append(m.payload))
    with platform.engine.begin() as conn:
        box.enqueue(conn, "t", {"n": 1}, tenant="011002", key="sub-1")
    with pytest.raises(RuntimeError), platform.engine.begin() as conn:
        box.enqueue(conn, "t", {"n": 2})
        raise RuntimeError("the change failed")
    assert box.deliver_due() == 1
    assert seen == [{"n": 1}]
    assert _status(platform) == [(DONE, 0)]
    assert box.deliver_due() == 0


def test_failures_are_retried_then_dead(platform: Platform) -> None:
    box = _fast(platform)
    calls = Counter[str]()

    def flaky(m: Message) -> None:
        calls[m.payload["name"]] += 1
        if m.payload["name"] == "never" or calls[m.payload["name"]] < 2:
            raise ConnectionError("receiver down")

    box.register("t", flaky)
    with platform.engine.begin() as conn:
        box.enqueue(conn, "t", {"name": "once"})
        box.enqueue(conn, "t", {"name": "never"})
    for _ in range(5):
        box.deliver_due()
    assert calls == {"once": 2, "never": 3}
    assert _status(platform) == [(DONE, 1), (DEAD, 3)]
    with platform.engine.connect() as conn:
        err = conn.execute(sa.select(outbox_table.c.last_error).where(outbox_table.c.status == DEAD)).scalar()
    assert "ConnectionError: receiver down" in err
    assert box.counts() == {"t": {DONE: 1, DEAD: 1}}
    assert box.requeue_dead("t") == 1
    assert _status(platform)[1] == (PENDING, 0)


def test_backoff_schedules_the_next_try_later(platform: Platform) -> None:
    box = Outbox(platform.engine, policy=RetryPolicy(base_s=30.0, max_s=60.0, max_attempts=5))

    def down(m: Message) -> None:
        raise OSError("refused")

    box.register("t", down)
    with platform.engine.begin() as conn:
        box.enqueue(conn, "t", {})
    assert box.deliver_due() == 1
    assert box.deliver_due() == 0  # not due again for ~30 s
    with platform.engine.connect() as conn:
        next_at = conn.execute(sa.select(outbox_table.c.next_at)).scalar()
    assert 20 < next_at - time.time() < 40


def test_defer_does_not_count_and_give_up_is_final(platform: Platform) -> None:
    box = _fast(platform)

    def handler(m: Message) -> None:
        if m.payload == "later":
            raise Defer(3600, "quiet hours")
        raise GiveUp("410 Gone")

    box.register("t", handler)
    with platform.engine.begin() as conn:
        box.enqueue(conn, "t", "later")
        box.enqueue(conn, "t", "gone")
    box.deliver_due()
    assert _status(platform) == [(PENDING, 0), (DEAD, 1)]


def test_an_expired_lease_is_claimed_again(platform: Platform) -> None:
    crashed = Outbox(platform.engine, lease_s=600)
    crashed.register("t", lambda m: None)
    with platform.engine.begin() as conn:
        crashed.enqueue(conn, "t", {"n": 1})
    assert [m.payload for m in crashed.claim(10)] == [{"n": 1}]  # then the process "dies"
    survivor = Outbox(platform.engine)
    got: list[object] = []
    survivor.register("t", lambda m: got.append(m.payload))
    assert survivor.deliver_due() == 0  # still leased
    with platform.engine.begin() as conn:  # the ten minutes pass
        conn.execute(sa.update(outbox_table).values(claimed_until=time.time() - 1))
    assert survivor.deliver_due() == 1
    assert got == [{"n": 1}]


def test_concurrent_dispatchers_never_share_a_message(platform: Platform) -> None:
    """Several processes on one database: every message delivered exactly once."""
    total = 300
    with platform.engine.begin() as conn:
        Outbox(platform.engine).enqueue_many(conn, [("t", {"n": i}, "", "", 0.0) for i in range(total)])
    delivered: list[int] = []
    lock = threading.Lock()

    def record(m: Message) -> None:
        with lock:
            delivered.append(m.payload["n"])

    boxes = [Outbox(platform.engine) for _ in range(4)]
    for box in boxes:
        box.register("t", record)

    def drain(box: Outbox) -> None:
        while box.deliver_due(limit=7):
            pass

    threads = [threading.Thread(target=drain, args=(box,)) for box in boxes]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert sorted(delivered) == list(range(total))


def test_the_dispatcher_wakes_on_commit(platform: Platform) -> None:
    box = Outbox(platform.engine, poll_s=30.0)  # a poll would be far too slow to pass this test
    arrived = threading.Event()
    box.register("t", lambda m: arrived.set())
    box.start()
    try:
        time.sleep(0.1)
        with platform.engine.begin() as conn:
            box.enqueue(conn, "t", {})
        assert arrived.wait(5)
    finally:
        box.stop()
    assert _status(platform) == [(DONE, 0)]


def test_unknown_kind_waits_for_its_handler(platform: Platform) -> None:
    box = _fast(platform)
    box.register("other", lambda m: None)
    with platform.engine.begin() as conn:
        box.enqueue(conn, "not-yet", {})
    assert box.deliver_due() == 0  # not claimed, so not pushed back either
    with platform.engine.connect() as conn:
        row = conn.execute(sa.select(outbox_table.c.next_at, outbox_table.c.claimed_by)).one()
    assert row.claimed_by is None and row.next_at <= time.time()
    got: list[object] = []
    box.register("not-yet", lambda m: got.append(m.payload))
    assert box.deliver_due() == 1 and got == [{}]


def test_a_slow_queue_is_never_delivered_twice_by_its_own_process(platform: Platform) -> None:
    """Messages wait for the one worker longer than their lease: renewed, never claimed again."""
    box = Outbox(platform.engine, workers=1, lease_s=0.6, poll_s=0.05)
    seen: list[int] = []
    box.register("t", lambda m: (seen.append(m.payload["n"]), time.sleep(0.3)))
    with platform.engine.begin() as conn:
        box.enqueue_many(conn, [("t", {"n": i}, "", "", 0.0) for i in range(5)])
    box.start()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and _status(platform) != [(DONE, 0)] * 5:
            time.sleep(0.05)
    finally:
        box.stop()
    assert sorted(seen) == [0, 1, 2, 3, 4]
    assert _status(platform) == [(DONE, 0)] * 5


def test_stop_gives_back_the_messages_not_started(platform: Platform) -> None:
    box = Outbox(platform.engine, workers=1, poll_s=0.05)
    started = threading.Event()
    box.register("t", lambda m: (started.set(), time.sleep(0.3)))
    with platform.engine.begin() as conn:
        box.enqueue_many(conn, [("t", {"n": i}, "", "", 0.0) for i in range(4)])
    box.start()
    assert started.wait(5)
    box.stop()
    with platform.engine.connect() as conn:
        rows = conn.execute(sa.select(outbox_table.c.status, outbox_table.c.claimed_by)).all()
    assert sorted(r.status for r in rows).count(DONE) >= 1
    assert all(r.claimed_by is None for r in rows)  # another process may take the rest at once
    other = _fast(platform)
    other.register("t", lambda m: None)
    assert other.deliver_due() == sum(1 for r in rows if r.status == PENDING)


def test_register_twice_is_refused(platform: Platform) -> None:
    box = _fast(platform)
    box.register("t", lambda m: None)
    with pytest.raises(ValueError, match="already registered"):
        box.register("t", lambda m: None)
