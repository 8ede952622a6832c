"""The delivery log: one row per recipient × channel tried, with its status.

Statuses: ``queued`` (waiting in the outbox), ``deferred`` (waiting for quiet hours to end or a rate limit),
``failed`` (the last attempt failed; it will be retried), ``sent`` (the receiver accepted it), ``dead`` (no
more attempts on this channel; when the recipient has another channel a new delivery continues there).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from society5.core.errors import BadRequest, NotFound
from society5.core.timeutil import now_iso
from society5.notify.tables import deliveries as table

__all__ = ["STATUSES", "Delivery", "DeliveryLog", "table"]

QUEUED, DEFERRED, FAILED, SENT, DEAD = "queued", "deferred", "failed", "sent", "dead"
STATUSES = (QUEUED, DEFERRED, FAILED, SENT, DEAD)
OPEN = (QUEUED, DEFERRED, FAILED)


@dataclass(frozen=True)
class Delivery:
    id: str
    tenant: str
    request: str
    recipient: str
    channel: str
    route: tuple[str, ...]
    parent: str | None
    template: str
    lang: str
    urgent: bool
    title: str
    body_text: str
    body_html: str
    status: str
    attempts: int
    last_error: str | None
    created_at: str
    updated_at: str
    sent_at: str | None

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id, "tenant": self.tenant, "request": self.request, "recipient": self.recipient,
            "channel": self.channel, "parent": self.parent, "template": self.template, "lang": self.lang,
            "urgent": self.urgent, "title": self.title, "status": self.status, "attempts": self.attempts,
            "last_error": self.last_error, "created_at": self.created_at, "updated_at": self.updated_at,
            "sent_at": self.sent_at,
        }


def _from_row(row: Any) -> Delivery:
    values = dict(row._mapping)
    values["route"] = tuple(values["route"])
    values["urgent"] = bool(values["urgent"])
    return Delivery(**values)


class DeliveryLog:
    def __init__(self, engine: Engine):
        self.engine = engine

    def add(self, conn: Connection, *deliveries: Delivery) -> None:
        rows = []
        for delivery in deliveries:
            values = {k: getattr(delivery, k) for k in table.c.keys()}  # noqa: SIM118
            values["route"] = list(delivery.route)
            rows.append(values)
        if rows:
            conn.execute(table.insert(), rows)

    def get(self, delivery_id: str, conn: Connection | None = None) -> Delivery | None:
        query = sa.select(table).where(table.c.id == delivery_id)
        if conn is not None:
            row = conn.execute(query).first()
        else:
            with self.engine.connect() as own:
                row = own.execute(query).first()
        return None if row is None else _from_row(row)

    def mark(self, delivery_id: str, status: str, *, only_from: Sequence[str] = OPEN, **values: Any) -> bool:
        """Move a delivery to ``status`` unless it already left the open states; True when this call did.

        The guard makes the outcome count once when the observer and the reconciliation job race."""
        now = now_iso()
        values.update(status=status, updated_at=now)
        if status == SENT:
            values.setdefault("sent_at", now)
        with self.engine.begin() as conn:
            done = conn.execute(table.update()
                                .where(table.c.id == delivery_id, table.c.status.in_(list(only_from)))
                                .values(**values))
        return bool(done.rowcount)

    def get_many(self, ids: Sequence[str], conn: Connection) -> dict[str, Delivery]:
        found: dict[str, Delivery] = {}
        for start in range(0, len(ids), 500):  # bound the number of bind parameters per query
            rows = conn.execute(sa.select(table).where(table.c.id.in_(list(ids[start:start + 500]))))
            found.update((r.id, _from_row(r)) for r in rows)
        return found

    def mark_sent(self, items: Sequence[tuple[str, int]], conn: Connection | None = None, *,
                  only_from: Sequence[str] = OPEN) -> None:
        """Mark many deliveries (id, attempts) sent in one statement; those no longer open are left alone."""
        if conn is None:
            with self.engine.begin() as own:
                self.mark_sent(items, own, only_from=only_from)
            return
        self.mark_many(conn, SENT, [(d, n, None) for d, n in items], only_from=only_from)

    def mark_many(self, conn: Connection, status: str, items: Sequence[tuple[str, int, str | None]], *,
                  only_from: Sequence[str] = OPEN) -> None:
        """Move many deliveries (id, attempts, last error) from one of ``only_from`` to ``status`` in one
        statement."""
        if not items:
            return
        now = now_iso()
        values: dict[str, Any] = {"status": status, "attempts": sa.bindparam("n"),
                                  "last_error": sa.bindparam("err"), "updated_at": now}
        if status == SENT:
            values["sent_at"] = now
        stmt = (table.update()
                # OR, not IN: an expanding IN cannot be part of an executemany.
                .where(table.c.id == sa.bindparam("did"), sa.or_(*(table.c.status == s for s in only_from)))
                .values(**values))
        conn.execute(stmt, [{"did": d, "n": n, "err": e} for d, n, e in items])

    def tried(self, conn: Connection, request: str, recipient: str) -> set[str]:
        rows = conn.execute(sa.select(table.c.channel)
                            .where(table.c.request == request, table.c.recipient == recipient))
        return {r.channel for r in rows}

    def list(self, tenant: str, *, status: str | None = None, recipient: str | None = None,
             request: str | None = None, limit: int = 50, offset: int = 0) -> list[Delivery]:
        if status is not None and status not in STATUSES:
            raise BadRequest(f"status: use one of {', '.join(STATUSES)}")
        query = sa.select(table).where(table.c.tenant == tenant)
        if status is not None:
            query = query.where(table.c.status == status)
        if recipient is not None:
            query = query.where(table.c.recipient == recipient)
        if request is not None:
            query = query.where(table.c.request == request)
        query = query.order_by(table.c.created_at.desc(), table.c.id).limit(limit).offset(offset)
        with self.engine.connect() as conn:
            return [_from_row(r) for r in conn.execute(query)]

    def one(self, tenant: str, delivery_id: str) -> Delivery:
        found = self.get(delivery_id)
        if found is None or found.tenant != tenant:
            raise NotFound(f"no delivery {delivery_id!r} in tenant {tenant!r}")
        return found

    def prune(self, before: str) -> int:
        with self.engine.begin() as conn:
            done = conn.execute(table.delete().where(table.c.status.in_([SENT, DEAD]),
                                                     table.c.updated_at < before))
        return int(done.rowcount)
