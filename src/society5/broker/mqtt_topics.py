"""The MQTT ingestion topic scheme and payloads, validated into attribute instances (no I/O here).

Topics, under a configurable prefix (``society5`` by default)::

    society5/{tenant}/{entityType}/{entityId}/attrs    JSON object: attribute name → value
    society5/{tenant}/{entityType}/{entityId}/{attr}   one JSON value (a number, string, boolean …)

``{tenant}`` is a tenant code (``default`` is the default tenant), ``{entityType}`` a type name of the core
context (``WaterTank``) or a prefixed name, ``{entityId}`` the entity's URI as it is (``urn:ngsi-ld:…``;
colons are fine in MQTT topics, while an id containing ``/``, ``+`` or ``#`` cannot be written over MQTT).

An ``attrs`` body holds attributes in the NGSI-LD normalized form (``{"type": "Property", "value": …}``)
or as plain values (keyValues, meaning Property; a GeoJSON geometry in ``location`` is a GeoProperty).
``observedAt`` may be given per attribute, or once at the top level for every attribute that lacks one.
``scope`` sets the entity's scopes; ``id`` and ``type``, when present, must agree with the topic.
On an attribute topic the payload may also be one attribute in the normalized form.

Every problem raises :class:`MqttMessageError` (a ``BadRequest``) with a message that says what to fix;
the bridge stores such messages as dead letters.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import orjson

from society5.broker.jsonld import ActiveContext
from society5.broker.model import (
    MEMBER_TYPE,
    RESERVED,
    VALUE_MEMBER,
    EntityParser,
    check_attr_name,
    check_datetime,
    check_uri,
    parse_scopes,
    parse_types,
)
from society5.core.auth import validate_tenant_name
from society5.core.errors import ApiError, BadRequest

ATTRS_LEVEL = "attrs"
DEFAULT_PREFIX = "society5"


class MqttMessageError(BadRequest):
    """An MQTT message that cannot be stored as it is (bad topic, bad JSON, invalid attribute)."""


@dataclass
class ParsedMessage:
    """One validated message: the entity it writes and its attribute instances (stored form)."""

    tenant: str
    entity_id: str
    types: list[str]  # expanded IRIs
    # expanded attribute IRI → (the attribute as given, compact name, its instances in the stored form)
    attrs: dict[str, tuple[Any, str, list[dict[str, Any]]]] = field(default_factory=dict)
    scope: list[str] | None = None


@dataclass(frozen=True)
class Topic:
    tenant: str
    entity_type: str
    entity_id: str
    attr: str | None  # None: an ``attrs`` topic


def subscriptions(prefix: str = DEFAULT_PREFIX) -> list[str]:
    """The topic filters the bridge subscribes to (``…/attrs`` is one case of the attribute level)."""
    return [f"{prefix}/+/+/+/+"]


@functools.lru_cache(maxsize=16384)  # devices publish to the same few topics again and again
def parse_topic(topic: str, prefix: str = DEFAULT_PREFIX) -> Topic:
    if not topic.startswith(prefix + "/"):
        raise MqttMessageError(f"topic {topic!r} is not under {prefix}/")
    levels = topic[len(prefix) + 1 :].split("/")
    if len(levels) != 4 or not all(levels):
        raise MqttMessageError(
            f"topic {topic!r}: expected {prefix}/{{tenant}}/{{entityType}}/{{entityId}}/attrs "
            f"or {prefix}/{{tenant}}/{{entityType}}/{{entityId}}/{{attribute}}"
        )
    tenant, etype, eid, last = levels
    try:
        validate_tenant_name(tenant)
        check_uri(eid, "entity id")
        if last != ATTRS_LEVEL:
            check_attr_name(last)
            if last in RESERVED or last == "observedAt":
                raise BadRequest(f"{last} is not an attribute that a topic can name")
    except ApiError as err:
        raise MqttMessageError(f"topic {topic!r}: {err.detail}") from None
    return Topic(tenant, etype, eid, None if last == ATTRS_LEVEL else last)


def parse_message(
    topic: str, payload: bytes, ctx: ActiveContext, now: str, prefix: str = DEFAULT_PREFIX,
    type_cache: dict[str, list[str]] | None = None,
) -> ParsedMessage:
    """Validate one message exactly as the broker validates an HTTP write of the same attributes.

    ``type_cache`` (entity type name → expanded IRIs) may be shared by the calls that use one ``ctx``."""
    where = parse_topic(topic, prefix)
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError as err:
        raise MqttMessageError(f"the payload is not JSON: {err}") from None
    try:
        types = type_cache.get(where.entity_type) if type_cache is not None else None
        if types is None:
            types = parse_types(where.entity_type, ctx, "entity type")
            if type_cache is not None and len(type_cache) < 10_000:
                type_cache[where.entity_type] = types
        msg = ParsedMessage(where.tenant, where.entity_id, types)
        parser = EntityParser(ctx, now)
        if where.attr is not None:
            _add(msg, parser, ctx, where.attr, body)
            return msg
        if not isinstance(body, dict):
            raise BadRequest("an attrs message must be a JSON object of attributes")
        top_observed = body.get("observedAt")
        if top_observed is not None:
            check_datetime(top_observed, "observedAt")
        for name, raw in body.items():
            if name == "observedAt":
                continue
            if name in ("id", "@id"):
                if raw != where.entity_id:
                    raise BadRequest(f"id {raw!r} in the payload differs from the id in the topic")
            elif name in ("type", "@type"):
                if not set(parse_types(raw, ctx)) <= set(types):
                    raise BadRequest(f"type {raw!r} in the payload differs from the type in the topic")
            elif name == "scope":
                msg.scope = parse_scopes(raw)
            elif name in ("@context", "createdAt", "modifiedAt", "deletedAt"):
                raise BadRequest(f"{name} cannot be sent over MQTT (names are those of the core context)")
            else:
                _add(msg, parser, ctx, name, _with_time(raw, top_observed))
        if not msg.attrs and msg.scope is None:
            raise BadRequest("the message holds no attribute")
        return msg
    except MqttMessageError:
        raise
    except ApiError as err:
        raise MqttMessageError(err.detail) from None
    except RecursionError:
        raise MqttMessageError("the payload is nested too deeply") from None


def _add(msg: ParsedMessage, parser: EntityParser, ctx: ActiveContext, name: str, raw: Any) -> None:
    check_attr_name(name)
    if raw is None:
        raise BadRequest(f"attribute {name!r} has no value (deleting attributes is not done over MQTT)")
    instances = parser.attribute(name, raw)
    msg.attrs[ctx.expand(name)] = (raw, name, instances)


def _is_instance(raw: Any) -> bool:
    kind = raw.get("type") if isinstance(raw, dict) else None
    return isinstance(raw, dict) and ((isinstance(kind, str) and kind in VALUE_MEMBER)
                                      or any(m in raw for m in MEMBER_TYPE))


def _with_time(raw: Any, observed: str | None) -> Any:
    """The attribute with the top-level observedAt added where it has none of its own."""
    if observed is None:
        return raw
    if _is_instance(raw):
        return raw if "observedAt" in raw else {**raw, "observedAt": observed}
    if isinstance(raw, list) and raw and all(_is_instance(x) for x in raw):
        return [x if "observedAt" in x else {**x, "observedAt": observed} for x in raw]
    return {"value": raw, "observedAt": observed}
