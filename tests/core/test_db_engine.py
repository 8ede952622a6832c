"""The database engine: a background WAL checkpointer on SQLite; only idle PostgreSQL connections pinged."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from society5.core.db import (
    WRITER_CHECKPOINT_PAGES,
    ThreadConnections,
    WalCheckpointer,
    make_engine,
    sqlite_file,
)
from society5.core.platform import Platform
from tests.conftest import PG_ADMIN_URL, make_settings

ROW = "x" * 3000  # about one 4 KB page of WAL per row


def _engine(tmp_path: Path) -> sa.Engine:
    engine = make_engine(make_settings(f"sqlite:///{tmp_path / 'w.db'}"))
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE w (n INTEGER PRIMARY KEY, body TEXT)"))
    return engine


def _write(engine: sa.Engine, start: int, rows: int, per_tx: int = 20) -> None:
    for first in range(start, start + rows, per_tx):
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO w VALUES (:n, :b)"),
                         [{"n": n, "b": ROW} for n in range(first, first + per_tx)])


def _wal_bytes(path: Path) -> int:
    wal = Path(f"{path}-wal")
    return wal.stat().st_size if wal.exists() else 0


def test_wal_frames_is_what_sqlite_reports(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    path = sqlite_file(engine)
    assert path == (tmp_path / "w.db").resolve()
    _write(engine, 0, 100)
    with engine.connect() as conn:  # a connection stays open, so the WAL and its index stay
        checkpointer = WalCheckpointer(path)
        frames = checkpointer.wal_frames()
        db = sqlite3.connect(path)
        _busy, log, _done = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        db.close()
        assert frames == log > 100
        assert checkpointer.wal_frames() == 0  # all copied: nothing is waiting
        _write(engine, 100, 20)
        assert 20 <= checkpointer.wal_frames() < 40  # the WAL started over
        conn.execute(sa.text("SELECT 1"))
    engine.dispose()
    assert WalCheckpointer(tmp_path / "none.db").wal_frames() == 0


def test_wal_stays_short_with_the_checkpointer_and_grows_without(tmp_path: Path) -> None:
    """Well under the writers' own checkpoint (WRITER_CHECKPOINT_PAGES), the WAL grows with every write;
    with the checkpointer it is started over again and again and stays near its threshold."""
    rows = 1_500
    assert rows < WRITER_CHECKPOINT_PAGES
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    without = _engine(tmp_path / "a")
    _write(without, 0, rows)
    grown = _wal_bytes(tmp_path / "a" / "w.db")
    assert grown > rows * 4096

    engine = _engine(tmp_path / "b")
    path = sqlite_file(engine)
    assert path is not None
    checkpointer = WalCheckpointer(path, threshold_frames=100, poll_s=0.005).start()
    try:
        for start in range(0, rows, 100):
            before = checkpointer.checkpoints
            _write(engine, start, 100)
            deadline = time.monotonic() + 5
            while checkpointer.checkpoints == before and time.monotonic() < deadline:
                time.sleep(0.005)  # a fast writer outruns any poller: give it the pauses a server has
        assert checkpointer.checkpoints >= 5
        assert _wal_bytes(path) < grown / 3
    finally:
        checkpointer.stop()
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*), min(n), max(n) FROM w")).one() == (rows, 0, rows - 1)
    assert not checkpointer._thread.is_alive()
    without.dispose()
    engine.dispose()


def test_idle_frames_are_checkpointed_after_a_while(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    path = sqlite_file(engine)
    assert path is not None
    checkpointer = WalCheckpointer(path, threshold_frames=10_000, idle_s=0.2, poll_s=0.01).start()
    try:
        _write(engine, 0, 40)
        deadline = time.monotonic() + 5
        while checkpointer.checkpoints == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert checkpointer.checkpoints >= 1
    finally:
        checkpointer.stop()
    engine.dispose()


def test_the_platform_runs_one_on_sqlite_files_only(platform: Platform, tmp_path: Path) -> None:
    if platform.engine.dialect.name == "sqlite":
        assert platform.checkpointer is not None and platform.checkpointer._thread.is_alive()
    else:
        assert platform.checkpointer is None
    own = Platform.open(make_settings(f"sqlite:///{tmp_path / 'own.db'}"))
    assert own.checkpointer is not None
    own.close()
    assert not own.checkpointer._thread.is_alive()


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_no_file_no_checkpointer(url: str) -> None:
    assert sqlite_file(sa.create_engine(url)) is None


def _backend_pid(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())


@pytest.mark.postgres
def test_postgres_connections_idle_in_the_pool_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    """A connection that sat idle is pinged at checkout and replaced if the server dropped it; one in steady
    use is not (no round trip per request), so a drop shows on its next statement."""
    from society5.core import db

    engine = make_engine(make_settings(PG_ADMIN_URL))
    monkeypatch.setattr(db, "PING_AFTER_IDLE_S", 0.0)
    first = _backend_pid(engine)
    _terminate_other(engine, first)
    after = _backend_pid(engine)  # the dead one is pinged, discarded, and a live one is used
    assert after != first

    monkeypatch.setattr(db, "PING_AFTER_IDLE_S", 3600.0)
    current = _backend_pid(engine)
    _terminate_other(engine, current)
    with pytest.raises(sa.exc.SQLAlchemyError):
        _backend_pid(engine)
    assert _backend_pid(engine) != current  # the pool was refreshed after the failure
    engine.dispose()


def _terminate_other(engine: sa.Engine, pid: int) -> None:
    """Terminate backend ``pid`` from a connection of its own (not from the pool under test)."""
    import psycopg

    url = engine.url.set(drivername="postgresql")
    with psycopg.connect(url.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
    deadline = time.monotonic() + 5
    with psycopg.connect(url.render_as_string(hide_password=False), autocommit=True) as conn:
        while conn.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone():
            if time.monotonic() > deadline:
                break
            time.sleep(0.01)


def test_writers_of_one_process_queue_on_the_gate_not_in_sqlites_busy_handler(tmp_path: Path) -> None:
    """With no busy timeout at all, a second writer still gets in: it waits on the process's write gate until
    the first one has committed, instead of meeting a locked database."""
    engine = _engine(tmp_path)
    sa.event.listen(engine, "connect", lambda dbapi_conn, _r: dbapi_conn.execute("PRAGMA busy_timeout=0"))
    engine.dispose()  # new connections, all without a busy timeout
    db = ThreadConnections(engine)
    first_in, outcome = threading.Event(), []

    def first() -> None:
        with db.begin() as conn:
            conn.execute(sa.text("INSERT INTO w VALUES (1, 'a')"))
            first_in.set()
            time.sleep(0.3)

    def second() -> None:
        first_in.wait(10)
        try:
            with db.begin() as conn:
                conn.execute(sa.text("INSERT INTO w VALUES (2, 'b')"))
            outcome.append("written")
        except (sa.exc.OperationalError, sqlite3.OperationalError) as err:
            outcome.append(str(err))

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert outcome == ["written"]
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT n FROM w ORDER BY n")).scalars().all() == [1, 2]
    # the gate is what made the difference: a writer that bypasses it meets the lock
    with db.begin() as conn:
        conn.execute(sa.text("INSERT INTO w VALUES (3, 'c')"))
        with engine.connect() as other, pytest.raises(sa.exc.OperationalError, match="locked"):
            other.exec_driver_sql("BEGIN IMMEDIATE")
    engine.dispose()


_WRITER = """
import sqlite3, sys, time
from pathlib import Path
from society5.core.db import WalCheckpointer
path = Path(sys.argv[1])
db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
db.execute("PRAGMA journal_mode=WAL")
db.execute("CREATE TABLE IF NOT EXISTS w (n INTEGER, pad TEXT)")
checkpointer = WalCheckpointer(path, threshold_frames=50, poll_s=0.002).start()
print("ready", flush=True)
end = time.monotonic() + float(sys.argv[2])
n = 0
while time.monotonic() < end:
    db.execute("INSERT INTO w VALUES (?, ?)", (n, "x" * 2000))
    n += 1
checkpointer.stop()
print(db.execute("SELECT count(*) FROM w").fetchone()[0], flush=True)
"""


def test_other_processes_opening_the_database_never_crash_the_writer(tmp_path: Path) -> None:
    """The checkpointer reads the WAL index while SQLite in the same process holds POSIX locks on it, and
    closing any descriptor of a file drops all of a process's locks on it: another process opening the
    database then took itself for the first, truncated the WAL index, and the writer died of SIGBUS on its
    next access to the mapping (seen: the server, while a script counted rows in its database)."""
    path = tmp_path / "shared.db"
    root = Path(__file__).parents[2]
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path), "3"], cwd=root,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    opened = 0
    while proc.poll() is None:
        other = sqlite3.connect(path, timeout=10)
        other.execute("SELECT count(*) FROM w").fetchone()
        other.close()
        opened += 1
    out = proc.stdout.read()
    assert proc.returncode == 0, f"the writer died ({proc.returncode}) after {opened} opens elsewhere"
    assert int(out.split()[-1]) > 0 and opened > 10
