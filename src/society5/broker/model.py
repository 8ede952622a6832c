"""NGSI-LD entities: validation of incoming payloads into the stored form, and rendering them back.

Stored form (the ``doc`` column): attribute names and types are expanded IRIs, core members stay short::

    {"id": "urn:ngsi-ld:Tank:1", "type": ["https://…#Tank"], "scope": ["/public"],
     "createdAt": "…Z", "modifiedAt": "…Z",
     "attrs": {"https://…#level": [{"type": "Property", "value": 42, "observedAt": "…Z",
                                    "createdAt": "…Z", "modifiedAt": "…Z",
                                    "https://…#accuracy": {"type": "Property", "value": 0.9}}]}}

Each attribute is a list of instances (several only for multi-attributes, told apart by ``datasetId``);
sub-properties are extra keys of an instance, stored with expanded names.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from society5.broker.geo import GEOMETRY_TYPES
from society5.broker.jsonld import ActiveContext, is_absolute_iri
from society5.core.errors import BadRequest
from society5.core.timeutil import parse_iso

NGSI_NULL = "urn:ngsi-ld:null"
LOCATION = "https://uri.etsi.org/ngsi-ld/location"
GEO_ATTRS = {
    "location": LOCATION,
    "observationSpace": "https://uri.etsi.org/ngsi-ld/observationSpace",
    "operationSpace": "https://uri.etsi.org/ngsi-ld/operationSpace",
}
# Attribute type → the member that carries its value.
VALUE_MEMBER = {
    "Property": "value",
    "GeoProperty": "value",
    "Relationship": "object",
    "LanguageProperty": "languageMap",
    "ListProperty": "valueList",
    "ListRelationship": "objectList",
    "VocabProperty": "vocab",
    "JsonProperty": "json",
}
MEMBER_TYPE = {
    "value": "Property",
    "object": "Relationship",
    "languageMap": "LanguageProperty",
    "valueList": "ListProperty",
    "objectList": "ListRelationship",
    "vocab": "VocabProperty",
    "json": "JsonProperty",
}
INSTANCE_META = ("datasetId", "observedAt", "unitCode", "createdAt", "modifiedAt", "deletedAt", "lang")
RESERVED = {"id", "type", "@context", "scope", "createdAt", "modifiedAt", "deletedAt", "@id", "@type"}
_BAD_NAME_CHARS = re.compile(r"[<>\"'=;()\s\\{}|^`]")
_NOT_IN_URI = re.compile(r'[\s<>"]')
_SCOPE_RE = re.compile(r"^/[^/\s#+]+(/[^/\s#+]+)*$")
_DATETIME_TYPES = ("DateTime", "Date", "Time")


def check_uri(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise BadRequest(f"{what} must be a URI string")
    if not is_absolute_iri(value) or _NOT_IN_URI.search(value):
        raise BadRequest(f"{what} {value!r} is not a valid URI (expected e.g. urn:ngsi-ld:Type:id)")
    return value


def check_attr_name(name: str) -> None:
    if name not in _GOOD_NAMES:
        if not name or _BAD_NAME_CHARS.search(name) or name.startswith("@"):
            raise BadRequest(f"attribute name {name!r} contains characters that are not allowed")
        if len(_GOOD_NAMES) < 10_000:  # the same few names arrive in every write of a sensor
            _GOOD_NAMES.add(name)


_GOOD_NAMES: set[str] = set()


def check_datetime(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise BadRequest(f"{what} must be an ISO 8601 date-time string")
    try:
        parse_iso(value)
    except ValueError as err:
        raise BadRequest(f"{what} {value!r} is not an ISO 8601 date-time") from err
    return value


def parse_types(value: Any, ctx: ActiveContext, what: str = "type") -> list[str]:
    if type(value) is str:
        known = ctx.types_memo.get(value)
        if known is not None:
            return list(known)
    names = value if isinstance(value, list) else [value]
    if not names:
        raise BadRequest(f"{what} must not be empty")
    out: list[str] = []
    for name in names:
        if not isinstance(name, str) or not name or _BAD_NAME_CHARS.search(name):
            raise BadRequest(f"{what} {name!r} is not a valid entity type name")
        iri = ctx.expand(name)
        if iri.startswith("@") or not is_absolute_iri(iri):
            raise BadRequest(
                f"{what} {name!r} does not expand to an IRI (it is a JSON-LD keyword or unmapped)"
            )
        if iri not in out:
            out.append(iri)
    if type(value) is str and len(ctx.types_memo) < 10_000:
        ctx.types_memo[value] = tuple(out)
    return out


def parse_scopes(value: Any) -> list[str]:
    scopes = value if isinstance(value, list) else [value]
    for scope in scopes:
        if not isinstance(scope, str) or not _SCOPE_RE.match(scope):
            raise BadRequest(f"scope {scope!r} is not valid: use a path such as /Hokkaido/Sapporo or /public")
    return list(dict.fromkeys(scopes))


class EntityParser:
    """Validates one payload into the stored form. ``now`` stamps createdAt/modifiedAt."""

    def __init__(self, ctx: ActiveContext, now: str):
        self.ctx = ctx
        self.now = now

    def entity(self, payload: Any, *, need_id: bool = True, need_type: bool = True) -> dict[str, Any]:
        if not isinstance(payload, dict):
            raise BadRequest("an entity must be a JSON object")
        doc: dict[str, Any] = {}
        if need_id or "id" in payload or "@id" in payload:
            doc["id"] = check_uri(payload.get("id", payload.get("@id")), "id")
        raw_type = payload.get("type", payload.get("@type"))
        if raw_type is None:
            if need_type:
                raise BadRequest("type is missing: every entity needs a type")
        else:
            doc["type"] = parse_types(raw_type, self.ctx)
        if "scope" in payload:
            doc["scope"] = parse_scopes(payload["scope"])
        doc["attrs"] = self.attributes(payload)
        return doc

    def attributes(
        self, payload: dict[str, Any], *, allow_null: bool = False
    ) -> dict[str, list[dict[str, Any]]]:
        attrs: dict[str, list[dict[str, Any]]] = {}
        expand = self.ctx.expand
        now = self.now
        for name, raw in payload.items():
            if name in RESERVED:
                continue
            if name not in _GOOD_NAMES:
                check_attr_name(name)
            iri = expand(name)
            if type(raw) is dict and len(raw) == 2 and raw.get("type") == "Property" and "value" in raw:
                # instance()'s shortcut for a plain Property, without two calls per attribute
                value = raw["value"]
                plain = type(value)
                if plain is int or plain is float or plain is bool or (
                    plain is str and value != NGSI_NULL and "\x00" not in value
                ):
                    attrs[iri] = [{"type": "Property", "value": value, "createdAt": now, "modifiedAt": now}]
                    continue
            attrs[iri] = self.attribute(name, raw, allow_null=allow_null)
        return attrs

    def attribute(self, name: str, raw: Any, *, allow_null: bool = False) -> list[dict[str, Any]]:
        """All instances of one attribute (a list in the payload means a multi-attribute)."""
        if (
            isinstance(raw, list)
            and raw
            and all(isinstance(x, dict) and _looks_like_instance(x) for x in raw)
        ):
            instances = [self.instance(name, x, allow_null=allow_null) for x in raw]
            seen: set[str | None] = set()
            for inst in instances:
                ds = inst.get("datasetId")
                if ds in seen:
                    raise BadRequest(f"attribute {name!r}: two instances have the same datasetId {ds!r}")
                seen.add(ds)
            return instances
        return [self.instance(name, raw, allow_null=allow_null)]

    def instance(self, name: str, raw: Any, *, allow_null: bool = False, sub: bool = False) -> dict[str, Any]:
        if type(raw) is dict and len(raw) == 2 and raw.get("type") == "Property" and "value" in raw:
            # What sensors send all day, {"type": "Property", "value": 21.5}: the general path below gives the
            # same result after a dozen checks that cannot fail for a plain number, boolean or text.
            value = raw["value"]
            plain = type(value)
            if plain is int or plain is float or plain is bool or (
                plain is str and value != NGSI_NULL and "\x00" not in value
            ):
                return {"type": "Property", "value": value, "createdAt": self.now, "modifiedAt": self.now}
        geo = name in GEO_ATTRS or self.ctx.expand(name) in GEO_ATTRS.values()
        if raw is None or raw == NGSI_NULL:
            if allow_null:
                return {"type": "Property", "value": NGSI_NULL}
            raise BadRequest(f"attribute {name!r} has no value (null is only allowed to delete in an update)")
        if not isinstance(raw, dict):
            return self._finish(
                name, {"type": "GeoProperty" if geo else "Property", "value": raw}, allow_null
            )
        if (raw.get("type") in GEOMETRY_TYPES and "coordinates" in raw) or raw.get(
            "type"
        ) == "GeometryCollection":
            return self._finish(name, {"type": "GeoProperty", "value": raw}, allow_null)
        kind = raw.get("type")
        if kind is None:
            members = [m for m in MEMBER_TYPE if m in raw]
            if not members:
                if "@type" in raw and "@value" in raw:
                    return self._finish(name, {"type": "Property", "value": raw}, allow_null)
                # a JSON object with no NGSI-LD member is a compound value (keyValues / concise form)
                return self._finish(
                    name, {"type": "GeoProperty" if geo else "Property", "value": raw}, allow_null
                )
            kind = MEMBER_TYPE[members[0]]
            if kind == "Property" and geo:
                kind = "GeoProperty"
        if not isinstance(kind, str) or kind not in VALUE_MEMBER:
            raise BadRequest(
                f"attribute {name!r}: type {kind!r} is not an NGSI-LD attribute type "
                f"({', '.join(VALUE_MEMBER)})"
            )
        member = VALUE_MEMBER[kind]
        if member not in raw:
            raise BadRequest(f"attribute {name!r}: a {kind} needs a '{member}' member")
        inst: dict[str, Any] = {"type": kind, member: raw[member]}
        for key, val in raw.items():
            if key in ("type", member, "createdAt", "modifiedAt", "@context"):
                continue
            if key in ("value", "object", "languageMap", "valueList", "objectList", "vocab", "json"):
                raise BadRequest(f"attribute {name!r}: a {kind} cannot have a '{key}' member")
            if key == "datasetId":
                inst[key] = check_uri(val, f"attribute {name!r}: datasetId")
            elif key == "observedAt":
                inst[key] = check_datetime(val, f"attribute {name!r}: observedAt")
            elif key == "unitCode":
                if not isinstance(val, str):
                    raise BadRequest(f"attribute {name!r}: unitCode must be a string")
                inst[key] = val
            elif key == "lang":
                inst[key] = val
            else:
                if sub and key == name:
                    continue
                check_attr_name(key)
                inst[self.ctx.expand(key)] = self.instance(key, val, allow_null=allow_null, sub=True)
        return self._finish(name, inst, allow_null)

    def _finish(self, name: str, inst: dict[str, Any], allow_null: bool) -> dict[str, Any]:
        kind = inst["type"]
        member = VALUE_MEMBER[kind]
        value = inst[member]
        if value is None:
            raise BadRequest(
                f"attribute {name!r}: {member} must not be null (to delete, use urn:ngsi-ld:null)"
            )
        if value == NGSI_NULL or (kind == "LanguageProperty" and value == {"@none": NGSI_NULL}):
            if not allow_null:
                raise BadRequest(f"attribute {name!r}: {member} must not be null")
            inst[member] = value
        elif kind == "GeoProperty":
            from society5.broker import geo

            try:
                inst["value"] = geo.validate_geometry(value)
            except ValueError as err:
                raise BadRequest(f"attribute {name!r}: {err}") from err
        elif kind == "Relationship":
            objs = value if isinstance(value, list) else [value]
            for obj in objs:
                check_uri(
                    obj if not isinstance(obj, dict) else obj.get("object"), f"attribute {name!r}: object"
                )
        elif kind == "LanguageProperty":
            if not isinstance(value, dict) or not all(isinstance(v, str | list) for v in value.values()):
                raise BadRequest(f"attribute {name!r}: languageMap must map language tags to strings")
        elif kind in ("ListProperty", "ListRelationship"):
            if not isinstance(value, list):
                raise BadRequest(f"attribute {name!r}: {member} must be a JSON array")
        elif kind == "VocabProperty":
            vals = value if isinstance(value, list) else [value]
            if not all(isinstance(v, str) for v in vals):
                raise BadRequest(f"attribute {name!r}: vocab must be a string or strings")
            expanded = [self.ctx.expand(v) for v in vals]
            inst["vocab"] = expanded if isinstance(value, list) else expanded[0]
        elif kind == "Property" and isinstance(value, dict) and value.get("@type") in _DATETIME_TYPES:
            check_datetime(value.get("@value"), f"attribute {name!r}: @value")
        if kind == "Property" and isinstance(value, str) and "\x00" in value:
            raise BadRequest(f"attribute {name!r}: value contains a NUL character")
        inst.setdefault("createdAt", self.now)
        inst["modifiedAt"] = self.now
        return inst


def _looks_like_instance(obj: dict[str, Any]) -> bool:
    kind = obj.get("type")
    if isinstance(kind, str) and kind in VALUE_MEMBER:  # a client may send any JSON as "type"
        return True
    return any(m in obj for m in MEMBER_TYPE) or "datasetId" in obj


def instance_key(inst: dict[str, Any]) -> str | None:
    return inst.get("datasetId")


def stamp_created(inst: dict[str, Any], created: str) -> None:
    inst["createdAt"] = created


def has_null(inst: dict[str, Any]) -> bool:
    """True when the instance is NGSI-LD Null: the value ``urn:ngsi-ld:null`` (a LanguageProperty says it with
    ``{"@none": "urn:ngsi-ld:null"}``) asks to delete the attribute or instance."""
    value = inst.get(VALUE_MEMBER.get(inst.get("type", "Property"), "value"))
    return value == NGSI_NULL or (isinstance(value, dict) and value == {"@none": NGSI_NULL})


# --- projection (pick / omit) ------------------------------------------------------------------------------

Projection = dict[str, "Projection | None"]
_PROJ_NAME = re.compile(r"[^,{};\s]+")


def parse_order_by(text: str) -> list[tuple[list[str], bool]]:
    """``orderBy`` (§4.23): comma-separated ``path[;asc|desc]`` terms, kept in the order given (the first
    sorts first), each as (path split at dots, descending)."""
    order = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        path, _, direction = part.partition(";")
        if direction not in ("", "asc", "desc") or not path:
            raise BadRequest(f"orderBy: {part!r} must be path[;asc|desc], e.g. name;desc")
        order.append((path.split("."), direction == "desc"))
    return order


def parse_projection(text: str, what: str) -> Projection:
    """``id,name,locatedAt{name,isInCountry{name}}``: names, each optionally with the projection of the
    entity it links to (used with ``join``)."""
    tree, pos = _projection_list(text, 0, what)
    if pos != len(text):
        raise BadRequest(f"{what}: unexpected {text[pos]!r} at position {pos}")
    return tree


def _projection_list(text: str, pos: int, what: str) -> tuple[Projection, int]:
    tree: Projection = {}
    while True:
        match = _PROJ_NAME.match(text, pos)
        if match is None:
            raise BadRequest(f"{what}: expected a name at position {pos} of {text!r}")
        name, pos = match.group(0), match.end()
        sub: Projection | None = None
        if pos < len(text) and text[pos] == "{":
            sub, pos = _projection_list(text, pos + 1, what)
            if pos >= len(text) or text[pos] != "}":
                raise BadRequest(f"{what}: missing '}}' in {text!r}")
            pos += 1
        tree[name] = sub
        if pos < len(text) and text[pos] == ",":
            pos += 1
            continue
        return tree, pos


# --- rendering ---------------------------------------------------------------------------------------------


class Renderer:
    """Turns stored documents into the representation a client asked for."""

    def __init__(
        self,
        ctx: ActiveContext,
        *,
        fmt: str = "normalized",
        sys_attrs: bool = False,
        attrs: Iterable[str] | None = None,
        pick: Projection | None = None,
        omit: Projection | None = None,
        lang: str | None = None,
        datasets: set[str] | None = None,
        join: str | None = None,
        join_level: int = 1,
        loader: Callable[[list[str]], dict[str, dict[str, Any]]] | None = None,
    ):
        self.ctx = ctx
        self.fmt = fmt
        self.sys_attrs = sys_attrs
        self.attrs = set(attrs) if attrs is not None else None
        self.pick = pick
        self.omit = omit
        self.lang = lang
        self.datasets = datasets
        self.join = join if join in ("inline", "flat") and loader is not None else None
        self.join_level = join_level
        self.loader = loader

    def child(self, name: str) -> Renderer:
        """The renderer of entities linked through relationship ``name`` (nested pick/omit apply there)."""
        pick = self.pick.get(name) if self.pick is not None else None
        omit = self.omit.get(name) if self.omit is not None else None
        return Renderer(
            self.ctx,
            fmt=self.fmt,
            sys_attrs=self.sys_attrs,
            pick=pick,
            omit=omit,
            lang=self.lang,
            join=self.join,
            join_level=self.join_level - 1,
            loader=self.loader,
        )

    def render(self, doc: dict[str, Any]) -> Any:
        """The entity, with linked entities joined in (inline) or listed after it (flat, a list)."""
        if self.join is None:
            return self.entity(doc)
        flat: dict[str, dict[str, Any]] = {}
        root = self._joined(doc, flat, {doc["id"]})
        if self.join == "flat" and flat:
            return [root, *flat.values()]
        return root

    def _joined(self, doc: dict[str, Any], flat: dict[str, dict[str, Any]], path: set[str]) -> dict[str, Any]:
        out = self.entity(doc)
        if self.join_level < 1 or self.loader is None:
            return out
        links: dict[str, list[str]] = {}
        for iri, instances in doc.get("attrs", {}).items():
            name = self.ctx.compact(iri)
            if name not in out:
                continue
            for inst in instances:
                if inst.get("type") == "Relationship":
                    objs = inst["object"] if isinstance(inst["object"], list) else [inst["object"]]
                elif inst.get("type") == "ListRelationship":
                    objs = [o.get("object") if isinstance(o, dict) else o for o in inst.get("objectList", [])]
                else:
                    continue
                links.setdefault(name, []).extend(o for o in objs if isinstance(o, str))
        if not links:
            return out
        found = self.loader(sorted({o for objs in links.values() for o in objs}))
        for name, objs in links.items():
            child = self.child(name)
            rendered = []
            for obj in objs:
                target = found.get(obj)
                if target is None or obj in path:
                    continue
                linked = child._joined(target, flat, path | {obj})
                if self.join == "flat":
                    if obj not in flat:
                        flat[obj] = linked
                else:
                    rendered.append(linked)
            if self.join == "inline" and rendered:
                embedded = rendered[0] if len(rendered) == 1 else rendered
                if self.fmt == "keyValues":
                    out[name] = embedded
                elif isinstance(out[name], dict):
                    out[name] = {**out[name], "entity": embedded}
        return out

    def entity(self, doc: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"id": doc["id"]}
        types = [self.ctx.compact(t) for t in doc.get("type", [])]
        out["type"] = types[0] if len(types) == 1 else types
        if doc.get("scope"):
            out["scope"] = doc["scope"][0] if len(doc["scope"]) == 1 else list(doc["scope"])
        if self.sys_attrs and self.fmt != "keyValues":
            out["createdAt"] = doc.get("createdAt")
            out["modifiedAt"] = doc.get("modifiedAt")
        for iri, instances in doc.get("attrs", {}).items():
            if self.attrs is not None and iri not in self.attrs:
                continue
            name = self.ctx.compact(iri)
            if self.datasets is not None:
                instances = [i for i in instances if _dataset_matches(i, self.datasets)]
                if not instances:
                    continue
            rendered = [self.instance(i) for i in instances]
            if self.fmt == "keyValues" and len(rendered) > 1:
                # NGSI-LD 1.8 simplified form: a multi-attribute is its values keyed by datasetId; a
                # list of bare values would lose which instance each one is.
                pairs = zip(instances, rendered, strict=True)
                out[name] = {"dataset": {i.get("datasetId") or "@none": v for i, v in pairs}}
            else:
                out[name] = rendered[0] if len(rendered) == 1 else rendered
        if self.pick is not None:
            out = {k: v for k, v in out.items() if k in self.pick}
        if self.omit is not None:
            out = {k: v for k, v in out.items() if k not in self.omit or self.omit[k] is not None}
        return out

    def instance(self, inst: dict[str, Any]) -> Any:
        kind = inst.get("type", "Property")
        member = VALUE_MEMBER.get(kind, "value")
        value: Any = inst.get(member)
        if kind == "VocabProperty":
            value = (
                [self.ctx.compact(v) for v in value] if isinstance(value, list) else self.ctx.compact(value)
            )
        if kind == "LanguageProperty" and self.lang is not None:
            picked, tag = _pick_language(value, self.lang)
            if self.fmt == "keyValues":
                return picked
            out: dict[str, Any] = {"type": "Property", "value": picked, "lang": tag}
            self._members(inst, out, skip=member)
            return out
        if self.fmt == "keyValues":
            if kind == "LanguageProperty":
                return {"languageMap": value}
            if kind == "VocabProperty":
                return {"vocab": value}
            if kind == "ListRelationship":
                return {"objectList": value}
            if kind == "JsonProperty":
                return {"json": value}
            return value
        out = {"type": kind, member: value}
        if self.fmt == "concise":
            del out["type"]
            if kind == "Relationship" or kind == "LanguageProperty":
                pass
            self._members(inst, out, skip=member)
            if set(out) == {"value"} and kind in ("Property", "GeoProperty") and not isinstance(value, dict):
                return value
            if set(out) == {"value"} and kind == "GeoProperty":
                return value
            return out
        self._members(inst, out, skip=member)
        return out

    def _members(self, inst: dict[str, Any], out: dict[str, Any], skip: str) -> None:
        for key, val in inst.items():
            if key in ("type", skip):
                continue
            if key in ("createdAt", "modifiedAt", "deletedAt"):
                if self.sys_attrs:
                    out[key] = val
            elif key in INSTANCE_META:
                out[key] = val
            elif isinstance(val, dict):
                out[self.ctx.compact(key)] = self.instance(val)


def _dataset_matches(inst: dict[str, Any], datasets: set[str]) -> bool:
    ds = inst.get("datasetId")
    if ds is None:
        return "@none" in datasets
    return ds in datasets


def _pick_language(lmap: dict[str, Any], wanted: str) -> tuple[Any, str]:
    """Best match of a LanguageProperty for a ``lang`` parameter (``ja``, ``en,ja;q=0.8``, ``*``)."""
    prefs: list[tuple[float, str]] = []
    for part in wanted.split(","):
        tag, _, q = part.strip().partition(";q=")
        try:
            weight = float(q) if q else 1.0
        except ValueError:
            weight = 0.0
        if tag:
            prefs.append((weight, tag))
    prefs.sort(key=lambda p: -p[0])
    for _, tag in prefs:
        if tag == "*" and lmap:
            first = next(iter(lmap))
            return lmap[first], first
        if tag in lmap:
            return lmap[tag], tag
        for key in lmap:
            if key.split("-")[0] == tag.split("-")[0]:
                return lmap[key], key
    if "@none" in lmap:
        return lmap["@none"], "@none"
    for first in lmap:
        return lmap[first], first
    return "", ""
