"""Temporal evolution of entities (NGSI-LD temporal API, ETSI GS CIM 009 v1.8 §5.6.11–5.6.20, §5.7.3–5.7.4).

Recording: :meth:`TemporalStore.record_many` is a broker changes listener (:meth:`TemporalStore.record` for
each change). It runs inside the write transaction of
every entity operation and stores one row per attribute instance whose content changed (sys timestamps
aside), plus a deletion record (``deletedAt``) for each instance that disappeared, so history commits or rolls
back with the change itself.

The temporal API writes through the same path: ``POST /temporal/entities`` upserts the entity's current state
(the latest instance of each attribute) through the broker, and hands the listener the full list of instances
to record instead of the diff (a context variable, so both happen in one transaction).

Reading: the entities are selected on their current state (type, id, idPattern, q, geo, scope; a deleted
entity has no temporal representation), then each series (entity × attribute × datasetId) is read by one
index range scan, at most ``instance_limit`` instances a series. When that limit leaves instances out, the
answer is cut at one instant for all series, so that nothing inside the announced range is missing, and the
caller answers 206 with ``Content-Range: date-time <start>-<end>/<size>`` (§6.3.10).

Aggregation (§4.5.19) is computed by the database: ``GROUP BY`` a period bucket computed from epoch seconds;
only calendar periods (months, years) and non-numeric values fall back to Python.
"""

from __future__ import annotations

import functools
import math
import os
import re
import time
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from society5.broker.core import Broker
from society5.broker.jsonld import ActiveContext
from society5.broker.model import (
    NGSI_NULL,
    RESERVED,
    VALUE_MEMBER,
    EntityParser,
    Renderer,
    check_attr_name,
    check_datetime,
    check_uri,
    parse_order_by,
    parse_scopes,
    parse_types,
)
from society5.broker.store import EntityQuery
from society5.broker.temporal_staging import Staging
from society5.broker.temporal_tables import instances, series
from society5.core.auth import SUPERUSER, Principal
from society5.core.db import after_commit
from society5.core.errors import BadRequest, NotFound
from society5.core.timeutil import now_iso, parse_iso

INSTANCE_PREFIX = "urn:ngsi-ld:attribute:instance:"
# scope is temporal too (§4.18): its history is kept as a series of this pseudo-attribute.
SCOPE_IRI = "https://uri.etsi.org/ngsi-ld/scope"
DEFAULT_INSTANCE_LIMIT = 1000
AGGR_METHODS = ("totalCount", "distinctCount", "sum", "avg", "min", "max", "stddev", "sumsq")
TIME_PROPERTIES = ("observedAt", "createdAt", "modifiedAt", "deletedAt")
TIMERELS = ("before", "after", "between")
# The member that carries the values of one attribute type in the temporalValues form (§4.5.9).
TEMPORAL_MEMBER = {
    "Property": "values",
    "GeoProperty": "values",
    "Relationship": "objects",
    "LanguageProperty": "languageMaps",
    "ListProperty": "valueLists",
    "ListRelationship": "objectLists",
    "VocabProperty": "vocabs",
    "JsonProperty": "jsons",
}
_ORDER_MAX = 10_000  # orderBy sorts the selected entities in Python: at most this many
_BUFFER = "society5.temporal.buffer"  # Connection.info key of the rows waiting for the commit
_REPLACING = "s5.temporal.replacing"  # instances from the temporal API / MQTT: replace same-time ones
_BUFFER_MAX = 2000  # entity changes buffered before an early write (bounds the memory of huge batches)

# Instances the temporal API hands to the listener instead of the diff, keyed by (tenant, entity id).
_PENDING: ContextVar[dict[tuple[str, str], list[PendingInstance]] | None] = ContextVar("temporal_pending",
                                                                                        default=None)
# Entities whose deletion also erases their history (DELETE /temporal/entities/{id}).
_PURGE: ContextVar[set[tuple[str, str]] | None] = ContextVar("temporal_purge", default=None)


# --- parameters ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Period:
    """An ISO 8601 duration: calendar months plus fixed seconds (weeks, days, hours... are fixed)."""

    months: int = 0
    seconds: float = 0.0

    @property
    def is_zero(self) -> bool:
        return self.months == 0 and self.seconds == 0

    def add(self, start: datetime, times: int) -> datetime:
        moved = _add_months(start, self.months * times) if self.months else start
        return moved + timedelta(seconds=self.seconds * times)


_DURATION = re.compile(
    r"^P(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$"
)


def parse_duration(text: str) -> Period:
    """``PT1H``, ``P1D``, ``P1M``... → :class:`Period`; BadRequest for anything else."""
    match = _DURATION.match(text or "")
    if not match or text in ("P", "PT") or text.endswith("T"):
        raise BadRequest(f"aggrPeriodDuration {text!r} is not an ISO 8601 duration (e.g. PT1H, P1D)")
    y, mo, w, d, h, mi, s = match.groups()
    months = int(y or 0) * 12 + int(mo or 0)
    seconds = (int(w or 0) * 7 + int(d or 0)) * 86400 + int(h or 0) * 3600 + int(mi or 0) * 60 + float(s or 0)
    return Period(months, seconds)


@dataclass(frozen=True)
class TemporalQuery:
    """The temporal part of a query (``temporalQ``): a time range on one time property, and lastN."""

    timerel: str | None = None
    time_at: str | None = None
    end_time_at: str | None = None
    timeproperty: str = "observedAt"
    last_n: int | None = None

    @property
    def start(self) -> float | None:
        """Lower bound (epoch seconds) or None."""
        if self.timerel in ("after", "between") and self.time_at:
            return _epoch(self.time_at)
        return None

    @property
    def end(self) -> float | None:
        """Upper bound (epoch seconds) or None."""
        if self.timerel == "before" and self.time_at:
            return _epoch(self.time_at)
        if self.timerel == "between" and self.end_time_at:
            return _epoch(self.end_time_at)
        return None


def parse_temporal_query(timerel: Any = None, time_at: Any = None, end_time_at: Any = None,
                         timeproperty: Any = None, last_n: Any = None) -> TemporalQuery:
    """Validate the temporal parameters; every problem is a 400 BadRequestData saying what to fix."""
    if timerel is not None and timerel not in TIMERELS:
        raise BadRequest(f"timerel must be before, after or between, not {timerel!r}")
    if timerel is not None and not time_at:
        raise BadRequest(f"timerel={timerel} needs timeAt (an ISO 8601 date-time)")
    if timerel is None and time_at:
        raise BadRequest("timeAt needs timerel (before, after or between)")
    if timerel == "between" and not end_time_at:
        raise BadRequest("timerel=between needs endTimeAt (an ISO 8601 date-time)")
    for name, value in (("timeAt", time_at), ("endTimeAt", end_time_at)):
        if value is not None and value != "":
            check_datetime(value, name)
    if timerel == "between" and _epoch(end_time_at) <= _epoch(time_at):
        raise BadRequest("endTimeAt must be later than timeAt")
    prop = timeproperty or "observedAt"
    if prop not in TIME_PROPERTIES:
        raise BadRequest(f"timeproperty must be one of {', '.join(TIME_PROPERTIES)}, not {prop!r}")
    n: int | None = None
    if last_n is not None and last_n != "":
        try:
            n = int(last_n)
        except (TypeError, ValueError) as err:
            raise BadRequest(f"lastN must be a positive integer, not {last_n!r}") from err
        if n < 1:
            raise BadRequest(f"lastN must be a positive integer, not {n}")
    end = end_time_at or None if timerel == "between" else None
    return TemporalQuery(timerel, time_at or None, end, prop, n)


@dataclass(frozen=True)
class Aggregation:
    methods: tuple[str, ...]
    period: Period | None = None  # None: the whole time range is one period


def parse_aggregation(methods: Any, duration: Any) -> Aggregation:
    names = [m.strip() for m in methods.split(",")] if isinstance(methods, str) else list(methods or [])
    names = [m for m in names if m]
    if not names:
        raise BadRequest(f"aggregatedValues needs aggrMethods (some of {', '.join(AGGR_METHODS)})")
    unknown = [m for m in names if m not in AGGR_METHODS]
    if unknown:
        raise BadRequest(f"aggrMethods: unknown {', '.join(unknown)} (use {', '.join(AGGR_METHODS)})")
    period = parse_duration(duration) if duration else None
    return Aggregation(tuple(dict.fromkeys(names)), None if period is None or period.is_zero else period)


