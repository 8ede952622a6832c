"""Queries over HTTP: type, ids, q, geo, scope, paging and counts, batch operations and discovery."""

from __future__ import annotations

from typing import Any

import pytest

from tests.broker.test_api_entities import LINK

H = {"Content-Type": "application/json", "Link": LINK}
SAPPORO = (141.3544, 43.0621)


def vehicle(i: int, speed: float, lon: float, lat: float, **extra: Any) -> dict[str, Any]:
    ent = {
        "id": f"urn:ngsi-ld:Vehicle:{i:03d}",
        "type": "Vehicle",
        "speed": {"type": "Property", "value": speed},
        "brandName": {"type": "Property", "value": "Hino" if i % 2 else "Isuzu"},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [lon, lat]}},
    }
    ent.update(extra)
    return ent


@pytest.fixture
def fleet(client: Any) -> Any:
    ents = [vehicle(i, speed=i * 10, lon=SAPPORO[0] + i * 0.01, lat=SAPPORO[1]) for i in range(10)]
    ents.append(
        {
            "id": "urn:ngsi-ld:Building:1",
            "type": "Building",
            "name": {"type": "Property", "value": "A"},
            "scope": "/public/Sapporo",
        }
    )
    r = client.post("/ngsi-ld/v1/entityOperations/create", json=ents, headers=H)
    assert r.status_code == 201, r.text
    assert len(r.json()) == 11
    return client


def ids(resp: Any) -> list[str]:
    assert resp.status_code == 200, resp.text
    return [e["id"] for e in resp.json()]


def test_type_and_q(fleet: Any) -> None:
    got = ids(fleet.get("/ngsi-ld/v1/entities?type=Vehicle&q=speed>55", headers={"Link": LINK}))
    assert got == [f"urn:ngsi-ld:Vehicle:{i:03d}" for i in range(6, 10)]
    got = ids(
        fleet.get(
            "/ngsi-ld/v1/entities?type=Vehicle&q=speed==10..30;brandName==%22Hino%22", headers={"Link": LINK}
        )
    )
    assert got == ["urn:ngsi-ld:Vehicle:001", "urn:ngsi-ld:Vehicle:003"]
    got = ids(fleet.get("/ngsi-ld/v1/entities?type=Vehicle,Building&limit=100", headers={"Link": LINK}))
    assert len(got) == 11


def test_order_by_applies_its_terms_in_the_order_given(fleet: Any) -> None:
    """orderBy sorts by its first term, then the next for ties; each term has its own direction."""
    got = ids(fleet.get("/ngsi-ld/v1/entities?type=Vehicle&orderBy=brandName;desc,speed;desc",
                        headers={"Link": LINK}))
    isuzu = [f"urn:ngsi-ld:Vehicle:{i:03d}" for i in (8, 6, 4, 2, 0)]
    hino = [f"urn:ngsi-ld:Vehicle:{i:03d}" for i in (9, 7, 5, 3, 1)]
    assert got == isuzu + hino
    got = ids(fleet.get("/ngsi-ld/v1/entities?type=Vehicle&orderBy=speed;desc,brandName;desc",
                        headers={"Link": LINK}))
    assert got == [f"urn:ngsi-ld:Vehicle:{i:03d}" for i in range(9, -1, -1)]
    got = ids(fleet.get("/ngsi-ld/v1/entities?type=Vehicle&orderBy=type;asc,brandName,speed;desc",
                        headers={"Link": LINK}))
    assert got == hino + isuzu


def test_bad_q_is_400(fleet: Any) -> None:
    r = fleet.get("/ngsi-ld/v1/entities?type=Vehicle&q=speed>>", headers={"Link": LINK})
    assert r.status_code == 400 and "q" in r.json()["detail"]


def test_geo_near_and_within(fleet: Any) -> None:
    url = (
        "/ngsi-ld/v1/entities?type=Vehicle&georel=near;maxDistance==2000&geometry=Point"
        f"&coordinates=[{SAPPORO[0]},{SAPPORO[1]}]"
    )
    got = ids(fleet.get(url, headers={"Link": LINK}))
    # 0.01° of longitude at 43°N is about 813 m: vehicles 0, 1 and 2 are within 2 km
    assert got == ["urn:ngsi-ld:Vehicle:000", "urn:ngsi-ld:Vehicle:001", "urn:ngsi-ld:Vehicle:002"]
    poly = "[[[141.37,43.0],[141.40,43.0],[141.40,43.1],[141.37,43.1],[141.37,43.0]]]"
    got = ids(
        fleet.get(
            f"/ngsi-ld/v1/entities?type=Vehicle&georel=within&geometry=Polygon&coordinates={poly}",
            headers={"Link": LINK},
        )
    )
    assert got == ["urn:ngsi-ld:Vehicle:002", "urn:ngsi-ld:Vehicle:003", "urn:ngsi-ld:Vehicle:004"]
    r = fleet.get(
        "/ngsi-ld/v1/entities?type=Vehicle&georel=near;maxDistance==10&geometry=Point&coordinates=[1]",
        headers={"Link": LINK},
    )
    assert r.status_code == 400


