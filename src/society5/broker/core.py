"""``Broker``: the NGSI-LD operations as a Python API. The HTTP API and every service call this.

Every operation runs in one database transaction: a batch entity that fails validation is reported and
skipped, the rest commit together, and nothing is ever written in part. Change listeners run inside that
transaction, so whatever they record (history, notification outbox) commits or rolls back with the change.
"""

from __future__ import annotations

import functools
import gc
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson
from sqlalchemy.engine import Connection, Engine

from society5.broker.jsonld import ActiveContext, ContextStore
from society5.broker.model import (
    NGSI_NULL,
    RESERVED,
    VALUE_MEMBER,
    EntityParser,
    Renderer,
    check_uri,
    has_null,
)
from society5.broker.store import EntityQuery, EntityStore, QueryResult
from society5.core.auth import DEFAULT_TENANT, SUPERUSER, Principal, TenantStore, validate_tenant_name
from society5.core.db import ThreadConnections
from society5.core.errors import AlreadyExists, ApiError, BadRequest, NotFound
from society5.core.timeutil import now_iso

log = logging.getLogger(__name__)

ChangeListener = Callable[[Connection, str, "dict[str, Any] | None", "dict[str, Any] | None"], None]
Change = tuple["dict[str, Any] | None", "dict[str, Any] | None"]  # (old, new)
# Called once per write with all its changes (a batch of 1,000 entities: once, not 1,000 times).
ChangesListener = Callable[[Connection, str, Sequence[Change]], None]