@dataclass
class TemporalRequest:
    """Everything that shapes one temporal answer besides the entity selection."""

    temporal: TemporalQuery = field(default_factory=TemporalQuery)
    fmt: str = "normalized"  # normalized | temporalValues | aggregatedValues
    aggregation: Aggregation | None = None
    attrs: set[str] | None = None  # expanded IRIs
    datasets: set[str] | None = None  # "@none" = the default instance
    sys_attrs: bool = False


# --- rows and results ---------------------------------------------------------------------------------------


@dataclass(slots=True)
class PendingInstance:
    attr: str
    inst: dict[str, Any]


@dataclass
class HistRow:
    """One recorded instance as read back, with its time on the requested time property."""

    instance_id: str
    inst: dict[str, Any]
    deleted: bool
    time: float
    time_text: str
    created_at: str
    modified_at: str


@dataclass
class SeriesResult:
    entity_id: str
    attr: str
    dataset_id: str  # "" = default instance
    rows: list[HistRow] = field(default_factory=list)
    cut: bool = False  # the instance limit left instances of this series out
    aggregates: dict[str, list[list[Any]]] | None = None
    kind: str = "Property"


@dataclass
class EntityHistory:
    doc: dict[str, Any]  # current state (id, type, scope, sys attrs)
    series: list[SeriesResult]


@dataclass
class TemporalResult:
    entities: list[EntityHistory]
    content_range: str | None = None
    count: int | None = None


# Built once: constructing the statement costs more than running it on the path every write takes.
_NEW_SIDS = "s5.temporal.new_sids"
_SQL_INSERT_SERIES = (f"INSERT INTO {series.name} (tenant, entity_id, attr, dataset_id) "
                      "VALUES (?, ?, ?, ?)")
_SERIES_LOOKUP = sa.select(series.c.sid, series.c.entity_id, series.c.attr, series.c.dataset_id).where(
    series.c.tenant == sa.bindparam("tenant"), series.c.entity_id.in_(sa.bindparam("ids", expanding=True)),
    series.c.attr.in_(sa.bindparam("attrs", expanding=True)))


# --- the store ----------------------------------------------------------------------------------------------


