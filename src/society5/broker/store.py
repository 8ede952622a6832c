"""SQL storage of entities (SQLAlchemy Core, the same code on SQLite and PostgreSQL).

One row per entity holds the whole document as JSON; a type table and a spatial index (an R*Tree on SQLite,
a GiST index over built-in boxes on PostgreSQL) make type and geo filters index lookups, and ``q`` filters are
compiled into SQL JSON expressions. Whatever SQL cannot decide exactly (the exact geometry test, rare ``q``
forms) is checked in Python on the candidates, before counting and paging.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from society5.broker import geo as geo_mod
from society5.broker.query import q as qlang
from society5.broker.query import scope as scopelang
from society5.broker.tables import entities, entity_types, geo
from society5.core.auth import PUBLIC_SCOPE


def is_public(doc: dict[str, Any]) -> bool:
    scopes = doc.get("scope")
    if not scopes:
        return False
    return any(s == PUBLIC_SCOPE or s.startswith(PUBLIC_SCOPE + "/") for s in scopes)


def has_geo(doc: dict[str, Any]) -> bool:
    """Whether the document has a GeoProperty instance (most have none: then it has no ``geo_boxes``)."""
    for instances in doc.get("attrs", {}).values():
        for inst in instances:
            if inst.get("type") == "GeoProperty":
                return True
    return False


def geo_boxes(doc: dict[str, Any]) -> list[tuple[str, tuple[float, float, float, float]]]:
    boxes: list[tuple[str, tuple[float, float, float, float]]] = []
    if not has_geo(doc):
        return boxes
    for iri, instances in doc.get("attrs", {}).items():
        for inst in instances:
            if inst.get("type") == "GeoProperty" and isinstance(inst.get("value"), dict):
                boxes.append((iri, geo_mod.geometry_bbox(inst["value"])))
    return boxes


@dataclass
class EntityQuery:
    """What a query asks for; names are already expanded IRIs."""

    types: list[frozenset[str]] | None = None
    ids: list[str] | None = None
    id_pattern: str | None = None
    q: qlang.Node | None = None
    geo: geo_mod.GeoQuery | None = None
    scope: Any = None
    attrs: set[str] | None = None
    limit: int = 20
    offset: int = 0
    count: bool = False
    public_only: bool = False
    order: list[tuple[list[str], bool]] | None = None  # (path, descending); path[0] is id/type/… or an IRI


@dataclass
class QueryResult:
    docs: list[dict[str, Any]]
    count: int | None


# PostgreSQL: ANALYZE after this many new entities, or this share of the table if that is more.
ANALYZE_MIN_ROWS = 1_000
ANALYZE_SHARE = 0.2


class EntityStore:
    def __init__(self, dialect: str):
        self.dialect = dialect
        self.sqlite = dialect == "sqlite"
        self._rows_since_analyze = 0
        self._rows_at_analyze: float | None = None  # the entity table's size at the last ANALYZE (PostgreSQL)

    # -- reads ---------------------------------------------------------------------------------------------
    # On SQLite the hot single-row statements go straight to the driver (inside SQLAlchemy's transaction on
    # the same connection): SQLAlchemy's per-statement machinery costs several times the SQLite work itself.
    @staticmethod
    def _driver(conn: Connection) -> Any:
        return conn.connection.driver_connection

    # ``for_update``: the caller will write what it read. SQLite writers already hold the database's write
    # lock (BEGIN IMMEDIATE); on PostgreSQL the rows are locked (in id order, so two batches cannot deadlock),
    # so a concurrent writer waits instead of overwriting a change it never saw.
    def get(self, conn: Connection, tenant: str, entity_id: str,
            for_update: bool = False) -> dict[str, Any] | None:
        self._send_deferred(conn)
        if self.sqlite:
            hit = self._driver(conn).execute(_SQL_GET, (tenant, entity_id)).fetchone()
            return orjson.loads(hit[0]) if hit else None
        stmt = _GET_DOC_FOR_UPDATE if for_update else _GET_DOC
        row = conn.execute(stmt, {"b_tenant": tenant, "b_id": entity_id}).first()
        return row[0] if row else None

    def get_many(self, conn: Connection, tenant: str, ids: Sequence[str],
                 for_update: bool = False, geo_free: set[str] | None = None) -> dict[str, dict[str, Any]]:
        """The stored documents of ``ids`` that exist. ``geo_free`` (SQLite) collects the ids whose stored
        text has no GeoProperty (a substring test, before decoding): :meth:`update_many` skips their geo
        check."""
        found: dict[str, dict[str, Any]] = {}
        self._send_deferred(conn)
        if for_update and not self.sqlite:
            ids = sorted(set(ids))
        for start in range(0, len(ids), 500):
            chunk = list(ids[start : start + 500])
            if self.sqlite:
                sql = _SQL_GET_MANY.format(marks=",".join("?" * len(chunk)))
                hits = self._driver(conn).execute(sql, (tenant, *chunk)).fetchall()
                found.update({eid: orjson.loads(doc) for eid, doc in hits})
                if geo_free is not None:
                    geo_free.update(eid for eid, doc in hits if _GEO_MARK not in doc)
                continue
            select = sa.select(entities.c.id, entities.c.doc).where(
                entities.c.tenant == tenant, entities.c.id.in_(chunk)
            )
            if for_update:
                select = select.order_by(entities.c.id).with_for_update()
            found.update({r[0]: r[1] for r in conn.execute(select)})
        return found

    # -- writes --------------------------------------------------------------------------------------------
    def insert_many(self, conn: Connection, tenant: str, docs: Sequence[dict[str, Any]]) -> None:
        if not docs:
            return
        self._send_deferred(conn)
        if self.sqlite:
            self._driver(conn).executemany(
                _SQL_INSERT,
                [
                    (tenant, d["id"], _dumps(d), int(is_public(d)), d["createdAt"], d["modifiedAt"])
                    for d in docs
                ],
            )
            self._driver(conn).executemany(
                _SQL_INSERT_TYPES, [(tenant, t, d["id"]) for d in docs for t in d["type"]]
            )
        else:
            self._insert_rows(conn, tenant, docs)
            conn.execute(
                entity_types.insert(),
                [{"tenant": tenant, "type": t, "entity_id": d["id"]} for d in docs for t in d["type"]],
            )
        self._insert_geo(conn, tenant, [(d["id"], attr, box) for d in docs for attr, box in geo_boxes(d)])
        self._maybe_analyze(conn, len(docs))

    def _insert_rows(self, conn: Connection, tenant: str, docs: Sequence[dict[str, Any]]) -> None:
        conn.execute(
            entities.insert(),
            [
                {
                    "tenant": tenant,
                    "id": d["id"],
                    "doc": d,
                    "public": is_public(d),
                    "created_at": d["createdAt"],
                    "modified_at": d["modifiedAt"],
                }
                for d in docs
            ],
        )

    def _maybe_analyze(self, conn: Connection, written: int) -> None:
        """After bulk loads PostgreSQL plans with stale statistics (one row where there are 100,000) and
        skips the spatial index; refresh them once the entities added since the last ANALYZE are a fifth of
        what the table held then (at least ANALYZE_MIN_ROWS). A fixed step of 20,000 rows left 5,000 new
        Vehicles next to 20,000 Devices unanalyzed: the geo-query took 27 ms instead of 4 until autovacuum
        came round, about a minute later. SQLite's planner needs no help here."""
        if self.sqlite:
            return
        if self._rows_at_analyze is None:
            size = conn.exec_driver_sql(
                "SELECT reltuples FROM pg_class WHERE oid = 'broker_entities'::regclass").scalar()
            self._rows_at_analyze = max(float(size or 0), 0.0)  # -1: never analyzed
        self._rows_since_analyze += written
        if self._rows_since_analyze >= max(ANALYZE_MIN_ROWS, ANALYZE_SHARE * self._rows_at_analyze):
            conn.exec_driver_sql("ANALYZE broker_entities, broker_entity_types, broker_geo")
            self._rows_at_analyze += self._rows_since_analyze
            self._rows_since_analyze = 0

    def update_many(
        self, conn: Connection, tenant: str, pairs: Sequence[tuple[dict[str, Any], dict[str, Any]]],
        old_geo_free: set[str] | None = None,
    ) -> None:
        """Write new documents over existing ones; ``pairs`` is (old, new). ``old_geo_free``: ids whose old
        document is known to have no GeoProperty (see :meth:`get_many`)."""
        if not pairs:
            return
        geo_checks: list[bool] | None = None
        if self.sqlite:
            texts = [_dumps(new) for _, new in pairs]
            self._driver(conn).executemany(
                _SQL_UPDATE,
                [
                    (text, int(is_public(new)), new["modifiedAt"], tenant, new["id"])
                    for text, (_, new) in zip(texts, pairs, strict=True)
                ],
            )
            if old_geo_free is not None:  # neither side has a GeoProperty: the geo index cannot change
                geo_checks = [old["id"] not in old_geo_free or _GEO_MARK in text
                              for text, (old, _) in zip(texts, pairs, strict=True)]
        else:
            self._update_rows(conn, tenant, pairs)
        self._update_indexes(conn, tenant, pairs, geo_checks)

    def _update_rows(
        self, conn: Connection, tenant: str, pairs: Sequence[tuple[dict[str, Any], dict[str, Any]]]
    ) -> None:
        rows = [
            {"b_tenant": tenant, "b_id": new["id"], "doc": new, "public": is_public(new),
             "modified_at": new["modifiedAt"]}
            for _, new in pairs
        ]
        waiting: dict[tuple[str, str], dict[str, Any]] | None = conn.info.get(_DEFERRED)
        if waiting is None:
            conn.execute(_UPDATE_DOC, rows)
            return
        for row in rows:
            waiting[(tenant, row["b_id"])] = row

    @contextmanager
    def deferred_updates(self, conn: Connection) -> Iterator[None]:
        """PostgreSQL, a group of single-entity writes in one transaction: their document UPDATEs wait and
        go out together at the end, one ``executemany`` that psycopg pipelines (one round trip instead of one
        per write). Any other use of the store on this connection sends what waits first, so every read
        sees every write before it. On an error nothing is sent: the transaction is rolled back anyway."""
        if self.sqlite:
            yield
            return
        conn.info[_DEFERRED] = {}
        try:
            yield
            self._send_deferred(conn)
        finally:
            conn.info.pop(_DEFERRED, None)

    def _send_deferred(self, conn: Connection) -> None:
        if self.sqlite:  # never deferred there; spare the SQLite hot reads the lookup
            return
        waiting: dict[tuple[str, str], dict[str, Any]] | None = conn.info.get(_DEFERRED)
        if waiting:
            rows = list(waiting.values())
            waiting.clear()
            conn.execute(_UPDATE_DOC, rows)

    def _update_indexes(
        self, conn: Connection, tenant: str, pairs: Sequence[tuple[dict[str, Any], dict[str, Any]]],
        geo_checks: Sequence[bool] | None = None,
    ) -> None:
        for i, (old, new) in enumerate(pairs):
            if old["type"] != new["type"]:
                conn.execute(
                    entity_types.delete().where(
                        entity_types.c.tenant == tenant, entity_types.c.entity_id == new["id"]
                    )
                )
                conn.execute(
                    entity_types.insert(),
                    [{"tenant": tenant, "type": t, "entity_id": new["id"]} for t in new["type"]],
                )
            if geo_checks is not None and not geo_checks[i]:
                continue
            old_boxes, new_boxes = geo_boxes(old), geo_boxes(new)
            if old_boxes != new_boxes:
                self._delete_geo(conn, tenant, [new["id"]])
                self._insert_geo(conn, tenant, [(new["id"], attr, box) for attr, box in new_boxes])

    def delete_many(self, conn: Connection, tenant: str, ids: Sequence[str]) -> None:
        self._send_deferred(conn)
        for start in range(0, len(ids), 500):
            chunk = list(ids[start : start + 500])
            conn.execute(entities.delete().where(entities.c.tenant == tenant, entities.c.id.in_(chunk)))
            conn.execute(
                entity_types.delete().where(
                    entity_types.c.tenant == tenant, entity_types.c.entity_id.in_(chunk)
                )
            )
            self._delete_geo(conn, tenant, chunk)

    def _insert_geo(
        self,
        conn: Connection,
        tenant: str,
        rows: Sequence[tuple[str, str, tuple[float, float, float, float]]],
    ) -> None:
        if not rows:
            return
        if self.sqlite:
            # Straight to the driver with the ids chosen here (this transaction holds the write lock, so the
            # largest gid cannot change under it): SQLAlchemy's INSERT … RETURNING for the R*Tree's ids
            # handled each row's parameters in Python, a tenth of a batch of new located entities.
            driver = self._driver(conn)
            first = driver.execute("SELECT coalesce(max(gid), 0) + 1 FROM broker_geo").fetchone()[0]
            boxes = [(first + i, eid, attr, box) for i, (eid, attr, box) in enumerate(rows)]
            driver.executemany(_SQL_INSERT_GEO, [(g, tenant, e, a, *box) for g, e, a, box in boxes])
            driver.executemany(_SQL_INSERT_RTREE, [(g, b[0], b[2], b[1], b[3]) for g, _e, _a, b in boxes])
            return
        params = [
            {
                "tenant": tenant,
                "entity_id": eid,
                "attr": attr,
                "minx": box[0],
                "miny": box[1],
                "maxx": box[2],
                "maxy": box[3],
            }
            for eid, attr, box in rows
        ]
        conn.execute(geo.insert(), params)

    def _delete_geo(self, conn: Connection, tenant: str, ids: Sequence[str]) -> None:
        where = sa.and_(geo.c.tenant == tenant, geo.c.entity_id.in_(list(ids)))
        if self.sqlite:
            gids = [r[0] for r in conn.execute(sa.select(geo.c.gid).where(where))]
            if not gids:
                return
            conn.execute(
                sa.text("DELETE FROM broker_geo_rtree WHERE gid IN :gids").bindparams(
                    sa.bindparam("gids", expanding=True)
                ),
                {"gids": gids},
            )
        conn.execute(geo.delete().where(where))

    # -- queries -------------------------------------------------------------------------------------------
    def query(self, conn: Connection, tenant: str, query: EntityQuery) -> QueryResult:
        self._send_deferred(conn)
        where, exact = self._where(tenant, query)
        base = sa.select(entities.c.doc).where(*where).order_by(entities.c.id)
        if query.order:
            exact = False
        if exact:
            docs: list[dict[str, Any]] = []
            if query.limit > 0:
                docs = [r[0] for r in conn.execute(base.limit(query.limit).offset(query.offset))]
            count = None
            if query.count:
                count = conn.execute(
                    sa.select(sa.func.count()).select_from(entities).where(*where)
                ).scalar_one()
            return QueryResult(docs, count)
        matching = [r[0] for r in conn.execute(base) if self._post_filter(r[0], query)]
        for path, descending in reversed(query.order or []):
            present = [d for d in matching if _order_value(d, path) is not None]
            absent = [d for d in matching if _order_value(d, path) is None]
            present.sort(key=functools.partial(_doc_sort_key, path), reverse=descending)
            matching = present + absent  # entities without the value come last either way
        page = matching[query.offset : query.offset + query.limit] if query.limit > 0 else []
        return QueryResult(page, len(matching) if query.count else None)

    def _post_filter(self, doc: dict[str, Any], query: EntityQuery) -> bool:
        if query.q is not None and not qlang.evaluate(query.q, doc):
            return False
        if query.scope is not None and not scopelang.matches(query.scope, scopelang.doc_scopes(doc)):
            return False
        if query.geo is not None:
            gq = query.geo
            for inst in doc.get("attrs", {}).get(gq.geoproperty, ()):
                if inst.get("type") == "GeoProperty" and gq.matches(inst["value"]):
                    return True
            return False
        return True

    def _where(self, tenant: str, query: EntityQuery) -> tuple[list[Any], bool]:
        c = entities.c
        where: list[Any] = [c.tenant == tenant]
        exact = True
        if query.public_only:
            where.append(c.public.is_(True))
        if query.ids:
            where.append(c.id.in_(query.ids))
        if query.id_pattern:
            where.append(c.id.regexp_match(query.id_pattern))
        if query.types:
            # With a narrow filter (ids, a geo box) checking each candidate's type beats listing every id
            # of the type; for a type alone the list is the cheaper plan.
            narrowed = bool(query.ids) or query.geo is not None
            where.append(self._types_sql(tenant, query.types, correlated=narrowed))
        if query.attrs:
            where.append(sa.or_(*[self._has_attr(a) for a in sorted(query.attrs)]))
        if query.q is not None:
            expr, q_exact = qlang.to_sql(query.q, c.doc, self.dialect)
            where.append(expr)
            exact = exact and q_exact
        if query.scope is not None:
            expr, s_exact = scopelang.to_sql(query.scope, c.doc, self.dialect)
            where.append(expr)
            exact = exact and s_exact
        if query.geo is not None:
            exact = False
            box = query.geo.bbox()
            if box is not None:
                where.append(c.id.in_(self._geo_candidates(tenant, query.geo.geoproperty, box)))
            else:
                where.append(
                    c.id.in_(
                        sa.select(geo.c.entity_id).where(
                            geo.c.tenant == tenant, geo.c.attr == query.geo.geoproperty
                        )
                    )
                )
        return where, exact

    def _types_sql(self, tenant: str, dnf: list[frozenset[str]], correlated: bool = False) -> Any:
        t = entity_types.c

        def having(name: str) -> Any:
            return entities.c.id.in_(sa.select(t.entity_id).where(t.tenant == tenant, t.type == name))

        singles = [next(iter(alt)) for alt in dnf if len(alt) == 1]
        parts: list[Any] = []
        if singles and correlated:
            parts.append(
                sa.exists().where(
                    t.tenant == tenant, t.entity_id == entities.c.id, t.type.in_(sorted(singles))
                )
            )
        elif singles:
            parts.append(
                entities.c.id.in_(
                    sa.select(t.entity_id).where(t.tenant == tenant, t.type.in_(sorted(singles)))
                )
            )
        for alt in dnf:
            if len(alt) > 1:
                parts.append(sa.and_(*[having(name) for name in sorted(alt)]))
        return parts[0] if len(parts) == 1 else sa.or_(*parts)

    def _has_attr(self, iri: str) -> Any:
        if self.sqlite:
            return sa.func.json_type(entities.c.doc, _json_path(iri)).is_not(None)
        attrs = entities.c.doc.op("->", return_type=entities.c.doc.type)(sa.literal("attrs"))
        return sa.func.jsonb_exists(attrs, sa.literal(iri), type_=sa.Boolean)

    def _geo_candidates(self, tenant: str, attr: str, box: tuple[float, float, float, float]) -> Any:
        minx, miny, maxx, maxy = box
        if self.sqlite:
            # CROSS JOIN stops SQLite from reordering the join: the R*Tree drives, not a scan of broker_geo.
            return sa.text(
                "SELECT g.entity_id FROM broker_geo_rtree r CROSS JOIN broker_geo g ON g.gid = r.gid "
                "WHERE r.minx <= :gmaxx AND r.maxx >= :gminx AND r.miny <= :gmaxy AND r.maxy >= :gminy "
                "AND g.tenant = :gtenant AND g.attr = :gattr"
            ).bindparams(gminx=minx, gminy=miny, gmaxx=maxx, gmaxy=maxy, gtenant=tenant, gattr=attr)
        return sa.text(
            "SELECT g.entity_id FROM broker_geo g WHERE box(point(g.minx, g.miny), point(g.maxx, g.maxy)) "
            "&& box(point(:gminx, :gminy), point(:gmaxx, :gmaxy)) AND g.tenant = :gtenant AND g.attr = :gattr"
        ).bindparams(gminx=minx, gminy=miny, gmaxx=maxx, gmaxy=maxy, gtenant=tenant, gattr=attr)

    # -- discovery -----------------------------------------------------------------------------------------
    def type_counts(self, conn: Connection, tenant: str, public_only: bool) -> dict[str, int]:
        self._send_deferred(conn)
        t = entity_types.c
        stmt = sa.select(t.type, sa.func.count()).where(t.tenant == tenant).group_by(t.type)
        if public_only:
            stmt = stmt.where(
                t.entity_id.in_(
                    sa.select(entities.c.id).where(entities.c.tenant == tenant, entities.c.public.is_(True))
                )
            )
        return {r[0]: r[1] for r in conn.execute(stmt)}

    def iter_docs(
        self, conn: Connection, tenant: str, public_only: bool, types: Iterable[str] | None = None
    ) -> Iterable[dict[str, Any]]:
        self._send_deferred(conn)
        stmt = sa.select(entities.c.doc).where(entities.c.tenant == tenant)
        if public_only:
            stmt = stmt.where(entities.c.public.is_(True))
        if types is not None:
            stmt = stmt.where(self._types_sql(tenant, [frozenset([t]) for t in types]))
        for row in conn.execute(stmt.execution_options(yield_per=500)):
            yield row[0]


