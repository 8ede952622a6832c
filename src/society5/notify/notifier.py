"""``Notifier``: "tell these recipients this message", delivered through the platform's outbox.

``tell`` renders the template in each recipient's language, writes one delivery per recipient (on the first
channel of the recipient's route) and enqueues one outbox message per delivery, all in one transaction:
the caller's, when it passes ``conn``. The outbox then calls ``handle`` for each delivery; ``observe`` keeps
the delivery log in step with the outbox and escalates a dead delivery to the recipient's next channel.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from society5.core.errors import BadRequest, NotFound
from society5.core.outbox import DEAD, DONE, PENDING, Defer, GiveUp, Message, Outbox
from society5.core.tables import outbox as outbox_table
from society5.core.timeutil import iso, now_iso
from society5.notify import deliveries as log_
from society5.notify.channels import Channel, Outgoing
from society5.notify.deliveries import Delivery, DeliveryLog
from society5.notify.quiet import parse_hhmm, quiet_wait, zone
from society5.notify.ratelimit import TokenBucket
from society5.notify.recipients import Recipient, RecipientStore
from society5.notify.templates import Rendered, TemplateError, TemplateRegistry, registry

log = logging.getLogger(__name__)

KIND = "notify.delivery"


class Notifier:
    def __init__(self, outbox: Outbox, channels: Mapping[str, Channel], *,
                 templates: TemplateRegistry = registry, limits: Mapping[str, TokenBucket] | None = None,
                 escalate_after: int = 5, clock: Callable[[], datetime] = lambda: datetime.now(UTC)):
        self.outbox = outbox
        self.engine = outbox.engine
        self.channels = dict(channels)
        self.templates = templates
        self.limits = dict(limits or {})
        self.escalate_after = escalate_after
        self.clock = clock
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
        request, now = str(uuid.uuid4()), now_iso()
        created: list[tuple[Delivery, float]] = []
        for person in people:
            route = [c for c in person.route() if c in self.channels and (channels is None or c in channels)]
            if not route:
                log.info("recipient %s/%s has no usable channel for %s", tenant, person.id, template)
                continue
            if personal is not None:
                text = self._render(template, {**context, **personal(person)}, person.language)
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
        self.outbox.enqueue_many(conn, [(KIND, {"delivery": d.id}, tenant, d.id, wait)
                                        for d, wait in created])
        return [d.id for d, _ in created]

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
        # One connection for both reads: a fan-out to thousands pays this per message.
        with self.engine.connect() as conn:
            delivery = self.deliveries.get(message.payload["delivery"], conn)
            if delivery is None or delivery.status in (log_.SENT, log_.DEAD):
                return  # pruned, or a duplicate after a crash: nothing left to do
            person = self.recipients.find(delivery.tenant, delivery.recipient, conn)
        if person is None or not person.active:
            raise GiveUp(f"recipient {delivery.recipient!r} was removed or deactivated")
        address = person.channels.get(delivery.channel)
        channel = self.channels.get(delivery.channel)
        if address is None or channel is None:
            raise GiveUp(f"recipient {person.id!r} has no {delivery.channel} address any more")
        if not delivery.urgent:
            self._defer_if(self._quiet_wait(person), delivery, "quiet hours")
        bucket = self.limits.get(delivery.channel)
        if bucket is not None:
            self._defer_if(bucket.take(delivery.id), delivery, f"{delivery.channel} rate limit")
        out = Outgoing(
            delivery_id=delivery.id, tenant=delivery.tenant, recipient_id=person.id,
            recipient_name=person.name, address=address, template=delivery.template, lang=delivery.lang,
            title=delivery.title, text=delivery.body_text, html=delivery.body_html, urgent=delivery.urgent,
            secret=person.webhook_secret)
        try:
            channel.send(out)
        except Defer as defer:  # the receiver asked us to wait (e.g. 429 with Retry-After)
            self.deliveries.mark(delivery.id, log_.DEFERRED, last_error=str(defer))
            raise
        except GiveUp:
            raise
        except Exception as err:
            # Escalate early when another channel can take over; the last channel keeps the outbox's full
            # retry schedule, so an outage of the only way to reach someone does not lose the message.
            if message.attempts + 1 >= self.escalate_after and self._next_channel(delivery, person):
                raise GiveUp(f"{type(err).__name__}: {err} (after {message.attempts + 1} attempts)") from err
            raise
        # Marked sent by observe_sent, with the rest of the outbox's batch, once the outbox recorded it done.

    def _defer_if(self, wait: float, delivery: Delivery, reason: str) -> None:
        if wait > 0:
            if delivery.status != log_.DEFERRED or delivery.last_error != reason:
                self.deliveries.mark(delivery.id, log_.DEFERRED, last_error=reason)
            raise Defer(wait, reason)

    def observe(self, message: Message, status: str, error: str | None) -> None:
        if message.kind != KIND:
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
                if m.kind == KIND and status == DONE]
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
        log.info("delivery %s to %s/%s escalated from %s to %s", dead.id, dead.tenant, dead.recipient,
                 dead.channel, channel)
        return new.id

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
        with self.engine.connect() as conn:
            rows = conn.execute(missed).all()
        for row in rows:
            if row.status == DONE:
                self.deliveries.mark(row.key, log_.SENT, attempts=row.attempts + 1)
            else:
                self._dead(row.key, row.attempts, row.last_error)
        return len(rows)

    def prune(self, keep_days: int) -> int:
        return self.deliveries.prune(iso(datetime.now(UTC) - timedelta(days=keep_days)))
