"""Subscription matching and notification content: triggers, filters, formats, changes (both DBs)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from society5.broker import subscriptions as model
from society5.broker import subscriptions_store
from society5.broker.core import Broker
from society5.broker.notifier import Notifier
from society5.broker.subscriptions_match import NOTIFICATION
from society5.broker.subscriptions_store import SubscriptionStore
from society5.core.platform import Platform
from society5.core.tables import outbox

CTX = "https://forge.etsi.org/rep/cim/ngsi-ld-test-suite/-/raw/develop/resources/jsonld-contexts/ngsi-ld-test-suite-compound.jsonld"
NULL = "urn:ngsi-ld:null"
PARIS = {"type": "Relationship", "object": "urn:ngsi-ld:City:Paris"}


@pytest.fixture
def broker(platform: Platform) -> Iterator[Broker]:
    from society5.broker.service import start

    yield start(platform)


def subscribe(platform: Platform, sid: str, tenant: str = "default", context: Any = CTX,
              note: dict[str, Any] | None = None, **members: Any) -> str:
    broker: Broker = platform.parts["broker"]
    notifier: Notifier = platform.parts["subscriptions"]
    payload = {"id": f"urn:ngsi-ld:Subscription:{sid}", "type": "Subscription",
               "notification": {"endpoint": {"uri": "http://127.0.0.1:9/n"}, **(note or {})}, **members}
    payload.setdefault("entities", [{"type": "Building"}])
    notifier.store.create(tenant, model.parse(payload, broker.context(context), broker.contexts))
    return str(payload["id"])


def queued(platform: Platform) -> list[dict[str, Any]]:
    """Notifications enqueued since the last call (then forgotten)."""
    with platform.engine.begin() as conn:
        rows = conn.execute(sa.select(outbox.c.payload).where(outbox.c.kind == NOTIFICATION)
                            .order_by(outbox.c.id)).scalars().all()
        conn.execute(sa.delete(outbox))
    return [r["notification"] for r in rows]


def to(platform: Platform) -> list[str]:
    return [n["subscriptionId"].rsplit(":", 1)[1] for n in queued(platform)]


def building(eid: str = "urn:ngsi-ld:Building:1", **attrs: Any) -> dict[str, Any]:
    body = {"id": eid, "type": "Building", "name": {"type": "Property", "value": "Eiffel Tower"},
            "airQualityLevel": {"type": "Property", "value": 4, "unitCode": "C62"}}
    body.update(attrs)
    return body


def test_each_trigger_fires_for_its_change(platform: Platform, broker: Broker) -> None:
    for trigger in model.TRIGGERS:
        subscribe(platform, trigger, notificationTrigger=[trigger])
    ctx = broker.context(CTX)
    broker.create_entity(None, building(), ctx)
    assert sorted(to(platform)) == ["attributeCreated", "entityCreated"]
    broker.update_attrs(None, "urn:ngsi-ld:Building:1", {"airQualityLevel": 5}, ctx)
    assert sorted(to(platform)) == ["attributeUpdated", "entityUpdated"]
    broker.append_attrs(None, "urn:ngsi-ld:Building:1", {"almostFull": False}, ctx)
    assert sorted(to(platform)) == ["attributeCreated", "entityUpdated"]
    broker.delete_attr(None, "urn:ngsi-ld:Building:1", "almostFull", ctx)
    assert sorted(to(platform)) == ["attributeDeleted", "entityUpdated"]
    broker.delete_entity(None, "urn:ngsi-ld:Building:1")
    assert sorted(to(platform)) == ["attributeDeleted", "entityDeleted"]


def test_watched_attributes_decide_which_changes_count(platform: Platform, broker: Broker) -> None:
    subscribe(platform, "air", watchedAttributes=["airQualityLevel"])
    subscribe(platform, "name", watchedAttributes=["name"], entities=None)
    ctx = broker.context(CTX)
    broker.create_entity(None, building(), ctx)
    assert sorted(to(platform)) == ["air", "name"]
    broker.update_attrs(None, "urn:ngsi-ld:Building:1", {"airQualityLevel": 5}, ctx)
    assert to(platform) == ["air"]
    broker.create_entity(None, {"id": "urn:ngsi-ld:Vehicle:1", "type": "Vehicle", "name": "car"}, ctx)
    assert to(platform) == ["name"]  # watchedAttributes alone selects entities of any type
    subscribe(platform, "born", watchedAttributes=["airQualityLevel"], notificationTrigger=["entityCreated"])
    broker.create_entity(None, {"id": "urn:ngsi-ld:Building:2", "type": "Building", "name": "b"}, ctx)
    assert to(platform) == ["name"]  # no watched attribute came with the new entity


def test_q_scope_and_geo_are_tested_on_the_new_state(platform: Platform, broker: Broker) -> None:
    subscribe(platform, "q", q="airQualityLevel>4")
    subscribe(platform, "scope", scopeQ="/Hokkaido/#")
    subscribe(platform, "geo", geoQ={"georel": "near;maxDistance==2000", "geometry": "Point",
                                     "coordinates": [141.35, 43.06]})
    ctx = broker.context(CTX)
    here = {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [141.351, 43.061]}}
    broker.create_entity(None, building(location=here, scope="/Hokkaido/Sapporo"), ctx)
    assert sorted(to(platform)) == ["geo", "scope"]
    far = {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [2.29, 48.85]}}
    broker.update_attrs(None, "urn:ngsi-ld:Building:1", {"airQualityLevel": 7, "location": far}, ctx)
    assert sorted(to(platform)) == ["q", "scope"]
    broker.update_attrs(None, "urn:ngsi-ld:Building:1", {"airQualityLevel": 1}, ctx)
    assert to(platform) == ["scope"]


def test_q_may_come_percent_encoded(platform: Platform, broker: Broker) -> None:
    subscribe(platform, "q", q='name=="Eiffel%20Tower"')
    broker.create_entity(None, building(), broker.context(CTX))
    assert to(platform) == ["q"]


def test_ids_patterns_and_type_expressions(platform: Platform, broker: Broker) -> None:
    subscribe(platform, "id", entities=[{"id": "urn:ngsi-ld:Building:2", "type": "Building"}])
    subscribe(platform, "pattern", entities=[{"idPattern": "Building:[0-9]$"}])
    subscribe(platform, "either", entities=[{"type": "(Building|Tower)"}])
    subscribe(platform, "both", entities=[{"type": "Building;Tower"}])
    ctx = broker.context(CTX)
    broker.create_entity(None, building("urn:ngsi-ld:Building:2"), ctx)
    assert sorted(to(platform)) == ["either", "id", "pattern"]
    broker.create_entity(None, building("urn:ngsi-ld:Building:22", type=["Building", "Tower"]), ctx)
    assert sorted(to(platform)) == ["both", "either"]
    broker.create_entity(None, {"id": "urn:ngsi-ld:Tower:3", "type": "Tower", "name": "t"}, ctx)
    assert to(platform) == ["either"]


def test_formats_attributes_and_system_attributes(platform: Platform, broker: Broker) -> None:
    subscribe(platform, "kv", note={"format": "keyValues", "sysAttrs": True})
    subscribe(platform, "concise", note={"format": "concise", "attributes": ["airQualityLevel"]})
    subscribe(platform, "pick", note={"pick": ["id", "name"]})
    subscribe(platform, "expanded", context=None, entities=[{"type": "https://ngsi-ld-test-suite/context#Building"}])
    broker.create_entity(None, building(), broker.context(CTX))
    by_sub = {n["subscriptionId"].rsplit(":", 1)[1]: n for n in queued(platform)}
    kv = by_sub["kv"]["data"][0]
    assert kv["name"] == "Eiffel Tower" and kv["airQualityLevel"] == 4 and kv["createdAt"].endswith("Z")
    assert by_sub["concise"]["data"] == [{"id": "urn:ngsi-ld:Building:1", "type": "Building",
                                           "airQualityLevel": {"value": 4, "unitCode": "C62"}}]
    assert by_sub["pick"]["data"] == [{"id": "urn:ngsi-ld:Building:1",
                                        "name": {"type": "Property", "value": "Eiffel Tower"}}]
    expanded = by_sub["expanded"]["data"][0]
    assert expanded["type"] == "https://ngsi-ld-test-suite/context#Building"
    assert "https://ngsi-ld-test-suite/context#name" in expanded
    assert by_sub["kv"]["type"] == "Notification"
    assert by_sub["kv"]["id"].startswith("urn:ngsi-ld:Notification:")


def test_jsonld_receivers_get_the_context_in_each_entity(platform: Platform, broker: Broker) -> None:
    core = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld"
    subscribe(platform, "own", note={"endpoint": {"uri": "http://x/", "accept": "application/ld+json"}})
    subscribe(platform, "core", jsonldContext=core,
              note={"endpoint": {"uri": "http://x/", "accept": "application/ld+json"}})
    broker.create_entity(None, building(), broker.context(CTX))
    by_sub = {n["subscriptionId"].rsplit(":", 1)[1]: n["data"][0] for n in queued(platform)}
    assert by_sub["own"]["@context"] == CTX and by_sub["own"]["type"] == "Building"
    assert by_sub["core"]["@context"] == core
    assert by_sub["core"]["type"] == "https://ngsi-ld-test-suite/context#Building"


def test_deleted_attributes_show_as_null(platform: Platform, broker: Broker) -> None:
    subscribe(platform, "del", notificationTrigger=["attributeDeleted"], watchedAttributes=["name"])
    subscribe(platform, "sys", notificationTrigger=["attributeDeleted"], note={"sysAttrs": True})
    ctx = broker.context(CTX)
    names = [{"type": "Property", "value": "Eiffel Tower"},
             {"type": "Property", "value": "Tour Eiffel", "datasetId": "urn:ngsi-ld:Dataset:fr"}]
    broker.create_entity(None, building(name=names), ctx)
    broker.delete_attr(None, "urn:ngsi-ld:Building:1", "name", ctx, dataset_id="urn:ngsi-ld:Dataset:fr")
    by_sub = {n["subscriptionId"].rsplit(":", 1)[1]: n["data"][0] for n in queued(platform)}
    assert sorted(by_sub["del"]["name"], key=lambda i: i.get("datasetId", "")) == [
        {"type": "Property", "value": "Eiffel Tower"},
        {"type": "Property", "value": NULL, "datasetId": "urn:ngsi-ld:Dataset:fr"},
    ]
    assert by_sub["del"]["airQualityLevel"]["value"] == 4
    gone = next(i for i in by_sub["sys"]["name"] if i["value"] == NULL)
    assert gone["deletedAt"].endswith("Z") and gone["createdAt"].endswith("Z")
    broker.delete_attr(None, "urn:ngsi-ld:Building:1", "airQualityLevel", ctx)
    assert to(platform) == ["sys"]  # "del" watches name only
    broker.delete_entity(None, "urn:ngsi-ld:Building:1")
    by_sub = {n["subscriptionId"].rsplit(":", 1)[1]: n["data"][0] for n in queued(platform)}
    assert set(by_sub["del"]) == {"id", "type", "deletedAt", "name"}
    assert by_sub["del"]["name"] == {"type": "Property", "value": NULL}


def test_entity_deletion_sends_id_type_and_deleted_at(platform: Platform, broker: Broker) -> None:
    subscribe(platform, "kv", notificationTrigger=["entityDeleted"], note={"format": "keyValues"})
    subscribe(platform, "changes", notificationTrigger=["entityDeleted"], note={"showChanges": True})
    broker.create_entity(None, building(), broker.context(CTX))
    broker.delete_entity(None, "urn:ngsi-ld:Building:1")
    by_sub = {n["subscriptionId"].rsplit(":", 1)[1]: n for n in queued(platform)}
    assert set(by_sub["kv"]["data"][0]) == {"id", "type", "deletedAt"}
    assert by_sub["kv"]["triggerReason"] == "entityDeleted"
    assert by_sub["changes"]["data"][0]["name"] == {"type": "Property", "value": NULL,
                                                    "previousValue": "Eiffel Tower"}


def test_show_changes_adds_previous_values(platform: Platform, broker: Broker) -> None:
    subscribe(platform, "changes", note={"showChanges": True})
    ctx = broker.context(CTX)
    broker.create_entity(None, building(locatedAt=PARIS), ctx)
    assert "previousValue" not in str(queued(platform))
    nantes = {"type": "Relationship", "object": "urn:ngsi-ld:City:Nantes"}
    broker.update_attrs(None, "urn:ngsi-ld:Building:1", {"name": "Tour Eiffel", "locatedAt": nantes}, ctx)
    data = queued(platform)[0]["data"][0]
    assert data["name"] == {"type": "Property", "value": "Tour Eiffel", "previousValue": "Eiffel Tower"}
    assert data["locatedAt"]["previousObject"] == "urn:ngsi-ld:City:Paris"
    assert "previousValue" not in data["airQualityLevel"]


def test_linked_entities_are_joined(platform: Platform, broker: Broker) -> None:
    subscribe(platform, "flat", note={"join": "flat", "format": "keyValues"})
    ctx = broker.context(CTX)
    broker.create_entity(None, {"id": "urn:ngsi-ld:City:Paris", "type": "City", "name": "Paris"}, ctx)
    broker.create_entity(None, building(locatedAt=PARIS), ctx)
    data = queued(platform)[0]["data"]
    assert [d["id"] for d in data] == ["urn:ngsi-ld:Building:1", "urn:ngsi-ld:City:Paris"]


def test_paused_expired_and_periodic_subscriptions_do_not_match(platform: Platform, broker: Broker) -> None:
    subscribe(platform, "paused", isActive=False)
    subscribe(platform, "periodic", timeInterval=60)
    subscribe(platform, "expiring", expiresAt="2099-01-01T00:00:00Z")
    broker.create_entity(None, building(), broker.context(CTX))
    assert to(platform) == ["expiring"]
    notifier: Notifier = platform.parts["subscriptions"]
    doc = notifier.store.get("default", "urn:ngsi-ld:Subscription:expiring").doc
    notifier.store.replace("default", {**doc, "expiresAt": "2001-01-01T00:00:00Z"})
    broker.update_attrs(None, "urn:ngsi-ld:Building:1", {"name": "x"}, broker.context(CTX))
    assert to(platform) == []


def test_one_message_per_subscription_per_change(platform: Platform, broker: Broker) -> None:
    subscribe(platform, "a")
    subscribe(platform, "b", notificationTrigger=["entityCreated", "attributeCreated"])
    broker.upsert(None, [building(f"urn:ngsi-ld:Building:{i}") for i in range(3)], context=CTX)
    notes = queued(platform)
    assert sorted(to_sub := [n["subscriptionId"][-1] for n in notes]) == ["a"] * 3 + ["b"] * 3, to_sub
    assert {n["data"][0]["id"] for n in notes} == {f"urn:ngsi-ld:Building:{i}" for i in range(3)}


def test_tenants_match_only_their_own(platform: Platform, broker: Broker) -> None:
    subscribe(platform, "sapporo", tenant="011002")
    broker.tenants.ensure("011002")
    broker.create_entity(None, building(), broker.context(CTX))
    assert to(platform) == []
    broker.create_entity("011002", building(), broker.context(CTX))
    assert to(platform) == ["sapporo"]


def test_a_hundred_subscriptions_of_other_types_are_one_lookup(platform: Platform, broker: Broker) -> None:
    for i in range(100):
        subscribe(platform, f"s{i}", entities=[{"type": f"Type{i % 10}"}])
    notifier: Notifier = platform.parts["subscriptions"]
    with platform.engine.connect() as conn:
        index = notifier.store.index(conn, "default")
    assert index.candidates({"https://ngsi-ld-test-suite/context#Building"}) == []
    type3 = broker.context(CTX).expand("Type3")
    assert len(index.candidates({type3})) == 10


def test_other_processes_changes_are_seen(platform: Platform, broker: Broker,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    other = SubscriptionStore(platform.engine, broker.context)  # another server process on the same DB
    with platform.engine.connect() as conn:
        assert not other.index(conn, "default").by_id
    subscribe(platform, "new")
    monkeypatch.setattr(subscriptions_store, "FRESH_S", 0.0)
    with platform.engine.connect() as conn:
        assert list(other.index(conn, "default").by_id) == ["urn:ngsi-ld:Subscription:new"]
