"""Subscriptions at run time: matching every entity change, throttling, delivery, status, periodic sends.

- :meth:`Notifier.on_changes` is a broker changes listener (:meth:`Notifier.on_change` for each change):
  inside the write's transaction it enqueues one outbox message (kind ``ngsi-ld.notification``) per matching
  subscription, so a notification exists exactly when its change does.
- :meth:`Notifier.deliver` is that kind's outbox handler: POST to ``http(s)://`` endpoints, publish to
  ``mqtt(s)://host:port/topic`` ones (§7.3 body ``{"metadata": headers, "body": notification}``). A 2xx is
  success; a 4xx other than 408/429 can never succeed and is given up; anything else is retried with backoff.
  Each attempt is counted in the subscription's status members (``timesSent``, ``lastSuccess`` …).
- :meth:`Notifier.periodic` sends ``timeInterval`` subscriptions their matching entities (a job, each second).
- :meth:`Notifier.subscribe` registers an in-process subscriber: same filters, same matching code; its
  callback runs from the outbox (kind ``ngsi-ld.local.<name>``): only after commit, retried on failure.

Throttling coalesces: the first notification of a gap goes at once; later ones in the gap merge (latest state
of each entity) into one message due when the gap ends, so nothing is lost and the receiver never gets more
than one per gap. The gap is tracked in memory per process: with several processes each keeps its own, and
a change that is rolled back may still open a gap (the next notification then waits for its end).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from society5.broker import subscriptions as model
from society5.broker.core import Broker
from society5.broker.jsonld import link_header
from society5.broker.store import EntityQuery
from society5.broker.subscriptions_match import (
    JSONLD,
    Change,
    Compiled,
    change_notification,
    compile_doc,
    notification,
    triggers_fired,
)
from society5.broker.subscriptions_store import SubscriptionStore
from society5.core.auth import DEFAULT_TENANT
from society5.core.errors import BadRequest
from society5.core.outbox import PENDING, GiveUp, Message, Outbox
from society5.core.tables import outbox as outbox_table
from society5.core.timeutil import now_iso

log = logging.getLogger(__name__)

LOCAL_PREFIX = "ngsi-ld.local."
HTTP_TIMEOUT_S = 5.0
PERIODIC_LIMIT = 1000  # entities per periodic notification; more are sent as further notifications
Callback = Callable[[dict[str, Any]], object]


class LocalSubscription:
    """An in-process subscriber; ``cancel()`` stops it (messages already queued are not delivered)."""

    def __init__(self, notifier: Notifier, compiled: Compiled):
        self.notifier = notifier
        self.compiled = compiled

    @property
    def kind(self) -> str:
        return self.compiled.kind

    def cancel(self) -> None:
        self.notifier._cancel(self)


class Notifier:
    def __init__(self, broker: Broker, store: SubscriptionStore, outbox: Outbox):
        self.broker = broker
        self.store = store
        self.outbox = outbox
        self._local: list[Compiled] = []
        self._next_allowed: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()
        self._client: Any = None

    # -- matching (inside the write's transaction) -----------------------------------------------------------
    def on_changes(self, conn: Connection, tenant: str,
                   changes: Sequence[tuple[dict[str, Any] | None, dict[str, Any] | None]]) -> None:
        """Broker changes listener: :meth:`on_change` for each change of one write; nothing per change when
        no subscription can match in this tenant (the common case)."""
        if not self.store.index(conn, tenant).by_id and not any(
                c.tenant in (None, tenant) for c in self._local):
            return
        for old, new in changes:
            self.on_change(conn, tenant, old, new)

    def on_change(self, conn: Connection, tenant: str, old: dict[str, Any] | None,
                  new: dict[str, Any] | None) -> None:
        local = [c for c in self._local if c.tenant in (None, tenant)]
        index = self.store.index(conn, tenant)
        if not index.by_id and not local:
            return
        types = set((old or {}).get("type", ())) | set((new or {}).get("type", ()))
        candidates = index.candidates(types) + [c for c in local if _may_match(c, types)]
        if not candidates:
            return
        change = Change.of(tenant, old, new)
        now = time.time()

        def loader(ids: list[str]) -> dict[str, dict[str, Any]]:
            return self.broker.store.get_many(conn, tenant, ids)

        for sub in candidates:
            if sub.interval is not None or not sub.active(now):
                continue
            try:
                fired = triggers_fired(sub, change)
                body = change_notification(sub, change, fired, loader) if fired else None
            except SQLAlchemyError:
                raise  # the write's transaction is broken: the write must fail too
            except Exception:  # a bug with one subscription must not refuse the client's write
                log.exception("subscription %s: matching %s failed", sub.id, change.state.get("id"))
                continue
            if body is not None:
                self._enqueue(conn, tenant, sub, body, now)

    def _enqueue(self, conn: Connection, tenant: str, sub: Compiled, body: dict[str, Any],
                 now: float) -> None:
        payload = {"notification": body, "accept": sub.accept, "link": sub.link_context()}
        if sub.throttling <= 0:
            self.outbox.enqueue(conn, sub.kind, payload, tenant=tenant, key=sub.id)
            return
        key = (tenant, sub.id)
        # The lock covers the decision only, never database work (which could wait on another writer).
        with self._lock:
            allowed = self._next_allowed.get(key, 0.0)
            if now >= allowed:
                self._next_allowed[key] = now + sub.throttling
        if now >= allowed:
            self.outbox.enqueue(conn, sub.kind, payload, tenant=tenant, key=sub.id)
        elif not self._coalesce(conn, tenant, sub, payload, now):
            self.outbox.enqueue(conn, sub.kind, payload, tenant=tenant, key=sub.id, delay_s=allowed - now)
            with self._lock:
                if self._next_allowed.get(key) == allowed:
                    self._next_allowed[key] = allowed + sub.throttling

    @staticmethod
    def _coalesce(conn: Connection, tenant: str, sub: Compiled, payload: dict[str, Any], now: float) -> bool:
        """Merge into the message already waiting for the end of the throttling gap, if there is one."""
        t = outbox_table.c
        waiting = (t.kind == sub.kind, t.tenant == tenant, t.key == sub.id, t.status == PENDING,
                   t.claimed_by.is_(None), t.attempts == 0, t.next_at > now)
        row = conn.execute(sa.select(t.id, t.payload).where(*waiting).order_by(t.id.desc()).limit(1)).first()
        if row is None:
            return False
        merged = dict(row.payload)
        fresh = payload["notification"]
        ids = {d.get("id") for d in fresh["data"]}
        note = dict(merged["notification"])
        note["data"] = [d for d in note["data"] if d.get("id") not in ids] + fresh["data"]
        note["notifiedAt"] = fresh["notifiedAt"]
        merged["notification"] = note
        done = conn.execute(sa.update(outbox_table).where(t.id == row.id, t.claimed_by.is_(None))
                            .values(payload=merged)).rowcount
        return bool(done)

    # -- delivery (outbox worker threads) --------------------------------------------------------------------
    def _current(self, tenant: str, sid: str) -> Compiled | None:
        sub = self.store.compiled(tenant, sid)
        if sub is None:  # maybe created by another process since this one last looked
            self.store.invalidate(tenant)
            sub = self.store.compiled(tenant, sid)
        return sub

    def deliver(self, message: Message) -> None:
        sub = self._current(message.tenant, message.key)
        if sub is None or sub.endpoint is None or not sub.active(time.time()):
            return  # deleted, paused or expired since: the subscriber no longer wants it
        payload = message.payload
        body = {**payload["notification"], "notifiedAt": now_iso()}
        accept = payload.get("accept", sub.accept)
        headers = {i["key"]: i["value"] for i in sub.endpoint.get("receiverInfo", ())}
        headers["Content-Type"] = accept
        if accept != JSONLD:
            headers["Link"] = link_header(payload.get("link") or sub.link_context())
        if message.tenant != DEFAULT_TENANT:
            headers["NGSILD-Tenant"] = message.tenant
        uri = sub.endpoint["uri"]
        # The status members are counted here rather than by an outbox observer (which runs after the outbox
        # has recorded the outcome in the database): a receiver may read timesSent the moment it has the
        # notification, and must find it counted.
        try:
            if urlsplit(uri).scheme in ("mqtt", "mqtts"):
                self._publish(sub, uri, headers, body)
            else:
                timeout = sub.endpoint.get("timeout")
                self._post(uri, headers, body, timeout / 1000 if timeout else HTTP_TIMEOUT_S)
        except Exception:
            self.store.record(message.tenant, sub.id, False, now_iso())
            raise
        self.store.record(message.tenant, sub.id, True, now_iso())

    def _post(self, uri: str, headers: dict[str, str], body: dict[str, Any], timeout: float) -> None:
        import httpx

        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = httpx.Client(timeout=HTTP_TIMEOUT_S, follow_redirects=False)
        resp = self._client.post(uri, content=orjson.dumps(body), headers=headers, timeout=timeout)
        if 200 <= resp.status_code < 300:
            return
        if 400 <= resp.status_code < 500 and resp.status_code not in (408, 429):
            raise GiveUp(f"{uri} answered {resp.status_code}: the notification can never be accepted")
        raise ConnectionError(f"{uri} answered {resp.status_code}")

    @staticmethod
    def _publish(sub: Compiled, uri: str, headers: dict[str, str], body: dict[str, Any]) -> None:
        from society5.core.mqtt_publish import publish

        info = {i["key"]: i["value"] for i in (sub.endpoint or {}).get("notifierInfo", ())}
        qos = int(info.get("MQTT-QoS", "0"))
        publish(uri, orjson.dumps({"metadata": headers, "body": body}), qos=qos)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # -- periodic notifications (timeInterval) ---------------------------------------------------------------
    def periodic(self) -> int:
        """Send every due ``timeInterval`` subscription its matching entities; returns how many were due."""
        now = time.time()
        due = self.store.due(now)
        for tenant, sid, seen in due:
            with self.broker.engine.begin() as conn:
                sub = self.store.index(conn, tenant).by_id.get(sid)
                interval = sub.interval if sub is not None and sub.interval else None
                if interval is None:
                    continue
                # Runs missed while no process was up are not made up for: the next one is a full interval on.
                following = seen + interval if seen + interval > now else now + interval
                if not self.store.claim(conn, tenant, sid, seen, following):
                    continue  # another process took this run
                if sub is not None and sub.active(now):
                    self._send_current(conn, tenant, sub)
        return len(due)

    def _send_current(self, conn: Connection, tenant: str, sub: Compiled) -> None:
        docs: dict[str, dict[str, Any]] = {}
        for sel in sub.selectors or (None,):
            query = EntityQuery(q=sub.q, geo=sub.geo, scope=sub.scope, limit=PERIODIC_LIMIT)
            if sel is not None:
                query.ids = sorted(sel.ids) if sel.ids is not None else None
                query.id_pattern = sel.pattern.pattern if sel.ids is None and sel.pattern else None
                query.types = list(sel.types) if sel.types is not None else None
            for doc in self.broker.store.query(conn, tenant, query).docs:
                docs.setdefault(doc["id"], doc)

        def loader(ids: list[str]) -> dict[str, dict[str, Any]]:
            return self.broker.store.get_many(conn, tenant, ids)

        renderer = sub.renderer(loader)
        data: list[dict[str, Any]] = []
        for doc in docs.values():
            out = renderer.render(doc)
            data.extend(out if isinstance(out, list) else [out])
        if sub.accept == JSONLD:
            data = [{**d, "@context": sub.context_source} for d in data]
        for start in range(0, len(data), PERIODIC_LIMIT):
            body = notification(sub, data[start:start + PERIODIC_LIMIT])
            self.outbox.enqueue(conn, sub.kind, {"notification": body, "accept": sub.accept,
                                                 "link": sub.link_context()}, tenant=tenant, key=sub.id)

    # -- in-process subscribers ------------------------------------------------------------------------------
    def subscribe(self, name: str, callback: Callback, *, tenant: str | None = None, type: str | None = None,
                  id: str | None = None, id_pattern: str | None = None, watched: list[str] | None = None,
                  triggers: list[str] | None = None, q: str | None = None, scope_q: str | None = None,
                  geo_q: dict[str, Any] | None = None, attrs: list[str] | None = None,
                  fmt: str = "normalized", context: Any = None, show_changes: bool = False,
                  sys_attrs: bool = False) -> LocalSubscription:
        """Call ``callback(notification)`` after each committed change that matches, as an HTTP subscription
        with the same members would be notified. ``name`` must be unique and stable across restarts: pending
        calls are kept under it in the outbox and made after a restart once it is subscribed again."""
        if not name or len(LOCAL_PREFIX + name) > 64:
            raise BadRequest("an in-process subscriber needs a name of at most 50 characters")
        selector = {k: v for k, v in (("type", type), ("id", id), ("idPattern", id_pattern)) if v}
        note: dict[str, Any] = {"format": fmt, "showChanges": show_changes, "sysAttrs": sys_attrs,
                                # never contacted: an in-process subscriber is called, not sent to
                                "endpoint": {"uri": "http://in-process.invalid/" + name}}
        if attrs:
            note["attributes"] = attrs
        payload: dict[str, Any] = {"type": "Subscription", "id": f"urn:ngsi-ld:Subscription:local:{name}",
                                   "notification": note}
        for member, value in (("entities", [selector] if selector else None), ("watchedAttributes", watched),
                              ("notificationTrigger", triggers), ("q", q), ("scopeQ", scope_q),
                              ("geoQ", geo_q)):
            if value is not None:
                payload[member] = value
        doc = model.parse(payload, self.broker.context(context), self.broker.contexts)
        compiled = compile_doc(tenant, doc, self.broker.context)
        compiled.kind, compiled.endpoint = LOCAL_PREFIX + name, None
        self.outbox.register(compiled.kind, lambda m: callback(m.payload["notification"]))
        with self._lock:
            self._local = [*self._local, compiled]
        return LocalSubscription(self, compiled)

    def _cancel(self, handle: LocalSubscription) -> None:
        with self._lock:
            self._local = [c for c in self._local if c is not handle.compiled]
        self.outbox.handlers.pop(handle.kind, None)


def _may_match(sub: Compiled, types: set[str]) -> bool:
    wanted = sub.index_types()
    return wanted is None or bool(wanted & types)


def periodic_job(platform: Any) -> None:
    """Job: periodic notifications of ``timeInterval`` subscriptions, and the delivery status counted."""
    notifier: Notifier | None = platform.parts.get("subscriptions")
    if notifier is not None:
        notifier.periodic()
        notifier.store.flush()