class TemporalStore:
    """History recording (a broker listener) and the temporal operations and queries."""

    def __init__(self, engine: Engine, broker: Broker, instance_limit: int = DEFAULT_INSTANCE_LIMIT,
                 staged: bool = True):
        if instance_limit < 1:
            raise ValueError("instance_limit must be at least 1")
        self.engine = engine
        self.broker = broker
        self.instance_limit = instance_limit
        self.sqlite = engine.dialect.name == "sqlite"
        # Series ids never change once made, so they are remembered: a sensor update then costs one insert.
        # Only a purge removes series; it clears this cache (other processes re-read after their next miss).
        self._sids: dict[tuple[str, str, str, str], int] = {}
        # New rows go to the staging table on SQLite (see temporal_staging), which is moved before any read.
        self.staging = Staging(engine, broker.db, enabled=staged)
        self.staging.expand = self._expand_log
        if not self.staging.enabled:
            self.staging.settle()  # rows staged while staging was on go first, or the write order breaks
        columns = ROW_COLUMNS
        marks = ["?"] * len(columns) if self.sqlite else ["%s"] * (len(columns) - 1) + ["%s::jsonb"]
        self._insert_sql = (f"INSERT INTO {self.staging.table.name} ({', '.join(columns)}) "
                            f"VALUES ({', '.join(marks)})")
        # The rows of one transaction are buffered on its connection and written just before it commits, so a
        # batch of 1,000 entities costs three statements rather than three per entity.
        sa.event.listen(engine, "commit", self._on_commit)
        sa.event.listen(engine, "rollback", self._discard)

    # -- recording -------------------------------------------------------------------------------------------
    def record(self, conn: Connection, tenant: str, old: dict[str, Any] | None,
               new: dict[str, Any] | None) -> None:
        """Broker change listener: record what changed, in the caller's transaction."""
        eid = (new or old or {}).get("id")
        if not eid:
            return
        key = (tenant, eid)
        if new is None:
            purge = _PURGE.get()
            if purge is not None and key in purge:
                self._flush(conn)
                self._purge(conn, tenant, eid)
                return
        now = (new or {}).get("modifiedAt") or now_iso()
        pending = _PENDING.get()
        if pending is not None and key in pending:
            self._flush_plain(conn)  # what came before is written first, so these replace it if need be
            items = pending.pop(key) + scope_changes(old, new, now)
            # Written at commit with the other entities of the batch: one DELETE + INSERT for all of them.
            conn.info.setdefault(_REPLACING, []).append((tenant, eid, items, now))
            return
        items = diff_instances(old, new, now) + scope_changes(old, new, now)
        if items:
            buffer = conn.info.setdefault(_BUFFER, [])
            buffer.append((tenant, eid, items, now))
            if len(buffer) >= _BUFFER_MAX:
                self._flush_plain(conn)

    def record_many(self, conn: Connection, tenant: str,
                    changes: Sequence[tuple[dict[str, Any] | None, dict[str, Any] | None]]) -> None:
        """Broker changes listener: :meth:`record` for every change of one write, without its per-change
        lookups in the common case (no purge, no temporal API write in progress)."""
        if _PURGE.get() is not None or _PENDING.get() is not None:
            for old, new in changes:
                self.record(conn, tenant, old, new)
            return
        buffer = conn.info.setdefault(_BUFFER, [])
        for old, new in changes:
            eid = (new or old or {}).get("id")
            if not eid:
                continue
            now = (new or {}).get("modifiedAt") or now_iso()
            items = diff_instances(old, new, now) + scope_changes(old, new, now)
            if items:
                buffer.append((tenant, eid, items, now))
                if len(buffer) >= _BUFFER_MAX:
                    self._flush_plain(conn)
                    buffer = conn.info.setdefault(_BUFFER, [])

    def _on_commit(self, conn: Connection) -> None:
        self._flush(conn)
        conn.info.pop(_NEW_SIDS, None)  # the transaction ends (Connection.info outlives it)

    def _flush(self, conn: Connection) -> None:
        replacing = conn.info.pop(_REPLACING, None)
        if replacing:
            self._write(conn, replacing, replace_same_time=True)
        self._flush_plain(conn)

    def _flush_plain(self, conn: Connection) -> None:
        buffer = conn.info.pop(_BUFFER, None)
        if not buffer:
            return
        if self.staging.enabled:  # one log row now; the rows when the log is expanded (temporal_staging)
            # As plain pairs: orjson took 6.5 ms for a batch's 5,000 slotted dataclasses, 0.8 ms for tuples.
            changes = [(t, e, [(p.attr, p.inst) for p in items], now) for t, e, items, now in buffer]
            self.staging.log(conn, changes, sum(len(items) for _t, _e, items, _now in buffer))
        else:
            self._write(conn, buffer, replace_same_time=False)

    def _expand_log(self, conn: Connection, changes: Sequence[Any]) -> None:
        """Write the history rows of log entries (what :meth:`_flush_plain` logged)."""
        batch = [(t, e, [PendingInstance(attr, inst) for attr, inst in items], now)
                 for t, e, items, now in changes]
        self._write(conn, batch, replace_same_time=False)

    def _discard(self, conn: Connection) -> None:
        conn.info.pop(_BUFFER, None)
        conn.info.pop(_REPLACING, None)
        conn.info.pop(_NEW_SIDS, None)

    def _write(self, conn: Connection, batch: Sequence[tuple[str, str, Sequence[PendingInstance], str]],
               replace_same_time: bool) -> None:
        count = sum(len(items) for _t, _e, items, _now in batch)
        if not count:
            return
        # Straight to the driver: SQLAlchemy's per-row parameter processing (or a dict per row) would cost
        # more than the insert itself.
        runs = self._rows(conn, batch, _uuid4s(count), literal_times=self.sqlite and not replace_same_time)
        if replace_same_time:
            # Re-sending an observation (same series, same observedAt) replaces it: updates are idempotent,
            # also within one batch (the last of two same-time instances wins).
            ((sql, rows),) = runs  # without literal times every row takes the general statement
            latest: dict[tuple[Any, Any], list[Any]] = {}
            timeless: list[list[Any]] = []
            for row in rows:
                if row[4] is None:  # no observedAt
                    timeless.append(row)
                else:
                    latest[(row[0], row[3])] = row
            runs = [(sql, timeless + list(latest.values()))]
            self._delete_same_time(conn, runs[0][1])
        if self.sqlite:  # inside SQLAlchemy's transaction, on the same connection (as the entity store does)
            driver: Any = conn.connection.driver_connection
            for sql, rows in runs:
                driver.executemany(sql, rows)
        else:
            for sql, rows in runs:
                conn.exec_driver_sql(sql, [tuple(row) for row in rows])

    def _rows(self, conn: Connection, batch: Sequence[tuple[str, str, Sequence[PendingInstance], str]],
              instance_ids: list[str], literal_times: bool) -> list[tuple[str, list[list[Any]]]]:
        """The insert statements of a flush and their rows, in order; consecutive rows of one statement are
        one run. With ``literal_times`` (SQLite) a plain instance (no observedAt, not a deletion, created by
        this write: what nearly every sensor update makes) goes through a statement that carries the
        write's time as literals, so each row binds 4 values instead of 11; SQLite's per-value binding made
        up about a third of a 1,000-entity batch's history insert. Other rows take the general statement.
        The series ids come from the cache (nearly always); rows of series it does not hold get theirs
        below."""
        cached = self._sids
        runs: list[tuple[str, list[list[Any]]]] = []
        unknown: list[tuple[list[Any], tuple[str, str, str, str]]] = []
        i = 0
        for t, e, items, now in batch:
            now_ts = _epoch(now)
            plain_sql = _plain_insert_sql(self.staging.table.name, now, now_ts) if literal_times else None
            for p in items:
                inst = p.inst
                key = (t, e, p.attr, inst.get("datasetId") or "")
                sid = cached.get(key) or 0
                row = _plain_row(sid, inst, now, instance_ids[i]) if plain_sql is not None else None
                sql = plain_sql if row is not None and plain_sql is not None else self._insert_sql
                if row is None:
                    row = list(_row_params(sid, inst, now, now_ts, instance_ids[i]))
                if not sid:
                    unknown.append((row, key))
                if runs and runs[-1][0] == sql:
                    runs[-1][1].append(row)
                else:
                    runs.append((sql, [row]))
                i += 1
        if unknown:
            sids = self._series_ids(conn, {key for _row, key in unknown})
            for row, key in unknown:
                row[0] = sids[key]
        return runs

    def _delete_same_time(self, conn: Connection, rows: Sequence[Sequence[Any]]) -> None:
        self.staging.settle(conn)
        live = (instances.c.deleted.is_(False), instances.c.observed_at.is_not(None))
        if not self.sqlite:
            # One statement per 500 instances: a DELETE per series cost a round trip each (a batch of MQTT
            # messages from 200 devices spent most of its time there). PostgreSQL turns the row-value list
            # into index lookups; SQLite would scan the table, so there each series keeps its own statement.
            keys = sorted({(r[0], r[3]) for r in rows if r[4] is not None})  # (sid, ts) of observations
            for start in range(0, len(keys), 500):
                pairs = sa.tuple_(instances.c.sid, instances.c.ts).in_(keys[start : start + 500])
                conn.execute(instances.delete().where(pairs, *live))
            return
        by_sid: dict[int, set[float]] = {}
        for r in rows:
            if r[4] is not None:  # observed_at
                by_sid.setdefault(r[0], set()).add(r[3])
        for sid, times in by_sid.items():
            same = (instances.c.sid == sid, instances.c.ts.in_(sorted(times)))
            conn.execute(instances.delete().where(*same, *live))

    def _series_ids(self, conn: Connection,
                    keys: set[tuple[str, str, str, str]]) -> dict[tuple[str, str, str, str], int]:
        """sid of each (tenant, entity, attr, datasetId), creating the series that are new."""
        c = series.c
        found: dict[tuple[str, str, str, str], int] = {}
        cached = self._sids
        for key in keys:
            sid = cached.get(key)
            if sid is not None:
                found[key] = sid
        if len(found) == len(keys):
            return found
        keys = keys - set(found)
        self._look_up_series(conn, keys, found)
        missing = sorted(keys - set(found))
        made = self._made_here(conn)
        if missing and self.sqlite:
            # Straight to the driver, then read the new ids back: SQLAlchemy's INSERT … RETURNING of a few
            # thousand rows (a batch of new entities) processed every row's parameters in Python and took a
            # third of the batch.
            driver: Any = conn.connection.driver_connection
            driver.executemany(_SQL_INSERT_SERIES, missing)
            new: dict[tuple[str, str, str, str], int] = {}
            self._look_up_series(conn, set(missing), new)
            found.update(new)
            made.update(new)
        elif missing:
            rows = [{"tenant": t, "entity_id": e, "attr": a, "dataset_id": d} for t, e, a, d in missing]
            insert = series.insert().returning(c.sid, c.tenant, c.entity_id, c.attr, c.dataset_id)
            for r in conn.execute(insert, rows):
                found[(r.tenant, r.entity_id, r.attr, r.dataset_id)] = made[
                    (r.tenant, r.entity_id, r.attr, r.dataset_id)] = r.sid
        self._remember({key: sid for key, sid in found.items() if key not in made})
        return found

    @staticmethod
    def _look_up_series(conn: Connection, keys: set[tuple[str, str, str, str]],
                        found: dict[tuple[str, str, str, str], int]) -> None:
        """Put the sid of each of ``keys`` that exists into ``found``."""
        by_tenant: dict[str, set[str]] = {}
        for tenant, eid, _attr, _ds in keys:
            by_tenant.setdefault(tenant, set()).add(eid)
        attrs = sorted({k[2] for k in keys})
        for tenant, eids in by_tenant.items():
            ids = sorted(eids)
            for i in range(0, len(ids), 500):
                params = {"tenant": tenant, "ids": ids[i : i + 500], "attrs": attrs}
                for sid, eid, attr, ds in conn.execute(_SERIES_LOOKUP, params):
                    if (tenant, eid, attr, ds) in keys:
                        found[(tenant, eid, attr, ds)] = sid

    def _made_here(self, conn: Connection) -> dict[tuple[str, str, str, str], int]:
        """The series this transaction created: cached only once its COMMIT has succeeded (a cached id
        whose row was never committed would send later history nowhere)."""
        made: dict[tuple[str, str, str, str], int] | None = conn.info.get(_NEW_SIDS)
        if made is None:
            made = conn.info[_NEW_SIDS] = {}
            after_commit(conn, lambda: self._remember(made))
        return made

    def _remember(self, sids: dict[tuple[str, str, str, str], int]) -> None:
        if len(self._sids) + len(sids) > 500_000:
            self._sids.clear()
        self._sids.update(sids)

    def _purge(self, conn: Connection, tenant: str, eid: str) -> None:
        self.staging.settle(conn)  # first: expanding the log may make series of this entity
        self._forget_series(conn, tenant, eid)
        sids = sa.select(series.c.sid).where(series.c.tenant == tenant, series.c.entity_id == eid)
        conn.execute(instances.delete().where(instances.c.sid.in_(sids)))
        conn.execute(series.delete().where(series.c.tenant == tenant, series.c.entity_id == eid))

    def _forget_series(self, conn: Connection, tenant: str, eid: str) -> None:
        """Before series of ``eid`` are deleted: no cached id may point at them afterwards."""
        self._sids.clear()
        made = conn.info.get(_NEW_SIDS)
        if made:
            for key in [k for k in made if k[0] == tenant and k[1] == eid]:
                del made[key]

    # -- temporal API writes ---------------------------------------------------------------------------------
    def upsert(self, tenant: str | None, payload: Any, ctx: ActiveContext,
               principal: Principal = SUPERUSER) -> bool:
        """Create or add to a temporal entity (§5.6.11). True when the entity was created."""
        if not isinstance(payload, dict):
            raise BadRequest("a temporal entity must be a JSON object")
        raw_id = payload.get("id", payload.get("@id"))
        if raw_id in (None, ""):
            raise BadRequest("id is missing: a temporal entity needs an id (a URI)")
        eid = check_uri(raw_id, "id")
        if "type" not in payload and "@type" not in payload:
            raise BadRequest("type is missing: every entity needs a type")
        parse_types(payload.get("type", payload.get("@type")), ctx)
        if "scope" in payload:
            parse_scopes(payload["scope"])
        name = self.broker.tenant_for_write(tenant, principal)
        return self._apply(name, eid, payload, ctx, principal)

    def append(self, tenant: str | None, entity_id: str, payload: Any, ctx: ActiveContext,
               principal: Principal = SUPERUSER) -> None:
        """Add attribute instances to an existing temporal entity (§5.6.12)."""
        check_uri(entity_id, "entity id")
        if not isinstance(payload, dict):
            raise BadRequest("the body must be a JSON object of attributes, each an array of instances")
        if "id" in payload and payload["id"] != entity_id:
            raise BadRequest(f"id in the body ({payload['id']}) differs from the id in the URL")
        name = self.broker.tenant_for_read(tenant)
        doc = self.broker.retrieve(name, entity_id, principal)
        body = {k: v for k, v in payload.items() if k not in ("id", "type", "@context")}
        self._apply(name, entity_id, {"id": entity_id, "type": doc["type"], **body}, ctx, principal)

    def _apply(self, tenant: str, eid: str, payload: dict[str, Any], ctx: ActiveContext,
               principal: Principal) -> bool:
        now = now_iso()
        parsed = parse_temporal_attrs(payload, ctx, now)
        with self.engine.connect() as conn:
            current = self.broker.store.get(conn, tenant, eid)
        entity: dict[str, Any] = {k: payload[k] for k in ("id", "type", "scope") if k in payload}
        entity.update(latest_state(parsed, current, ctx))
        pending = {(tenant, eid): [PendingInstance(iri, inst) for iri, pairs in parsed.items()
                                   for _raw, inst in pairs]}
        token = _PENDING.set(pending)
        try:
            result = self.broker.batch_upsert(tenant, [entity], ctx, principal, mode="update")
        finally:
            _PENDING.reset(token)
        if result.errors:
            raise result.errors[0][1]
        return eid in result.created

    def delete_entity(self, tenant: str | None, entity_id: str, principal: Principal = SUPERUSER) -> None:
        """Delete the entity and its whole history (§5.6.16)."""
        check_uri(entity_id, "entity id")
        name = self.broker.tenant_for_read(tenant)
        principal.check_write(name, entity_id)
        with self.engine.connect() as conn:
            exists = self.broker.store.get(conn, name, entity_id) is not None
        if exists:
            token = _PURGE.set({(name, entity_id)})
            try:
                self.broker.delete_entity(name, entity_id, principal)
            finally:
                _PURGE.reset(token)
            return
        with self.engine.begin() as conn:
            if not self._series_rows(conn, name, entity_id, None):
                raise NotFound(f"entity {entity_id} does not exist")
            self._purge(conn, name, entity_id)

    def delete_attr(self, tenant: str | None, entity_id: str, attr: str, dataset_id: str | None = None,
                    delete_all: bool = False, principal: Principal = SUPERUSER) -> None:
        """Delete the history of one attribute (§5.6.13): one datasetId (default: the default instance)."""
        name, _doc = self._existing(tenant, entity_id, principal)
        principal.check_write(name, entity_id)
        with self.engine.begin() as conn:
            self.staging.settle(conn)  # first: expanding the log may make the series
            rows = self._series_rows(conn, name, entity_id, {attr})
            if not delete_all:
                wanted = dataset_id or ""
                rows = [r for r in rows if r.dataset_id == wanted]
            if not rows:
                raise NotFound(f"entity {entity_id} has no temporal attribute {attr}"
                               + (f" with datasetId {dataset_id}" if dataset_id else ""))
            sids = [r.sid for r in rows]
            self._forget_series(conn, name, entity_id)
            conn.execute(instances.delete().where(instances.c.sid.in_(sids)))
            conn.execute(series.delete().where(series.c.sid.in_(sids)))

    def modify_instance(self, tenant: str | None, entity_id: str, attr: str, instance_id: str, payload: Any,
                        ctx: ActiveContext, principal: Principal = SUPERUSER) -> None:
        """Partial update of one recorded instance; it keeps its instanceId (§5.6.14)."""
        if not isinstance(payload, dict):
            raise BadRequest("the body must be a JSON object (an attribute instance)")
        name, _doc = self._existing(tenant, entity_id, principal)
        principal.check_write(name, entity_id)
        now = now_iso()
        with self.engine.begin() as conn:
            row = self._instance_row(conn, name, entity_id, attr, instance_id)
            merged = merge_instance(row.instance, payload, ctx, ctx.compact(attr), now)
            merged["datasetId"] = row.instance.get("datasetId")
            if merged["datasetId"] is None:
                del merged["datasetId"]
            values = _row(row.sid, merged, now, _epoch(now))
            values["instance_id"] = row.instance_id
            values["created_at"], values["created_ts"] = row.created_at, row.created_ts
            if values["observed_at"] is None:
                values["ts"] = row.ts  # without observedAt the instance keeps its place in time
            conn.execute(instances.update().where(instances.c.id == row.id).values(**values))

    def delete_instance(self, tenant: str | None, entity_id: str, attr: str, instance_id: str,
                        principal: Principal = SUPERUSER) -> None:
        """Delete one recorded instance (§5.6.15)."""
        name, _doc = self._existing(tenant, entity_id, principal)
        principal.check_write(name, entity_id)
        with self.engine.begin() as conn:
            row = self._instance_row(conn, name, entity_id, attr, instance_id)
            conn.execute(instances.delete().where(instances.c.id == row.id))

    def _existing(self, tenant: str | None, entity_id: str,
                  principal: Principal) -> tuple[str, dict[str, Any]]:
        check_uri(entity_id, "entity id")
        name = self.broker.tenant_for_read(tenant)
        return name, self.broker.retrieve(name, entity_id, principal)

    def _series_rows(self, conn: Connection, tenant: str, eid: str, attrs: set[str] | None) -> list[Any]:
        c = series.c
        stmt = sa.select(c.sid, c.entity_id, c.attr, c.dataset_id).where(c.tenant == tenant,
                                                                         c.entity_id == eid)
        if attrs is not None:
            stmt = stmt.where(c.attr.in_(sorted(attrs)))
        return list(conn.execute(stmt))

    def _instance_row(self, conn: Connection, tenant: str, eid: str, attr: str, instance_id: str) -> Any:
        self.staging.settle(conn)  # first: expanding the log may make the series
        sids = [r.sid for r in self._series_rows(conn, tenant, eid, {attr})]
        if not sids:
            raise NotFound(f"entity {eid} has no temporal attribute {attr}")
        row = conn.execute(sa.select(instances).where(
            instances.c.sid.in_(sids), instances.c.instance_id == instance_id)).first()
        if row is None:
            raise NotFound(f"attribute {attr} of {eid} has no instance {instance_id}")
        return row

    # -- reads -----------------------------------------------------------------------------------------------
    def retrieve(self, tenant: str | None, entity_id: str, request: TemporalRequest,
                 principal: Principal = SUPERUSER) -> TemporalResult:
        """The temporal representation of one entity (§5.7.3)."""
        check_uri(entity_id, "entity id")
        name = self.broker.tenant_for_read(tenant)
        doc = self.broker.retrieve(name, entity_id, principal)
        self.staging.settle()
        with self.engine.connect() as conn:
            known = self._series_map(conn, name, [entity_id], request.attrs)
            if request.attrs is not None and not known.get(entity_id) \
                    and not request.attrs & set(doc.get("attrs", {})):
                raise NotFound(f"entity {entity_id} has none of the attributes asked for")
            results = self._read(conn, known.get(entity_id, []), request)
        history = EntityHistory(doc, results)
        content_range = self._paginate(results, request)
        return TemporalResult([history], content_range)

    def query(self, tenant: str | None, query: EntityQuery, request: TemporalRequest,
              principal: Principal = SUPERUSER, order_by: str | None = None,
              ctx: ActiveContext | None = None) -> TemporalResult:
        """The temporal representations of the entities a query selects (§5.7.4).

        Entities are selected on their current state, ordered by id (or ``orderBy``); an entity without
        instances in the time range is left out, and ``limit``/``offset``/``count`` count the entities kept.
        """
        name = self.broker.tenant_for_read(tenant)
        limit, offset, want_count = query.limit, query.offset, query.count
        kept: list[EntityHistory] = []
        seen = 0
        self.staging.settle()
        with self.engine.connect() as conn:
            for docs in self._candidates(name, query, principal, order_by, ctx):
                known = self._series_map(conn, name, [d["id"] for d in docs], request.attrs)
                for doc in docs:
                    if len(kept) >= limit and not want_count:
                        break
                    sids = known.get(doc["id"], [])
                    if len(kept) >= limit or seen < offset:
                        if not self._has_rows(conn, sids, request):
                            continue
                        seen += 1
                        continue
                    results = self._read(conn, sids, request)
                    if not any(r.rows or r.aggregates for r in results):
                        continue
                    seen += 1
                    kept.append(EntityHistory(doc, results))
                if len(kept) >= limit and not want_count:
                    break
        content_range = self._paginate([r for e in kept for r in e.series], request)
        return TemporalResult(kept, content_range, seen if want_count else None)

    def _candidates(self, tenant: str, query: EntityQuery, principal: Principal, order_by: str | None,
                    ctx: ActiveContext | None) -> Iterator[list[dict[str, Any]]]:
        # Enough candidates for the page in one go, usually (some may have no instances in the range).
        chunk = min(500, max(50, 2 * (query.offset + query.limit)))
        if order_by:
            q = EntityQuery(**{**query.__dict__, "limit": _ORDER_MAX, "offset": 0, "count": False})
            docs = self.broker.query(tenant, q, principal).docs
            yield sort_entities(docs, order_by, ctx or self.broker.context())
            return
        start = 0
        while True:
            q = EntityQuery(**{**query.__dict__, "limit": chunk, "offset": start, "count": False})
            docs = self.broker.query(tenant, q, principal).docs
            if docs:
                yield docs
            if len(docs) < chunk:
                return
            start += chunk

    def _series_map(self, conn: Connection, tenant: str, eids: list[str],
                    attrs: set[str] | None) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {}
        if not eids:
            return out
        c = series.c
        stmt = sa.select(c.sid, c.entity_id, c.attr, c.dataset_id).where(c.tenant == tenant,
                                                                         c.entity_id.in_(eids))
        if attrs is not None:
            stmt = stmt.where(c.attr.in_(sorted(attrs)))
        for r in conn.execute(stmt.order_by(c.entity_id, c.attr, c.dataset_id)):
            out.setdefault(r.entity_id, []).append(r)
        return out

    def _select_series(self, sids: list[Any], request: TemporalRequest) -> list[Any]:
        if request.datasets is None:
            return sids
        return [s for s in sids if (s.dataset_id or "@none") in request.datasets]

    def _has_rows(self, conn: Connection, sids: list[Any], request: TemporalRequest) -> bool:
        chosen = self._select_series(sids, request)
        if not chosen:
            return False
        _col, where = self._where(request.temporal)
        stmt = sa.select(sa.literal(1)).where(instances.c.sid.in_([s.sid for s in chosen]), *where).limit(1)
        return conn.execute(stmt).first() is not None

    def _where(self, tq: TemporalQuery) -> tuple[Any, list[Any]]:
        c = instances.c
        col = {"observedAt": c.ts, "createdAt": c.created_ts, "modifiedAt": c.modified_ts,
               "deletedAt": c.modified_ts}[tq.timeproperty]
        where: list[Any] = [c.deleted.is_(tq.timeproperty == "deletedAt")]
        start, end = tq.start, tq.end
        # after is strictly after timeAt, before strictly before; between is [timeAt, endTimeAt).
        if tq.timerel == "after" and start is not None:
            where.append(col > start)
        elif tq.timerel == "between" and start is not None:
            where.append(col >= start)
        if end is not None:
            where.append(col < end)
        return col, where

    def _read(self, conn: Connection, sids: list[Any], request: TemporalRequest) -> list[SeriesResult]:
        results: list[SeriesResult] = []
        for s in self._select_series(sids, request):
            res = SeriesResult(s.entity_id, s.attr, s.dataset_id)
            if request.fmt == "aggregatedValues" and request.aggregation is not None:
                res.aggregates, res.kind = self._aggregate(conn, s.sid, request.temporal, request.aggregation)
                if res.aggregates is None:
                    continue
            else:
                res.rows, res.cut = self._fetch(conn, s.sid, request.temporal)
                if not res.rows:
                    continue
                res.kind = res.rows[-1].inst.get("type", "Property")
            results.append(res)
        return results

    def _fetch(self, conn: Connection, sid: int, tq: TemporalQuery) -> tuple[list[HistRow], bool]:
        col, where = self._where(tq)
        c = instances.c
        n = min(tq.last_n, self.instance_limit) if tq.last_n else self.instance_limit
        order = [col.desc(), c.id.desc()] if tq.last_n else [col.asc(), c.id.asc()]
        stmt = sa.select(c.instance_id, c.instance, c.deleted, c.observed_at, c.created_at, c.modified_at,
                         col.label("tval")).where(c.sid == sid, *where).order_by(*order).limit(n + 1)
        fetched = list(conn.execute(stmt))
        # lastN is what the client asked for: only the server's own limit makes the answer partial.
        cut = len(fetched) > n and (tq.last_n is None or tq.last_n > self.instance_limit)
        fetched = fetched[:n]
        if tq.last_n:
            fetched.reverse()
        rows = []
        for r in fetched:
            text = {"observedAt": r.observed_at or r.modified_at, "createdAt": r.created_at,
                    "modifiedAt": r.modified_at, "deletedAt": r.modified_at}[tq.timeproperty]
            rows.append(HistRow(r.instance_id, r.instance, r.deleted, float(r.tval), text, r.created_at,
                                r.modified_at))
        return rows, cut

    def _aggregate(self, conn: Connection, sid: int, tq: TemporalQuery,
                   agg: Aggregation) -> tuple[dict[str, list[list[Any]]] | None, str]:
        col, where = self._where(tq)
        c = instances.c
        base = [c.sid == sid, *where]
        # The attribute type of the latest instance; also tells whether the range holds anything (one seek).
        latest = conn.execute(sa.select(c.instance, col).where(*base).order_by(col.desc()).limit(1)).first()
        if latest is None:
            return None, "Property"
        kind = latest[0].get("type", "Property")
        # min() alone is an index seek; periods start at timeAt (after, between) or at the first instance.
        origin = tq.start if tq.start is not None else float(conn.execute(
            sa.select(sa.func.min(col)).where(*base)).scalar_one())
        span_end = tq.end if tq.end is not None else float(latest[1])
        period = agg.period
        out = None
        if period is None or period.months == 0:
            step = period.seconds if period else None
            out = self._aggregate_sql(conn, base, col, origin, step, agg.methods, span_end)
        if out is None:
            values = [(float(r[0]), r[1]) for r in conn.execute(
                sa.select(col, c.instance).where(*base).order_by(col))]
            out = aggregate_python(values, origin, span_end, period, agg.methods)
        if tq.last_n:
            out = {m: v[-tq.last_n:] for m, v in out.items()}
        return out, kind

    def _aggregate_sql(self, conn: Connection, base: list[Any], col: Any, origin: float, step: float | None,
                       methods: Sequence[str], span_end: float) -> dict[str, list[list[Any]]] | None:
        """Aggregates per period in one GROUP BY; None when some value is not a number (Python does those)."""
        c = instances.c
        if step is None:
            bucket: Any = sa.literal(0)
        elif self.sqlite and float(origin).is_integer() and float(step).is_integer():
            # Integer arithmetic on whole seconds (all times in range are >= origin, so / floors).
            bucket = (sa.cast(col, sa.Integer) - int(origin)) // int(step)
        elif self.sqlite:
            bucket = sa.cast((col - origin) / step, sa.Integer)
        else:
            bucket = sa.func.floor((col - origin) / step)
        v = c.value_num
        wanted = set(methods)
        cols = [bucket.label("b"), sa.func.count().label("n"), sa.func.count(v).label("nn")]
        if wanted & {"sum", "avg", "stddev"}:
            cols.append(sa.func.sum(v).label("s"))
        if "min" in wanted:
            cols.append(sa.func.min(v).label("mn"))
        if "max" in wanted:
            cols.append(sa.func.max(v).label("mx"))
        if wanted & {"sumsq", "stddev"}:
            cols.append(sa.func.sum(v * v).label("ss"))
        if "distinctCount" in wanted:
            cols.append(sa.func.count(sa.distinct(v)).label("nd"))
        stmt = sa.select(*cols).where(*base).group_by(sa.literal_column("b"))
        rows = sorted(conn.execute(stmt), key=lambda r: r.b)
        if wanted != {"totalCount"} and any(r.nn != r.n for r in rows):
            return None
        out: dict[str, list[list[Any]]] = {m: [] for m in methods}
        labels = [label.name for label in cols]
        for r in rows:
            got = dict(zip(labels, r, strict=True))
            start = origin + int(r.b) * step if step is not None else origin
            end = start + step if step is not None else span_end
            stats = _Stats(int(r.n), float(got.get("s") or 0), got.get("mn"), got.get("mx"),
                           float(got.get("ss") or 0), int(got.get("nd") or 0))
            period = [_iso(start), _iso(end)]
            for m in methods:
                value = stats.result(m)
                if value is not None:
                    out[m].append([value, *period])
        return out

    # -- pagination ------------------------------------------------------------------------------------------
    def _paginate(self, results: list[SeriesResult], request: TemporalRequest) -> str | None:
        return paginate(results, request.temporal)


