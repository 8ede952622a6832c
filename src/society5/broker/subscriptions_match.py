"""Which subscriptions an entity change concerns, and the notification each one gets (§5.8.6, §5.11).

One code path for HTTP subscriptions and in-process subscribers: both are compiled into a :class:`Compiled`
and tested with :func:`triggers_fired`. The notification is rendered when the change happens (inside the
write's transaction), so it shows the entity exactly as that change left it.

Trigger semantics (``W`` = watchedAttributes, or every attribute when absent):

- creating an entity fires ``entityCreated`` and ``attributeCreated`` when it has an attribute in ``W`` (any
  entity when ``W`` is absent): a subscriber with the default triggers hears about new entities;
- an update fires ``attributeCreated`` / ``attributeUpdated`` / ``attributeDeleted`` per attribute instance
  (by datasetId) in ``W`` that appeared / changed / disappeared, and ``entityUpdated`` when any of them did
  (or, without ``W``, when only the types or scopes changed);
- deleting an entity fires ``entityDeleted`` and ``attributeDeleted`` the same way.

``q``, ``scopeQ`` and ``geoQ`` are tested on the entity after the change (before it, for a deletion).
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from society5.broker import geo as geo_mod
from society5.broker.jsonld import CORE_CONTEXT_URL, ActiveContext
from society5.broker.model import LOCATION, NGSI_NULL, VALUE_MEMBER, Projection, Renderer, parse_projection
from society5.broker.query import q as qlang
from society5.broker.query import scope as scopelang
from society5.broker.query.typeexpr import parse_type_expr
from society5.broker.subscriptions import DEFAULT_TRIGGERS
from society5.core.timeutil import now_iso, parse_iso

log = logging.getLogger(__name__)

NOTIFICATION = "ngsi-ld.notification"
JSONLD = "application/ld+json"
PREVIOUS = {
    "Property": "previousValue",
    "GeoProperty": "previousValue",
    "Relationship": "previousObject",
    "LanguageProperty": "previousLanguageMap",
    "ListProperty": "previousValueList",
    "ListRelationship": "previousObjectList",
    "VocabProperty": "previousVocab",
    "JsonProperty": "previousJson",
}
# One triggerReason per notification: the most telling of those that fired.
_REASONS = ("entityDeleted", "entityCreated", "attributeDeleted", "attributeCreated", "attributeUpdated",
            "entityUpdated")
Loader = Callable[[list[str]], dict[str, dict[str, Any]]]


@dataclass(frozen=True)
class Selector:
    """One member of ``entities``: an id (which wins over idPattern), an idPattern, a type selector."""

    ids: frozenset[str] | None = None
    pattern: re.Pattern[str] | None = None
    types: tuple[frozenset[str], ...] | None = None

    def matches(self, doc: dict[str, Any]) -> bool:
        if self.ids is not None:
            if doc["id"] not in self.ids:
                return False
        elif self.pattern is not None and not self.pattern.search(doc["id"]):
            return False
        if self.types is not None:
            have = set(doc.get("type", ()))
            return any(alt <= have for alt in self.types)
        return True


@dataclass
class Compiled:
    """A subscription ready to be tested against changes and to render notifications."""

    id: str
    tenant: str | None  # None: an in-process subscriber of every tenant
    kind: str = NOTIFICATION
    selectors: tuple[Selector, ...] = ()
    watched: frozenset[str] | None = None
    triggers: frozenset[str] = frozenset(DEFAULT_TRIGGERS)
    q: qlang.Node | None = None
    scope: scopelang.ScopeQuery | None = None
    geo: geo_mod.GeoQuery | None = None
    throttling: float = 0.0
    interval: float | None = None
    paused: bool = False
    expires_at: float | None = None
    ctx: ActiveContext | None = None
    context_source: Any = None
    fmt: str = "normalized"
    attrs: frozenset[str] | None = None
    sys_attrs: bool = False
    show_changes: bool = False
    pick: Projection | None = None
    omit: Projection | None = None
    lang: str | None = None
    datasets: set[str] | None = None
    join: str | None = None
    join_level: int = 1
    endpoint: dict[str, Any] | None = None
    accept: str = "application/json"

    def active(self, now: float) -> bool:
        return not self.paused and (self.expires_at is None or now < self.expires_at)

    def index_types(self) -> set[str] | None:
        """Entity types under which to file this subscription; None when an entity of any type may match."""
        if not self.selectors or any(s.types is None for s in self.selectors):
            return None
        return {t for s in self.selectors for alt in s.types or () for t in alt}

    def link_context(self) -> str:
        """The @context URL for a ``Link`` header (a single URL; else the core context)."""
        src = self.context_source
        if isinstance(src, list) and len(src) == 1:
            src = src[0]
        return src if isinstance(src, str) else CORE_CONTEXT_URL

    def renderer(self, loader: Loader | None) -> Renderer:
        assert self.ctx is not None
        return Renderer(self.ctx, fmt=self.fmt, sys_attrs=self.sys_attrs, attrs=self.attrs, pick=self.pick,
                        omit=self.omit, lang=self.lang, datasets=self.datasets, join=self.join,
                        join_level=self.join_level, loader=loader)


def compile_doc(tenant: str | None, doc: dict[str, Any], context: Callable[[Any], ActiveContext]) -> Compiled:
    """A stored subscription (see :mod:`society5.broker.subscriptions`) compiled for matching."""
    source = doc.get("jsonldContext") or doc.get("@context")
    try:
        ctx = context(source)
    except Exception:  # a context that vanished from the cache must not stop the other subscriptions
        log.warning("subscription %s: @context %r is not available; notifying with the core context",
                    doc["id"], source)
        ctx, source = context(None), None
    note = doc.get("notification", {})
    endpoint = note.get("endpoint")
    geoq = doc.get("geoQ")
    fmt = note.get("format", "normalized")
    return Compiled(
        id=doc["id"],
        tenant=tenant,
        selectors=tuple(_selector(s) for s in doc.get("entities", ())),
        watched=frozenset(doc["watchedAttributes"]) if doc.get("watchedAttributes") else None,
        triggers=frozenset(doc.get("notificationTrigger", DEFAULT_TRIGGERS)),
        q=qlang.parse_q(doc["q"]) if doc.get("q") else None,
        scope=scopelang.parse_scope_q(doc["scopeQ"]) if doc.get("scopeQ") else None,
        geo=_geo(geoq) if geoq else None,
        throttling=float(doc.get("throttling", 0)),
        interval=float(doc["timeInterval"]) if doc.get("timeInterval") else None,
        paused=doc.get("isActive") is False,
        expires_at=parse_iso(doc["expiresAt"]).timestamp() if doc.get("expiresAt") else None,
        ctx=ctx,
        context_source=source,
        fmt="keyValues" if fmt == "simplified" else fmt,
        attrs=frozenset(note["attributes"]) if note.get("attributes") else None,
        sys_attrs=bool(note.get("sysAttrs")),
        show_changes=bool(note.get("showChanges")),
        pick=parse_projection(",".join(note["pick"]), "pick") if note.get("pick") else None,
        omit=parse_projection(",".join(note["omit"]), "omit") if note.get("omit") else None,
        lang=doc.get("lang"),
        datasets=set(doc["datasetId"]) if doc.get("datasetId") else None,
        join=note.get("join") if note.get("join") in ("inline", "flat") else None,
        join_level=int(note.get("joinLevel", 1)),
        endpoint=endpoint,
        accept=(endpoint or {}).get("accept", "application/json"),
    )


def _selector(sel: dict[str, str]) -> Selector:
    return Selector(
        ids=frozenset([sel["id"]]) if "id" in sel else None,
        pattern=re.compile(sel["idPattern"]) if "idPattern" in sel else None,
        types=tuple(parse_type_expr(sel["type"])) if "type" in sel else None,
    )


def _geo(geoq: dict[str, Any]) -> geo_mod.GeoQuery:
    import dataclasses

    gq = geo_mod.parse_geo_query(geoq.get("georel"), geoq.get("geometry"), geoq.get("coordinates"))
    return dataclasses.replace(gq, geoproperty=geoq.get("geoproperty") or LOCATION)


# --- changes ------------------------------------------------------------------------------------------------


@dataclass
class Change:
    """What one write did to one entity: attribute IRIs created, updated and deleted (by instance)."""

    tenant: str
    old: dict[str, Any] | None
    new: dict[str, Any] | None
    at: str = field(default_factory=now_iso)
    created: set[str] = field(default_factory=set)
    updated: set[str] = field(default_factory=set)
    deleted: set[str] = field(default_factory=set)
    gone: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # removed instances
    before: dict[str, dict[str | None, dict[str, Any]]] = field(default_factory=dict)  # old changed ones
    meta: bool = False  # types or scopes changed

    @classmethod
    def of(cls, tenant: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> Change:
        ch = cls(tenant, old, new, at=(new or {}).get("modifiedAt") or now_iso())
        old_attrs = (old or {}).get("attrs", {})
        new_attrs = (new or {}).get("attrs", {})
        for iri in old_attrs.keys() | new_attrs.keys():
            before = {i.get("datasetId"): i for i in old_attrs.get(iri, ())}
            after = {i.get("datasetId"): i for i in new_attrs.get(iri, ())}
            if after.keys() - before.keys():
                ch.created.add(iri)
            gone = [i for ds, i in before.items() if ds not in after]
            if gone:
                ch.deleted.add(iri)
                ch.gone[iri] = gone
            changed = {ds: i for ds, i in before.items() if ds in after and after[ds] != i}
            if changed:
                ch.updated.add(iri)
            if gone or changed:
                ch.before[iri] = {**changed, **{i.get("datasetId"): i for i in gone}}
        if old is not None and new is not None:
            ch.meta = old.get("type") != new.get("type") or old.get("scope") != new.get("scope")
        return ch

    @property
    def state(self) -> dict[str, Any]:
        doc = self.new if self.new is not None else self.old
        assert doc is not None
        return doc

    @property
    def types(self) -> set[str]:
        return set((self.old or {}).get("type", ())) | set((self.new or {}).get("type", ()))


def _watched(c: Compiled, attrs: set[str]) -> set[str]:
    return attrs if c.watched is None else attrs & c.watched


def triggers_fired(c: Compiled, ch: Change) -> set[str]:
    """The triggers of ``c`` that ``ch`` fires, when the changed entity is one ``c`` selects (else empty)."""
    state = ch.state
    if c.selectors and not any(s.matches(state) for s in c.selectors):
        return set()
    fired: set[str] = set()
    if ch.old is None:
        if _watched(c, ch.created) or c.watched is None:
            fired.add("entityCreated")
        if _watched(c, ch.created):
            fired.add("attributeCreated")
    elif ch.new is None:
        if _watched(c, ch.deleted) or c.watched is None:
            fired.add("entityDeleted")
        if _watched(c, ch.deleted):
            fired.add("attributeDeleted")
    else:
        for trigger, attrs in (("attributeCreated", ch.created), ("attributeUpdated", ch.updated),
                               ("attributeDeleted", ch.deleted)):
            if _watched(c, attrs):
                fired.add(trigger)
        if fired or (c.watched is None and ch.meta):
            fired.add("entityUpdated")
    fired &= c.triggers
    if not fired:
        return fired
    if c.q is not None and not qlang.evaluate(c.q, state):
        return set()
    if c.scope is not None and not scopelang.matches(c.scope, scopelang.doc_scopes(state)):
        return set()
    if c.geo is not None and not _geo_holds(c.geo, state):
        return set()
    return fired


def _geo_holds(gq: geo_mod.GeoQuery, doc: dict[str, Any]) -> bool:
    return any(inst.get("type") == "GeoProperty" and isinstance(inst.get("value"), dict)
               and gq.matches(inst["value"]) for inst in doc.get("attrs", {}).get(gq.geoproperty, ()))


# --- notifications ------------------------------------------------------------------------------------------


def notification(c: Compiled, data: list[dict[str, Any]], reason: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"id": f"urn:ngsi-ld:Notification:{uuid.uuid4()}", "type": "Notification",
                            "subscriptionId": c.id, "notifiedAt": now_iso(), "data": data}
    if reason is not None:
        body["triggerReason"] = reason
    return body


def change_notification(c: Compiled, ch: Change, fired: set[str], loader: Loader | None) -> dict[str, Any]:
    reason = next(r for r in _REASONS if r in fired)
    return notification(c, entities(c, ch, fired, loader), reason)


def entities(c: Compiled, ch: Change, fired: set[str], loader: Loader | None) -> list[dict[str, Any]]:
    """The ``data`` of a notification about ``ch``: the entity after it (deleted attributes shown as NGSI-LD
    Null), or for a deleted entity its id, type and deletedAt."""
    assert c.ctx is not None
    key_values = c.fmt == "keyValues"
    if ch.new is None:
        old = ch.state
        nulls = _watched(c, ch.deleted) if "attributeDeleted" in fired else set()
        if c.show_changes:
            nulls |= set(old.get("attrs", {}))
        keep = ("id", "type", "scope", "createdAt", "modifiedAt")
        stub: dict[str, Any] = {k: old[k] for k in keep if k in old}
        stub["attrs"] = {iri: [_null(old["attrs"][iri][0], ch.at, c.lang is not None, keep_ds=False)]
                         for iri in nulls}
        out = c.renderer(None).entity(stub)
        out["deletedAt"] = ch.at
        rendered: Any = out
    else:
        doc = ch.new
        if "attributeDeleted" in fired:
            attrs = dict(doc.get("attrs", {}))
            for iri in _watched(c, ch.deleted):
                gone = ch.gone[iri]
                if iri in attrs:
                    attrs[iri] = attrs[iri] + [_null(g, ch.at, True) for g in gone]
                else:  # every instance went: one Null stands for the attribute
                    attrs[iri] = [_null(gone[0], ch.at, True, keep_ds=False)]
            doc = {**doc, "attrs": attrs}
        rendered = c.renderer(loader).render(doc)
    main = rendered[0] if isinstance(rendered, list) else rendered
    source = ch.state
    if c.sys_attrs and key_values:  # the Renderer leaves them out of keyValues; a notification keeps them
        main["createdAt"], main["modifiedAt"] = source.get("createdAt"), source.get("modifiedAt")
    if c.show_changes and not key_values:
        for iri, before in ch.before.items():
            _add_previous(main, c.ctx.compact(iri), before, c.ctx)
    data = rendered if isinstance(rendered, list) else [rendered]
    if c.accept == JSONLD:
        data = [{**d, "@context": c.context_source or CORE_CONTEXT_URL} for d in data]
    return data


def _null(inst: dict[str, Any], at: str, lang_map: bool, keep_ds: bool = True) -> dict[str, Any]:
    """The NGSI-LD Null that stands for a deleted attribute instance in a notification."""
    kind = inst.get("type", "Property")
    value: Any = {"@none": NGSI_NULL} if kind == "LanguageProperty" and lang_map else NGSI_NULL
    out = {"type": kind, VALUE_MEMBER.get(kind, "value"): value, "deletedAt": at}
    for key in ("createdAt", "modifiedAt") + (("datasetId",) if keep_ds else ()):
        if key in inst:
            out[key] = inst[key]
    return out


def _add_previous(out: dict[str, Any], name: str, before: dict[str | None, dict[str, Any]],
                  ctx: ActiveContext) -> None:
    rendered = out.get(name)
    for item in rendered if isinstance(rendered, list) else [rendered]:
        if not isinstance(item, dict):
            continue
        old = before.get(item.get("datasetId"))
        if old is None:
            continue
        kind = old.get("type", "Property")
        value = old.get(VALUE_MEMBER.get(kind, "value"))
        if kind == "VocabProperty" and value is not None:
            value = [ctx.compact(v) for v in value] if isinstance(value, list) else ctx.compact(value)
        item[PREVIOUS.get(kind, "previousValue")] = value