_PREFETCHED = "s5.broker.prefetched"
_gc_lock = threading.Lock()
_gc_paused_by_us = False


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a batch is processed.

    A batch of 1,000 entities holds tens of thousands of small JSON dicts at once (the body, the parsed and
    the stored documents, their history rows); they survive the young generations and set off full
    collections, which walk every object of the process: a fifth to a third of a batch's time went there.
    Those documents are acyclic and are freed by reference counting as soon as the batch ends, so the
    collector has nothing to find in them. The pause is held by one caller at a time (a second, concurrent
    batch runs with the collector as it finds it), so it never lasts longer than one batch, and it is only
    taken while the collector is on."""
    global _gc_paused_by_us
    with _gc_lock:
        mine = not _gc_paused_by_us and gc.isenabled()
        if mine:
            gc.disable()
            _gc_paused_by_us = True
    try:
        yield
    finally:
        if mine:
            with _gc_lock:
                _gc_paused_by_us = False
                gc.enable()


_Fn = TypeVar("_Fn", bound=Callable[..., Any])


def _without_gc(fn: _Fn) -> _Fn:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with gc_paused():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


@dataclass
class UpdateResult:
    updated: list[str] = field(default_factory=list)
    not_updated: list[dict[str, str]] = field(default_factory=list)


@dataclass
class BatchResult:
    success: list[str] = field(default_factory=list)
    errors: list[tuple[str, ApiError]] = field(default_factory=list)
    created: list[str] = field(default_factory=list)


class Broker:
    def __init__(self, engine: Engine, contexts: ContextStore, tenants: TenantStore):
        self.engine = engine
        self.db = ThreadConnections(engine)
        self.contexts = contexts
        self.tenants = tenants
        self.store = EntityStore(engine.dialect.name)
        self.listeners: list[ChangeListener] = []
        self.changes_listeners: list[ChangesListener] = []  # called before ``listeners``
        self._ahead = threading.local()  # read_ahead's documents, per worker thread

    # -- helpers -------------------------------------------------------------------------------------------
    def context(self, source: Any = None) -> ActiveContext:
        return self.contexts.activate(source) if source is not None else self.contexts.core

    def tenant_for_write(self, tenant: str | None, principal: Principal) -> str:
        name = tenant or DEFAULT_TENANT
        validate_tenant_name(name)
        if not self.tenants.exists(name):
            self.tenants.check_can_create(principal, name)
            self.tenants.ensure(name)
        return name

    def tenant_for_read(self, tenant: str | None) -> str:
        name = tenant or DEFAULT_TENANT
        validate_tenant_name(name)
        if not self.tenants.exists(name):
            raise NotFound(f"tenant {name!r} does not exist", title="NonexistentTenant")
        return name

    def _changed(
        self, conn: Connection, tenant: str, old: dict[str, Any] | None, new: dict[str, Any] | None
    ) -> None:
        self._changed_many(conn, tenant, [(old, new)])

    def _changed_many(self, conn: Connection, tenant: str, changes: Sequence[Change]) -> None:
        if not changes:
            return
        ready: dict[tuple[str, str], dict[str, Any]] | None = conn.info.get(_PREFETCHED)
        if ready:  # written by some other path of the group (a listener, a batch): read it again when needed
            for old, new in changes:
                ready.pop((tenant, (new or old or {}).get("id", "")), None)
        for many in self.changes_listeners:
            many(conn, tenant, changes)
        for listener in self.listeners:
            for old, new in changes:
                listener(conn, tenant, old, new)

    @contextmanager
    def prefetched(self, conn: Connection, keys: Sequence[tuple[str | None, str]]) -> Iterator[None]:
        """Read (and lock) the entities that a group of single-entity writes is about to change in one
        statement: each write then finds its entity here instead of making a round trip of its own. An
        entity is handed out once (a second write of it in the group reads what the first wrote); what is
        left is dropped when the group ends. The group's document updates go out together at its end
        (:meth:`EntityStore.deferred_updates`)."""
        by_tenant: dict[str, list[str]] = {}
        for tenant, entity_id in keys:
            by_tenant.setdefault(tenant or DEFAULT_TENANT, []).append(entity_id)
        conn.info[_PREFETCHED] = self._read_keys(conn, by_tenant, for_update=True)
        try:
            with self.store.deferred_updates(conn):
                yield
        finally:
            conn.info.pop(_PREFETCHED, None)

    @contextmanager
    def read_ahead(self, keys: Sequence[tuple[str | None, str]]) -> Iterator[None]:
        """Retrievals of a group (PostgreSQL, one worker thread): their entities are read in one statement
        first, and each :meth:`retrieve` of this thread takes its own from here instead of a round trip of
        its own. A document is handed out once (a second retrieval of it in the group reads it itself); an
        entity that does not exist is remembered as missing. A key of an invalid or unknown tenant is left
        out, and so is everything if the shared read fails: those retrievals then run (and fail) as they
        would alone."""
        by_tenant: dict[str, list[str]] = {}
        for tenant, entity_id in keys:
            try:
                by_tenant.setdefault(self.tenant_for_read(tenant), []).append(entity_id)
            except ApiError:
                continue
        found: dict[tuple[str, str], dict[str, Any] | None] = {}
        try:
            with self.db.connect(simple=True) as conn:
                found = {(name, eid): None for name, ids in by_tenant.items() for eid in ids}  # missing
                found.update(self._read_keys(conn, by_tenant))
        except Exception:  # each retrieval then reads (and fails) on its own
            log.warning("reading a group's entities ahead failed", exc_info=True)
            found = {}
        self._ahead.docs = found
        try:
            yield
        finally:
            self._ahead.docs = None

    def _read_keys(self, conn: Connection, by_tenant: dict[str, list[str]],
                   for_update: bool = False) -> dict[tuple[str, str], dict[str, Any]]:
        """The existing documents of the ids, per tenant, keyed (tenant, id): one statement a tenant."""
        return {(name, eid): doc for name, ids in by_tenant.items()
                for eid, doc in self.store.get_many(conn, name, ids, for_update=for_update).items()}

    def _read_ahead(self, tenant: str, entity_id: str) -> tuple[bool, dict[str, Any] | None]:
        ahead: dict[tuple[str, str], dict[str, Any] | None] | None = getattr(self._ahead, "docs", None)
        if not ahead or (tenant, entity_id) not in ahead:
            return False, None
        return True, ahead.pop((tenant, entity_id))

    def _load(self, conn: Connection, tenant: str, entity_id: str, principal: Principal) -> dict[str, Any]:
        ready: dict[tuple[str, str], dict[str, Any]] | None = conn.info.get(_PREFETCHED)
        doc = ready.pop((tenant, entity_id), None) if ready else None
        if doc is None:
            doc = self.store.get(conn, tenant, entity_id, for_update=True)
        if doc is None:
            raise NotFound(f"entity {entity_id} does not exist")
        return doc

    # -- single entities -----------------------------------------------------------------------------------
    def create_entity(
        self,
        tenant: str | None,
        payload: Any,
        ctx: ActiveContext | None = None,
        principal: Principal = SUPERUSER,
    ) -> str:
        result = self.batch_create(tenant, [payload], ctx, principal)
        if result.errors:
            raise result.errors[0][1]
        return result.success[0]

    def retrieve(
        self, tenant: str | None, entity_id: str, principal: Principal = SUPERUSER
    ) -> dict[str, Any]:
        check_uri(entity_id, "entity id")
        name = self.tenant_for_read(tenant)
        known, doc = self._read_ahead(name, entity_id)
        if not known:
            with self.db.connect(simple=True) as conn:
                doc = self.store.get(conn, name, entity_id)
        if doc is None or not _visible(doc, name, principal):
            raise NotFound(f"entity {entity_id} does not exist")
        return doc

    def replace_entity(
        self,
        tenant: str | None,
        entity_id: str,
        payload: Any,
        ctx: ActiveContext | None = None,
        principal: Principal = SUPERUSER,
    ) -> None:
        ctx = ctx or self.context()
        check_uri(entity_id, "entity id")
        name = self.tenant_for_read(tenant)
        principal.check_write(name, entity_id)
        now = now_iso()
        if isinstance(payload, dict) and "id" in payload and payload["id"] != entity_id:
            raise BadRequest(f"id in the body ({payload['id']}) differs from the id in the URL")
        doc = EntityParser(ctx, now).entity(
            {**payload, "id": entity_id} if isinstance(payload, dict) else payload
        )
        with self.db.begin() as conn:
            old = self._load(conn, name, entity_id, principal)
            doc["createdAt"], doc["modifiedAt"] = old["createdAt"], now
            self.store.update_many(conn, name, [(old, doc)])
            self._changed(conn, name, old, doc)

    def delete_entity(self, tenant: str | None, entity_id: str, principal: Principal = SUPERUSER) -> None:
        result = self.batch_delete(tenant, [entity_id], principal)
        if result.errors:
            raise result.errors[0][1]

    def _modify(
        self,
        tenant: str | None,
        entity_id: str,
        principal: Principal,
        change: Callable[[dict[str, Any], str], Any],
    ) -> Any:
        check_uri(entity_id, "entity id")
        name = self.tenant_for_read(tenant)
        principal.check_write(name, entity_id)
        now = now_iso()
        with self.db.begin() as conn:
            old = self._load(conn, name, entity_id, principal)
            new = _clone(old)
            outcome = change(new, now)
            if new != old:
                new["modifiedAt"] = now
                self.store.update_many(conn, name, [(old, new)])
                self._changed(conn, name, old, new)
        return outcome

    def append_attrs(
        self,
        tenant: str | None,
        entity_id: str,
        payload: Any,
        ctx: ActiveContext | None = None,
        principal: Principal = SUPERUSER,
        no_overwrite: bool = False,
    ) -> UpdateResult:
        ctx = ctx or self.context()
        attrs = _attrs_payload(payload, ctx, entity_id)
        return self._modify(
            tenant,
            entity_id,
            principal,
            lambda doc, now: _append(doc, EntityParser(ctx, now), attrs, ctx, no_overwrite),
        )

    def update_attrs(
        self,
        tenant: str | None,
        entity_id: str,
        payload: Any,
        ctx: ActiveContext | None = None,
        principal: Principal = SUPERUSER,
    ) -> UpdateResult:
        ctx = ctx or self.context()
        attrs = _attrs_payload(payload, ctx, entity_id)
        return self._modify(
            tenant, entity_id, principal, lambda doc, now: _update(doc, EntityParser(ctx, now), attrs, ctx)
        )

    def patch_attr(
        self,
        tenant: str | None,
        entity_id: str,
        attr: str,
        payload: Any,
        ctx: ActiveContext | None = None,
        principal: Principal = SUPERUSER,
    ) -> None:
        ctx = ctx or self.context()
        if not isinstance(payload, dict):
            raise BadRequest("the body of a partial attribute update must be a JSON object")
        iri = ctx.expand(attr)

        def change(doc: dict[str, Any], now: str) -> None:
            instances = doc["attrs"].get(iri)
            dataset = payload.get("datasetId")
            target = next((i for i in instances or () if i.get("datasetId") == dataset), None)
            if target is None:
                raise NotFound(
                    f"entity {entity_id} has no attribute {attr}"
                    + (f" with datasetId {dataset}" if dataset else "")
                )
            parser = EntityParser(ctx, now)
            merged = _merge_instance(target, payload, parser, attr)
            if merged is None:
                instances.remove(target)
                if not instances:
                    del doc["attrs"][iri]
            else:
                instances[instances.index(target)] = merged

        self._modify(tenant, entity_id, principal, change)

    def replace_attr(
        self,
        tenant: str | None,
        entity_id: str,
        attr: str,
        payload: Any,
        ctx: ActiveContext | None = None,
        principal: Principal = SUPERUSER,
    ) -> None:
        ctx = ctx or self.context()
        iri = ctx.expand(attr)
        if attr in RESERVED:
            raise BadRequest(f"{attr} is not an attribute and cannot be replaced this way")

        def change(doc: dict[str, Any], now: str) -> None:
            if iri not in doc["attrs"]:
                raise NotFound(f"entity {entity_id} has no attribute {attr}")
            new = EntityParser(ctx, now).attribute(attr, payload)
            _put_instances(doc, iri, new)

        self._modify(tenant, entity_id, principal, change)

    def delete_attr(
        self,
        tenant: str | None,
        entity_id: str,
        attr: str,
        ctx: ActiveContext | None = None,
        principal: Principal = SUPERUSER,
        dataset_id: str | None = None,
        delete_all: bool = False,
    ) -> None:
        ctx = ctx or self.context()
        iri = ctx.expand(attr)

        def change(doc: dict[str, Any], now: str) -> None:
            if attr == "scope":
                if not doc.get("scope"):
                    raise NotFound(f"entity {entity_id} has no scope")
                del doc["scope"]
                return
            instances = doc["attrs"].get(iri)
            if not instances:
                raise NotFound(f"entity {entity_id} has no attribute {attr}")
            if delete_all:
                del doc["attrs"][iri]
                return
            keep = [i for i in instances if i.get("datasetId") != dataset_id]
            if len(keep) == len(instances):
                raise NotFound(f"attribute {attr} of {entity_id} has no instance with datasetId {dataset_id}")
            if keep:
                doc["attrs"][iri] = keep
            else:
                del doc["attrs"][iri]

        self._modify(tenant, entity_id, principal, change)

    def merge_entity(
        self,
        tenant: str | None,
        entity_id: str,
        payload: Any,
        ctx: ActiveContext | None = None,
        principal: Principal = SUPERUSER,
    ) -> None:
        ctx = ctx or self.context()
        if not isinstance(payload, dict):
            raise BadRequest("the body must be a JSON object")
        if "id" in payload and payload["id"] != entity_id:
            raise BadRequest(f"id in the body ({payload['id']}) differs from the id in the URL")
        self._modify(
            tenant, entity_id, principal, lambda doc, now: _merge(doc, EntityParser(ctx, now), payload)
        )

    # -- batches -------------------------------------------------------------------------------------------
    def _prepare_batch(
        self,
        payloads: Any,
        ctx: ActiveContext,
        now: str,
        need_type: bool,
        result: BatchResult,
        principal: Principal,
        tenant: str,
        contexts: Sequence[ActiveContext | ApiError] | None = None,
    ) -> list[tuple[dict[str, Any], Any]]:
        if not isinstance(payloads, list):
            raise BadRequest("a batch operation takes a JSON array of entities")
        parsed: list[tuple[dict[str, Any], Any]] = []
        parsers: dict[int, EntityParser] = {}  # one per @context (a parser keeps no state of its own)
        for i, payload in enumerate(payloads):
            ent_ctx = contexts[i] if contexts is not None else ctx
            raw_id = payload.get("id", payload.get("@id")) if isinstance(payload, dict) else None
            try:
                if isinstance(ent_ctx, ApiError):
                    raise ent_ctx
                parser = parsers.get(id(ent_ctx))
                if parser is None:
                    parser = parsers[id(ent_ctx)] = EntityParser(ent_ctx, now)
                doc = parser.entity(payload, need_type=need_type)
                principal.check_write(tenant, doc["id"])
            except ApiError as err:
                result.errors.append((str(raw_id) if raw_id is not None else "", err))
                continue
            parsed.append((doc, payload))
        return parsed

    @_without_gc
    def batch_create(
        self,
        tenant: str | None,
        payloads: Any,
        ctx: ActiveContext | None = None,
        principal: Principal = SUPERUSER,
        contexts: Sequence[ActiveContext | ApiError] | None = None,
    ) -> BatchResult:
        ctx = ctx or self.context()
        name = self.tenant_for_write(tenant, principal)
        now = now_iso()
        result = BatchResult()
        parsed = self._prepare_batch(payloads, ctx, now, True, result, principal, name, contexts)
        with self.db.begin() as conn:
            existing = self.store.get_many(conn, name, [d["id"] for d, _ in parsed], for_update=True)
            fresh: list[dict[str, Any]] = []
            seen: set[str] = set()
            for doc, _ in parsed:
                if doc["id"] in existing or doc["id"] in seen:
                    result.errors.append((doc["id"], AlreadyExists(f"entity {doc['id']} already exists")))
                    continue
                seen.add(doc["id"])
                doc["createdAt"] = doc["modifiedAt"] = now
                fresh.append(doc)
            self.store.insert_many(conn, name, fresh)
            self._changed_many(conn, name, [(None, doc) for doc in fresh])
        result.success = result.created = [d["id"] for d in fresh]
        return result

    @_without_gc
    def batch_upsert(
        self,
        tenant: str | None,
        payloads: Any,
        ctx: ActiveContext | None = None,
        principal: Principal = SUPERUSER,
        mode: str = "replace",
        contexts: Sequence[ActiveContext | ApiError] | None = None,
    ) -> BatchResult:
        ctx = ctx or self.context()
        name = self.tenant_for_write(tenant, principal)
        now = now_iso()
        result = BatchResult()
        parsed = self._prepare_batch(payloads, ctx, now, True, result, principal, name, contexts)
        with self.db.begin() as conn:
            ids = list(dict.fromkeys(d["id"] for d, _ in parsed))
            geo_free: set[str] = set()
            existing = self.store.get_many(conn, name, ids, for_update=True, geo_free=geo_free)
            created: dict[str, dict[str, Any]] = {}
            updated: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
            for doc, _ in parsed:
                eid = doc["id"]
                current = created.get(eid) or (updated[eid][1] if eid in updated else existing.get(eid))
                if current is None:
                    doc["createdAt"] = doc["modifiedAt"] = now
                    created[eid] = doc
                    continue
                if mode == "update" or eid in created:
                    new = _clone(current)
                    _merge_types(new, doc)
                    for iri, instances in doc["attrs"].items():
                        _put_instances(new, iri, instances, keep_others=True)
                    if "scope" in doc:
                        new["scope"] = doc["scope"]
                else:
                    new = doc
                    new["createdAt"] = current["createdAt"]
                new["modifiedAt"] = now
                if eid in created:
                    created[eid] = new
                else:
                    updated[eid] = (existing[eid], new)
            self.store.insert_many(conn, name, list(created.values()))
            self.store.update_many(conn, name, list(updated.values()), old_geo_free=geo_free)
            self._changed_many(conn, name, [(None, doc) for doc in created.values()] + list(updated.values()))
        result.created = list(created)
        result.success = list(created) + list(updated)
        return result

    @_without_gc
    def batch_update(
        self,
        tenant: str | None,
        payloads: Any,
        ctx: ActiveContext | None = None,
        principal: Principal = SUPERUSER,
        no_overwrite: bool = False,
        merge: bool = False,
        contexts: Sequence[ActiveContext | ApiError] | None = None,
    ) -> BatchResult:
        ctx = ctx or self.context()
        name = self.tenant_for_read(tenant)
        now = now_iso()
        result = BatchResult()
        if not isinstance(payloads, list):
            raise BadRequest("a batch operation takes a JSON array of entities")
        with self.db.begin() as conn:
            ids = [p["id"] for p in payloads if isinstance(p, dict) and isinstance(p.get("id"), str)]
            geo_free: set[str] = set()
            existing = self.store.get_many(conn, name, ids, for_update=True, geo_free=geo_free)
            pairs: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
            for i, payload in enumerate(payloads):
                ent_ctx = contexts[i] if contexts is not None else ctx
                raw_id = payload.get("id") if isinstance(payload, dict) else None
                try:
                    if isinstance(ent_ctx, ApiError):
                        raise ent_ctx
                    if not isinstance(payload, dict):
                        raise BadRequest("each entity must be a JSON object")
                    eid = check_uri(raw_id, "id")
                    principal.check_write(name, eid)
                    EntityParser(ent_ctx, now).attributes(payload, allow_null=True)  # invalid input first
                    if eid not in existing:
                        raise NotFound(f"entity {eid} does not exist")
                    base = pairs[eid][1] if eid in pairs else existing[eid]
                    new = _clone(base)
                    parser = EntityParser(ent_ctx, now)
                    if merge:
                        _merge(new, parser, payload)
                    else:
                        skipped = _append(new, parser, payload, ent_ctx, no_overwrite).not_updated
                        if skipped:  # the other attributes are applied; the entity is still reported
                            names = ", ".join(ent_ctx.compact(n["attributeName"]) for n in skipped)
                            result.errors.append(
                                (eid, BadRequest(f"attributes {names} exist and noOverwrite is set"))
                            )
                except ApiError as err:
                    result.errors.append((str(raw_id or ""), err))
                    continue
                new["modifiedAt"] = now
                pairs[eid] = (existing[eid], new)
            self.store.update_many(conn, name, list(pairs.values()), old_geo_free=geo_free)
            self._changed_many(conn, name, list(pairs.values()))
        result.success = list(pairs)
        return result

    @_without_gc
    def batch_delete(self, tenant: str | None, ids: Any, principal: Principal = SUPERUSER) -> BatchResult:
        name = self.tenant_for_read(tenant)
        if not isinstance(ids, list):
            raise BadRequest("batch delete takes a JSON array of entity ids")
        if not ids:
            raise BadRequest("batch delete needs at least one entity id")
        result = BatchResult()
        valid: list[str] = []
        for raw in ids:
            try:
                eid = check_uri(raw, "id")
                principal.check_write(name, eid)
            except ApiError as err:
                result.errors.append((str(raw), err))
                continue
            valid.append(eid)
        with self.db.begin() as conn:
            existing = self.store.get_many(conn, name, valid, for_update=True)
            gone = [e for e in dict.fromkeys(valid) if e in existing]
            seen: set[str] = set()
            for eid in valid:
                if eid not in existing or eid in seen:
                    result.errors.append((eid, NotFound(f"entity {eid} does not exist")))
                seen.add(eid)
            self.store.delete_many(conn, name, gone)
            for eid in gone:
                self._changed(conn, name, existing[eid], None)
        result.success = gone
        return result

    def load_visible(
        self, tenant: str | None, ids: list[str], principal: Principal
    ) -> dict[str, dict[str, Any]]:
        """Entities by id that ``principal`` may see (for joining linked entities)."""
        name = self.tenant_for_read(tenant)
        with self.db.connect() as conn:
            found = self.store.get_many(conn, name, ids)
        return {k: v for k, v in found.items() if _visible(v, name, principal)}

    def purge(
        self,
        tenant: str | None,
        query: EntityQuery,
        principal: Principal = SUPERUSER,
        drop: set[str] | None = None,
        keep: set[str] | None = None,
    ) -> int:
        """Delete the matching entities, or with ``drop``/``keep`` only some of their attributes."""
        name = self.tenant_for_read(tenant)
        query.limit, query.offset, query.count = 10**9, 0, False
        now = now_iso()
        with self.db.begin() as conn:
            docs = self.store.query(conn, name, query).docs
            for doc in docs:
                principal.check_write(name, doc["id"])
            if drop is None and keep is None:
                self.store.delete_many(conn, name, [d["id"] for d in docs])
                for doc in docs:
                    self._changed(conn, name, doc, None)
                return len(docs)
            pairs = []
            for old in docs:
                new = _clone(old)
                new["attrs"] = {
                    k: v
                    for k, v in old["attrs"].items()
                    if (drop is None or k not in drop) and (keep is None or k in keep)
                }
                if new != old:
                    new["modifiedAt"] = now
                    pairs.append((old, new))
            self.store.update_many(conn, name, pairs)
            for old, new in pairs:
                self._changed(conn, name, old, new)
            return len(pairs)

    # -- queries -------------------------------------------------------------------------------------------
    def query(self, tenant: str | None, query: EntityQuery, principal: Principal = SUPERUSER) -> QueryResult:
        name = self.tenant_for_read(tenant)
        if not principal.can_read_private(name):
            query.public_only = True
        with self.db.connect() as conn:
            return self.store.query(conn, name, query)

    def type_counts(self, tenant: str | None, principal: Principal = SUPERUSER) -> dict[str, int]:
        name = self.tenant_for_read(tenant)
        with self.db.connect() as conn:
            return self.store.type_counts(conn, name, not principal.can_read_private(name))

    def type_details(
        self, tenant: str | None, types: Iterable[str] | None, principal: Principal = SUPERUSER
    ) -> dict[str, dict[str, dict[str, Any]]]:
        """For each type: attribute IRI → {"types": set of attribute types, "count": entities}."""
        name = self.tenant_for_read(tenant)
        out: dict[str, dict[str, dict[str, Any]]] = {}
        with self.db.connect() as conn:
            for doc in self.store.iter_docs(conn, name, not principal.can_read_private(name), types):
                for etype in doc["type"]:
                    slot = out.setdefault(etype, {})
                    slot.setdefault("", {"count": 0})["count"] += 1
                    for iri, instances in doc["attrs"].items():
                        info = slot.setdefault(iri, {"types": set(), "count": 0})
                        info["count"] += 1
                        info["types"].update(i.get("type", "Property") for i in instances)
        return out

    # -- conveniences for services (compact names through the core context unless told otherwise) ----------
    def upsert(
        self, tenant: str | None, entities: list[dict[str, Any]], context: Any = None, mode: str = "update"
    ) -> BatchResult:
        result = self.batch_upsert(tenant, entities, self.context(context), SUPERUSER, mode=mode)
        if result.errors:
            raise result.errors[0][1]
        return result

    def get(
        self,
        tenant: str | None,
        entity_id: str,
        context: Any = None,
        fmt: str = "normalized",
        principal: Principal = SUPERUSER,
    ) -> dict[str, Any]:
        return Renderer(self.context(context), fmt=fmt).entity(self.retrieve(tenant, entity_id, principal))

    def find(
        self,
        tenant: str | None,
        type: str | None = None,
        q: str | None = None,
        context: Any = None,
        fmt: str = "normalized",
        limit: int = 1000,
        principal: Principal = SUPERUSER,
    ) -> list[dict[str, Any]]:
        from society5.broker.query import q as qlang
        from society5.broker.query.typeexpr import parse_type_expr

        ctx = self.context(context)
        query = EntityQuery(limit=limit)
        if type:
            query.types = parse_type_expr(type, ctx.expand)
        if q:
            query.q = qlang.expand_names(qlang.parse_q(q), ctx.expand)
        renderer = Renderer(ctx, fmt=fmt)
        return [renderer.entity(d) for d in self.query(tenant, query, principal).docs]


def _clone(doc: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of a JSON document; an orjson round trip is several times faster than copy.deepcopy."""
    copied: dict[str, Any] = orjson.loads(orjson.dumps(doc))
    return copied