# --- rendering ----------------------------------------------------------------------------------------------


class TemporalRenderer:
    """Turns an :class:`EntityHistory` into the normalized, temporalValues or aggregatedValues form."""

    def __init__(self, ctx: ActiveContext, *, fmt: str = "normalized", sys_attrs: bool = False,
                 lang: str | None = None, pick: set[str] | None = None, omit: set[str] | None = None):
        self.ctx = ctx
        self.fmt = fmt
        self.sys_attrs = sys_attrs
        self.lang = lang
        self.pick = pick
        self.omit = omit
        self.renderer = Renderer(ctx, fmt="normalized", sys_attrs=sys_attrs, lang=lang)

    def entity(self, history: EntityHistory) -> dict[str, Any]:
        doc = history.doc
        keys = ("id", "type", "scope", "createdAt", "modifiedAt")
        base: dict[str, Any] = {k: doc[k] for k in keys if k in doc}
        base["attrs"] = {}
        out = self.renderer.entity(base)
        by_attr: dict[str, list[SeriesResult]] = {}
        for res in history.series:
            by_attr.setdefault(res.attr, []).append(res)
        for iri, results in by_attr.items():
            name = self.ctx.compact(iri)
            if self.fmt == "normalized":
                rows = sorted((row for r in results for row in r.rows), key=lambda x: x.time)
                out[name] = [self.instance(row) for row in rows]
            else:
                parts = [self.series(r) for r in results]
                out[name] = parts[0] if len(parts) == 1 else parts
        if self.pick is not None:
            out = {k: v for k, v in out.items() if k in self.pick}
        if self.omit is not None:
            out = {k: v for k, v in out.items() if k not in self.omit}
        return out

    def instance(self, row: HistRow) -> dict[str, Any]:
        out: dict[str, Any] = self.renderer.instance(row.inst)
        out["instanceId"] = row.instance_id
        if row.deleted:
            out["deletedAt"] = row.inst.get("deletedAt", row.modified_at)
        if self.sys_attrs:
            out["createdAt"], out["modifiedAt"] = row.created_at, row.modified_at
        return out

    def series(self, res: SeriesResult) -> dict[str, Any]:
        kind = res.kind
        if kind == "LanguageProperty" and self.lang is not None:
            kind = "Property"
        out: dict[str, Any] = {"type": kind}
        if res.dataset_id:
            out["datasetId"] = res.dataset_id
        if res.aggregates is not None:
            out.update(res.aggregates)
            return out
        out[TEMPORAL_MEMBER.get(kind, "values")] = [[self._value(row), row.time_text] for row in res.rows]
        return out

    def _value(self, row: HistRow) -> Any:
        inst = row.inst
        kind = inst.get("type", "Property")
        value = inst.get(VALUE_MEMBER.get(kind, "value"))
        if kind == "LanguageProperty":
            if self.lang is not None and not row.deleted:
                return self.renderer.instance(inst).get("value")
            return {"languageMap": value}
        if kind == "VocabProperty":
            if isinstance(value, list):
                return {"vocab": [self.ctx.compact(v) for v in value]}
            return {"vocab": self.ctx.compact(value) if isinstance(value, str) else value}
        if kind == "JsonProperty":
            return {"json": value}
        if kind == "ListRelationship":
            return {"objectList": value}
        return value


