"""``Notifier``: "tell these recipients this message", delivered through the platform's outbox.

``tell`` renders the template in each recipient's language, writes one delivery per recipient (on the first
channel of the recipient's route) and enqueues one outbox message per delivery, all in one transaction:
the caller's, when it passes ``conn``. The outbox then calls ``handle`` for each delivery; ``observe`` keeps
the delivery log in step with the outbox and escalates a dead delivery to the recipient's next channel.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from html import escape
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from society5.core.errors import BadRequest, NotFound
from society5.core.outbox import DEAD, DONE, PENDING, Defer, GiveUp, Message, Outbox
from society5.core.tables import outbox as outbox_table
from society5.core.timeutil import iso, now_iso
from society5.notify import deliveries as log_
from society5.notify.channels import BatchChannel, Channel, Outgoing
from society5.notify.channels.base import outcome_of
from society5.notify.deliveries import Delivery, DeliveryLog
from society5.notify.quiet import parse_hhmm, quiet_wait, zone
from society5.notify.ratelimit import TokenBucket
from society5.notify.recipients import Recipient, RecipientStore
from society5.notify.templates import Rendered, TemplateError, TemplateRegistry, registry

log = logging.getLogger(__name__)

KIND = "notify.delivery"
BATCH_MIN = 20  # deliveries on one channel from one tell() that go as batches rather than one message each
BATCH_SIZE = 500  # deliveries per batch message
_POOL_THREADS = 16  # for sending a batch on a channel that cannot send many at once


class Notifier:
    def __init__(self, outbox: Outbox, channels: Mapping[str, Channel], *,
                 templates: TemplateRegistry = registry, limits: Mapping[str, TokenBucket] | None = None,
                 escalate_after: int = 5, clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 batch_min: int = BATCH_MIN, batch_size: int = BATCH_SIZE):
        self.outbox = outbox
        self.engine = outbox.engine
        self.channels = dict(channels)
        self.templates = templates
        self.limits = dict(limits or {})
        self.escalate_after = escalate_after
        self.clock = clock
        self.batch_min = batch_min
        self.batch_size = max(1, batch_size)
        self._pool: ThreadPoolExecutor | None = None  # sends a batch on a channel without send_many
        self._pool_lock = threading.Lock()
        self.recipients = RecipientStore(self.engine)
        self.deliveries = DeliveryLog(self.engine)
        self.closers: list[Callable[[], object]] = []  # resources released by close()

    def attach(self) -> Notifier:
        """Become the outbox's handler for deliveries (once per platform)."""
        self.outbox.register(KIND, self.handle)
        self.outbox.observers.append(self.observe)
        self.outbox.batch_observers.append(self.observe_sent)
        return self

    def close(self) -> None:
        for closer in self.closers:
            closer()
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)

    # -- telling ---------------------------------------------------------------------------------------------

    def tell(self, recipients: Iterable[str], template: str, context: Mapping[str, Any], *, tenant: str,
             conn: Connection | None = None, urgent: bool = False,
             channels: Sequence[str] | None = None, all_channels: bool = False,
             personal: Callable[[Recipient], Mapping[str, Any]] | None = None) -> list[str]:
        """Queue ``template`` for each recipient id of ``tenant``; returns the new delivery ids.

        Inactive recipients are skipped; an unknown one is an error (nothing is queued). ``channels``
        restricts which channels may be used; ``all_channels`` sends on every one at once instead of
        escalating. ``urgent`` messages ignore quiet hours. ``personal(recipient)`` adds variables of one
        recipient (an unsubscribe link) to the context; the text is then rendered per recipient instead of
        once per language. A template error (unknown name, a missing variable) raises ``BadRequest`` before
        anything is written.
        """
        if isinstance(recipients, str):  # one id; iterating it would tell each of its letters
            recipients = [recipients]
        for name in channels or ():
            if name not in self.channels:
                raise BadRequest(f"channels: unknown channel {name!r}; use {', '.join(self.channels)}")
        try:
            self.templates.get(template)
        except TemplateError as err:
            raise BadRequest(f"template: {err}") from err
        if conn is None:
            with self.engine.begin() as own:
                return self._tell(own, list(recipients), template, context, tenant, urgent, channels,
                                  all_channels, personal)
        return self._tell(conn, list(recipients), template, context, tenant, urgent, channels, all_channels,
                          personal)

    def _tell(self, conn: Connection, ids: list[str], template: str, context: Mapping[str, Any], tenant: str,
              urgent: bool, channels: Sequence[str] | None, all_channels: bool,
              personal: Callable[[Recipient], Mapping[str, Any]] | None = None) -> list[str]:
        wanted = list(dict.fromkeys(ids))
        # One query for many recipients: an area alert tells thousands at once.
        loaded = self.recipients.find_many(tenant, wanted, conn)
        people = []
        for rid in wanted:
            found = loaded.get(rid)
            if found is None:
                raise NotFound(f"recipients: no recipient {rid!r} in tenant {tenant!r}")
            if found.active:
                people.append(found)
        rendered: dict[str, Rendered] = {}
        marked: dict[str, tuple[Rendered, dict[str, str]] | None] = {}
        request, now = str(uuid.uuid4()), now_iso()
        created: list[tuple[Delivery, float]] = []
        for person in people:
            route = [c for c in person.route() if c in self.channels and (channels is None or c in channels)]
            if not route:
                log.info("recipient %s/%s has no usable channel for %s", tenant, person.id, template)
                continue
            if personal is not None:
                text = self._render_personal(template, context, personal(person), person.language, marked)
            else:
                if person.language not in rendered:
                    rendered[person.language] = self._render(template, context, person.language)
                text = rendered[person.language]
            wait = 0.0 if urgent else self._quiet_wait(person)
            routes = [[c] for c in route] if all_channels else [route]
            for one in routes:
                delivery = Delivery(
                    id=str(uuid.uuid4()), tenant=tenant, request=request, recipient=person.id, channel=one[0],
                    route=tuple(one), parent=None, template=template, lang=text.lang, urgent=urgent,
                    title=text.title, body_text=text.text, body_html=text.html,
                    status=log_.DEFERRED if wait else log_.QUEUED, attempts=0,
                    last_error="quiet hours" if wait else None, created_at=now, updated_at=now, sent_at=None)
                created.append((delivery, wait))
        # Written only once everything rendered: a caller that catches an error keeps a clean transaction.
        self.deliveries.add(conn, *(d for d, _ in created))
        self.outbox.enqueue_many(conn, self._messages(created, tenant, request))
        return [d.id for d, _ in created]

    def _messages(self, created: list[tuple[Delivery, float]], tenant: str,
                  request: str) -> list[tuple[str, Any, str, str, float]]:
        """The outbox messages for new deliveries: one per delivery, except that the deliveries due now on a
        channel that has at least ``batch_min`` of them go ``batch_size`` to a message (an area alert to
        thousands would otherwise cost a claim, a record and a request of its own per delivery)."""
        due: dict[str, list[Delivery]] = {}
        for delivery, wait in created:
            if wait == 0:
                due.setdefault(delivery.channel, []).append(delivery)
        batched: set[str] = set()
        items: list[tuple[str, Any, str, str, float]] = []
        for channel, group in due.items():
            if len(group) < max(2, self.batch_min):
                continue
            for n, start in enumerate(range(0, len(group), self.batch_size)):
                chunk = [d.id for d in group[start:start + self.batch_size]]
                batched.update(chunk)
                items.append((KIND, {"deliveries": chunk, "channel": channel}, tenant,
                              f"batch:{request}:{channel}:{n}", 0.0))
        items[:0] = [(KIND, {"delivery": d.id}, tenant, d.id, wait)
                     for d, wait in created if d.id not in batched]
        return items

    def _render_personal(self, template: str, context: Mapping[str, Any], values: Mapping[str, Any],
                         lang: str, cache: dict[str, tuple[Rendered, dict[str, str]] | None]) -> Rendered:
        """A message with one recipient's own variables (an unsubscribe link). Rendering the template once per
        language with unique marks, then putting each recipient's values in their place, costs a fraction of
        a full render per recipient (a fan-out to 10,000). Falls back to a full render whenever the marks
        might not stand for the values: not plain one-line strings, or a mark the template changed (a filter)
        or dropped (a condition on the value)."""
        if not values or not all(isinstance(v, str) and v and v.isprintable() for v in values.values()):
            return self._render(template, {**context, **values}, lang)
        key = "\0".join((lang, *sorted(values)))
        if key not in cache:
            marks = {name: f"S5MARK{uuid.uuid4().hex}" for name in values}
            base = self._render(template, {**context, **marks}, lang)
            usable = all(m in base.text and m in base.html for m in marks.values())
            cache[key] = (base, marks) if usable else None
        found = cache[key]
        if found is None:
            return self._render(template, {**context, **values}, lang)
        base, marks = found
        title, text, html = base.title, base.text, base.html
        for name, mark in marks.items():
            value = values[name]
            title, text, html = title.replace(mark, value), text.replace(mark, value), html.replace(
                mark, escape(value))
        return Rendered(lang=base.lang, title=title, text=text, html=html)

    def _render(self, template: str, context: Mapping[str, Any], lang: str) -> Rendered:
        try:
            return self.templates.render(template, context, lang)
        except TemplateError as err:
            raise BadRequest(f"template: {err}") from err

    def _quiet_wait(self, person: Recipient) -> float:
        q = person.quiet_hours
        if q is None:
            return 0.0
        return quiet_wait(self.clock(), parse_hhmm(q.start), parse_hhmm(q.end), zone(q.timezone))

    # -- delivering (called by the outbox) -------------------------------------------------------------------

    def handle(self, message: Message) -> None:
        if "deliveries" in message.payload:
            self._handle_batch(message)
            return
        # One connection for both reads: a fan-out to thousands pays this per message.
        with self.engine.connect() as conn:
            delivery = self.deliveries.get(message.payload["delivery"], conn)
            if delivery is None or delivery.status in (log_.SENT, log_.DEAD):
                return  # pruned, or a duplicate after a crash: nothing left to do
            person = self.recipients.find(delivery.tenant, delivery.recipient, conn)
        try:
            reached, out = self._outgoing(delivery, person)
        except Defer as defer:
            if delivery.status != log_.DEFERRED or delivery.last_error != str(defer):
                self.deliveries.mark(delivery.id, log_.DEFERRED, last_error=str(defer))
            raise
        try:
            self.channels[delivery.channel].send(out)
        except Defer as defer:  # the receiver asked us to wait (e.g. 429 with Retry-After)
            self.deliveries.mark(delivery.id, log_.DEFERRED, last_error=str(defer))
            raise
        except GiveUp:
            raise
        except Exception as err:
            # Escalate early when another channel can take over; the last channel keeps the outbox's full
            # retry schedule, so an outage of the only way to reach someone does not lose the message.
            if message.attempts + 1 >= self.escalate_after and self._next_channel(delivery, reached):
                raise GiveUp(f"{type(err).__name__}: {err} (after {message.attempts + 1} attempts)") from err
            raise
        # Marked sent by observe_sent, with the rest of the outbox's batch, once the outbox recorded it done.

    def _outgoing(self, delivery: Delivery, person: Recipient | None) -> tuple[Recipient, Outgoing]:
        """The person and what to send them for ``delivery`` now. Raises GiveUp when the person can no
        longer be reached this way, Defer (with the reason) in their quiet hours or when the channel's rate
        limit reserved a later slot."""
        if person is None or not person.active:
            raise GiveUp(f"recipient {delivery.recipient!r} was removed or deactivated")
        address = person.channels.get(delivery.channel)
        if address is None or delivery.channel not in self.channels:
            raise GiveUp(f"recipient {person.id!r} has no {delivery.channel} address any more")
        if not delivery.urgent:
            wait = self._quiet_wait(person)
            if wait > 0:
                raise Defer(wait, "quiet hours")
        bucket = self.limits.get(delivery.channel)
        wait = bucket.take(delivery.id) if bucket is not None else 0.0
        if wait > 0:  # the slot is reserved for it: its message passes when it comes back then
            raise Defer(wait, f"{delivery.channel} rate limit")
        return person, Outgoing(
            delivery_id=delivery.id, tenant=delivery.tenant, recipient_id=person.id,
            recipient_name=person.name, address=address, template=delivery.template, lang=delivery.lang,
            title=delivery.title, text=delivery.body_text, html=delivery.body_html, urgent=delivery.urgent,
            secret=person.webhook_secret)

    # -- delivering a batch ----------------------------------------------------------------------------------

    def _handle_batch(self, message: Message) -> None:
        """Send the deliveries of a batch message at once, then record every outcome in one transaction.

        The batch owns the deliveries it lists while they are ``queued``: each one it cannot send now leaves
        it in that transaction, as a message of its own (a failed attempt, retried with the outbox's backoff;
        a deferral, due when its wait ends) or dead (escalated). If the process dies before that transaction,
        the batch message's lease runs out and it is handled again (receivers dedupe on the delivery id); a
        delivery it no longer owns is not sent again by it."""
        ids = [str(i) for i in message.payload["deliveries"]]
        with self.engine.connect() as conn:
            found = self.deliveries.get_many(ids, conn)
            mine = [found[i] for i in ids if i in found and found[i].status == log_.QUEUED]
            if not mine:
                return
            people = self.recipients.find_many(mine[0].tenant, sorted({d.recipient for d in mine}), conn)
        outcome = _Outcome()
        ready: list[tuple[Delivery, Recipient, Outgoing]] = []
        for delivery in mine:
            try:
                person, out = self._outgoing(delivery, people.get(delivery.recipient))
            except GiveUp as gone:
                outcome.dead.append((delivery, str(gone)))
                continue
            except Defer as defer:
                outcome.deferred.append((delivery, defer.seconds, str(defer)))
                continue
            ready.append((delivery, person, out))
        by_channel: dict[str, list[tuple[Delivery, Recipient, Outgoing]]] = {}
        for item in ready:
            by_channel.setdefault(item[0].channel, []).append(item)
        for name, items in by_channel.items():
            results = self._send_many(self.channels[name], [out for _d, _p, out in items])
            for (delivery, person, _out), err in zip(items, results, strict=True):
                if err is None:
                    outcome.sent.append(delivery.id)
                elif isinstance(err, Defer):
                    outcome.deferred.append((delivery, err.seconds, str(err)))
                elif isinstance(err, GiveUp):
                    outcome.dead.append((delivery, str(err) or type(err).__name__))
                else:
                    error = f"{type(err).__name__}: {err}"[:2000]
                    last = self.outbox.policy.max_attempts <= 1
                    if last or (self.escalate_after <= 1 and self._next_channel(delivery, person)):
                        outcome.dead.append((delivery, f"{error} (after 1 attempts)"))
                    else:
                        outcome.failed.append((delivery, error))
        self._settle(message, outcome)

    def _send_many(self, channel: Channel, outs: list[Outgoing]) -> list[Exception | None]:
        if isinstance(channel, BatchChannel):
            return channel.send_many(outs)
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(_POOL_THREADS, thread_name_prefix="society5-notify-send")
            pool = self._pool

        return list(pool.map(lambda out: outcome_of(channel.send, out), outs))

    def _settle(self, message: Message, outcome: _Outcome) -> None:
        """Record a batch's outcomes and hand on what is left, in one transaction."""
        tenant = message.tenant
        retry = self.outbox.policy.delay(1)
        with self.engine.begin() as conn:
            mine = (log_.QUEUED,)  # what the batch still owns: a rerun after a crash skips the rest
            self.deliveries.mark_sent([(i, 1) for i in outcome.sent], conn, only_from=mine)
            self.deliveries.mark_many(conn, log_.FAILED, [(d.id, 1, e) for d, e in outcome.failed],
                                      only_from=mine)
            self.deliveries.mark_many(conn, log_.DEFERRED,
                                      [(d.id, 0, why) for d, _w, why in outcome.deferred], only_from=mine)
            self.deliveries.mark_many(conn, log_.DEAD, [(d.id, 1, e) for d, e in outcome.dead],
                                      only_from=mine)
            self.outbox.enqueue_many(conn, [(KIND, {"delivery": d.id}, tenant, d.id, retry)
                                            for d, _e in outcome.failed], attempts=1)
            self.outbox.enqueue_many(conn, [(KIND, {"delivery": d.id}, tenant, d.id, wait)
                                            for d, wait, _why in outcome.deferred])
            escalated = [(d, self._escalate(conn, d.id, d)) for d, _e in outcome.dead]
        for dead, new in escalated:
            if new is not None:
                log.info("delivery %s to %s/%s escalated from %s to %s", dead.id, dead.tenant, dead.recipient,
                         dead.channel, new.channel)
        if outcome.failed or outcome.dead:
            log.info("batch %s: %d sent, %d failed, %d deferred, %d dead", message.key, len(outcome.sent),
                     len(outcome.failed), len(outcome.deferred), len(outcome.dead))

    def _batch_dead(self, message: Message, error: str | None) -> None:
        """The batch message itself failed for good (this process could not handle it, e.g. its database was
        away): its deliveries still queued go dead and escalate."""
        ids = [str(i) for i in message.payload["deliveries"]]
        with self.engine.begin() as conn:
            found = self.deliveries.get_many(ids, conn)
            queued = [found[i] for i in ids if i in found and found[i].status == log_.QUEUED]
            reason = error or "the batch could not be delivered"
            self.deliveries.mark_many(conn, log_.DEAD, [(d.id, 0, reason) for d in queued],
                                      only_from=(log_.QUEUED,))
            for delivery in queued:
                self._escalate(conn, delivery.id)

    def observe(self, message: Message, status: str, error: str | None) -> None:
        if message.kind != KIND:
            return
        if "deliveries" in message.payload:
            # A batch records its deliveries' outcomes itself; only its own failure for good is left.
            if status == DEAD:
                self._batch_dead(message, error)
            return
        delivery_id = message.payload["delivery"]
        if status == PENDING and error is not None:
            self.deliveries.mark(delivery_id, log_.FAILED, attempts=message.attempts + 1, last_error=error)
        elif status == DEAD:
            self._dead(delivery_id, message.attempts + 1, error)

    def observe_sent(self, outcomes: list[tuple[Message, str, str | None]]) -> None:
        """Mark the deliveries of a recorded batch sent, in one statement (one per message made the log's
        bookkeeping, not the receivers, the limit of a large fan-out)."""
        sent = [(m.payload["delivery"], m.attempts + 1) for m, status, _e in outcomes
                if m.kind == KIND and status == DONE and "delivery" in m.payload]
        if sent:
            self.deliveries.mark_sent(sent)

    def _dead(self, delivery_id: str, attempts: int, error: str | None) -> None:
        if self.deliveries.mark(delivery_id, log_.DEAD, attempts=attempts, last_error=error):
            self.escalate(delivery_id)

    # -- escalation ------------------------------------------------------------------------------------------

    def _next_channel(self, delivery: Delivery, person: Recipient,
                      conn: Connection | None = None) -> str | None:
        if conn is None:
            with self.engine.connect() as own:
                return self._next_channel(delivery, person, own)
        tried = self.deliveries.tried(conn, delivery.request, delivery.recipient)
        for name in delivery.route:
            if name not in tried and name in person.channels and name in self.channels:
                return name
        return None

    def escalate(self, delivery_id: str) -> str | None:
        """Continue a dead delivery on the recipient's next channel; returns the new delivery's id."""
        with self.engine.begin() as conn:
            dead = self.deliveries.get(delivery_id, conn)
            new = self._escalate(conn, delivery_id, dead)
        if new is None or dead is None:
            return None
        log.info("delivery %s to %s/%s escalated from %s to %s", dead.id, dead.tenant, dead.recipient,
                 dead.channel, new.channel)
        return new.id

    def _escalate(self, conn: Connection, delivery_id: str, dead: Delivery | None = None) -> Delivery | None:
        """Write the delivery (and its message) continuing a dead one, in ``conn``; None when none is left."""
        if dead is None:
            dead = self.deliveries.get(delivery_id, conn)
        if dead is None:
            return None
        person = self.recipients.find(dead.tenant, dead.recipient, conn)
        if person is None or not person.active:
            return None
        channel = self._next_channel(dead, person, conn)
        if channel is None:
            return None
        now = now_iso()
        wait = 0.0 if dead.urgent else self._quiet_wait(person)
        new = replace(dead, id=str(uuid.uuid4()), channel=channel, parent=dead.id,
                      status=log_.DEFERRED if wait else log_.QUEUED, attempts=0,
                      last_error=f"escalated from {dead.channel}", created_at=now, updated_at=now,
                      sent_at=None)
        self.deliveries.add(conn, new)
        self.outbox.enqueue(conn, KIND, {"delivery": new.id}, tenant=new.tenant, key=new.id, delay_s=wait)
        return new

    # -- upkeep (a periodic job) -----------------------------------------------------------------------------

    def reconcile(self, grace_s: float = 120.0, horizon_s: float = 7 * 86_400.0) -> int:
        """Repair log rows whose outbox outcome was never observed (a process died in between).

        Looks at deliveries the outbox finished more than ``grace_s`` ago (the observer's normal lag) and
        less than ``horizon_s`` ago, while the log still calls them open."""
        now = time.time()
        t, d = outbox_table, log_.table
        missed = (
            sa.select(t.c.key, t.c.status, t.c.attempts, t.c.last_error)
            .join(d, d.c.id == t.c.key)
            .where(t.c.kind == KIND, t.c.status.in_([DONE, DEAD]), t.c.done_at < now - grace_s,
                   t.c.done_at > now - horizon_s, d.c.status.in_(log_.OPEN))
            .limit(500)
        )
        batches = (
            sa.select(t.c.id, t.c.kind, t.c.tenant, t.c.key, t.c.payload, t.c.attempts, t.c.created_at,
                      t.c.last_error)
            .where(t.c.kind == KIND, t.c.status == DEAD, t.c.key.like("batch:%"), t.c.done_at < now - grace_s,
                   t.c.done_at > now - horizon_s)
            .limit(50)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(missed).all()
            dead_batches = conn.execute(batches).all()
        for b in dead_batches:  # a batch that failed for good: its deliveries still queued go dead
            self._batch_dead(Message(b.id, b.kind, b.tenant, b.key, b.payload, b.attempts, b.created_at),
                             b.last_error)
        for row in rows:
            if row.status == DONE:
                self.deliveries.mark(row.key, log_.SENT, attempts=row.attempts + 1)
            else:
                self._dead(row.key, row.attempts, row.last_error)
        return len(rows)

    def prune(self, keep_days: int) -> int:
        return self.deliveries.prune(iso(datetime.now(UTC) - timedelta(days=keep_days)))


class _Outcome:
    """What became of a batch's deliveries."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.failed: list[tuple[Delivery, str]] = []
        self.deferred: list[tuple[Delivery, float, str]] = []
        self.dead: list[tuple[Delivery, str]] = []
