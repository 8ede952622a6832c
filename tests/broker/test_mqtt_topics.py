"""MQTT topic scheme and payload parsing: examples, and a property test that only MqttMessageError escapes."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from society5.broker.jsonld import ContextStore
from society5.broker.mqtt_topics import MqttMessageError, parse_message, parse_topic, subscriptions

CTX = ContextStore().core
NOW = "2025-01-15T03:00:00.000000Z"
EID = "urn:ngsi-ld:WaterTank:011002:t1"


def parse(topic: str, body: Any) -> Any:
    return parse_message(topic, body if isinstance(body, bytes) else orjson.dumps(body), CTX, NOW)


def test_the_topic_scheme() -> None:
    t = parse_topic(f"society5/011002/WaterTank/{EID}/attrs")
    assert (t.tenant, t.entity_type, t.entity_id, t.attr) == ("011002", "WaterTank", EID, None)
    assert parse_topic(f"city/s5/default/WaterTank/{EID}/level", "city/s5").attr == "level"
    assert subscriptions() == ["society5/+/+/+/+"]


@pytest.mark.parametrize("topic", [
    "other/default/T/urn:a:b/attrs", "society5/default/T/urn:a:b", "society5/default/T/urn:a:b/x/y",
    "society5//T/urn:a:b/attrs", "society5/default/T/no-uri/attrs", "society5/bad tenant/T/urn:a:b/attrs",
    "society5/default/T/urn:a:b/id", "society5/default/T/urn:a:b/bad<name",
])
def test_bad_topics(topic: str) -> None:
    with pytest.raises(MqttMessageError):
        parse_topic(topic)


def test_keyvalues_normalized_and_top_level_observed_at() -> None:
    msg = parse(f"society5/default/WaterTank/{EID}/attrs", {
        "level": 3.5,
        "status": {"type": "Property", "value": "ok", "observedAt": "2025-01-15T02:59:00Z"},
        "location": {"type": "Point", "coordinates": [141.35, 43.06]},
        "observedAt": "2025-01-15T03:00:00Z",
        "scope": "/public",
    })
    level = msg.attrs[CTX.expand("level")][2][0]
    status = msg.attrs[CTX.expand("status")][2][0]
    location = msg.attrs[CTX.expand("location")][2][0]
    assert (level["value"], level["observedAt"]) == (3.5, "2025-01-15T03:00:00Z")
    assert status["observedAt"] == "2025-01-15T02:59:00Z"  # its own time wins
    assert location["type"] == "GeoProperty"
    assert msg.scope == ["/public"] and msg.tenant == "default" and msg.entity_id == EID


def test_single_value_topic_takes_any_json_value() -> None:
    for body, value in ((b"21.5", 21.5), (b'"on"', "on"), (b"false", False), (b"[1, 2]", [1, 2])):
        msg = parse(f"society5/default/Device/{EID}/reading", body)
        assert msg.attrs[CTX.expand("reading")][2][0]["value"] == value


@pytest.mark.parametrize("topic, body, fragment", [
    ("attrs", b"\xff\xfe", "not JSON"),
    ("attrs", {}, "no attribute"),
    ("attrs", {"@context": "https://example.org/ctx.jsonld", "a": 1}, "@context"),
    ("attrs", {"type": "Vehicle", "a": 1}, "differs"),
    ("attrs", {"a": None}, "no value"),
    ("attrs", {"a": {"type": "Relationship", "object": "not a uri"}}, "object"),
    ("attrs", {"a": 1, "scope": "no-slash"}, "scope"),
    ("level", b"null", "no value"),
    ("level", b"", "not JSON"),
])
def test_invalid_payloads(topic: str, body: Any, fragment: str) -> None:
    with pytest.raises(MqttMessageError, match=fragment):
        parse(f"society5/default/WaterTank/{EID}/{topic}", body)


LEVEL = st.one_of(st.sampled_from(["default", "011002", "attrs", "urn:ngsi-ld:T:1", "T", "+", "#", "", "@id",
                                   "type", "a b", "ex:T", "http:", "urn:x:%2F"]),
                  st.text(max_size=12))
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["type", "value", "object", "observedAt", "datasetId", "unitCode", "id", "scope",
                         "languageMap", "location", "level", "@context", "coordinates", "json", "vocab"])
        | st.text(max_size=8), inner, max_size=5),
    max_leaves=12,
)


VALID_LEVELS = st.tuples(st.sampled_from(["default", "011002"]), st.sampled_from(["T", "WaterTank", "ex:T"]),
                         st.just(EID),
                         st.sampled_from(["attrs", "attrs", "level", "location", "name"])).map(list)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(levels=st.one_of(VALID_LEVELS, st.lists(LEVEL, min_size=0, max_size=6)),
       payload=st.one_of(st.binary(max_size=40), JSON.map(lambda v: json.dumps(v).encode())))
@example(levels=["default", "T", EID, "attrs"], payload=b'{"a": {"type": "GeoProperty", "value": 1}}')
@example(levels=["default", "T", EID, "location"], payload=b'{"type": "Point", "coordinates": [1e999, 0]}')
@example(levels=["default", "T", EID, "attrs"], payload=b"[" * 5000)
@example(levels=["default", "T", EID, "level"], payload=b'[{"type": []}]')  # an unhashable "type" (was a 500)
@example(levels=["default", "T", EID, "attrs"], payload=b'{"a": [{"type": {}}]}')
def test_the_parser_raises_nothing_but_its_own_error(levels: list[str], payload: bytes) -> None:
    topic = "/".join(["society5", *levels])
    try:
        msg = parse_message(topic, payload, CTX, NOW)
    except MqttMessageError as err:
        assert err.detail  # says what to fix
    else:
        assert msg.attrs or msg.scope is not None


def test_a_type_that_is_not_a_string_is_a_message_error() -> None:
    for body in ({"a": {"type": ["Property"], "value": 1}},
                 {"a": {"value": 1, "s": {"type": {}, "value": 2}}}):
        with pytest.raises(MqttMessageError, match="is not an NGSI-LD attribute type"):
            parse(f"society5/default/WaterTank/{EID}/attrs", body)