# --- pure helpers -------------------------------------------------------------------------------------------


def paginate(results: list[SeriesResult], tq: TemporalQuery) -> str | None:
    """Cut every series at one instant when the instance limit left instances out; the Content-Range value.

    Without lastN instances run oldest → newest and the cut is the earliest "last instance" among the cut
    series; with lastN they run newest → oldest and the cut is the latest "oldest instance". Dropping the
    instances beyond the cut from all series means the announced range holds everything there is.
    """
    cut = [r for r in results if r.cut and r.rows]
    if not cut:
        return None
    if tq.last_n:
        edge = max((r.rows[0] for r in cut), key=lambda x: x.time)
        for r in results:
            r.rows = [x for x in r.rows if x.time >= edge.time]
        remaining = [x for r in results for x in r.rows]
        if tq.timerel == "before":
            start = tq.time_at or edge.time_text
        elif tq.timerel == "between":
            start = tq.end_time_at or edge.time_text
        else:
            start = max(remaining, key=lambda x: x.time).time_text
        return f"date-time {start}-{edge.time_text}/{tq.last_n}"
    edge = min((r.rows[-1] for r in cut), key=lambda x: x.time)
    for r in results:
        r.rows = [x for x in r.rows if x.time <= edge.time]
    remaining = [x for r in results for x in r.rows]
    if tq.timerel in ("after", "between"):
        start = tq.time_at or edge.time_text
    else:
        start = min(remaining, key=lambda x: x.time).time_text
    return f"date-time {start}-{edge.time_text}/*"


