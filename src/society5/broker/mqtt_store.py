"""Writing MQTT messages into the broker, a batch at a time, and keeping the ones that fail as dead letters.

A batch becomes one ``batch_upsert`` per tenant, through the broker's Python API (the same validation,
permissions, history and subscription listeners as an HTTP write). Several messages for one entity are
merged into one upsert: the entity takes, per attribute, the latest observation (by ``observedAt``; an older
observation arriving late never overwrites a newer current value), and every observation goes to history.

Duplicates are harmless: history is written the way the temporal API writes it, replacing any instance of the
same attribute with the same ``observedAt`` (a QoS 1 re-delivery, even a late one, leaves one instance), and
an instance equal to the attribute's current one (a re-delivery of a message without ``observedAt``) is not
recorded again.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from society5.broker.core import Broker
from society5.broker.jsonld import ActiveContext
from society5.broker.mqtt_topics import DEFAULT_PREFIX, MqttMessageError, ParsedMessage, parse_message
from society5.broker.temporal import _PENDING, PendingInstance
from society5.core.auth import Principal
from society5.core.db import metadata
from society5.core.errors import ApiError, Forbidden
from society5.core.timeutil import now_iso, parse_iso

log = logging.getLogger(__name__)

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

dead_letters = sa.Table(
    "broker_mqtt_dead_letters",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("received_at", sa.String(32), nullable=False),
    sa.Column("tenant", sa.String(64)),
    sa.Column("topic", sa.Text, nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("error", sa.Text, nullable=False),
)

_SYS_KEYS = ("createdAt", "modifiedAt")


@dataclass
class Incoming:
    """One received message; ``mid``/``qos``/``generation`` let the bridge acknowledge it after the commit."""

    topic: str
    payload: bytes
    received_at: str = field(default_factory=now_iso)
    mid: int = 0
    qos: int = 0
    generation: int = 0


@dataclass
class WriteReport:
    values: int = 0  # attribute instances written to history
    entities: int = 0
    dead: int = 0


class WritePolicy:
    """Who the bridge writes as, per tenant (``SOCIETY5_MQTT_TENANTS``; see docs/mqtt.md).

    Without a mapping the bridge writes as an operator of whichever existing tenant a topic names. With one,
    only the tenants it lists, each as a device limited to the entity-id prefix given ("" = any id). The
    bridge never creates tenants: an admin does.
    """

    def __init__(self, tenants: dict[str, str] | None = None):
        self.tenants = dict(tenants or {})
        self._cache: dict[str, Principal] = {}

    def principal(self, tenant: str) -> Principal:
        found = self._cache.get(tenant)
        if found is not None:
            return found
        if self.tenants and tenant not in self.tenants:
            raise Forbidden(f"MQTT may not write to tenant {tenant!r} (it is not in SOCIETY5_MQTT_TENANTS)")
        prefix = self.tenants.get(tenant) or ""
        if prefix:
            found = Principal(role="device", tenant=tenant, entity_prefix=prefix, name="mqtt")
        else:
            found = Principal(role="operator", tenant=tenant, name="mqtt")
        self._cache[tenant] = found
        return found


class DeadLetters:
    """Messages that could not be stored: kept (newest ``keep``), logged, shown to admins."""

    def __init__(self, engine: Engine, payload_limit: int = 4096, keep: int = 10_000):
        self.engine = engine
        self.payload_limit = payload_limit
        self.keep = keep
        self._added = 0
        self._lock = threading.Lock()

    def add(self, items: Sequence[tuple[Incoming, str | None, str]]) -> None:
        if not items:
            return
        rows = [
            {"received_at": m.received_at, "tenant": tenant, "topic": m.topic[:1024],
             "payload": self._text(m.payload), "error": error[:2000]}
            for m, tenant, error in items
        ]
        for m, _tenant, error in items[:10]:
            log.warning("MQTT message on %s rejected: %s", m.topic, error)
        if len(items) > 10:
            log.warning("%d more MQTT messages rejected in the same batch", len(items) - 10)
        with self.engine.begin() as conn:
            conn.execute(dead_letters.insert(), rows)
            with self._lock:
                self._added += len(rows)
                prune = self._added >= 100
                if prune:
                    self._added = 0
            if prune:
                self._prune(conn)

    def _prune(self, conn: sa.Connection) -> None:
        cutoff = conn.execute(
            sa.select(dead_letters.c.id).order_by(dead_letters.c.id.desc()).offset(self.keep).limit(1)
        ).scalar()
        if cutoff is not None:
            conn.execute(dead_letters.delete().where(dead_letters.c.id <= cutoff))

    def _text(self, payload: bytes) -> str:
        text = payload[: self.payload_limit * 4].decode("utf-8", errors="replace").replace("\x00", "\ufffd")
        if len(text) > self.payload_limit or len(payload) > self.payload_limit * 4:
            return text[: self.payload_limit] + f"… ({len(payload)} bytes)"
        return text

    def list(self, tenant: str | None = None, limit: int = 100,
             offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        """The newest first, and the total count."""
        where = [] if tenant is None else [dead_letters.c.tenant == tenant]
        with self.engine.connect() as conn:
            total = conn.execute(sa.select(sa.func.count()).select_from(dead_letters).where(*where)).scalar()
            rows = conn.execute(
                sa.select(dead_letters).where(*where).order_by(dead_letters.c.id.desc())
                .limit(limit).offset(offset)
            ).mappings()
            return [dict(r) for r in rows], int(total or 0)


class MqttWriter:
    """Turns a batch of received messages into broker writes and dead letters (thread-compatible, not safe:
    one writer per bridge)."""

    def __init__(self, broker: Broker, policy: WritePolicy | None = None, prefix: str = DEFAULT_PREFIX,
                 payload_limit: int = 4096):
        self.broker = broker
        self.policy = policy or WritePolicy()
        self.prefix = prefix
        self.dead_letters = DeadLetters(broker.engine, payload_limit)

    def write(self, batch: Sequence[Incoming]) -> WriteReport:
        """Store a batch (one transaction per tenant). Invalid messages become dead letters; database errors
        propagate, and the caller retries the whole batch: writing a message again changes nothing."""
        ctx = self.broker.context()
        now = now_iso()
        report = WriteReport()
        dead: list[tuple[Incoming, str | None, str]] = []
        by_tenant: dict[str, list[tuple[Incoming, ParsedMessage]]] = {}
        types: dict[str, list[str]] = {}
        for m in batch:
            try:
                parsed = parse_message(m.topic, m.payload, ctx, now, self.prefix, types)
                self.policy.principal(parsed.tenant).check_write(parsed.tenant, parsed.entity_id)
            except ApiError as err:
                dead.append((m, _tenant_of(m.topic, self.prefix), err.detail))
                continue
            by_tenant.setdefault(parsed.tenant, []).append((m, parsed))
        for tenant, items in by_tenant.items():
            self._write_tenant(tenant, items, ctx, report, dead)
        self.dead_letters.add(dead)
        report.dead = len(dead)
        return report

    def _write_tenant(self, tenant: str, items: list[tuple[Incoming, ParsedMessage]], ctx: ActiveContext,
                      report: WriteReport, dead: list[tuple[Incoming, str | None, str]]) -> None:
        principal = self.policy.principal(tenant)
        try:
            self.broker.tenant_for_write(tenant, principal)
        except ApiError as err:
            dead.extend((m, tenant, err.detail) for m, _ in items)
            return
        groups: dict[str, list[tuple[Incoming, ParsedMessage]]] = {}
        for m, parsed in items:
            groups.setdefault(parsed.entity_id, []).append((m, parsed))
        with self.broker.engine.connect() as conn:
            current = self.broker.store.get_many(conn, tenant, list(groups))
        payloads: list[dict[str, Any]] = []
        pending: dict[tuple[str, str], list[PendingInstance]] = {}
        counts: dict[str, int] = {}
        for eid, msgs in groups.items():
            entity, record, plain = _merge(eid, [p for _, p in msgs], current.get(eid), ctx)
            if not record and _nothing_new(entity, current.get(eid), ctx):
                continue  # only re-deliveries of what is stored already
            payloads.append(entity)
            if not plain:
                pending[(tenant, eid)] = record
            counts[eid] = len(record)
        if not payloads:
            return
        token = _PENDING.set(pending)
        try:
            result = self.broker.batch_upsert(tenant, payloads, ctx, principal, mode="update")
        finally:
            _PENDING.reset(token)
        failed = dict(result.errors)
        for eid, problem in failed.items():
            dead.extend((m, tenant, problem.detail) for m, _ in groups.get(eid, ()))
        report.entities += len(result.success)
        report.values += sum(n for eid, n in counts.items() if eid not in failed)

    def write_each(self, batch: Sequence[Incoming]) -> WriteReport:
        """The fallback after an unexpected error: one message at a time; a message that still fails
        becomes a dead letter instead of blocking the ones behind it."""
        import sqlalchemy.exc as sa_exc

        total = WriteReport()
        for m in batch:
            try:
                one = self.write([m])
            except (sa_exc.OperationalError, sa_exc.InterfaceError):
                raise
            except Exception as err:
                log.exception("storing the MQTT message on %s failed", m.topic)
                self.dead_letters.add([(m, _tenant_of(m.topic, self.prefix), f"internal error: {err}")])
                total.dead += 1
                continue
            total.values += one.values
            total.entities += one.entities
            total.dead += one.dead
        return total


def _merge(eid: str, msgs: list[ParsedMessage], current: dict[str, Any] | None,
           ctx: ActiveContext) -> tuple[dict[str, Any], list[PendingInstance], bool]:
    """One upsert payload for the messages of an entity, the instances its history gets, and whether those
    are exactly the new current instances, each newer than the one it replaces (the common case: the
    history listener's own diff then records the same, without looking for same-time instances to replace).

    Per attribute instance (datasetId) the entity keeps the last one to arrive, unless both it and the one
    before carry ``observedAt`` and it is the older observation: a late message never hides a newer value.
    """
    types: list[str] = []
    scope: list[str] | None = None
    last: dict[tuple[str, str | None], dict[str, Any]] = {}
    for iri, instances in ((current or {}).get("attrs") or {}).items():
        for inst in instances:
            last[(iri, inst.get("datasetId"))] = inst
    stored = dict(last)
    latest: dict[tuple[str, str | None], tuple[str, Any, dict[str, Any]]] = {}
    record: dict[tuple[Any, ...], PendingInstance] = {}
    for n, msg in enumerate(msgs):
        types.extend(t for t in msg.types if t not in types)
        if msg.scope is not None:
            scope = msg.scope
        for iri, (raw, name, instances) in msg.attrs.items():
            raws = raw if len(instances) > 1 else [raw]
            for i, (one_raw, inst) in enumerate(zip(raws, instances, strict=True)):
                series = (iri, inst.get("datasetId"))
                before = latest[series][2] if series in latest else stored.get(series)
                if before is None or not _older(inst, before):
                    latest[series] = (name, one_raw, inst)
                # An observation equal to the stored one is a re-delivery; without observedAt, a value equal
                # to the one before it is no change (as over HTTP).
                observed = inst.get("observedAt")
                previous = stored.get(series) if observed else last.get(series)
                last[series] = inst
                if previous is not None and _same_content(previous, inst):
                    continue
                key = (series, observed) if observed else (series, n, i)
                record.pop(key, None)  # the same observation twice: the later copy counts
                record[key] = PendingInstance(iri, inst)
    entity: dict[str, Any] = {"id": eid, "type": [ctx.compact(t) for t in types]}
    chosen: dict[str, tuple[str, list[Any]]] = {}  # by IRI: two messages may name it differently
    for (iri, _ds), (name, one_raw, _inst) in latest.items():
        chosen.setdefault(iri, (name, []))[1].append(one_raw)
    for name, raws in chosen.values():
        entity[name] = raws[0] if len(raws) == 1 else raws
    if scope is not None:
        entity["scope"] = scope
    plain = len(record) == len(latest) and all(
        series in latest and latest[series][2] is p.inst and _newer(p.inst, stored.get(series))
        for (series, *_), p in record.items())
    return entity, list(record.values()), plain


def _newer(inst: dict[str, Any], than: dict[str, Any] | None) -> bool:
    """No instance of this series with the same observedAt can be in history yet."""
    if than is None or "observedAt" not in inst:
        return True
    return "observedAt" in than and _epoch(inst["observedAt"]) > _epoch(than["observedAt"])


def _older(inst: dict[str, Any], than: dict[str, Any]) -> bool:
    a, b = inst.get("observedAt"), than.get("observedAt")
    return a is not None and b is not None and _epoch(a) < _epoch(b)


@functools.lru_cache(maxsize=65536)
def _epoch(text: str) -> float:
    return parse_iso(text).timestamp()


def _nothing_new(entity: dict[str, Any], doc: dict[str, Any] | None, ctx: ActiveContext) -> bool:
    if doc is None:
        return False
    if "scope" in entity and entity["scope"] != doc.get("scope"):
        return False
    return all(ctx.expand(t) in doc["type"] for t in entity["type"])


def _same_content(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Equal apart from createdAt/modifiedAt (runs for every value received: no copies)."""
    for key, value in a.items():
        if key not in _SYS_KEYS and (key not in b or b[key] != value):
            return False
    return all(key in a or key in _SYS_KEYS for key in b)


def _tenant_of(topic: str, prefix: str) -> str | None:
    rest = topic[len(prefix) + 1 :] if topic.startswith(prefix + "/") else ""
    tenant = rest.split("/", 1)[0]
    return tenant[:64] or None


__all__ = ["DeadLetters", "Incoming", "MqttMessageError", "MqttWriter", "WritePolicy", "WriteReport",
           "dead_letters"]
