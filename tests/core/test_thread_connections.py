"""Kept SQLite connections: only on the event-loop thread, never left in a transaction, writers serialised."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import sqlalchemy as sa

from society5.core.db import ThreadConnections, after_commit
from society5.core.platform import Platform


@pytest.fixture
def db(platform: Platform) -> ThreadConnections:
    with platform.engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE IF NOT EXISTS t_conn (n INTEGER)"))
        conn.execute(sa.text("DELETE FROM t_conn"))
    return ThreadConnections(platform.engine)


def _count(platform: Platform) -> int:
    with platform.engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM t_conn")).scalar() or 0)


def test_kept_only_on_the_event_loop_thread_of_sqlite(platform: Platform, db: ThreadConnections) -> None:
    async def twice() -> bool:
        with db.begin() as first:
            first.execute(sa.text("INSERT INTO t_conn VALUES (1)"))
            with db.connect() as reader:  # a read from inside the transaction gets another connection
                assert reader is not first
        with db.begin() as again:
            return again is first

    assert asyncio.run(twice()) == (platform.engine.dialect.name == "sqlite")
    with db.begin() as a:  # a thread without an event loop (the web thread pool, workers) uses the pool
        pass
    with db.begin() as b:
        pass
    assert a is not b
    assert _count(platform) == 1


def test_a_failed_transaction_rolls_back(platform: Platform, db: ThreadConnections) -> None:
    with pytest.raises(RuntimeError), db.begin() as conn:
        conn.execute(sa.text("INSERT INTO t_conn VALUES (1)"))
        raise RuntimeError("validation failed")
    assert _count(platform) == 0


def test_a_failed_commit_leaves_no_open_transaction(platform: Platform, db: ThreadConnections) -> None:
    def refuse(conn: object) -> None:
        raise OSError("disk full")

    async def run() -> None:
        sa.event.listen(platform.engine, "commit", refuse)
        try:
            with pytest.raises(OSError), db.begin() as conn:
                conn.execute(sa.text("INSERT INTO t_conn VALUES (1)"))
        finally:
            sa.event.remove(platform.engine, "commit", refuse)
        with db.begin() as conn:  # the next write on this thread must not commit the failed one
            conn.execute(sa.text("INSERT INTO t_conn VALUES (2)"))

    asyncio.run(run())
    with platform.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT n FROM t_conn")).scalars().all() == [2]


def test_writers_take_the_lock_before_they_read(sqlite_platform: Platform) -> None:
    """BEGIN IMMEDIATE: a second writer waits for the first, so a read-modify-write is never lost."""
    db = ThreadConnections(sqlite_platform.engine)
    with db.begin() as conn:
        conn.execute(sa.text("CREATE TABLE counter (n INTEGER)"))
        conn.execute(sa.text("INSERT INTO counter VALUES (0)"))

    def increment(pause: float) -> None:
        with db.begin() as conn:
            n = conn.execute(sa.text("SELECT n FROM counter")).scalar_one()
            time.sleep(pause)  # the other writer tries to read meanwhile
            conn.execute(sa.text("UPDATE counter SET n = :n"), {"n": n + 1})

    threads = [threading.Thread(target=increment, args=(0.2,)) for _ in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    with sqlite_platform.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT n FROM counter")).scalar_one() == 3


def test_shared_transaction_is_joined_and_commits_once(platform: Platform, db: ThreadConnections) -> None:
    commits: list[int] = []
    sa.event.listen(platform.engine, "commit", lambda conn: commits.append(1))
    with db.shared() as shared:
        for n in range(5):
            with db.begin() as conn:
                assert conn is shared
                conn.execute(sa.text("INSERT INTO t_conn VALUES (:n)"), {"n": n})
        other: list[int] = []
        # another thread neither joins nor sees the uncommitted rows
        th = threading.Thread(target=lambda: other.append(_count(platform)))
        th.start()
        th.join()
        assert other == [0]
    assert len(commits) == 1
    assert _count(platform) == 5


def test_after_commit_runs_only_once_committed(platform: Platform, db: ThreadConnections) -> None:
    ran: list[str] = []
    with db.begin() as conn:
        conn.execute(sa.text("INSERT INTO t_conn VALUES (1)"))
        after_commit(conn, lambda: ran.append("committed"))
        assert ran == []  # not before the COMMIT
    assert ran == ["committed"]
    with pytest.raises(RuntimeError), db.begin() as conn:
        after_commit(conn, lambda: ran.append("rolled back"))
        raise RuntimeError("validation failed")
    with platform.engine.begin() as conn:  # a transaction not ended through begin(): its callbacks never run
        after_commit(conn, lambda: ran.append("engine.begin"))
    with db.begin() as conn:
        after_commit(conn, lambda: ran.append("next"))
    assert ran == ["committed", "next"]