def diff_instances(old: dict[str, Any] | None, new: dict[str, Any] | None, now: str) -> list[PendingInstance]:
    """The instances a change created or altered (sys timestamps aside) and deletion records for the rest."""
    out: list[PendingInstance] = []
    old_attrs = old.get("attrs", {}) if old else {}
    new_attrs = new.get("attrs", {}) if new else {}
    # The attributes in the order of the old document, then those only the new one has.
    for iri, olds in old_attrs.items():
        news = new_attrs.get(iri)
        if olds and news and len(olds) == 1 and len(news) == 1:
            before, after = olds[0], news[0]
            if before.get("datasetId") == after.get("datasetId"):
                # one instance before and after (nearly every attribute): no per-datasetId maps needed; a new
                # value (what most writes bring) settles it without comparing the other members
                value = before.get("value", _ABSENT)
                if value != after.get("value", _ABSENT) or not _same_content(before, after):
                    out.append(PendingInstance(iri, after))
                continue
        _diff_attr(out, iri, olds, news, now)
    for iri, news in new_attrs.items():
        if iri not in old_attrs:
            _diff_attr(out, iri, None, news, now)
    return out


_ABSENT = object()


def _diff_attr(out: list[PendingInstance], iri: str, olds: list[dict[str, Any]] | None,
               news: list[dict[str, Any]] | None, now: str) -> None:
    before = {i.get("datasetId"): i for i in olds or ()}
    after = {i.get("datasetId"): i for i in news or ()}
    for ds, inst in after.items():
        prev = before.get(ds)
        if prev is None or not _same_content(prev, inst):
            out.append(PendingInstance(iri, inst))
    for ds, prev in before.items():
        if ds not in after:
            out.append(PendingInstance(iri, deletion_record(prev, now)))