def _visible(doc: dict[str, Any], tenant: str, principal: Principal) -> bool:
    from society5.broker.store import is_public

    if principal.can_read_private(tenant):
        if principal.role == "device" and principal.entity_prefix:
            return doc["id"].startswith(principal.entity_prefix) or is_public(doc)
        return True
    return is_public(doc)


def _attrs_payload(payload: Any, ctx: ActiveContext, entity_id: str) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise BadRequest("the body must be a JSON object of attributes")
    if "id" in payload and payload["id"] != entity_id:
        raise BadRequest(f"id in the body ({payload['id']}) differs from the id in the URL")
    return payload


def _merge_types(doc: dict[str, Any], other: dict[str, Any]) -> None:
    for t in other.get("type", ()):
        if t not in doc["type"]:
            doc["type"].append(t)


def _put_instances(
    doc: dict[str, Any], iri: str, instances: list[dict[str, Any]], keep_others: bool = True
) -> None:
    current = doc["attrs"].get(iri, [])
    by_ds = {i.get("datasetId"): i for i in current}
    for inst in instances:
        old = by_ds.get(inst.get("datasetId"))
        if old is not None:
            inst["createdAt"] = old.get("createdAt", inst.get("createdAt"))
        by_ds[inst.get("datasetId")] = inst
    if not keep_others:
        wanted = {i.get("datasetId") for i in instances}
        by_ds = {k: v for k, v in by_ds.items() if k in wanted}
    doc["attrs"][iri] = list(by_ds.values())


