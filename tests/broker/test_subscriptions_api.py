"""NGSI-LD subscription CRUD over HTTP: members, validation errors, paging, tenants and rights (both DBs)."""

from __future__ import annotations

from typing import Any

import pytest

from society5.core.platform import Platform

CTX = "https://forge.etsi.org/rep/cim/ngsi-ld-test-suite/-/raw/develop/resources/jsonld-contexts/ngsi-ld-test-suite-compound.jsonld"
LINK = f'<{CTX}>; rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"'
H = {"Content-Type": "application/json", "Link": LINK}
S = "/ngsi-ld/v1/subscriptions"
BAD = "https://uri.etsi.org/ngsi-ld/errors/BadRequestData"
NS = "https://ngsi-ld-test-suite/context#"


def sub(sid: str | None = "urn:ngsi-ld:Subscription:1", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "Subscription",
        "entities": [{"type": "Building"}],
        "notification": {"endpoint": {"uri": "http://127.0.0.1:9/notify", "accept": "application/json"}},
    }
    if sid is not None:
        body["id"] = sid
    body.update(extra)
    return body


def test_create_then_retrieve_in_the_subscribers_terms(client: Any) -> None:
    body = sub(watchedAttributes=["airQualityLevel"], q="airQualityLevel>3", subscriptionName="air",
               notificationTrigger=["attributeUpdated"], throttling=5, isActive=True,
               notification={"attributes": ["name"], "format": "keyValues",
                             "endpoint": {"uri": "http://127.0.0.1:9/n", "accept": "application/ld+json",
                                          "receiverInfo": [{"key": "X-Token", "value": "t"}]}})
    r = client.post(S, json=body, headers=H)
    assert r.status_code == 201, r.text
    assert r.headers["location"] == f"{S}/urn:ngsi-ld:Subscription:1"
    got = client.get(f"{S}/urn:ngsi-ld:Subscription:1", headers={"Link": LINK}).json()
    assert got["entities"] == [{"type": "Building"}]
    assert got["watchedAttributes"] == ["airQualityLevel"]
    assert got["q"] == "airQualityLevel>3"
    assert got["notification"]["attributes"] == ["name"]
    assert got["notification"]["endpoint"]["receiverInfo"] == [{"key": "X-Token", "value": "t"}]
    assert "timesSent" not in got["notification"] and "lastSuccess" not in got["notification"]
    assert got["status"] == "active" and got["isActive"] is True
    assert got["notificationTrigger"] == ["attributeUpdated"]
    assert "createdAt" not in got
    plain = client.get(f"{S}/urn:ngsi-ld:Subscription:1?options=sysAttrs").json()
    assert plain["entities"] == [{"type": NS + "Building"}]
    assert plain["watchedAttributes"] == [NS + "airQualityLevel"]
    assert plain["q"] == f"{NS}airQualityLevel>3"
    assert plain["createdAt"].endswith("Z")


def test_defaults_are_reported_and_ids_generated(client: Any) -> None:
    r = client.post(S, json=sub(None), headers=H)
    assert r.status_code == 201
    sid = r.headers["location"].rsplit("/", 1)[1]
    assert sid.startswith("urn:ngsi-ld:Subscription:")
    got = client.get(f"{S}/{sid}", headers={"Link": LINK, "Accept": "application/ld+json"}).json()
    assert got["notificationTrigger"] == ["attributeCreated", "attributeUpdated"]
    assert got["@context"] == CTX
    assert "isActive" not in got  # only what the client said, plus status members


def test_type_selector_expressions_round_trip(client: Any) -> None:
    client.post(S, json=sub(entities=[{"type": "(Building|Tower);Asset", "idPattern": "^urn:.*"}]), headers=H)
    got = client.get(f"{S}/urn:ngsi-ld:Subscription:1", headers={"Link": LINK}).json()
    assert got["entities"] == [{"type": "(Building|Tower);Asset", "idPattern": "^urn:.*"}]


