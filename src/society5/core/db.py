"""Database: one SQLAlchemy engine per app, SQLite (WAL) embedded or PostgreSQL, migrated by Alembic."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Connection, Engine

from society5.core.settings import Settings

log = logging.getLogger(__name__)

metadata = sa.MetaData()

# A JSON column that is JSONB on PostgreSQL (indexable, jsonpath) and TEXT JSON on SQLite.
JsonDoc = sa.JSON().with_variant(JSONB(), "postgresql")

MIGRATIONS = Path(__file__).with_name("migrations")


WRITER_CHECKPOINT_PAGES = 10_000


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # WAL + NORMAL: a committed transaction survives a crash of the process (kill -9); only power loss
    # can drop the last commits, which is the trade every embedded SQLite service makes.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA cache_size=-65536")
    # A writer checkpoints only past ~40 MB of WAL: each checkpoint syncs the database file, and with the
    # default (~4 MB) a stream of small writes spent about a tenth of its time there. Where a
    # WalCheckpointer runs (the platform starts one), the WAL is checkpointed in the background long before.
    cur.execute(f"PRAGMA wal_autocheckpoint={WRITER_CHECKPOINT_PAGES}")
    cur.close()


def make_engine(settings: Settings) -> Engine:
    url = sa.engine.make_url(settings.database_url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 10},
            pool_size=8,
            max_overflow=8,
            json_serializer=_dumps,
            json_deserializer=orjson.loads,
        )
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    engine = sa.create_engine(
        url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_pool_size,
        json_serializer=_dumps,
        json_deserializer=orjson.loads,
    )
    _ping_after_idle(engine)
    return engine


# A pooled PostgreSQL connection that has been idle this long is checked with a round trip before use.
PING_AFTER_IDLE_S = 5.0


def _ping_after_idle(engine: Engine) -> None:
    """Pessimistic disconnect handling without a round trip on every checkout.

    SQLAlchemy's ``pool_pre_ping`` pings each connection at each checkout: for a lookup by id that doubled
    the round trips, and was half the time of a GET. Connections that are in steady use are known to be
    alive; the ones that sat idle in the pool (when a restart of PostgreSQL or a dropped connection would
    have gone unnoticed) are pinged, and a dead one is replaced before the caller gets it."""

    @sa.event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_conn: Any, record: Any) -> None:
        record.info["s5_idle_since"] = time.monotonic()

    @sa.event.listens_for(engine, "checkout")
    def _checked_out(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("s5_idle_since")
        if since is None or time.monotonic() - since < PING_AFTER_IDLE_S:
            return
        try:
            with dbapi_conn.cursor() as cur:
                cur.execute("SELECT 1")
            if not dbapi_conn.autocommit:
                dbapi_conn.rollback()
        except Exception as err:  # the pool discards this connection and checks out another
            raise sa.exc.DisconnectionError(f"a pooled connection was dead: {err}") from err


def sqlite_file(engine: Engine) -> Path | None:
    """The database file of a file-backed SQLite engine; None for PostgreSQL and in-memory databases."""
    if engine.dialect.name != "sqlite":
        return None
    name = engine.url.database
    if not name or name == ":memory:" or name.startswith("file:"):
        return None
    return Path(name).expanduser().resolve()


class WalCheckpointer:
    """Checkpoints the SQLite WAL from a thread of its own, so that no request pays for it.

    With only the writers' automatic checkpoint, every ~40 MB of WAL one unlucky write copied the WAL into
    the database file and synced it inside its request (a 1,000-entity batch took 120 ms instead of 50).
    Here a daemon thread reads how many frames the WAL holds a few times a second and, past
    ``threshold_frames`` new ones (or when frames have waited ``idle_s``), runs a PASSIVE checkpoint on its
    own connection: it never waits for or blocks a writer, and the sqlite3 module releases the GIL while
    SQLite copies pages, so on a machine with a second core the requests hardly notice. Once a checkpoint
    has caught up, the next writer starts the WAL over from its beginning. The writers' automatic checkpoint
    stays as the backstop (a checkpointer that cannot keep up, or none at all)."""

    def __init__(self, path: Path, threshold_frames: int = 2_000, idle_s: float = 30.0, poll_s: float = 0.1):
        self.path = path
        self.shm = Path(f"{path}-shm")
        self.threshold_frames = threshold_frames
        self.idle_s = idle_s
        self.poll_s = poll_s
        self.checkpoints = 0
        self._fd: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqlite-wal-checkpointer", daemon=True)

    def start(self) -> WalCheckpointer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def wal_frames(self) -> int:
        """Frames in the WAL that no checkpoint has copied yet: ``mxFrame - nBackfill`` of the wal-index
        (native-order u32s at bytes 16 and 96 of the ``-shm`` file, per SQLite's documented WAL format); 0
        when there is no WAL. A torn read can only make one poll early or late."""
        fd = self._shm_fd()
        if fd is None:
            return 0
        head = os.pread(fd, 100, 0)
        if len(head) < 100:
            return 0
        frames = int.from_bytes(head[16:20], sys.byteorder)
        backfilled = int.from_bytes(head[96:100], sys.byteorder)
        return max(frames - backfilled, 0)

    def _shm_fd(self) -> int | None:
        """A descriptor of the current ``-shm`` file, opened once and kept.

        Never closed while SQLite connections of this process may use that file: closing any descriptor of a
        file drops every POSIX lock the process holds on it, SQLite's included. Opened and closed at every
        poll, it did exactly that; another process opening the database (a CLI command, a script counting
        rows) then took itself for the first, truncated the wal-index, and this process died of SIGBUS on its
        next access to the mapping. A descriptor of a file that has since been replaced is closed (the locks
        on the live one are not touched)."""
        try:
            current = os.stat(self.shm)
        except FileNotFoundError:
            return None
        if self._fd is not None:
            kept = os.fstat(self._fd)
            if (kept.st_dev, kept.st_ino) == (current.st_dev, current.st_ino):
                return self._fd
            os.close(self._fd)
            self._fd = None
        try:
            self._fd = os.open(self.shm, os.O_RDONLY)
        except FileNotFoundError:
            return None
        return self._fd

    def release(self) -> None:
        """Close the kept ``-shm`` descriptor: only once this process's connections to the database are
        closed (see :meth:`_shm_fd`)."""
        self.stop()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        last_at = time.monotonic()
        while not self._stop.wait(self.poll_s):
            waiting = self.wal_frames()
            if not waiting or (waiting < self.threshold_frames and time.monotonic() - last_at < self.idle_s):
                continue
            try:
                if conn is None:
                    conn = sqlite3.connect(self.path, timeout=10, isolation_level=None,
                                           check_same_thread=False)
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                self.checkpoints += 1
            except sqlite3.Error:
                log.warning("a background WAL checkpoint of %s failed", self.path, exc_info=True)
            last_at = time.monotonic()
        if conn is not None:
            conn.close()


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def alembic_config() -> Any:
    """Alembic's configuration for the platform's migrations (an ``alembic.config.Config``)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def upgrade(engine: Engine, revision: str = "heads") -> None:
    """Bring the schema to ``revision`` (idempotent; safe to call at every start).

    The default is every head: the platform's parts (broker, notify, services) add migrations that branch from
    a shared base without depending on each other, and Alembic applies each branch in order."""
    from alembic import command

    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def current_revision(engine: Engine) -> str | None:
    """The applied head revisions, comma-separated (one per branch of the migration tree)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        heads = MigrationContext.configure(conn).get_current_heads()
    return ", ".join(sorted(heads)) or None


def script_heads() -> list[str]:
    """The head revisions the code ships (what ``upgrade()`` brings a database to)."""
    from alembic.script import ScriptDirectory

    return sorted(ScriptDirectory.from_config(alembic_config()).get_heads())


_AFTER_COMMIT = "s5.after_commit"


def after_commit(conn: Connection, callback: Callable[[], object]) -> None:
    """Run ``callback`` once the transaction ``conn`` is in has durably committed through
    ``ThreadConnections.begin()``; never if it fails or rolls back, or if it ends some other way. For caches
    of rows the transaction creates: SQLAlchemy's commit event fires before the COMMIT, which may fail."""
    conn.info.setdefault(_AFTER_COMMIT, []).append(callback)


def _drop_after_commit(conn: Connection) -> None:
    conn.info.pop(_AFTER_COMMIT, None)


def _run_after_commit(conn: Connection) -> None:
    for callback in conn.info.pop(_AFTER_COMMIT, ()):
        try:
            callback()
        except Exception:  # the data is committed; a failing cache update must not turn it into an error
            log.exception("an after-commit callback failed")


class WriteGate:
    """The lock the writers of one SQLite database take in this process (see :func:`write_gate`), and when
    the last write transaction ended: background maintenance (the staged history move) waits for a quiet
    moment instead of stalling a burst of writes. Reentrant: a thread inside a transaction may open another
    one, as it could before."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.released_at = time.monotonic()

    def __enter__(self) -> WriteGate:
        self._lock.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.released_at = time.monotonic()
        self._lock.release()

    def acquire(self, blocking: bool = True) -> bool:
        return self._lock.acquire(blocking)

    def release(self) -> None:
        self.released_at = time.monotonic()
        self._lock.release()

    def held_elsewhere(self) -> bool:
        """Whether another thread is inside a write transaction right now."""
        if self._lock.acquire(blocking=False):  # free, or already held by this thread (reentrant)
            self._lock.release()
            return False
        return True

    def quiet_for(self) -> float:
        """Seconds since the last write transaction of this process ended (0 while one runs elsewhere)."""
        if self.held_elsewhere():
            return 0.0
        return max(time.monotonic() - self.released_at, 0.0)


_WRITE_GATES: weakref.WeakKeyDictionary[Engine, WriteGate] = weakref.WeakKeyDictionary()
_WRITE_GATES_LOCK = threading.Lock()


def write_gate(engine: Engine) -> AbstractContextManager[Any]:
    """The lock the writers of this process take around a SQLite write transaction (a no-op on PostgreSQL).

    SQLite lets one connection write at a time, and a writer that finds the database locked sleeps in SQLite's
    busy handler in growing steps (up to 100 ms) and checks again: after a long write (the staged history
    move of a few hundred milliseconds) the next writer woke up to 100 ms late, and a writer that kept writing
    in quick succession could keep the others out. Writers of the same process queue on this lock instead and
    each starts the moment the one before ends. (Other processes still meet in SQLite's busy handler.)"""
    gate = sqlite_gate(engine)
    return gate if gate is not None else nullcontext()


def sqlite_gate(engine: Engine) -> WriteGate | None:
    """The engine's :class:`WriteGate`; None on PostgreSQL."""
    if engine.dialect.name != "sqlite":
        return None
    with _WRITE_GATES_LOCK:
        gate = _WRITE_GATES.get(engine)
        if gate is None:
            gate = _WRITE_GATES[engine] = WriteGate()
        return gate


class ThreadConnections:
    """``begin()``/``connect()`` like an Engine's, reusing one connection per event-loop thread on SQLite.

    On SQLite a pool checkout and check-in (with its reset) cost more than a single-row read or update; a
    connection kept by the thread that runs the event loop (where the async routes call the broker inline)
    avoids both. Other threads (the web thread pool, workers, jobs) use the pool, so the kept connections
    stay few. A kept connection holds no transaction between uses, so it never blocks WAL checkpoints or
    other writers. PostgreSQL keeps the pool: its connections are a shared, limited resource. A nested use on
    the same thread (a listener writing from inside a transaction) gets a pooled connection.

    On SQLite ``begin()`` starts with ``BEGIN IMMEDIATE``: the write lock is taken before the entity is read,
    so two writers (an HTTP request and the MQTT bridge) cannot both read the old state and lose an update.
    """

    def __init__(self, engine: Engine):
        self.engine = engine
        self.enabled = engine.dialect.name == "sqlite"
        self._local = threading.local()
        # Simple reads on PostgreSQL may run in autocommit: under READ COMMITTED every statement has its own
        # snapshot anyway, and it saves the BEGIN and ROLLBACK round trips of a pooled transaction. (Not for
        # streamed results: server-side cursors need a transaction.)
        self._autocommit = engine if self.enabled else engine.execution_options(isolation_level="AUTOCOMMIT")
        self.write_gate = sqlite_gate(engine)  # None on PostgreSQL
        self._gate: AbstractContextManager[Any] = self.write_gate or nullcontext()
        # Callbacks of a transaction that did not end through begin() (engine.begin() used directly) must
        # never run for a later one: each new transaction starts with none.
        sa.event.listen(engine, "begin", _drop_after_commit)

    @contextmanager
    def shared(self) -> Iterator[Connection]:
        """One transaction that every ``begin()``/``connect()`` on this thread joins until it ends (group
        commit: several requests' writes made durable by one commit)."""
        with self.begin() as conn:
            self._local.shared = conn
            try:
                yield conn
            finally:
                self._local.shared = None

    def _joined(self) -> Connection | None:
        """The group transaction this thread is inside (``shared()``), if any."""
        joined: Connection | None = getattr(self._local, "shared", None)
        return joined

    def _mine(self) -> Connection | None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return None  # not the event loop's thread: use the pool
        conn: Connection | None = getattr(self._local, "conn", None)
        if conn is None or conn.closed or conn.invalidated:
            conn = self._local.conn = self.engine.connect()
        if conn.in_transaction():
            return None
        return conn

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        joined = self._joined()
        if joined is not None:
            yield joined
            return
        conn = self._mine() if self.enabled else None
        if conn is None:
            with self.engine.connect() as pooled:
                with self._gate, pooled.begin():
                    self._lock_for_write(pooled)
                    yield pooled
                _run_after_commit(pooled)  # before the connection goes back to the pool
            return
        try:
            with self._gate, conn.begin():
                self._lock_for_write(conn)
                yield conn
        except BaseException:
            self._reset(conn)
            raise
        _run_after_commit(conn)

    def writing_elsewhere(self) -> bool:
        """Whether another thread of this process is inside a SQLite write transaction right now (so a write
        started here would wait for it). Always False on PostgreSQL."""
        return self.write_gate is not None and self.write_gate.held_elsewhere()

    def _lock_for_write(self, conn: Connection) -> None:
        if self.enabled:
            driver: Any = conn.connection.driver_connection
            if not driver.in_transaction:
                driver.execute("BEGIN IMMEDIATE")

    def _reset(self, conn: Connection) -> None:
        """After a failure (also of the COMMIT itself): leave no transaction open on the kept connection.
        SQLAlchemy counts on the pool's check-in to roll back, and a kept connection is never checked in."""
        try:
            driver: Any = conn.connection.driver_connection
            if driver is not None and driver.in_transaction:
                driver.rollback()
        except Exception:
            log.warning("resetting a kept SQLite connection failed; it is discarded", exc_info=True)
            self._local.conn = None
            conn.invalidate()

    @contextmanager
    def connect(self, simple: bool = False) -> Iterator[Connection]:
        """A connection for reading; ``simple``: only plain statements (no streamed results) will run."""
        joined = self._joined()
        if joined is not None:
            yield joined
            return
        conn = self._mine() if self.enabled else None
        if conn is None:
            with (self._autocommit if simple else self.engine).connect() as pooled:
                yield pooled
            return
        try:
            yield conn
        finally:
            if conn.in_transaction():
                conn.rollback()  # end the read transaction SQLAlchemy began, as a pool check-in would