def _delete_instances(doc: dict[str, Any], iri: str, inst: dict[str, Any]) -> bool:
    current = doc["attrs"].get(iri)
    if not current:
        return False
    keep = [i for i in current if i.get("datasetId") != inst.get("datasetId")]
    if len(keep) == len(current):
        return False
    if keep:
        doc["attrs"][iri] = keep
    else:
        del doc["attrs"][iri]
    return True


def _types_and_scope(
    doc: dict[str, Any], payload: dict[str, Any], ctx: ActiveContext, scope_mode: str, result: UpdateResult
) -> None:
    """``type`` in an attribute payload adds types; ``scope`` replaces (with noOverwrite: extends) scopes."""
    from society5.broker.model import parse_scopes, parse_types

    if "type" in payload:
        _merge_types(doc, {"type": parse_types(payload["type"], ctx)})
    if "scope" in payload:
        scopes = parse_scopes(payload["scope"])
        if scope_mode == "union":
            doc["scope"] = list(dict.fromkeys([*doc.get("scope", []), *scopes]))
        elif scope_mode == "existing" and not doc.get("scope"):
            result.not_updated.append({"attributeName": "scope", "reason": "the entity has no scope"})
        else:
            doc["scope"] = scopes


def _append(
    doc: dict[str, Any], parser: EntityParser, payload: dict[str, Any], ctx: ActiveContext, no_overwrite: bool
) -> UpdateResult:
    result = UpdateResult()
    _types_and_scope(doc, payload, ctx, "union" if no_overwrite else "replace", result)
    for iri, instances in parser.attributes(payload, allow_null=True).items():
        nulls = [i for i in instances if has_null(i)]
        for inst in nulls:
            if not _delete_instances(doc, iri, inst):
                result.not_updated.append({"attributeName": iri, "reason": "attribute does not exist"})
            elif iri not in result.updated:
                result.updated.append(iri)
        live = [i for i in instances if not has_null(i)]
        if not live:
            continue
        if no_overwrite:
            existing = {i.get("datasetId") for i in doc["attrs"].get(iri, [])}
            fresh = [i for i in live if i.get("datasetId") not in existing]
            if len(fresh) < len(live):
                result.not_updated.append(
                    {"attributeName": iri, "reason": "attribute exists and noOverwrite is set"}
                )
            live = fresh
            if not live:
                continue
        _put_instances(doc, iri, live)
        if iri not in result.updated:
            result.updated.append(iri)
    return result