@pytest.mark.parametrize(
    ("change", "member"),
    [
        ({"type": "Sub"}, "type"),
        ({"id": "not a uri"}, "id"),
        ({"entities": []}, "entities"),
        ({"entities": [{"type": "A|"}]}, "type"),
        ({"entities": [{"idPattern": "("}]}, "idPattern"),
        ({"entities": [{"kind": "A"}]}, "entities"),
        ({"watchedAttributes": []}, "watchedAttributes"),
        ({"notificationTrigger": ["entityTouched"]}, "notificationTrigger"),
        ({"q": "speed>>3"}, "q"),
        ({"scopeQ": "nope"}, "scopeQ"),
        ({"geoQ": {"georel": "near;maxDistance==10", "geometry": "Polygon", "coordinates": [1, 2]}}, "geoQ"),
        ({"throttling": -30}, "throttling"),
        ({"timeInterval": 0}, "timeInterval"),
        ({"timeInterval": 10, "throttling": 30}, "throttling"),
        ({"timeInterval": 10, "watchedAttributes": ["a"]}, "watchedAttributes"),
        ({"expiresAt": "2020-08-01T22:07:00Z"}, "expiresAt"),
        ({"expiresAt": "tomorrow"}, "expiresAt"),
        ({"isActive": "yes"}, "isActive"),
        ({"jsonldContext": "unknownContext"}, "jsonldContext"),
        ({"colour": "red"}, "colour"),
        ({"notification": {"format": "keyValues"}}, "endpoint"),
        ({"notification": {"endpoint": {"uri": "ftp://x/y"}}}, "uri"),
        ({"notification": {"endpoint": {"uri": "http://[::1/n"}}}, "uri"),
        ({"notification": {"endpoint": {"uri": "http://x:99999/n"}}}, "uri"),
        ({"notification": {"endpoint": {"uri": "mqtt://127.0.0.1/a/+"}}}, "uri"),
        ({"notification": {"endpoint": {"uri": "http://x/", "accept": "text/plain"}}}, "accept"),
        ({"notification": {"endpoint": {"uri": "http://x/", "receiverInfo": [{"key": "a"}]}}},
         "receiverInfo"),
        ({"notification": {"endpoint": {"uri": "mqtt://x/t",
                                        "notifierInfo": [{"key": "MQTT-QoS", "value": "3"}]}}}, "MQTT-QoS"),
        ({"notification": {"format": "short", "endpoint": {"uri": "http://x/"}}}, "format"),
        ({"notification": {"pick": ["id"], "omit": ["id"], "endpoint": {"uri": "http://x/"}}}, "pick"),
        ({"notification": {"pick": ["id"], "attributes": ["id"], "endpoint": {"uri": "http://x/"}}},
         "attributes"),
    ],
)
def test_every_wrong_member_is_a_400_naming_it(client: Any, change: dict[str, Any], member: str) -> None:
    r = client.post(S, json=sub(**change), headers=H)
    assert r.status_code == 400, r.text
    assert r.json()["type"] == BAD
    assert member in r.json()["detail"]


def test_a_subscription_needs_a_notification_and_a_selector(client: Any) -> None:
    body = sub()
    del body["entities"]
    assert "entities or watchedAttributes" in client.post(S, json=body, headers=H).json()["detail"]
    r = client.post(S, content=b"{}", headers={"Content-Type": "application/ld+json"})
    assert r.status_code == 400 and r.json()["type"] == BAD
    r = client.post(S, content=b"{,}", headers=H)
    assert r.json()["type"] == "https://uri.etsi.org/ngsi-ld/errors/InvalidRequest"


def test_unavailable_notification_context_is_503(client: Any) -> None:
    r = client.post(S, json=sub(jsonldContext="https://example.org/nowhere.jsonld"), headers=H)
    assert r.status_code == 503
    assert r.json()["type"] == "https://uri.etsi.org/ngsi-ld/errors/LdContextNotAvailable"


def test_duplicate_unknown_and_invalid_ids(client: Any) -> None:
    assert client.post(S, json=sub(), headers=H).status_code == 201
    r = client.post(S, json=sub(), headers=H)
    assert r.status_code == 409 and r.json()["type"].endswith("AlreadyExists")
    for method in ("get", "delete"):
        r = getattr(client, method)(f"{S}/urn:ngsi-ld:Subscription:unknown")
        assert r.status_code == 404 and r.json()["type"].endswith("ResourceNotFound")
        assert getattr(client, method)(f"{S}/InvalidUri").status_code == 400
    r = client.patch(f"{S}/urn:ngsi-ld:Subscription:unknown", json={"isActive": False}, headers=H)
    assert r.status_code == 404
    assert client.patch(f"{S}/", json={"isActive": False}, headers=H).status_code == 405


def test_patch_replaces_members_and_drives_status(client: Any) -> None:
    client.post(S, json=sub(timeInterval=5), headers=H)
    url = f"{S}/urn:ngsi-ld:Subscription:1"
    assert client.patch(url, json={"isActive": False}, headers=H).status_code == 204
    assert client.get(url).json()["status"] == "paused"
    again = {"type": "Subscription", "isActive": True, "expiresAt": "2099-08-01T22:07:00Z"}
    r = client.patch(url, json=again, headers=H)
    assert r.status_code == 204
    got = client.get(url).json()
    assert got["status"] == "active" and got["expiresAt"] == "2099-08-01T22:07:00Z"
    new_note = {"format": "keyValues", "endpoint": {"uri": "http://second.example/notify"}}
    assert client.patch(url, json={"notification": new_note, "entities": [{"type": "Vehicle"}]},
                        headers=H).status_code == 204
    got = client.get(url, headers={"Link": LINK}).json()
    assert got["notification"]["endpoint"] == {"uri": "http://second.example/notify"}
    assert got["notification"]["format"] == "keyValues"
    assert got["entities"] == [{"type": "Vehicle"}]
    assert client.patch(url, json={"expiresAt": None}, headers=H).status_code == 204
    assert "expiresAt" not in client.get(url).json()