def scope_changes(old: dict[str, Any] | None, new: dict[str, Any] | None, now: str) -> list[PendingInstance]:
    """A scope instance when the scopes changed; a deletion record (value ``[]``) when they were removed."""
    before = (old or {}).get("scope") or []
    after = (new or {}).get("scope") or []
    if before == after:
        return []
    if after:
        return [PendingInstance(SCOPE_IRI, {"type": "Property", "value": list(after), "createdAt": now})]
    return [PendingInstance(SCOPE_IRI, {"type": "Property", "value": [], "deletedAt": now})]


def deletion_record(inst: dict[str, Any], now: str) -> dict[str, Any]:
    """What the history keeps when an instance is deleted: its type, an NGSI-LD Null and deletedAt."""
    kind = inst.get("type", "Property")
    member = VALUE_MEMBER.get(kind, "value")
    null: Any = {"@none": NGSI_NULL} if kind == "LanguageProperty" else NGSI_NULL
    out: dict[str, Any] = {"type": kind, member: null, "deletedAt": now}
    if inst.get("datasetId"):
        out["datasetId"] = inst["datasetId"]
    if inst.get("createdAt"):
        out["createdAt"] = inst["createdAt"]
    return out


def parse_temporal_attrs(payload: dict[str, Any], ctx: ActiveContext,
                         now: str) -> dict[str, list[tuple[Any, dict[str, Any]]]]:
    """Attributes of a temporal representation: IRI → [(raw, stored instance)], every one validated."""
    parser = EntityParser(ctx, now)
    out: dict[str, list[tuple[Any, dict[str, Any]]]] = {}
    for name, raw in payload.items():
        if name in RESERVED:
            continue
        check_attr_name(name)
        items = raw if isinstance(raw, list) and raw and all(isinstance(x, dict) for x in raw) else [raw]
        pairs = []
        for item in items:
            clean = {k: v for k, v in item.items() if k != "instanceId"} if isinstance(item, dict) else item
            pairs.append((clean, parser.instance(name, clean)))
        out[ctx.expand(name)] = pairs
    return out


def latest_state(parsed: dict[str, list[tuple[Any, dict[str, Any]]]], current: dict[str, Any] | None,
                 ctx: ActiveContext) -> dict[str, Any]:
    """The raw attributes that become the entity's current state: per attribute and datasetId the latest
    instance, unless the entity already holds a later observation of it."""
    out: dict[str, Any] = {}
    cur_attrs = (current or {}).get("attrs", {})
    for iri, pairs in parsed.items():
        best: dict[str | None, tuple[Any, dict[str, Any]]] = {}
        for raw, inst in pairs:
            ds = inst.get("datasetId")
            prev = best.get(ds)
            if prev is None or _obs(inst) >= _obs(prev[1]):
                best[ds] = (raw, inst)
        cur = {i.get("datasetId"): i for i in cur_attrs.get(iri, ())}
        chosen = [raw for ds, (raw, inst) in best.items()
                  if ds not in cur or _obs(inst) >= _obs(cur[ds])]
        if chosen:
            out[ctx.compact(iri)] = chosen[0] if len(chosen) == 1 else chosen
    return out


def merge_instance(stored: dict[str, Any], payload: dict[str, Any], ctx: ActiveContext, name: str,
                   now: str) -> dict[str, Any]:
    """A recorded instance with a partial update applied (the instance keeps its other members)."""
    kind = payload.get("type", stored.get("type", "Property"))
    member = VALUE_MEMBER.get(kind, "value")
    raw = {k: v for k, v in payload.items() if k not in ("instanceId", "@context", "createdAt", "modifiedAt")}
    if member not in raw and not any(m in raw for m in VALUE_MEMBER.values()):
        old_member = VALUE_MEMBER.get(stored.get("type", "Property"), "value")
        raw[member] = stored.get(old_member)
    raw.setdefault("type", kind)
    if "observedAt" not in raw and stored.get("observedAt"):
        raw["observedAt"] = stored["observedAt"]
    inst = EntityParser(ctx, now).instance(name, raw)
    for key, val in stored.items():
        if key not in inst and isinstance(val, dict) and key not in VALUE_MEMBER.values():
            inst[key] = val  # sub-attributes the update did not name
    return inst


def sort_entities(docs: list[dict[str, Any]], order_by: str, ctx: ActiveContext) -> list[dict[str, Any]]:
    """Order entities by ``orderBy`` (§4.23): ``id``, ``type``, ``createdAt``, ``attr``, ``attr.sub``,
    each optionally ``;asc``/``;desc``; entities that lack the key come last."""
    ordered = list(docs)
    for path, desc in reversed(parse_order_by(order_by)):
        present = [d for d in ordered if _order_value(d, path, ctx) is not None]
        absent = [d for d in ordered if _order_value(d, path, ctx) is None]
        present.sort(key=lambda d: _sort_key(_order_value(d, path, ctx)), reverse=desc)
        ordered = present + absent
    return ordered


def aggregate_python(values: list[tuple[float, dict[str, Any]]], origin: float, span_end: float,
                     period: Period | None, methods: Sequence[str]) -> dict[str, list[list[Any]]]:
    """The fallback of the SQL aggregation: calendar periods and values that are not numbers."""
    out: dict[str, list[list[Any]]] = {m: [] for m in methods}
    if not values:
        return out
    start_dt = datetime.fromtimestamp(origin, UTC)
    buckets: dict[int, list[Any]] = {}
    bounds: dict[int, tuple[float, float]] = {}
    k = 0
    for t, inst in values:
        if period is None:
            idx = 0
            bounds[0] = (origin, span_end)
        else:
            while period.add(start_dt, k + 1).timestamp() <= t:
                k += 1
            idx = k
            bounds[idx] = (period.add(start_dt, k).timestamp(), period.add(start_dt, k + 1).timestamp())
        buckets.setdefault(idx, []).append(_value_of(inst))
    for idx in sorted(buckets):
        vals = buckets[idx]
        nums = [n for n in (_num(v) for v in vals) if n is not None]
        stats = _Stats(len(vals), sum(nums), min(nums) if nums else None, max(nums) if nums else None,
                       sum(n * n for n in nums),
                       len({orjson.dumps(v, option=orjson.OPT_SORT_KEYS) for v in vals}), numeric=len(nums))
        strings = [v for v in vals if isinstance(v, str)]
        start, end = bounds[idx]
        for m in methods:
            value = stats.result(m)
            if value is None and m in ("min", "max") and strings:
                value = min(strings) if m == "min" else max(strings)
            if value is not None:
                out[m].append([value, _iso(start), _iso(end)])
    return out


@dataclass
class _Stats:
    n: int
    total: float
    low: Any
    high: Any
    squares: float
    distinct: int
    numeric: int | None = None  # how many values were numbers (None: all were)

    def result(self, method: str) -> Any:
        nums = self.n if self.numeric is None else self.numeric
        if method == "totalCount":
            return self.n
        if method == "distinctCount":
            return self.distinct
        if nums == 0:
            return None
        if method == "sum":
            return float(self.total)
        if method == "avg":
            return float(self.total) / nums
        if method == "min":
            return float(self.low) if self.low is not None else None
        if method == "max":
            return float(self.high) if self.high is not None else None
        if method == "sumsq":
            return float(self.squares)
        if method == "stddev":
            if nums < 2:
                return 0.0
            var = (self.squares - self.total * self.total / nums) / (nums - 1)
            return math.sqrt(max(var, 0.0))
        return None


ROW_COLUMNS = ("sid", "instance_id", "deleted", "ts", "observed_at", "created_at", "modified_at",
               "created_ts", "modified_ts", "value_num", "instance")


def _row(sid: int, inst: dict[str, Any], now: str, now_ts: float) -> dict[str, Any]:
    """One history row as column values (the instance as a dict, for SQLAlchemy)."""
    return dict(zip(ROW_COLUMNS, _row_values(sid, inst, now, now_ts), strict=True))


