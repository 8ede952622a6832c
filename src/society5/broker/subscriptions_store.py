"""Subscriptions in the database (``broker_subscriptions``, migration 0005) and compiled in memory per tenant.

Every entity write asks "which subscriptions of this tenant could care?", so the compiled subscriptions of a
tenant are kept in memory, filed by the entity types they select: a write to a type nobody subscribed to
costs one dict lookup however many subscriptions the tenant has. A write here drops the tenant's entry at
once; writes by other server processes are noticed within ``FRESH_S`` (a cheap count/max query at most that
often per tenant).

Delivery outcomes (the status members) are added up in memory and written in one transaction at most every
``FLUSH_S`` (and before every read here): under load that is one small write per batch instead of one per
notification competing with the entity writes for the database.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from society5.broker.jsonld import ActiveContext
from society5.broker.subscriptions_match import Compiled, compile_doc
from society5.core.db import JsonDoc, metadata
from society5.core.errors import AlreadyExists, NotFound
from society5.core.timeutil import now_iso

log = logging.getLogger(__name__)

FRESH_S = 1.0
FLUSH_S = 0.2

subscriptions = sa.Table(
    "broker_subscriptions",
    metadata,
    sa.Column("tenant", sa.String(64), primary_key=True),
    sa.Column("id", sa.String(512), primary_key=True),
    sa.Column("doc", JsonDoc, nullable=False),
    sa.Column("created_at", sa.String(32), nullable=False),
    sa.Column("modified_at", sa.String(32), nullable=False),
    sa.Column("next_at", sa.Float),  # the next periodic notification (timeInterval subscriptions)
    sa.Column("times_sent", sa.Integer, nullable=False, server_default="0"),
    sa.Column("times_failed", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_notification", sa.String(32)),
    sa.Column("last_success", sa.String(32)),
    sa.Column("last_failure", sa.String(32)),
    sa.Column("last_status", sa.String(16)),
)
_COUNTERS = (subscriptions.c.times_sent, subscriptions.c.times_failed, subscriptions.c.last_status,
             subscriptions.c.last_notification, subscriptions.c.last_success, subscriptions.c.last_failure)


@dataclass
class StoredSubscription:
    doc: dict[str, Any]
    counters: dict[str, Any]
    created_at: str
    modified_at: str


@dataclass
class TenantIndex:
    by_id: dict[str, Compiled] = field(default_factory=dict)
    by_type: dict[str, list[Compiled]] = field(default_factory=dict)
    any_type: list[Compiled] = field(default_factory=list)
    version: tuple[int, str | None] = (0, None)
    checked: float = 0.0

    def add(self, sub: Compiled) -> None:
        self.by_id[sub.id] = sub
        types = sub.index_types()
        if types is None:
            self.any_type.append(sub)
        for t in types or ():
            self.by_type.setdefault(t, []).append(sub)

    def candidates(self, types: set[str]) -> list[Compiled]:
        if not self.by_type:
            return list(self.any_type)
        found = {id(s): s for t in types for s in self.by_type.get(t, ())}
        return [*self.any_type, *found.values()] if found else list(self.any_type)


class SubscriptionStore:
    def __init__(self, engine: Engine, context: Callable[[Any], ActiveContext]):
        self.engine = engine
        self.context = context
        self._indexes: dict[str, TenantIndex] = {}
        self._lock = threading.Lock()
        self._outcomes: dict[tuple[str, str], dict[str, Any]] = {}
        self._flushed = 0.0

    # -- CRUD ------------------------------------------------------------------------------------------------
    def create(self, tenant: str, doc: dict[str, Any]) -> None:
        now = now_iso()
        row = {"tenant": tenant, "id": doc["id"], "doc": doc, "created_at": now, "modified_at": now,
               "next_at": _next_at(doc)}
        try:
            with self.engine.begin() as conn:
                if self._exists(conn, tenant, doc["id"]):
                    raise AlreadyExists(f"subscription {doc['id']} already exists")
                conn.execute(subscriptions.insert().values(**row))
        except IntegrityError as err:  # a concurrent create of the same id
            raise AlreadyExists(f"subscription {doc['id']} already exists") from err
        self.invalidate(tenant)

    def get(self, tenant: str, sid: str) -> StoredSubscription:
        self.flush()
        s = subscriptions.c
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(s.doc, s.created_at, s.modified_at, *_COUNTERS)
                               .where(s.tenant == tenant, s.id == sid)).first()
        if row is None:
            raise NotFound(f"subscription {sid} does not exist")
        return _stored(row)

    def page(self, tenant: str, limit: int, offset: int) -> tuple[list[StoredSubscription], int]:
        self.flush()
        s = subscriptions.c
        with self.engine.connect() as conn:
            total = conn.execute(sa.select(sa.func.count()).where(s.tenant == tenant)).scalar_one()
            rows = conn.execute(sa.select(s.doc, s.created_at, s.modified_at, *_COUNTERS)
                                .where(s.tenant == tenant).order_by(s.created_at, s.id)
                                .limit(limit).offset(offset)).all()
        return [_stored(r) for r in rows], int(total)

    def replace(self, tenant: str, doc: dict[str, Any]) -> None:
        s = subscriptions.c
        with self.engine.begin() as conn:
            done = conn.execute(sa.update(subscriptions).where(s.tenant == tenant, s.id == doc["id"])
                                .values(doc=doc, modified_at=now_iso(), next_at=_next_at(doc))).rowcount
        if not done:
            raise NotFound(f"subscription {doc['id']} does not exist")
        self.invalidate(tenant)

    def delete(self, tenant: str, sid: str) -> None:
        s = subscriptions.c
        with self.engine.begin() as conn:
            done = conn.execute(sa.delete(subscriptions).where(s.tenant == tenant, s.id == sid)).rowcount
        if not done:
            raise NotFound(f"subscription {sid} does not exist")
        self.invalidate(tenant)

    def record(self, tenant: str, sid: str, ok: bool, at: str) -> None:
        """Count one delivery attempt in the status members (``notification.timesSent`` …)."""
        with self._lock:
            out = self._outcomes.setdefault((tenant, sid), {"sent": 0, "failed": 0, "success": None,
                                                            "failure": None})
            out["sent"] += 1
            out["last"], out["status"] = at, "ok" if ok else "failed"
            if ok:
                out["success"] = at
            else:
                out["failed"] += 1
                out["failure"] = at
            due = time.monotonic() - self._flushed >= FLUSH_S
        if due:
            self.flush()

    def flush(self) -> None:
        """Write the delivery outcomes counted so far."""
        with self._lock:
            outcomes, self._outcomes = self._outcomes, {}
            self._flushed = time.monotonic()
        if not outcomes:
            return
        s = subscriptions.c
        try:
            with self.engine.begin() as conn:
                for (tenant, sid), out in outcomes.items():
                    values: dict[str, Any] = {"times_sent": s.times_sent + out["sent"],
                                              "times_failed": s.times_failed + out["failed"],
                                              "last_notification": out["last"], "last_status": out["status"]}
                    if out["success"]:
                        values["last_success"] = out["success"]
                    if out["failure"]:
                        values["last_failure"] = out["failure"]
                    row = sa.update(subscriptions).where(s.tenant == tenant, s.id == sid)
                    conn.execute(row.values(**values))
        except SQLAlchemyError:  # statistics only: the notifications themselves are safe in the outbox
            log.exception("recording %d subscriptions' delivery status failed", len(outcomes))

    @staticmethod
    def _exists(conn: Connection, tenant: str, sid: str) -> bool:
        s = subscriptions.c
        return conn.execute(sa.select(s.id).where(s.tenant == tenant, s.id == sid)).first() is not None

    # -- matching --------------------------------------------------------------------------------------------
    def index(self, conn: Connection, tenant: str) -> TenantIndex:
        """The tenant's compiled subscriptions (read through ``conn``, the caller's transaction)."""
        now = time.monotonic()
        idx = self._indexes.get(tenant)
        if idx is not None and now - idx.checked < FRESH_S:
            return idx
        s = subscriptions.c
        count, latest = conn.execute(sa.select(sa.func.count(), sa.func.max(s.modified_at))
                                     .where(s.tenant == tenant)).one()
        version = (int(count), latest)
        if idx is None or idx.version != version:
            idx = TenantIndex(version=version)
            if count:
                for (doc,) in conn.execute(sa.select(s.doc).where(s.tenant == tenant)):
                    try:
                        idx.add(compile_doc(tenant, doc, self.context))
                    except Exception:  # one unreadable subscription must not block the tenant's writes
                        log.exception("subscription %s (%s) cannot be compiled", doc.get("id"), tenant)
        idx.checked = now
        with self._lock:
            self._indexes[tenant] = idx
        return idx

    def compiled(self, tenant: str, sid: str) -> Compiled | None:
        idx = self._indexes.get(tenant)
        if idx is not None and time.monotonic() - idx.checked < FRESH_S:
            return idx.by_id.get(sid)
        with self.engine.connect() as conn:
            return self.index(conn, tenant).by_id.get(sid)

    def invalidate(self, tenant: str) -> None:
        with self._lock:
            self._indexes.pop(tenant, None)

    # -- periodic (timeInterval) -----------------------------------------------------------------------------
    def due(self, now: float) -> list[tuple[str, str, float]]:
        s = subscriptions.c
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(s.tenant, s.id, s.next_at).where(s.next_at <= now)).all()
        return [(r.tenant, r.id, r.next_at) for r in rows]

    @staticmethod
    def claim(conn: Connection, tenant: str, sid: str, seen: float, following: float) -> bool:
        """Move a due subscription's next run on; only the process whose update wins sends this run."""
        s = subscriptions.c
        mine = (s.tenant == tenant, s.id == sid, s.next_at == seen)
        return bool(conn.execute(sa.update(subscriptions).where(*mine).values(next_at=following)).rowcount)


def _next_at(doc: dict[str, Any]) -> float | None:
    interval = doc.get("timeInterval")
    return time.time() + float(interval) if interval else None


def _stored(row: Any) -> StoredSubscription:
    counters = {"timesSent": row.times_sent, "timesFailed": row.times_failed, "status": row.last_status,
                "lastNotification": row.last_notification, "lastSuccess": row.last_success,
                "lastFailure": row.last_failure}
    return StoredSubscription(row.doc, counters, row.created_at, row.modified_at)