@pytest.mark.parametrize(
    "fragment",
    [
        {"notification": {"format": "keyValues"}},
        {"notification": {"format": "keyValues", "endpoint": None}},
        {"notification": None},
        {"expiresAt": "2020-08-01T22:07:00Z"},
        {"id": "urn:ngsi-ld:Subscription:other"},
        {"throttling": 3},  # the subscription has a timeInterval
        {"entities": None},  # and no watchedAttributes
    ],
)
def test_patch_refuses_what_create_refuses(client: Any, fragment: dict[str, Any]) -> None:
    client.post(S, json=sub(timeInterval=5), headers=H)
    r = client.patch(f"{S}/urn:ngsi-ld:Subscription:1", json=fragment, headers=H)
    assert r.status_code == 400, r.text
    assert client.get(f"{S}/urn:ngsi-ld:Subscription:1").json()["timeInterval"] == 5


def test_expired_subscriptions_report_it(client: Any, platform: Platform) -> None:
    import sqlalchemy as sa

    from society5.broker.subscriptions_store import subscriptions

    client.post(S, json=sub(expiresAt="2099-01-01T00:00:00Z"), headers=H)
    with platform.engine.begin() as conn:  # time passes
        doc = conn.execute(sa.select(subscriptions.c.doc)).scalar_one()
        conn.execute(sa.update(subscriptions).values(doc={**doc, "expiresAt": "2001-01-01T00:00:00Z"}))
    assert client.get(f"{S}/urn:ngsi-ld:Subscription:1").json()["status"] == "expired"
    client.patch(f"{S}/urn:ngsi-ld:Subscription:1", json={"expiresAt": "2099-01-01T00:00:00Z"}, headers=H)
    assert client.get(f"{S}/urn:ngsi-ld:Subscription:1").json()["status"] == "active"


def test_paging_with_links_and_count(client: Any) -> None:
    for i in range(3):
        client.post(S, json=sub(f"urn:ngsi-ld:Subscription:{i}"), headers=H)
    r = client.get(f"{S}?limit=1&offset=1&count=true",
                   headers={"Link": LINK, "Accept": "application/ld+json"})
    assert [s["id"] for s in r.json()] == ["urn:ngsi-ld:Subscription:1"]
    assert r.headers["NGSILD-Results-Count"] == "3"
    assert r.headers["Link"].split(",") == [
        f'<{S}?limit=1&offset=0>;rel="prev";type="application/ld+json"',
        f'<{S}?limit=1&offset=2>;rel="next";type="application/ld+json"',
    ]
    everything = client.get(f"{S}/?limit=15", headers={"Link": LINK})
    assert len(everything.json()) == 3 and "rel=\"next\"" not in everything.headers["Link"]
    assert client.get(f"{S}?limit=0").status_code == 400
    assert client.get(f"{S}?colour=red").status_code == 400
    assert client.delete(f"{S}/urn:ngsi-ld:Subscription:1").status_code == 204
    assert len(client.get(S).json()) == 2


def test_tenants_never_see_each_others_subscriptions(client: Any) -> None:
    assert client.post(S, json=sub(), headers={**H, "NGSILD-Tenant": "011002"}).status_code == 201
    assert client.get(S).json() == []
    assert client.get(f"{S}/urn:ngsi-ld:Subscription:1").status_code == 404
    assert len(client.get(S, headers={"NGSILD-Tenant": "011002"}).json()) == 1
    assert client.get(S, headers={"NGSILD-Tenant": "012025"}).status_code == 404


def test_rights_follow_the_entity_api(db_url: str) -> None:
    from fastapi.testclient import TestClient

    from society5.broker.service import service as broker_service
    from society5.web.app import create_app
    from tests.conftest import make_settings

    plat = Platform.open(make_settings(db_url, auth="on"))
    try:
        if plat.engine.dialect.name == "postgresql":
            from tests.conftest import _truncate_pg

            _truncate_pg(plat)
            plat.tenants._known = {"default"}
        plat.tenants.ensure("011002")
        operator = plat.keys.create("operator", tenant="011002").key
        reader = plat.keys.create("reader", tenant="011002").key
        app = create_app(plat.settings, services=[broker_service], platform=plat)
        c = TestClient(app)
        tenant = {**H, "NGSILD-Tenant": "011002"}
        assert c.post(S, json=sub(), headers=tenant).status_code == 401
        as_reader = {**tenant, "Authorization": f"Bearer {reader}"}
        assert c.post(S, json=sub(), headers=as_reader).status_code == 403
        as_operator = {**tenant, "Authorization": f"Bearer {operator}"}
        assert c.post(S, json=sub(), headers=as_operator).status_code == 201
        assert c.get(S, headers={"NGSILD-Tenant": "011002"}).status_code == 401
        ok = c.get(S, headers={"NGSILD-Tenant": "011002", "Authorization": f"Bearer {reader}"})
        assert ok.status_code == 200 and len(ok.json()) == 1
        gone = c.delete(f"{S}/urn:ngsi-ld:Subscription:1",
                        headers={"NGSILD-Tenant": "011002", "Authorization": f"Bearer {reader}"})
        assert gone.status_code == 403
    finally:
        plat.close()