def _update(
    doc: dict[str, Any], parser: EntityParser, payload: dict[str, Any], ctx: ActiveContext
) -> UpdateResult:
    result = UpdateResult()
    _types_and_scope(doc, payload, ctx, "existing", result)
    attrs = parser.attributes(payload, allow_null=True)
    for iri, instances in attrs.items():
        current = {i.get("datasetId") for i in doc["attrs"].get(iri, [])}
        for inst in instances:
            if inst.get("datasetId") not in current:
                result.not_updated.append({"attributeName": iri, "reason": "attribute does not exist"})
                continue
            if has_null(inst):
                _delete_instances(doc, iri, inst)
            else:
                _put_instances(doc, iri, [inst])
            if iri not in result.updated:
                result.updated.append(iri)
    return result


def _merge_instance(
    target: dict[str, Any], payload: dict[str, Any], parser: EntityParser, attr: str
) -> dict[str, Any] | None:
    """Partial update of one instance; None means the payload deletes it (NGSI-LD Null)."""
    kind = payload.get("type", target.get("type", "Property"))
    if kind != target.get("type", "Property"):
        raise BadRequest(
            f"attribute {attr} is a {target.get('type')}; a partial update cannot make it a {kind}"
        )
    member = VALUE_MEMBER.get(kind, "value")
    if has_null({"type": kind, member: payload.get(member, payload.get("value"))}):
        return None
    if payload.get(member, "") in (None, NGSI_NULL) or payload.get("value", "") in (None, NGSI_NULL):
        return None
    merged = {k: v for k, v in target.items() if k not in ("modifiedAt",)}
    if kind != target.get("type"):
        old_member = VALUE_MEMBER.get(target.get("type", "Property"), "value")
        merged.pop(old_member, None)
    for key, value in payload.items():
        if key in ("createdAt", "modifiedAt"):
            continue
        merged[key] = value
    if member not in merged and "value" in payload:
        merged[member] = payload["value"]
    compact_subs = {k: v for k, v in merged.items() if k.startswith("http") or ":" in k}
    plain = {k: v for k, v in merged.items() if k not in compact_subs}
    inst = parser.instance(attr, plain)
    inst.update({k: v for k, v in compact_subs.items() if k not in inst})
    inst["createdAt"] = target.get("createdAt", inst["createdAt"])
    return inst


def _merge(doc: dict[str, Any], parser: EntityParser, payload: dict[str, Any]) -> None:
    ctx = parser.ctx
    if "type" in payload:
        from society5.broker.model import parse_types

        _merge_types(doc, {"type": parse_types(payload["type"], ctx)})
    if "scope" in payload:
        from society5.broker.model import parse_scopes

        doc["scope"] = parse_scopes(payload["scope"])
    for name, raw in payload.items():
        if name in ("id", "type", "@context", "scope", "createdAt", "modifiedAt"):
            continue
        iri = ctx.expand(name)
        instances = parser.attribute(name, raw, allow_null=True)
        for inst in instances:
            if has_null(inst):
                _delete_instances(doc, iri, inst)
                continue
            current = next(
                (i for i in doc["attrs"].get(iri, []) if i.get("datasetId") == inst.get("datasetId")), None
            )
            if current is not None and inst.get("type") == current.get("type"):
                merged = dict(current)
                merged.update({k: v for k, v in inst.items() if k != "createdAt"})
                inst = merged
            _put_instances(doc, iri, [inst])