def _row_params(sid: int, inst: dict[str, Any], now: str, now_ts: float,
                instance_id: str | None = None) -> tuple[Any, ...]:
    """One history row as the insert's parameters (ROW_COLUMNS order, the instance as JSON text).

    The same values as :func:`_row_values`, computed without its intermediate tuple: this runs for every
    attribute of every write."""
    stored = dict(inst)
    created = stored.pop("createdAt", None) or now
    stored.pop("modifiedAt", None)
    if "deletedAt" in inst:
        observed = None
        value_num = None
        ts = now_ts
    else:
        observed = inst.get("observedAt")
        ts = _epoch(observed) if observed else now_ts
        value_num = _value_num(inst)
    return (sid, instance_id or INSTANCE_PREFIX + _uuid4(), "deletedAt" in inst, ts, observed, created, now,
            now_ts if created == now else _epoch(created), now_ts, value_num, orjson.dumps(stored).decode())


_PLAIN_NOW = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z")


@functools.lru_cache(maxsize=16)  # a batch's entities share one time
def _plain_insert_sql(table: str, now: str, now_ts: float) -> str | None:
    """The insert of plain instances written at ``now`` (SQLite): every column but sid, instance_id,
    value_num and the instance is a literal. The time is written as an exact quotient (a double is an
    integer over a power of two): SQLite reads some 17-digit decimal literals back one unit off in the last
    place. None for a time that is not the broker's own fixed format (never quoted into SQL)."""
    if not _PLAIN_NOW.fullmatch(now) or not math.isfinite(now_ts):
        return None
    num, den = now_ts.as_integer_ratio()
    ts = f"({num} / {float(den)!r})"
    return (f"INSERT INTO {table} ({', '.join(ROW_COLUMNS)}) "
            f"VALUES (?, ?, 0, {ts}, NULL, '{now}', '{now}', {ts}, {ts}, ?, ?)")


def _plain_row(sid: int, inst: dict[str, Any], now: str, instance_id: str) -> list[Any] | None:
    """[sid, instance_id, value_num, instance JSON] of an instance that :func:`_plain_insert_sql` can
    write (the same values :func:`_row_params` gives it), else None."""
    if "observedAt" in inst or "deletedAt" in inst:
        return None
    created = inst.get("createdAt")
    if created and created != now:
        return None
    stored = dict(inst)
    stored.pop("createdAt", None)
    stored.pop("modifiedAt", None)
    return [sid, instance_id, _value_num(inst), orjson.dumps(stored).decode()]


def _value_num(inst: dict[str, Any]) -> float | None:
    """The number a history row keeps for aggregation: a Property's finite number (booleans as 0/1)."""
    if inst.get("type", "Property") != "Property":
        return None
    value: Any = inst.get("value")
    kind = type(value)
    if kind is float:
        return value if math.isfinite(value) else None
    if kind is int:
        return float(value)
    if kind is str:
        return None
    return _num(value)


def _row_values(sid: int, inst: dict[str, Any], now: str, now_ts: float) -> tuple[Any, ...]:
    deleted = "deletedAt" in inst
    observed = None if deleted else inst.get("observedAt")
    created = inst.get("createdAt") or now
    stored = {k: v for k, v in inst.items() if k != "createdAt" and k != "modifiedAt"}
    numeric = not deleted and inst.get("type", "Property") == "Property"
    return (sid, INSTANCE_PREFIX + _uuid4(), deleted, _epoch(observed) if observed else now_ts, observed,
            created, now, now_ts if created == now else _epoch(created), now_ts,
            _num(inst.get("value")) if numeric else None, stored)


def _uuid4() -> str:
    """A random (version 4) UUID string: the same as ``str(uuid.uuid4())``, without its slow validation."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


# _uuid4s: where each character of a UUID comes from (a position in 32 random hex digits, or itself)
_UUID_LAYOUT = (*range(8), "-", *range(8, 12), "-", "4", *range(13, 16), "-", 16, *range(17, 20), "-",
                *range(20, 32))
_VARIANT = bytes.maketrans(b"0123456789abcdef", b"89ab89ab89ab89ab")  # the digit that holds the variant bits


def _uuid4s(n: int) -> list[str]:
    """``n`` instance ids, each INSTANCE_PREFIX + a random version 4 UUID (what :func:`_uuid4` makes).

    Built column by column: every character position of the ``n`` ids is one slice assignment over all of
    them, which costs a fraction of formatting each id on its own (a batch of 1,000 entities needs 5,000)."""
    if n < 32:  # a few (a single entity's write): the fixed cost of the columns is not worth it
        return [INSTANCE_PREFIX + _uuid4() for _ in range(n)]
    digits = os.urandom(16 * n).hex().encode()
    prefix = INSTANCE_PREFIX.encode()
    width = len(prefix) + 37  # the id and a space
    out = bytearray(b" ") * (width * n)
    for pos, char in enumerate(prefix):
        out[pos::width] = bytes((char,)) * n
    for pos, src in enumerate(_UUID_LAYOUT, start=len(prefix)):
        if isinstance(src, str):
            out[pos::width] = src.encode() * n
        elif src == 16:
            out[pos::width] = digits[16::32].translate(_VARIANT)
        else:
            out[pos::width] = digits[src::32]
    return out.decode().split()


def _same_content(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Equal apart from createdAt/modifiedAt (runs for every attribute of every write: no copies)."""
    if a is b:
        return True
    compared = 0  # the keys of a, less the sys ones: all of them must be in b, and b must have no others
    for key, value in a.items():
        if key == "createdAt" or key == "modifiedAt":
            continue
        if key not in b or b[key] != value:
            return False
        compared += 1
    return compared == len(b) - ("createdAt" in b) - ("modifiedAt" in b)


def _num(value: Any) -> float | None:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def _value_of(inst: dict[str, Any]) -> Any:
    return inst.get(VALUE_MEMBER.get(inst.get("type", "Property"), "value"))


def _obs(inst: dict[str, Any]) -> float:
    """observedAt as epoch seconds; an instance without it counts as the newest."""
    text = inst.get("observedAt")
    return _epoch(text) if text else math.inf


@functools.lru_cache(maxsize=4096)
def _epoch(text: str | None) -> float:
    if not text:
        raise BadRequest("a date-time is missing")
    try:
        return parse_iso(text).timestamp()
    except ValueError as err:
        raise BadRequest(f"{text!r} is not an ISO 8601 date-time") from err


def _iso(epoch: float) -> str:
    if float(epoch).is_integer():
        # time.strftime on a struct is several times faster than datetime's; periods are usually whole seconds
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(epoch)))
    dt = datetime.fromtimestamp(epoch, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%f").rstrip("0") + "Z"


def _add_months(dt: datetime, months: int) -> datetime:
    total = dt.month - 1 + months
    year, month = dt.year + total // 12, total % 12 + 1
    days = [31, 29 if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0) else 28, 31, 30, 31, 30, 31, 31,
            30, 31, 30, 31][month - 1]
    return dt.replace(year=year, month=month, day=min(dt.day, days))


def _order_value(doc: dict[str, Any], path: list[str], ctx: ActiveContext) -> Any:
    head = path[0]
    if head == "id" and len(path) == 1:
        return doc.get("id")
    if head == "type" and len(path) == 1:
        return ctx.compact(doc["type"][0]) if doc.get("type") else None
    if head in ("createdAt", "modifiedAt") and len(path) == 1:
        return doc.get(head)
    found = doc.get("attrs", {}).get(ctx.expand(head))
    if not found:
        return None
    inst: Any = found[0]
    for sub in path[1:]:
        if sub in ("createdAt", "modifiedAt", "observedAt", "datasetId", "unitCode"):
            return inst.get(sub)
        inst = inst.get(ctx.expand(sub))
        if not isinstance(inst, dict):
            return None
    return _value_of(inst)


def _sort_key(value: Any) -> tuple[int, Any]:
    # Numbers before strings before anything else, so mixed values never compare across kinds.
    if isinstance(value, bool):
        return (0, float(value))
    if isinstance(value, int | float):
        return (0, value)
    if isinstance(value, str):
        return (1, value)
    return (2, orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode())