def _order_value(doc: dict[str, Any], path: list[str]) -> Any:
    head, rest = path[0], path[1:]
    if head == "id":
        return doc["id"]
    if head == "type":
        return doc["type"][0] if doc.get("type") else None
    if head in ("createdAt", "modifiedAt"):
        return doc.get(head)
    instances = doc.get("attrs", {}).get(head)
    if not instances:
        return None
    node: Any = instances[0]
    for step in rest:
        if not isinstance(node, dict):
            return None
        if step in node and step in ("createdAt", "modifiedAt", "observedAt", "unitCode", "datasetId"):
            node = node[step]
            continue
        sub = next(
            (
                v
                for k, v in node.items()
                if isinstance(v, dict) and (k == step or k.endswith("/" + step) or k.endswith("#" + step))
            ),
            None,
        )
        node = sub
    if isinstance(node, dict):
        for member in ("value", "object", "vocab", "languageMap", "valueList"):
            if member in node:
                return node[member]
        return None
    return node


_SQL_GET = "SELECT doc FROM broker_entities WHERE tenant = ? AND id = ?"
_SQL_GET_MANY = "SELECT id, doc FROM broker_entities WHERE tenant = ? AND id IN ({marks})"
_SQL_INSERT = (
    "INSERT INTO broker_entities (tenant, id, doc, public, created_at, modified_at) VALUES (?, ?, ?, ?, ?, ?)"
)
_SQL_INSERT_GEO = ("INSERT INTO broker_geo (gid, tenant, entity_id, attr, minx, miny, maxx, maxy) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
_SQL_INSERT_RTREE = "INSERT INTO broker_geo_rtree (gid, minx, maxx, miny, maxy) VALUES (?, ?, ?, ?, ?)"
_SQL_INSERT_TYPES = "INSERT INTO broker_entity_types (tenant, type, entity_id) VALUES (?, ?, ?)"
_SQL_UPDATE = "UPDATE broker_entities SET doc = ?, public = ?, modified_at = ? WHERE tenant = ? AND id = ?"


# In a document's JSON text exactly when it has a GeoProperty (or a value that mentions one: checked then).
_GEO_MARK = '"GeoProperty"'
_DEFERRED = "s5.broker.deferred_doc_updates"


def _dumps(doc: dict[str, Any]) -> str:
    # TEXT, not bytes: SQLite would store bytes as a BLOB, which its JSON functions read as JSONB.
    return orjson.dumps(doc).decode()


_UPDATE_DOC = (
    entities.update()
    .where(entities.c.tenant == sa.bindparam("b_tenant"), entities.c.id == sa.bindparam("b_id"))
    .values(doc=sa.bindparam("doc"), public=sa.bindparam("public"), modified_at=sa.bindparam("modified_at"))
)
_GET_DOC = sa.select(entities.c.doc).where(
    entities.c.tenant == sa.bindparam("b_tenant"), entities.c.id == sa.bindparam("b_id")
)
_GET_DOC_FOR_UPDATE = _GET_DOC.with_for_update()


def _doc_sort_key(path: list[str], doc: dict[str, Any]) -> tuple[int, Any]:
    return _sort_key(_order_value(doc, path))


def _sort_key(value: Any) -> tuple[int, Any]:
    if isinstance(value, bool):
        return (0, int(value))
    if isinstance(value, int | float):
        return (1, value)
    if isinstance(value, str):
        return (2, value)
    if isinstance(value, dict) and "@value" in value:
        return (2, str(value["@value"]))
    return (3, str(value))


_SAFE_IRI = re.compile(r'^[^"\\]*$')


def _json_path(iri: str) -> str:
    if not _SAFE_IRI.match(iri):
        raise ValueError("attribute IRI contains a quote")
    return f'$.attrs."{iri}"'