def test_paging_and_count(fleet: Any) -> None:
    r = fleet.get("/ngsi-ld/v1/entities?type=Vehicle&limit=3&offset=2&count=true", headers={"Link": LINK})
    assert ids(r) == [f"urn:ngsi-ld:Vehicle:{i:03d}" for i in (2, 3, 4)]
    assert r.headers["NGSILD-Results-Count"] == "10"
    r = fleet.get("/ngsi-ld/v1/entities?type=Vehicle&limit=0&count=true", headers={"Link": LINK})
    assert r.json() == [] and r.headers["NGSILD-Results-Count"] == "10"
    assert fleet.get("/ngsi-ld/v1/entities?type=Vehicle&limit=-1").status_code == 400


def test_id_pattern_attrs_scope(fleet: Any) -> None:
    got = ids(fleet.get("/ngsi-ld/v1/entities?idPattern=.*Vehicle:00[12]$", headers={"Link": LINK}))
    assert got == ["urn:ngsi-ld:Vehicle:001", "urn:ngsi-ld:Vehicle:002"]
    got = ids(fleet.get("/ngsi-ld/v1/entities?attrs=name", headers={"Link": LINK}))
    assert got == ["urn:ngsi-ld:Building:1"]
    got = ids(fleet.get("/ngsi-ld/v1/entities?scopeQ=/public/%23", headers={"Link": LINK}))
    assert got == ["urn:ngsi-ld:Building:1"]
    assert fleet.get("/ngsi-ld/v1/entities").status_code == 400
    assert fleet.get("/ngsi-ld/v1/entities?id=urn:ngsi-ld:Vehicle:001").status_code == 400


def test_post_query(fleet: Any) -> None:
    body = {
        "type": "Query",
        "entities": [{"type": "Vehicle"}],
        "q": "speed<25",
        "geoQ": {"georel": "near;maxDistance==5000", "geometry": "Point", "coordinates": list(SAPPORO)},
    }
    r = fleet.post("/ngsi-ld/v1/entityOperations/query", json=body, headers=H)
    assert ids(r) == ["urn:ngsi-ld:Vehicle:000", "urn:ngsi-ld:Vehicle:001", "urn:ngsi-ld:Vehicle:002"]


def test_batch_upsert_update_delete_report_per_entity(fleet: Any) -> None:
    batch = [vehicle(1, 99, 141.0, 43.0), vehicle(50, 1, 141.0, 43.0), {"id": "bad id", "type": "Vehicle"}]
    r = fleet.post("/ngsi-ld/v1/entityOperations/upsert", json=batch, headers=H)
    assert r.status_code == 207
    body = r.json()
    assert set(body["success"]) == {"urn:ngsi-ld:Vehicle:001", "urn:ngsi-ld:Vehicle:050"}
    assert body["errors"][0]["entityId"] == "bad id"
    assert body["errors"][0]["error"]["status"] == 400
    r = fleet.post("/ngsi-ld/v1/entityOperations/upsert", json=[vehicle(60, 1, 141.0, 43.0)], headers=H)
    assert r.status_code == 201 and r.json() == ["urn:ngsi-ld:Vehicle:060"]
    r = fleet.post("/ngsi-ld/v1/entityOperations/upsert", json=[vehicle(60, 2, 141.0, 43.0)], headers=H)
    assert r.status_code == 204
    upd = [
        {"id": "urn:ngsi-ld:Vehicle:002", "speed": {"type": "Property", "value": 1}},
        {"id": "urn:ngsi-ld:Vehicle:999", "speed": {"type": "Property", "value": 1}},
    ]
    r = fleet.post("/ngsi-ld/v1/entityOperations/update", json=upd, headers=H)
    assert r.status_code == 207
    assert r.json()["errors"][0]["error"]["status"] == 404
    speed = fleet.get("/ngsi-ld/v1/entities/urn:ngsi-ld:Vehicle:002", headers={"Link": LINK}).json()["speed"]
    assert speed["value"] == 1
    r = fleet.post(
        "/ngsi-ld/v1/entityOperations/delete",
        json=["urn:ngsi-ld:Vehicle:002", "urn:ngsi-ld:Vehicle:998"],
        headers=H,
    )
    assert r.status_code == 207 and r.json()["success"] == ["urn:ngsi-ld:Vehicle:002"]
    assert fleet.get("/ngsi-ld/v1/entities/urn:ngsi-ld:Vehicle:002").status_code == 404


