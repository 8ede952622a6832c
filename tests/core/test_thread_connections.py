"""Per-thread connection reuse on SQLite: no leaked transactions, nested use isolated, shared transactions."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from society5.core.db import ThreadConnections
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


def test_reuse_only_on_sqlite_never_in_a_transaction(platform: Platform, db: ThreadConnections) -> None:
    with db.begin() as first:
        first.execute(sa.text("INSERT INTO t_conn VALUES (1)"))
        with db.begin() as nested:  # a listener writing while the outer transaction is open
            assert nested is not first
    with db.begin() as again:
        reused = again is first
        assert again.in_transaction()
    assert reused == (platform.engine.dialect.name == "sqlite")
    with db.connect() as conn:
        conn.execute(sa.text("SELECT 1"))
    assert _count(platform) == 1
    if db.enabled:
        assert not first.in_transaction()  # nothing left open between uses (WAL checkpoints go on)


def test_a_failed_transaction_rolls_back(platform: Platform, db: ThreadConnections) -> None:
    with pytest.raises(RuntimeError), db.begin() as conn:
        conn.execute(sa.text("INSERT INTO t_conn VALUES (1)"))
        raise RuntimeError("validation failed")
    assert _count(platform) == 0


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
