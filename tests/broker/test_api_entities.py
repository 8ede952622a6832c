"""NGSI-LD entity and attribute operations over HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest

CTX = "https://forge.etsi.org/rep/cim/ngsi-ld-test-suite/-/raw/develop/resources/jsonld-contexts/ngsi-ld-test-suite-compound.jsonld"
LINK = f'<{CTX}>; rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"'
H = {"Content-Type": "application/json", "Link": LINK}
# NGSI-LD reports attribute names of UpdateResult expanded (the ETSI suite checks this)
SPEED = "https://ngsi-ld-test-suite/context#speed"


def building(eid: str = "urn:ngsi-ld:Building:1", **extra: Any) -> dict[str, Any]:
    body = {
        "id": eid,
        "type": "Building",
        "name": {"type": "Property", "value": "札幌市役所"},
        "airQualityLevel": {
            "type": "Property",
            "value": 4,
            "observedAt": "2026-11-26T05:00:00Z",
            "unitCode": "C62",
        },
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [141.3544, 43.0621]}},
    }
    body.update(extra)
    return body


def test_create_retrieve_roundtrip(client: Any) -> None:
    r = client.post("/ngsi-ld/v1/entities", json=building(), headers=H)
    assert r.status_code == 201, r.text
    assert r.headers["location"] == "/ngsi-ld/v1/entities/urn:ngsi-ld:Building:1"
    r = client.get("/ngsi-ld/v1/entities/urn:ngsi-ld:Building:1", headers={"Link": LINK})
    assert r.status_code == 200
    ent = r.json()
    assert ent["type"] == "Building"
    assert ent["name"] == {"type": "Property", "value": "札幌市役所"}
    assert ent["airQualityLevel"]["unitCode"] == "C62"
    assert ent["location"]["value"]["coordinates"] == [141.3544, 43.0621]
    assert CTX in r.headers["link"]


def test_without_context_names_stay_expanded(client: Any) -> None:
    client.post("/ngsi-ld/v1/entities", json=building(), headers=H)
    ent = client.get("/ngsi-ld/v1/entities/urn:ngsi-ld:Building:1").json()
    assert ent["type"] == "https://ngsi-ld-test-suite/context#Building"
    assert "https://ngsi-ld-test-suite/context#name" in ent


def test_ld_json_body_and_accept(client: Any) -> None:
    body = building() | {"@context": CTX}
    r = client.post("/ngsi-ld/v1/entities", json=body, headers={"Content-Type": "application/ld+json"})
    assert r.status_code == 201, r.text
    r = client.get(
        "/ngsi-ld/v1/entities/urn:ngsi-ld:Building:1", headers={"Link": LINK, "Accept": "application/ld+json"}
    )
    assert r.json()["@context"] == CTX
    assert r.headers["content-type"].startswith("application/ld+json")


def test_duplicate_create_is_409(client: Any) -> None:
    assert client.post("/ngsi-ld/v1/entities", json=building(), headers=H).status_code == 201
    r = client.post("/ngsi-ld/v1/entities", json=building(), headers=H)
    assert r.status_code == 409
    assert r.json()["type"] == "https://uri.etsi.org/ngsi-ld/errors/AlreadyExists"


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"type": "Building"}, 400, "id"),
        ({"id": "not a uri", "type": "Building"}, 400, "URI"),
        ({"id": "urn:ngsi-ld:B:1"}, 400, "type"),
        ({"id": "urn:ngsi-ld:B:1", "type": "Building", "name": {"type": "Property"}}, 400, "value"),
        (
            {"id": "urn:ngsi-ld:B:1", "type": "Building", "rel": {"type": "Relationship", "object": "x y"}},
            400,
            "URI",
        ),
        (
            {
                "id": "urn:ngsi-ld:B:1",
                "type": "Building",
                "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [500, 43]}},
            },
            400,
            "longitude",
        ),
        (
            {
                "id": "urn:ngsi-ld:B:1",
                "type": "Building",
                "a": {"type": "Property", "value": 1, "observedAt": "yesterday"},
            },
            400,
            "observedAt",
        ),
        ({"id": "urn:ngsi-ld:B:1", "type": "Building", "bad=name": 1}, 400, "attribute name"),
    ],
)
def test_invalid_entities_are_rejected_and_not_written(
    client: Any, body: dict[str, Any], status: int, fragment: str
) -> None:
    r = client.post("/ngsi-ld/v1/entities", json=body, headers=H)
    assert r.status_code == status, r.text
    problem = r.json()
    assert problem["type"].startswith("https://uri.etsi.org/ngsi-ld/errors/")
    assert fragment.lower() in problem["detail"].lower()
    assert client.get("/ngsi-ld/v1/entities/urn:ngsi-ld:B:1").status_code == 404


def test_malformed_json_and_media_types(client: Any) -> None:
    r = client.post(
        "/ngsi-ld/v1/entities", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 400 and r.json()["title"] == "InvalidRequest"
    r = client.post("/ngsi-ld/v1/entities", content=b"{}", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415
    r = client.get("/ngsi-ld/v1/entities?type=Building", headers={"Accept": "text/html"})
    assert r.status_code == 406
    r = client.post(
        "/ngsi-ld/v1/entities",
        json=building() | {"@context": CTX},
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 400


def test_attribute_operations(client: Any) -> None:
    client.post("/ngsi-ld/v1/entities", json=building(), headers=H)
    url = "/ngsi-ld/v1/entities/urn:ngsi-ld:Building:1"
    r = client.post(url + "/attrs", json={"speed": {"type": "Property", "value": 3}}, headers=H)
    assert r.status_code == 204
    r = client.post(
        url + "/attrs?options=noOverwrite", json={"speed": {"type": "Property", "value": 9}}, headers=H
    )
    assert r.status_code == 207 and r.json()["notUpdated"][0]["attributeName"] == SPEED
    r = client.patch(
        url + "/attrs",
        json={"speed": {"type": "Property", "value": 5}, "missing": {"type": "Property", "value": 1}},
        headers=H,
    )
    assert r.status_code == 207
    assert r.json()["updated"] == [SPEED]
    r = client.patch(url + "/attrs/speed", json={"value": 7}, headers=H)
    assert r.status_code == 204
    ent = client.get(url, headers={"Link": LINK}).json()
    assert ent["speed"]["value"] == 7
    assert client.patch(url + "/attrs/nothere", json={"value": 1}, headers=H).status_code == 404
    assert client.delete(url + "/attrs/speed", headers={"Link": LINK}).status_code == 204
    assert "speed" not in client.get(url, headers={"Link": LINK}).json()
    assert client.delete(url + "/attrs/speed", headers={"Link": LINK}).status_code == 404


def test_multi_attribute_datasets(client: Any) -> None:
    ent = building(
        speed=[
            {"type": "Property", "value": 10},
            {"type": "Property", "value": 20, "datasetId": "urn:ngsi-ld:Dataset:gps"},
        ]
    )
    assert client.post("/ngsi-ld/v1/entities", json=ent, headers=H).status_code == 201
    url = "/ngsi-ld/v1/entities/urn:ngsi-ld:Building:1"
    got = client.get(url, headers={"Link": LINK}).json()["speed"]
    assert sorted(i["value"] for i in got) == [10, 20]
    # Simplified, each value stays with its instance; a single instance is its bare value.
    kv = client.get(url + "?options=keyValues", headers={"Link": LINK}).json()
    assert kv["speed"] == {"dataset": {"@none": 10, "urn:ngsi-ld:Dataset:gps": 20}}
    assert client.get(url + "?options=keyValues&datasetId=urn:ngsi-ld:Dataset:gps",
                      headers={"Link": LINK}).json()["speed"] == 20
    r = client.delete(url + "/attrs/speed?datasetId=urn:ngsi-ld:Dataset:gps", headers={"Link": LINK})
    assert r.status_code == 204
    got = client.get(url, headers={"Link": LINK}).json()["speed"]
    assert got["value"] == 10


def test_replace_and_merge_entity(client: Any) -> None:
    client.post("/ngsi-ld/v1/entities", json=building(), headers=H)
    url = "/ngsi-ld/v1/entities/urn:ngsi-ld:Building:1"
    r = client.patch(
        url, json={"speed": {"type": "Property", "value": 1}, "name": "urn:ngsi-ld:null"}, headers=H
    )
    assert r.status_code == 204, r.text
    ent = client.get(url, headers={"Link": LINK}).json()
    assert ent["speed"]["value"] == 1 and "name" not in ent
    r = client.put(url, json={"type": "Building", "brandName": {"type": "Property", "value": "X"}}, headers=H)
    assert r.status_code == 204, r.text
    ent = client.get(url, headers={"Link": LINK}).json()
    assert set(ent) == {"id", "type", "brandName"}


def test_formats_and_sysattrs(client: Any) -> None:
    client.post("/ngsi-ld/v1/entities", json=building(), headers=H)
    url = "/ngsi-ld/v1/entities/urn:ngsi-ld:Building:1"
    kv = client.get(url + "?options=keyValues", headers={"Link": LINK}).json()
    assert kv["name"] == "札幌市役所" and kv["airQualityLevel"] == 4
    concise = client.get(url + "?options=concise", headers={"Link": LINK}).json()
    assert concise["name"] == "札幌市役所"
    assert concise["airQualityLevel"] == {"value": 4, "observedAt": "2026-11-26T05:00:00Z", "unitCode": "C62"}
    sys = client.get(url + "?options=sysAttrs", headers={"Link": LINK}).json()
    assert sys["createdAt"].endswith("Z") and "modifiedAt" in sys["name"]
    picked = client.get(url + "?pick=id,name", headers={"Link": LINK}).json()
    assert set(picked) == {"id", "name"}


def test_concise_input_is_understood(client: Any) -> None:
    body = {
        "id": "urn:ngsi-ld:Building:9",
        "type": "Building",
        "name": "小樽",
        "speed": {"value": 3},
        "owner": {"object": "urn:ngsi-ld:Person:1"},
        "location": {"type": "Point", "coordinates": [141.0, 43.19]},
    }
    assert client.post("/ngsi-ld/v1/entities", json=body, headers=H).status_code == 201
    ent = client.get("/ngsi-ld/v1/entities/urn:ngsi-ld:Building:9", headers={"Link": LINK}).json()
    assert ent["name"] == {"type": "Property", "value": "小樽"}
    assert ent["owner"] == {"type": "Relationship", "object": "urn:ngsi-ld:Person:1"}
    assert ent["location"]["type"] == "GeoProperty"


def test_language_property_lang(client: Any) -> None:
    body = building(label={"type": "LanguageProperty", "languageMap": {"ja": "市役所", "en": "City Hall"}})
    client.post("/ngsi-ld/v1/entities", json=body, headers=H)
    url = "/ngsi-ld/v1/entities/urn:ngsi-ld:Building:1"
    got = client.get(url + "?lang=en", headers={"Link": LINK}).json()["label"]
    assert got == {"type": "Property", "value": "City Hall", "lang": "en"}
    got = client.get(url + "?lang=ja&options=keyValues", headers={"Link": LINK}).json()["label"]
    assert got == "市役所"


def test_tenants_are_isolated(client: Any) -> None:
    r = client.post("/ngsi-ld/v1/entities", json=building(), headers=H | {"NGSILD-Tenant": "011002"})
    assert r.status_code == 201
    assert client.get("/ngsi-ld/v1/entities/urn:ngsi-ld:Building:1").status_code == 404
    r = client.get("/ngsi-ld/v1/entities/urn:ngsi-ld:Building:1", headers={"NGSILD-Tenant": "011002"})
    assert r.status_code == 200
    r = client.get("/ngsi-ld/v1/entities/urn:ngsi-ld:Building:1", headers={"NGSILD-Tenant": "019999"})
    assert r.status_code == 404 and "tenant" in r.json()["detail"]
    r = client.get("/ngsi-ld/v1/entities?type=Building", headers={"NGSILD-Tenant": "bad tenant!"})
    assert r.status_code == 400


@pytest.mark.parametrize("kind", [["Property"], {"a": 1}, 5])
def test_attribute_type_that_is_not_a_string_is_a_400(client: Any, kind: Any) -> None:
    body = {"id": "urn:ngsi-ld:T:kind", "type": "T", "a": {"type": kind, "value": 1}}
    r = client.post("/ngsi-ld/v1/entities", json=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert "is not an NGSI-LD attribute type" in r.json()["detail"]