def test_geo_index_follows_moves_and_deletes(fleet: Any) -> None:
    url = (
        "/ngsi-ld/v1/entities?type=Vehicle&georel=near;maxDistance==500&geometry=Point"
        "&coordinates=[140.0,42.0]"
    )
    assert ids(fleet.get(url, headers={"Link": LINK})) == []
    r = fleet.patch(
        "/ngsi-ld/v1/entities/urn:ngsi-ld:Vehicle:005/attrs",
        json={"location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [140.0, 42.0]}}},
        headers=H,
    )
    assert r.status_code == 204
    assert ids(fleet.get(url, headers={"Link": LINK})) == ["urn:ngsi-ld:Vehicle:005"]
    fleet.delete("/ngsi-ld/v1/entities/urn:ngsi-ld:Vehicle:005")
    assert ids(fleet.get(url, headers={"Link": LINK})) == []


def test_types_and_attributes_discovery(fleet: Any) -> None:
    r = fleet.get("/ngsi-ld/v1/types", headers={"Link": LINK})
    assert r.json()["typeList"] == ["Building", "Vehicle"]
    r = fleet.get("/ngsi-ld/v1/types/Vehicle", headers={"Link": LINK})
    info = r.json()
    assert info["entityCount"] == 10
    assert {a["attributeName"] for a in info["attributeDetails"]} == {"speed", "brandName", "location"}
    r = fleet.get("/ngsi-ld/v1/attributes", headers={"Link": LINK})
    assert set(r.json()["attributeList"]) == {"speed", "brandName", "location", "name"}
    assert fleet.get("/ngsi-ld/v1/types/Nothing", headers={"Link": LINK}).status_code == 404


def test_unknown_query_parameters_are_invalid_requests(fleet: Any) -> None:
    r = fleet.get("/ngsi-ld/v1/entities?type=Vehicle&limt=5", headers={"Link": LINK})
    assert r.status_code == 400
    assert r.json()["type"] == "https://uri.etsi.org/ngsi-ld/errors/InvalidRequest"
    assert "limt" in r.json()["detail"]
    r = fleet.patch("/ngsi-ld/v1/entities/urn:ngsi-ld:Vehicle:001/attrs?force=yes",
                    json={"speed": {"type": "Property", "value": 1}}, headers=H)
    assert r.status_code == 400
    speed = fleet.get("/ngsi-ld/v1/entities/urn:ngsi-ld:Vehicle:001", headers={"Link": LINK}).json()["speed"]
    assert speed["value"] == 10  # nothing written


def test_batch_writes_keep_the_geo_index_when_locations_come_and_go(client: Any) -> None:
    """Upsert and update batches that add, move and remove locations: the near-query answers from the geo
    index agree each time (a batch skips the geo check only for entities with no GeoProperty before or
    after)."""
    url = "/ngsi-ld/v1/entityOperations"
    near = {"type": "Sensor", "georel": "near;maxDistance==1000", "geometry": "Point",
            "coordinates": f"[{SAPPORO[0]},{SAPPORO[1]}]"}

    def found() -> set[str]:
        r = client.get("/ngsi-ld/v1/entities", params=near, headers=H)
        assert r.status_code == 200, r.text
        return {e["id"].rsplit(":", 1)[1] for e in r.json()}

    def sensor(i: int, lon: float | None = None) -> dict[str, Any]:
        ent: dict[str, Any] = {"id": f"urn:ngsi-ld:Sensor:{i}", "type": "Sensor",
                               "level": {"type": "Property", "value": i}}
        if lon is not None:
            point = {"type": "Point", "coordinates": [lon, SAPPORO[1]]}
            ent["location"] = {"type": "GeoProperty", "value": point}
        return ent

    far = SAPPORO[0] + 1.0
    assert client.post(f"{url}/upsert", json=[sensor(1), sensor(2, SAPPORO[0]), sensor(3, far)],
                       headers=H).status_code == 201
    assert found() == {"2"}
    # 1 gains a location near Sapporo, 2 loses its own, 3 moves in, a plain update of 4 alongside
    batch = [sensor(1, SAPPORO[0]), sensor(2), sensor(3, SAPPORO[0] + 0.001), sensor(4)]
    assert client.post(f"{url}/upsert", json=batch, headers=H).status_code in (200, 201)
    assert found() == {"1", "3"}
    # the update batch: 1 moves away; 4 gains a location
    moved = [{"id": "urn:ngsi-ld:Sensor:1", "location": sensor(1, far)["location"]},
             {"id": "urn:ngsi-ld:Sensor:4", "location": sensor(4, SAPPORO[0])["location"]}]
    assert client.post(f"{url}/update", json=moved, headers=H).status_code == 204
    assert found() == {"3", "4"}
