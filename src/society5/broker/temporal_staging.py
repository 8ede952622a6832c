"""Write-optimised history on SQLite: new rows are appended to a staging table, then moved in bulk.

The history index is ordered by series, and a batch of sensor updates touches thousands of series. Inserted
straight into it, every batch dirtied one index page per series: with a million rows of history a 5,000-row
batch wrote about 25 MB to the WAL and took 165 ms, ten times its cost on an empty database. Appended to
``broker_temporal_recent`` (no secondary index) the same batch writes a few hundred kilobytes. The rows are
moved into ``broker_temporal_instances`` many batches at a time, by one ``INSERT … SELECT`` that SQLite runs
without the GIL: each index page is then written once per move instead of once per batch.

One step earlier still, a write transaction does not even build its history rows: it records the changed
instances as one row of ``broker_temporal_log``, serialized in one piece (a 1,000-entity batch spent a third
of its time building and inserting 5,000 rows one by one). The log is durable with the change it records,
and it is expanded into staged rows, in order, before each move.

Nothing reads the log or the staging table: :meth:`Staging.settle` expands and moves everything before
history is read or changed (the temporal API, the purge of an entity; retention deletes from both tables),
so readers see one table and, within a series, the order of rows (their ids) is the order they were written.
:meth:`Staging.move_due` is the background job.

PostgreSQL writes history straight into the indexed table (its writers do not queue behind one lock), and
every method here is a no-op there.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from sqlalchemy.engine import Connection, Engine

from society5.broker.core import gc_paused
from society5.broker.temporal_tables import change_log, instances, recent
from society5.core.db import ThreadConnections

log = logging.getLogger(__name__)

# The job moves what waits once MOVE_ROWS rows wait, or once some have waited MOVE_AGE_S, at a moment when
# the process has written nothing for MOVE_QUIET_S, and it stops between chunks as soon as writes come back:
# a chunk holds the write lock for a while (50,000 rows: 0.3–1.5 s on a small 2-core machine), and run in the
# middle of a burst of batches it stalled one of them (a fifth of the benchmark's ingest time went there).
# Sensor traffic comes in bursts with quiet gaps, and the gaps take the moves.
MOVE_ROWS = 50_000
MOVE_AGE_S = 10.0
MOVE_QUIET_S = 1.0
# Without a quiet moment (writes back to back) the job moves anyway past these, until it is back under them:
# what waits must stay bounded, since a reader of history waits for the move of all of it.
MOVE_ROWS_MAX = 250_000
MOVE_AGE_MAX_S = 60.0
# One chunk, one transaction: log entries are expanded until this many rows are staged, then every staged
# row is moved (so the staging table is emptied at once, never deleted from row by row).
MOVE_CHUNK = 50_000
# Log entries read and expanded together, at most (within the chunk's rows).
EXPAND_ENTRIES = 500
# Between two chunks the mover pauses this long, so that waiting writers get the lock first.
MOVE_PAUSE_S = 0.002

_COLUMNS = ", ".join(c.name for c in instances.columns if c.name != "id")
# Ordered by series, then staging id: the index takes the rows in key order (a fifth faster than in write
# order, measured), and within a series, where readers break ties of time by id, ids follow the write order.
_SQL_MOVE = (f"INSERT INTO {instances.name} ({_COLUMNS}) "
             f"SELECT {_COLUMNS} FROM {recent.name} WHERE id <= ? ORDER BY sid, id")
# Without a WHERE clause SQLite drops the table's pages at once instead of deleting row by row.
_SQL_DROP_ALL = f"DELETE FROM {recent.name}"
_SQL_LAST = f"SELECT max(id) FROM {recent.name}"
# Two subqueries, one probe of the rowid each: min() and max() in one SELECT scan the whole table.
_SQL_SPAN = f"SELECT (SELECT min(id) FROM {recent.name}), (SELECT max(id) FROM {recent.name})"
_SQL_LOG = f"INSERT INTO {change_log.name} (rows, body) VALUES (?, ?)"
_SQL_LOG_NEXT = f"SELECT id, rows, body FROM {change_log.name} ORDER BY id LIMIT ?"
_SQL_LOG_DROP = f"DELETE FROM {change_log.name} WHERE id <= ?"
_SQL_LOG_ANY = f"SELECT 1 FROM {change_log.name} LIMIT 1"
_SQL_LOG_ROWS = f"SELECT coalesce(sum(rows), 0) FROM {change_log.name}"

# What the log holds per entity change, and what expands it: (tenant, entity id, instances, time written).
Expander = Callable[[Connection, Sequence[Any]], None]


class Staging:
    def __init__(self, engine: Engine, db: ThreadConnections, enabled: bool = True):
        # Settling runs on every SQLite database, also with staging turned off since: rows staged before then
        # must not be left unread.
        self.sqlite = engine.dialect.name == "sqlite"
        self.enabled = enabled and self.sqlite
        self.engine = engine
        self.db = db
        self.table = recent if self.enabled else instances  # where new history rows go
        self.moved = 0  # rows moved by this process (for tests and the log)
        self._waiting_since: float | None = None
        self._own_release: float | None = None  # when the write lock was let go after the last chunk
        self._left = False  # whether the last chunk left log entries behind
        # Writes the history rows of log entries (TemporalStore sets it): into ``recent``, or straight into
        # the index with staging off.
        self.expand: Expander | None = None

    def log(self, conn: Connection, changes: Sequence[Any], rows: int) -> None:
        """Record a transaction's history changes as one log row (staging on)."""
        _driver(conn).execute(_SQL_LOG, (rows, orjson.dumps(changes)))

    def settle(self, conn: Connection | None = None) -> int:
        """Expand and move everything that waits into the indexed table; returns how many rows. With
        ``conn`` this joins that write transaction (which then holds the write lock); without, it runs in
        transactions of its own, a chunk each, only when rows wait (a read that finds none pays two cheap
        lookups)."""
        if not self.sqlite:
            return 0
        if conn is not None:
            return self._move(conn, None)[0]
        if not self.waiting():
            return 0
        return self._chunks(lambda _moved: True)

    def _chunks(self, go_on: Callable[[int], bool]) -> int:
        """Move chunk after chunk, while rows wait and ``go_on(rows moved so far)`` says so between two."""
        moved = 0
        while True:  # in chunks: writers may go on between them
            with self.db.begin() as tx:  # the write gate: one move at a time, and between writers
                n, more = self._move(tx, MOVE_CHUNK)
            gate = self.db.write_gate
            self._own_release = gate.released_at if gate is not None else None
            moved += n
            self._left = more
            if not more:
                return moved
            time.sleep(MOVE_PAUSE_S)
            if not go_on(moved):
                return moved

    def waiting(self) -> int:
        """About how many rows are staged or logged (staged ids are dense, so max − min + 1)."""
        if not self.sqlite:
            return 0
        with self.engine.connect() as conn:
            return self._waiting(_driver(conn))

    @staticmethod
    def _staged(driver: Any) -> int:
        lo, hi = driver.execute(_SQL_SPAN).fetchone()
        return 0 if lo is None else int(hi - lo + 1)

    def _waiting(self, driver: Any) -> int:
        return self._staged(driver) + int(driver.execute(_SQL_LOG_ROWS).fetchone()[0])

    def move_due(self) -> int:
        """The background job: when enough rows wait or they have waited long enough, move them in a quiet
        moment of this process's writes, stopping when writes come back; past the upper bounds, move until
        back under them."""
        count = self.waiting()
        if not count:
            self._waiting_since = None
            return 0
        now = time.monotonic()
        if self._waiting_since is None:
            self._waiting_since = now
        if not self._must_move(count):
            if count < MOVE_ROWS and now - self._waiting_since < MOVE_AGE_S:
                return 0
            if self._quiet_for() < MOVE_QUIET_S:
                return 0
        # At most what waited when it began (writes that go on meanwhile are the next tick's), and only while
        # nobody else writes unless past the bounds.
        moved = self._chunks(lambda done: done < count and (self._must_move(self.waiting())
                                                             or not self._others_wrote()))
        if not self._left:  # what waits now was written after the move began
            self._waiting_since = now if self.waiting() else None
        log.debug("moved %d staged history rows", moved)
        return moved

    def _must_move(self, count: int) -> bool:
        since = self._waiting_since
        return count >= MOVE_ROWS_MAX or (since is not None and time.monotonic() - since >= MOVE_AGE_MAX_S)

    def _quiet_for(self) -> float:
        gate = self.db.write_gate
        return gate.quiet_for() if gate is not None else float("inf")

    def _others_wrote(self) -> bool:
        """Whether another writer has taken the write lock since the job's last chunk ended."""
        gate = self.db.write_gate
        return gate is not None and (gate.held_elsewhere() or gate.released_at != self._own_release)

    def _move(self, conn: Connection, limit: int | None) -> tuple[int, bool]:
        """Inside a write transaction: expand log entries until ``limit`` rows are staged (all of them with
        None), then move every staged row; returns how many rows and whether log entries are left. Staged
        rows are older than any log entry (a direct write of history settles first), so they go first."""
        driver = _driver(conn)
        if not self.enabled:  # log entries expand straight into the index: what is staged goes before them
            n = self._move_staged(driver)
            return n + self._expand(conn, None), False
        self._expand(conn, limit)
        n = self._move_staged(driver)
        return n, driver.execute(_SQL_LOG_ANY).fetchone() is not None

    def _expand(self, conn: Connection, limit: int | None) -> int:
        """Expand log entries, oldest first, until ``limit`` rows are staged (all of them with None)."""
        if not self.sqlite:
            return 0
        with gc_paused():  # (see there: a 5,000-row entry took twice as long with the collector on)
            return self._expand_entries(conn, _driver(conn), limit)

    def _expand_entries(self, conn: Connection, driver: Any, limit: int | None) -> int:
        # Entries are taken many at a time (one write of their rows, one delete): the group commits of
        # single-entity writes log a few rows each, and one by one their per-entry costs added up to seconds.
        if self.expand is None:
            if driver.execute(_SQL_LOG_ANY).fetchone() is not None:
                raise RuntimeError("history log entries wait, but nothing expands them")
            return 0
        expanded = 0
        staged = self._staged(driver)
        while limit is None or staged < limit:
            entries = driver.execute(_SQL_LOG_NEXT, (EXPAND_ENTRIES,)).fetchall()
            if not entries:
                break
            changes: list[Any] = []
            last = None
            for entry_id, rows, body in entries:
                if last is not None and limit is not None and staged + rows > limit:
                    break
                changes += orjson.loads(body)
                staged += rows
                last = entry_id
            self.expand(conn, changes)
            driver.execute(_SQL_LOG_DROP, (last,))
            expanded += sum(len(items) for _t, _e, items, _now in changes)
        return expanded

    def _move_staged(self, driver: Any) -> int:
        (final,) = driver.execute(_SQL_LAST).fetchone()
        if final is None:
            return 0
        n: int = driver.execute(_SQL_MOVE, (final,)).rowcount
        driver.execute(_SQL_DROP_ALL)  # the write lock is held: no row came after ``final``
        self.moved += n
        return n


def _driver(conn: Connection) -> Any:
    return conn.connection.driver_connection


def job(platform: Any) -> int:
    """The periodic job (see :meth:`Staging.move_due`)."""
    temporal = platform.parts.get("temporal")
    return temporal.staging.move_due() if temporal is not None else 0
