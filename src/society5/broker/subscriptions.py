"""NGSI-LD subscriptions (ETSI GS CIM 009 v1.8 §5.2.12, §5.8): validation into the stored form, rendering.

Stored form (the ``doc`` column of ``broker_subscriptions``): the members the client sent, validated, with
entity types and attribute names expanded to IRIs (as entities are stored), ``q`` with expanded names, and
``@context`` holding what the client named as its context, so notifications speak the subscriber's terms.
Only members the client gave are stored; defaults (``notificationTrigger``, ``format`` …) are applied where
they are used. The read-only status members live in columns and are merged in by :func:`render`.

Every invalid member is a 400 BadRequestData naming the member. A PATCH replaces whole top-level members
(``notification`` included) and ``null`` removes an optional member.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit

from society5.broker.jsonld import ActiveContext, ContextStore
from society5.broker.model import check_attr_name, check_datetime, check_uri
from society5.broker.query import q as qlang
from society5.broker.query import scope as scopelang
from society5.broker.query.typeexpr import TypeExprError, parse_type_expr
from society5.core.errors import BadRequest
from society5.core.timeutil import parse_iso

TRIGGERS = ("entityCreated", "entityUpdated", "entityDeleted", "attributeCreated", "attributeUpdated",
            "attributeDeleted")
DEFAULT_TRIGGERS = ("attributeCreated", "attributeUpdated")
FORMATS = ("normalized", "keyValues", "simplified", "concise")
ACCEPTS = ("application/json", "application/ld+json")
SCHEMES = ("http", "https", "mqtt", "mqtts")
MQTT_VERSIONS = ("mqtt3.1.1", "mqtt5.0")
# Members the system maintains: accepted in a body (a client may send back what it read) and ignored.
READ_ONLY = {"status", "createdAt", "modifiedAt", "deletedAt"}
NOTIFICATION_READ_ONLY = {"status", "timesSent", "timesFailed", "lastNotification", "lastSuccess",
                          "lastFailure"}
MANDATORY = {"type", "notification"}
_TYPE_DELIMS = re.compile(r"([(),|;])")


def new_id() -> str:
    return f"urn:ngsi-ld:Subscription:{uuid.uuid4()}"


def status_of(doc: dict[str, Any], now: float | None = None) -> str:
    """active | paused | expired: expiry wins over pausing (§5.2.12)."""
    expires = doc.get("expiresAt")
    if expires is not None and parse_iso(expires).timestamp() <= (now if now is not None else time.time()):
        return "expired"
    return "paused" if doc.get("isActive") is False else "active"


# --- parsing ------------------------------------------------------------------------------------------------


def parse(payload: Any, ctx: ActiveContext, contexts: ContextStore) -> dict[str, Any]:
    """A new subscription in stored form (``id`` generated when absent)."""
    if not isinstance(payload, dict):
        raise BadRequest("a subscription must be a JSON object")
    if payload.get("type") != "Subscription":
        raise BadRequest('type: a subscription needs "type": "Subscription"')
    if "notification" not in payload or payload["notification"] is None:
        raise BadRequest("notification is missing: a subscription needs notification.endpoint.uri")
    doc: dict[str, Any] = {"id": check_uri(payload["id"], "id") if "id" in payload else new_id()}
    for name, value in payload.items():
        if name in ("id", "@context") or name in READ_ONLY or value is None:
            continue
        doc[name] = _member(name, value, ctx, contexts)
    doc["@context"] = ctx.source
    check_whole(doc)
    return doc


def patch(doc: dict[str, Any], fragment: Any, ctx: ActiveContext, contexts: ContextStore) -> dict[str, Any]:
    """``doc`` with the members of a PATCH fragment replaced (``null`` removes an optional member)."""
    if not isinstance(fragment, dict):
        raise BadRequest("a subscription update must be a JSON object of members")
    if "id" in fragment and fragment["id"] != doc["id"]:
        raise BadRequest(f"id: the body names {fragment['id']!r}, the URL {doc['id']!r}")
    if "type" in fragment and fragment["type"] != "Subscription":
        raise BadRequest('type: must be "Subscription"')
    out = dict(doc)
    for name, value in fragment.items():
        if name in ("id", "type", "@context") or name in READ_ONLY:
            continue
        if value is None:
            if name in MANDATORY:
                raise BadRequest(f"{name} is mandatory and cannot be removed")
            _known(name)
            out.pop(name, None)
            continue
        out[name] = _member(name, value, ctx, contexts)
    check_whole(out)
    return out


def check_whole(doc: dict[str, Any]) -> None:
    """Rules between members."""
    if "entities" not in doc and "watchedAttributes" not in doc:
        raise BadRequest("entities or watchedAttributes: a subscription needs at least one of them")
    if "timeInterval" in doc and "watchedAttributes" in doc:
        raise BadRequest("timeInterval and watchedAttributes cannot be used together")
    if "timeInterval" in doc and "throttling" in doc:
        raise BadRequest("timeInterval and throttling cannot be used together")


_MEMBERS: dict[str, Callable[..., Any]] = {}


def _known(name: str) -> None:
    if name not in _MEMBERS:
        raise BadRequest(f"{name} is not a subscription member (known: {', '.join(sorted(_MEMBERS))})")


def _member(name: str, value: Any, ctx: ActiveContext, contexts: ContextStore) -> Any:
    _known(name)
    return _MEMBERS[name](value, ctx, contexts)


def _register(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        _MEMBERS[name] = fn
        return fn

    return deco


def _string(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise BadRequest(f"{what} must be a non-empty string")
    return value


def _names(value: Any, what: str, ctx: ActiveContext) -> list[str]:
    if not isinstance(value, list) or not value:
        raise BadRequest(f"{what} must be a non-empty array of attribute names")
    out: list[str] = []
    for name in value:
        if not isinstance(name, str):
            raise BadRequest(f"{what}: {name!r} is not an attribute name")
        check_attr_name(name)
        iri = ctx.expand(name)
        if iri not in out:
            out.append(iri)
    return out


def _positive(value: Any, what: str, allow_zero: bool = False, unit: str = "seconds") -> float | int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequest(f"{what} must be a number of {unit}")
    if value < 0 or (value == 0 and not allow_zero):
        raise BadRequest(f"{what} must be {'zero or ' if allow_zero else ''}a positive number of {unit}")
    return value


def _bool(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise BadRequest(f"{what} must be true or false")
    return value


def _simple() -> None:
    """Members whose validation is a single check."""
    for name in ("subscriptionName", "description", "lang", "csf"):
        _MEMBERS[name] = lambda value, ctx, contexts, name=name: _string(value, name)
    for name in ("isActive", "localOnly"):
        _MEMBERS[name] = lambda value, ctx, contexts, name=name: _bool(value, name)
    _MEMBERS["type"] = lambda value, ctx, contexts: _type(value)
    _MEMBERS["timeInterval"] = lambda value, ctx, contexts: _positive(value, "timeInterval")
    _MEMBERS["throttling"] = lambda value, ctx, contexts: _positive(value, "throttling", allow_zero=True)
    _MEMBERS["watchedAttributes"] = lambda value, ctx, contexts: _names(value, "watchedAttributes", ctx)


def _type(value: Any) -> str:
    if value != "Subscription":
        raise BadRequest('type: must be "Subscription"')
    return "Subscription"


_simple()


@_register("entities")
def _entities(value: Any, ctx: ActiveContext, contexts: ContextStore) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise BadRequest("entities must be a non-empty array of {id, idPattern, type}")
    out = []
    for sel in value:
        if not isinstance(sel, dict) or not sel:
            raise BadRequest("entities: each member must be an object with id, idPattern and/or type")
        unknown = set(sel) - {"id", "idPattern", "type"}
        if unknown:
            raise BadRequest(f"entities: unknown member(s) {', '.join(sorted(unknown))}")
        item: dict[str, str] = {}
        if "id" in sel:
            item["id"] = check_uri(sel["id"], "entities[].id")
        if "idPattern" in sel:
            pattern = _string(sel["idPattern"], "entities[].idPattern")
            try:
                re.compile(pattern)
            except re.error as err:
                raise BadRequest(f"entities[].idPattern is not a valid regular expression: {err}") from err
            item["idPattern"] = pattern
        if "type" in sel:
            item["type"] = map_type_expr(_string(sel["type"], "entities[].type"), ctx.expand)
            try:
                parse_type_expr(item["type"])
            except TypeExprError as err:
                raise BadRequest(f"entities[].{err}") from err
        out.append(item)
    return out


@_register("notificationTrigger")
def _triggers(value: Any, ctx: ActiveContext, contexts: ContextStore) -> list[str]:
    if not isinstance(value, list) or not value:
        raise BadRequest(f"notificationTrigger must be a non-empty array of {', '.join(TRIGGERS)}")
    bad = [v for v in value if v not in TRIGGERS]
    if bad:
        raise BadRequest(f"notificationTrigger: {bad[0]!r} is not one of {', '.join(TRIGGERS)}")
    return list(dict.fromkeys(value))


@_register("q")
def _q(value: Any, ctx: ActiveContext, contexts: ContextStore) -> str:
    text = _string(value, "q")
    # Clients copy q from URLs, percent-encoding included (the ETSI suite does); a body needs no encoding.
    text = unquote(text) if "%" in text else text
    try:
        return qlang.to_text(qlang.expand_names(qlang.parse_q(text), ctx.expand))
    except qlang.QSyntaxError as err:
        raise BadRequest(f"q: {err}") from err


@_register("scopeQ")
def _scope_q(value: Any, ctx: ActiveContext, contexts: ContextStore) -> str:
    text = _string(value, "scopeQ")
    text = unquote(text) if "%" in text else text
    try:
        scopelang.parse_scope_q(text)
    except qlang.QSyntaxError as err:
        raise BadRequest(f"scopeQ: {err}") from err
    return text


@_register("geoQ")
def _geo_q(value: Any, ctx: ActiveContext, contexts: ContextStore) -> dict[str, Any]:
    from society5.broker.api import _geo

    if not isinstance(value, dict):
        raise BadRequest("geoQ must be an object with geometry, coordinates and georel")
    unknown = set(value) - {"geometry", "coordinates", "georel", "geoproperty"}
    if unknown:
        raise BadRequest(f"geoQ: unknown member(s) {', '.join(sorted(unknown))}")
    geoprop = value.get("geoproperty")
    if geoprop is not None and not isinstance(geoprop, str):
        raise BadRequest("geoQ.geoproperty must be an attribute name")
    try:
        _geo(value.get("georel"), value.get("geometry"), value.get("coordinates"), geoprop, ctx)
    except BadRequest as err:
        raise BadRequest(f"geoQ: {err.detail}") from err
    out = {k: value[k] for k in ("geometry", "coordinates", "georel") if k in value}
    if geoprop:
        out["geoproperty"] = ctx.expand(geoprop)
    return out


@_register("expiresAt")
def _expires(value: Any, ctx: ActiveContext, contexts: ContextStore) -> str:
    check_datetime(value, "expiresAt")
    if parse_iso(value).timestamp() <= time.time():
        raise BadRequest(f"expiresAt {value} is in the past: give a future date-time")
    return str(value)


@_register("datasetId")
def _datasets(value: Any, ctx: ActiveContext, contexts: ContextStore) -> list[str]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise BadRequest("datasetId must name at least one dataset (a URI or @none)")
    for item in items:
        if item != "@none":
            check_uri(item, "datasetId")
    return list(items)


@_register("jsonldContext")
def _jsonld_context(value: Any, ctx: ActiveContext, contexts: ContextStore) -> str:
    url = _string(value, "jsonldContext")
    if not _split(url, "jsonldContext").scheme:
        raise BadRequest(f"jsonldContext {url!r} is not an absolute URL")
    contexts.activate(url)  # unreachable → 503 LdContextNotAvailable now, not at the first notification
    return url


@_register("notification")
def _notification(value: Any, ctx: ActiveContext, contexts: ContextStore) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadRequest("notification must be an object with an endpoint")
    known = {"attributes", "format", "showChanges", "sysAttrs", "endpoint", "pick", "omit", "join",
             "joinLevel"}
    unknown = set(value) - known - NOTIFICATION_READ_ONLY
    if unknown:
        raise BadRequest(f"notification: unknown member(s) {', '.join(sorted(unknown))}")
    out: dict[str, Any] = {"endpoint": _endpoint(value.get("endpoint"))}
    if "attributes" in value:
        out["attributes"] = _names(value["attributes"], "notification.attributes", ctx)
    if "format" in value:
        if value["format"] not in FORMATS:
            raise BadRequest(f"notification.format must be one of {', '.join(FORMATS)}")
        out["format"] = value["format"]
    for flag in ("showChanges", "sysAttrs"):
        if flag in value:
            out[flag] = _bool(value[flag], f"notification.{flag}")
    for proj in ("pick", "omit"):
        if proj in value:
            out[proj] = _projection(value[proj], f"notification.{proj}")
    if "pick" in out and "omit" in out and set(out["pick"]) & set(out["omit"]):
        raise BadRequest("notification.pick and notification.omit name the same member")
    if "attributes" in out and ("pick" in out or "omit" in out):
        raise BadRequest("notification.attributes cannot be combined with pick or omit (pick does its job)")
    if "join" in value:
        if value["join"] not in ("inline", "flat", "@none"):
            raise BadRequest("notification.join must be inline, flat or @none")
        out["join"] = value["join"]
    if "joinLevel" in value:
        level = value["joinLevel"]
        if isinstance(level, bool) or not isinstance(level, int) or not 1 <= level <= 10:
            raise BadRequest("notification.joinLevel must be an integer from 1 to 10")
        out["joinLevel"] = level
    return out


def _projection(value: Any, what: str) -> list[str]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(i, str) and i for i in items):
        raise BadRequest(f"{what} must be a non-empty array of member names")
    return list(items)


def _endpoint(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadRequest("notification.endpoint must be an object with a uri")
    unknown = set(value) - {"uri", "accept", "receiverInfo", "notifierInfo", "timeout", "cooldown"}
    if unknown:
        raise BadRequest(f"notification.endpoint: unknown member(s) {', '.join(sorted(unknown))}")
    uri = value.get("uri")
    if not isinstance(uri, str) or not uri:
        raise BadRequest("notification.endpoint.uri is missing")
    parts = _split(uri, "notification.endpoint.uri")
    if parts.scheme not in SCHEMES or not parts.hostname:
        raise BadRequest(f"notification.endpoint.uri {uri!r}: give an http(s):// or mqtt(s):// URL")
    if parts.scheme.startswith("mqtt"):
        from society5.core.mqtt_publish import parse_target

        try:
            parse_target(uri)
        except ValueError as err:
            raise BadRequest(f"notification.endpoint.uri: {err}") from err
    out: dict[str, Any] = {"uri": uri}
    if "accept" in value:
        if value["accept"] not in ACCEPTS:
            raise BadRequest(f"notification.endpoint.accept must be one of {', '.join(ACCEPTS)}")
        out["accept"] = value["accept"]
    for member in ("receiverInfo", "notifierInfo"):
        if member in value:
            out[member] = _key_values(value[member], f"notification.endpoint.{member}")
    for info in out.get("notifierInfo", ()):
        if info["key"] == "MQTT-QoS" and info["value"] not in ("0", "1", "2"):
            raise BadRequest("notification.endpoint.notifierInfo: MQTT-QoS must be 0, 1 or 2")
        if info["key"] == "MQTT-Version" and info["value"] not in MQTT_VERSIONS:
            raise BadRequest(f"notification.endpoint.notifierInfo: MQTT-Version must be {MQTT_VERSIONS}")
    for member in ("timeout", "cooldown"):
        if member in value:
            out[member] = _positive(value[member], f"notification.endpoint.{member}", unit="milliseconds")
    return out


def _split(url: str, what: str) -> SplitResult:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - reading the port is what validates it
    except ValueError as err:
        raise BadRequest(f"{what} {url!r} is not a valid URL: {err}") from err
    return parts


def _key_values(value: Any, what: str) -> list[dict[str, str]]:
    if not isinstance(value, list):
        raise BadRequest(f"{what} must be an array of {{key, value}} objects")
    out = []
    for item in value:
        if not isinstance(item, dict) or set(item) != {"key", "value"}:
            raise BadRequest(f"{what}: each entry must be {{\"key\": …, \"value\": …}}")
        key, val = item["key"], item["value"]
        val = str(val) if isinstance(val, int | float) and not isinstance(val, bool) else val
        if not isinstance(key, str) or not key or not isinstance(val, str):
            raise BadRequest(f"{what}: key and value must be strings")
        if any(c in key + val for c in "\r\n"):
            raise BadRequest(f"{what}: line breaks are not allowed in {key!r}")
        out.append({"key": key, "value": val})
    return out


# --- rendering ----------------------------------------------------------------------------------------------


def map_type_expr(text: str, fn: Callable[[str], str]) -> str:
    """Apply ``fn`` to each type name of a type selector (``(Building|Tower);Asset``), keeping operators."""
    parts = _TYPE_DELIMS.split(text)
    return "".join(p if p in "(),|;" or not p.strip() else fn(p.strip()) for p in parts)


def render(doc: dict[str, Any], counters: dict[str, Any], ctx: ActiveContext, sys_attrs: bool = False,
           times: tuple[str, str] | None = None) -> dict[str, Any]:
    """The subscription as a client reads it, names compacted with the request's @context."""
    out: dict[str, Any] = {}
    for name, value in doc.items():
        if name == "@context":
            continue
        if name == "entities":
            value = [{**sel, **({"type": map_type_expr(sel["type"], ctx.compact)} if "type" in sel else {})}
                     for sel in value]
        elif name == "watchedAttributes":
            value = [ctx.compact(a) for a in value]
        elif name == "q":
            value = qlang.to_text(qlang.expand_names(qlang.parse_q(value), ctx.compact))
        elif name == "geoQ" and "geoproperty" in value:
            value = {**value, "geoproperty": ctx.compact(value["geoproperty"])}
        elif name == "notification":
            value = dict(value)
            if "attributes" in value:
                value["attributes"] = [ctx.compact(a) for a in value["attributes"]]
            if counters.get("timesSent"):  # status members appear once there is something to report
                value.update({k: v for k, v in counters.items() if v is not None})
        out[name] = value
    out.setdefault("notificationTrigger", list(DEFAULT_TRIGGERS))
    out["status"] = status_of(doc)
    if sys_attrs and times is not None:
        out["createdAt"], out["modifiedAt"] = times
    return out
