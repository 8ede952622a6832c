"""A persistent outbox: work that must reach the outside world (NGSI-LD notifications, messages to people).

A producer writes a row with ``enqueue(conn, ...)`` inside the transaction of the change that caused it, so
the message exists exactly when the change does: nothing is lost on a crash; a rollback sends nothing.
A dispatcher then claims due rows and hands each to the handler registered for its ``kind``:

- success → the row is marked ``done``;
- a handler raising ``Defer(seconds)`` → rescheduled without counting an attempt (rate limits, quiet hours);
- a handler raising ``GiveUp`` → ``dead`` at once (the receiver said the message can never be accepted);
- any other exception → retried with exponential backoff and jitter, ``dead`` after ``max_attempts``.

Several server processes may share one PostgreSQL: a claim is one ``UPDATE … WHERE id IN (SELECT … FOR
UPDATE SKIP LOCKED)``, so two processes never hold the same row, and a claim is a lease (``claimed_until``):
rows held by a process that died are claimed again once the lease runs out. Delivery is therefore
at-least-once across crashes and exactly-once while processes stay alive.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from society5.core.tables import outbox as outbox_table

log = logging.getLogger(__name__)

PENDING, DONE, DEAD = "pending", "done", "dead"
PREFETCH = 4  # messages claimed per worker: queued in this process while the workers are busy


class Defer(Exception):
    """Raised by a handler: try again after ``seconds`` without counting a failed attempt."""

    def __init__(self, seconds: float, reason: str = "deferred"):
        super().__init__(reason)
        self.seconds = max(0.0, seconds)


class GiveUp(Exception):
    """Raised by a handler: this message can never be delivered; mark it dead now."""


@dataclass(frozen=True)
class Message:
    id: int
    kind: str
    tenant: str
    key: str
    payload: Any
    attempts: int  # failed attempts before this one
    created_at: float


Handler = Callable[[Message], object]
# Called after a message reached a final state or failed an attempt: (message, status, error or None).
Observer = Callable[[Message, str, "str | None"], object]
# Called once per recorded batch with every (message, status, error) of it: lets an observer write its own
# bookkeeping for a batch in one statement instead of one transaction per message.
BatchObserver = Callable[[list[tuple[Message, str, "str | None"]]], object]


@dataclass
class RetryPolicy:
    base_s: float = 1.0
    max_s: float = 600.0
    max_attempts: int = 12  # about two hours of retries with the defaults

    def delay(self, attempts: int) -> float:
        raw = min(self.max_s, self.base_s * (2 ** max(0, attempts - 1)))
        return raw * (0.75 + random.random() * 0.5)  # jitter spreads a receiver's comeback load


@dataclass
class Outbox:
    engine: Engine
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    workers: int = 8
    lease_s: float = 60.0
    poll_s: float = 0.5
    keep_done_s: float = 86_400.0
    owner: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    handlers: dict[str, Handler] = field(default_factory=dict)
    observers: list[Observer] = field(default_factory=list)
    batch_observers: list[BatchObserver] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._inflight = 0
        self._done: list[tuple[Message, str, dict[str, Any], str | None]] = []
        self._held: set[int] = set()  # claimed by the dispatcher, outcome not yet recorded
        self._renewed = 0.0
        self._lock = threading.Lock()
        self._pg = self.engine.dialect.name == "postgresql"
        # A commit that enqueued something wakes the dispatcher at once instead of at its next poll.
        self._dirty_key = f"outbox_dirty_{self.owner}"
        sa.event.listen(self.engine, "commit", self._after_commit)
        sa.event.listen(self.engine, "rollback", self._after_rollback)

    # -- producing -------------------------------------------------------------------------------------------

    def register(self, kind: str, handler: Handler) -> None:
        if kind in self.handlers:
            raise ValueError(f"an outbox handler for {kind!r} is already registered")
        self.handlers[kind] = handler
        self._wake.set()  # messages of this kind may be waiting

    def enqueue(self, conn: Connection, kind: str, payload: Any, *, tenant: str = "", key: str = "",
                delay_s: float = 0.0) -> None:
        """Add one message inside the caller's transaction (sent only if that transaction commits)."""
        self.enqueue_many(conn, [(kind, payload, tenant, key, delay_s)])

    def enqueue_many(self, conn: Connection, items: Iterable[tuple[str, Any, str, str, float]], *,
                     attempts: int = 0) -> None:
        """Add messages ``(kind, payload, tenant, key, delay_s)`` inside the caller's transaction;
        ``attempts`` counts failed attempts already made (a handler that split a batch hands a failed part
        on)."""
        now = time.time()
        rows = [
            {"kind": kind, "payload": payload, "tenant": tenant, "key": key, "status": PENDING,
             "attempts": attempts,
             "next_at": now + delay, "created_at": now}
            for kind, payload, tenant, key, delay in items
        ]
        if rows:
            conn.execute(outbox_table.insert(), rows)
            conn.info[self._dirty_key] = True

    def _after_commit(self, conn: Connection) -> None:
        if conn.info.pop(self._dirty_key, False):
            self._wake.set()

    def _after_rollback(self, conn: Connection) -> None:
        conn.info.pop(self._dirty_key, None)

    def wake(self) -> None:
        self._wake.set()

    # -- delivering ------------------------------------------------------------------------------------------

    def claim(self, limit: int) -> list[Message]:
        """Lease up to ``limit`` due messages to this process (oldest first), of the kinds it can handle and
        not already held by it (a lease of its own that ran out while the message waited for a worker)."""
        kinds = sorted(self.handlers)
        if not kinds or limit <= 0:
            return []
        now = time.time()
        t = outbox_table
        with self._lock:
            held = sorted(self._held)
        conds = [t.c.status == PENDING, t.c.next_at <= now, t.c.kind.in_(kinds),
                 sa.or_(t.c.claimed_until.is_(None), t.c.claimed_until < now)]
        if held:
            conds.append(t.c.id.not_in(held))
        if not self._pg and not self._anything_due(conds):
            return []
        due = sa.select(t.c.id).where(*conds).order_by(t.c.next_at, t.c.id).limit(limit)
        if self._pg:
            due = due.with_for_update(skip_locked=True)
        stmt = (
            sa.update(t)
            .where(t.c.id.in_(due.scalar_subquery()))
            .values(claimed_by=self.owner, claimed_until=now + self.lease_s)
            .returning(t.c.id, t.c.kind, t.c.tenant, t.c.key, t.c.payload, t.c.attempts, t.c.created_at)
        )
        with self.engine.begin() as conn:
            self._bookkeeping(conn)
            rows = conn.execute(stmt).all()
        messages = [Message(r.id, r.kind, r.tenant, r.key, r.payload, r.attempts, r.created_at) for r in rows]
        messages.sort(key=lambda m: m.id)
        return messages

    def _anything_due(self, conds: list[Any]) -> bool:
        """A read-only look before the claiming UPDATE: on SQLite that UPDATE takes the database's single
        write lock even when nothing is due, so an idle dispatcher polling twice a second would make every
        writer (a 1,000-entity batch, the MQTT bridge) queue behind it now and then."""
        with self.engine.connect() as conn:
            found = conn.execute(sa.select(outbox_table.c.id).where(*conds).limit(1)).first()
            conn.rollback()
        return found is not None

    def deliver(self, message: Message) -> str:
        """Run the handler for one claimed message and record the outcome; returns the new status."""
        outcome = self._attempt(message)
        self._record([outcome])
        return outcome[1]

    def _attempt(self, message: Message) -> tuple[Message, str, dict[str, Any], str | None]:
        """Run the handler; the message's new status, the columns to write and the error, if any."""
        handler = self.handlers.get(message.kind)
        now = time.time()
        # Every outcome writes the same columns, so that many can be recorded with one executemany.
        values: dict[str, Any] = {"attempts": message.attempts, "next_at": now, "done_at": None,
                                  "last_error": None}
        error: str | None = None
        if handler is None:
            error = f"no handler registered for kind {message.kind!r}"
            status = PENDING
            values.update(next_at=now + self.policy.max_s, last_error=error)
            return message, status, values, error
        try:
            handler(message)
        except Defer as defer:
            status = PENDING
            values["next_at"] = time.time() + defer.seconds
        except GiveUp as err:
            error = str(err) or type(err).__name__
            status = DEAD
            values.update(attempts=message.attempts + 1, last_error=error, done_at=time.time())
        except Exception as err:  # any receiver failure is retried; the message is never dropped
            error = f"{type(err).__name__}: {err}"[:2000]
            attempts = message.attempts + 1
            values.update(attempts=attempts, last_error=error)
            if attempts >= self.policy.max_attempts:
                status = DEAD
                values["done_at"] = time.time()
            else:
                status = PENDING
                values["next_at"] = time.time() + self.policy.delay(attempts)
        else:
            status = DONE
            values["done_at"] = time.time()
        return message, status, values, error

    def _record(self, outcomes: list[tuple[Message, str, dict[str, Any], str | None]]) -> None:
        t = outbox_table
        # Only the lease holder records an outcome: an expired lease may belong to another process now.
        stmt = (sa.update(t)
                .where(t.c.id == sa.bindparam("oid"), t.c.claimed_by == self.owner)
                .values(status=sa.bindparam("new_status"), attempts=sa.bindparam("new_attempts"),
                        next_at=sa.bindparam("new_next_at"), done_at=sa.bindparam("new_done_at"),
                        last_error=sa.bindparam("new_last_error"), claimed_by=None, claimed_until=None))
        rows = [{"oid": m.id, "new_status": status, "new_attempts": v["attempts"],
                 "new_next_at": v["next_at"], "new_done_at": v["done_at"], "new_last_error": v["last_error"]}
                for m, status, v, _err in outcomes]
        with self.engine.begin() as conn:
            self._bookkeeping(conn)
            conn.execute(stmt, rows)
        for message, status, _values, error in outcomes:
            for observer in self.observers:
                try:
                    observer(message, status, error)
                except Exception:
                    log.exception("outbox observer failed")
        if self.batch_observers:
            batch = [(message, status, error) for message, status, _values, error in outcomes]
            for batch_observer in self.batch_observers:
                try:
                    batch_observer(batch)
                except Exception:
                    log.exception("outbox batch observer failed")

    def _bookkeeping(self, conn: Connection) -> None:
        # Claims and outcomes need not wait for PostgreSQL's WAL flush: one lost in a crash only means the
        # message is delivered again once its lease runs out (at-least-once), and not waiting for two
        # flushes per message is what lets delivery keep up with a stream of changes.
        if self._pg:
            conn.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")

    def deliver_due(self, limit: int = 100) -> int:
        """Deliver what is due now, in this thread (tests, CLI tools); returns how many were handled."""
        handled = 0
        while True:
            batch = self.claim(limit)
            for message in batch:
                self.deliver(message)
            handled += len(batch)
            if len(batch) < limit:
                return handled

    def start(self) -> Outbox:
        if self._thread is None:
            self._stop.clear()
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="society5-outbox")
            self._thread = threading.Thread(target=self._loop, name="society5-outbox-dispatch", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Finish the deliveries under way, give back the leases of those not started, record outcomes."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            if self._thread.is_alive():
                log.warning("the outbox dispatcher did not stop within 10 s")
                return
            self._thread = None
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._record_done()
        self._release_unstarted()

    def _release_unstarted(self) -> None:
        with self._lock:
            held, self._held = sorted(self._held), set()
            self._inflight = 0
        if not held:
            return
        t = outbox_table
        try:
            with self.engine.begin() as conn:
                mine = sa.and_(t.c.id.in_(held), t.c.claimed_by == self.owner, t.c.status == PENDING)
                conn.execute(sa.update(t).where(mine).values(claimed_by=None, claimed_until=None))
        except Exception:  # their leases simply run out
            log.exception("releasing outbox leases failed")

    def _loop(self) -> None:
        last_cleanup = 0.0
        while not self._stop.is_set():
            self._wake.clear()
            self._record_done()
            try:
                with self._lock:
                    # Claim ahead of the workers: one claim per freed worker made the claims themselves (a
                    # database round trip each) the limit on PostgreSQL at a few hundred messages per second.
                    free = self.workers * PREFETCH - self._inflight
                batch = self.claim(free) if free else []
            except Exception:
                log.exception("outbox claim failed; retrying")
                batch = []
            for message in batch:
                assert self._pool is not None
                with self._lock:
                    self._inflight += 1
                    self._held.add(message.id)
                self._pool.submit(self._run, message)
            self._renew_leases()
            if time.time() - last_cleanup > 600:
                last_cleanup = time.time()
                self._cleanup()
            if not batch or len(batch) < free:
                self._wake.wait(self.poll_s)

    def _run(self, message: Message) -> None:
        try:
            outcome = self._attempt(message)
            with self._lock:
                self._done.append(outcome)
        except Exception:
            log.exception("outbox delivery of %s failed", message.id)
        finally:
            with self._lock:
                self._inflight -= 1
            self._wake.set()

    def _record_done(self) -> None:
        """Record the outcomes the workers finished, in one transaction (one per message would make the
        bookkeeping, not the receivers, the limit of a busy PostgreSQL)."""
        with self._lock:
            done, self._done = self._done, []
        if not done:
            return
        try:
            self._record(done)
        except Exception:  # the database is away: keep them and try again (their leases are renewed)
            log.exception("recording %d outbox outcomes failed; retrying", len(done))
            with self._lock:
                self._done[:0] = done
            return
        with self._lock:
            self._held.difference_update(m.id for m, *_rest in done)

    def _renew_leases(self) -> None:
        """Keep the leases of held messages alive (a message may wait behind slow receivers for long)."""
        now = time.time()
        if now - self._renewed < self.lease_s / 3:
            return
        self._renewed = now
        with self._lock:
            held = sorted(self._held)
        if not held:
            return
        t = outbox_table
        try:
            with self.engine.begin() as conn:
                self._bookkeeping(conn)
                mine = sa.and_(t.c.id.in_(held), t.c.claimed_by == self.owner)
                conn.execute(sa.update(t).where(mine).values(claimed_until=now + self.lease_s))
        except Exception:
            log.exception("renewing outbox leases failed")

    def _cleanup(self) -> None:
        t = outbox_table
        try:
            with self.engine.begin() as conn:
                old = sa.and_(t.c.status == DONE, t.c.done_at < time.time() - self.keep_done_s)
                conn.execute(sa.delete(t).where(old))
        except Exception:
            log.exception("outbox cleanup failed")

    # -- operating -------------------------------------------------------------------------------------------

    def counts(self) -> dict[str, dict[str, int]]:
        """Messages per kind and status (for the admin page and the benchmark)."""
        t = outbox_table
        out: dict[str, dict[str, int]] = {}
        with self.engine.connect() as conn:
            for kind, status, n in conn.execute(
                sa.select(t.c.kind, t.c.status, sa.func.count()).group_by(t.c.kind, t.c.status)
            ):
                out.setdefault(kind, {})[status] = n
        return out

    def requeue_dead(self, kind: str | None = None) -> int:
        """Give dead messages a fresh set of attempts (after a receiver was fixed)."""
        t = outbox_table
        cond = t.c.status == DEAD
        if kind is not None:
            cond = sa.and_(cond, t.c.kind == kind)
        with self.engine.begin() as conn:
            n = conn.execute(
                sa.update(t).where(cond).values(status=PENDING, attempts=0, next_at=time.time(), done_at=None)
            ).rowcount
        self._wake.set()
        return int(n)
