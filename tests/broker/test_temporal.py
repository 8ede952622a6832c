"""NGSI-LD temporal API: history recording, temporal representations, aggregation, pagination (both DBs)."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from society5.broker.temporal import (
    HistRow,
    Period,
    SeriesResult,
    TemporalQuery,
    aggregate_python,
    paginate,
    parse_duration,
    parse_temporal_query,
)
from society5.broker.temporal_tables import instances, series
from society5.core.errors import BadRequest

CTX = "https://forge.etsi.org/rep/cim/ngsi-ld-test-suite/-/raw/develop/resources/jsonld-contexts/ngsi-ld-test-suite-compound.jsonld"
LINK = f'<{CTX}>; rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"'
H = {"Content-Type": "application/json", "Link": LINK}
G = {"Link": LINK}
T = "/ngsi-ld/v1/temporal/entities"
E = "/ngsi-ld/v1/entities"
BAD = "https://uri.etsi.org/ngsi-ld/errors/BadRequestData"


def vehicle(eid: str = "urn:ngsi-ld:Vehicle:1", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": eid,
        "type": "Vehicle",
        "speed": [
            {"type": "Property", "value": 120, "observedAt": "2020-08-01T12:03:00Z"},
            {"type": "Property", "value": 80, "observedAt": "2020-08-01T12:05:00Z"},
            {"type": "Property", "value": 100, "observedAt": "2020-08-01T12:07:00Z"},
        ],
        "fuelLevel": [
            {"type": "Property", "value": 67, "observedAt": "2020-08-01T12:03:00Z"},
            {"type": "Property", "value": 53, "observedAt": "2020-08-01T13:05:00Z"},
            {"type": "Property", "value": 40, "observedAt": "2020-08-01T14:07:00Z"},
        ],
    }
    body.update(extra)
    return body


def values(entity: dict[str, Any], attr: str) -> list[Any]:
    return [i["value"] for i in entity[attr]]


def history_rows(platform: Any, entity_id: str) -> int:
    platform.parts["temporal"].staging.settle()  # rows read straight from the table must be moved first
    with platform.engine.connect() as conn:
        sids = sa.select(series.c.sid).where(series.c.entity_id == entity_id)
        return int(
            conn.execute(
                sa.select(sa.func.count()).select_from(instances).where(instances.c.sid.in_(sids))
            ).scalar_one()
        )


# --- recording from ordinary entity writes ------------------------------------------------------------------


def test_entity_writes_record_only_changed_instances(client: Any) -> None:
    url = f"{E}/urn:ngsi-ld:Tank:1"
    body = {
        "id": "urn:ngsi-ld:Tank:1",
        "type": "Tank",
        "level": {"type": "Property", "value": 1},
        "name": {"type": "Property", "value": "tank"},
    }
    assert client.post(E, json=body, headers=H).status_code == 201
    assert (
        client.patch(url + "/attrs", json={"level": {"type": "Property", "value": 2}}, headers=H).status_code
        == 204
    )
    # the same value again: nothing changed, nothing is recorded
    assert (
        client.patch(url + "/attrs", json={"level": {"type": "Property", "value": 2}}, headers=H).status_code
        == 204
    )
    assert client.patch(url + "/attrs/level", json={"value": 3}, headers=H).status_code == 204
    assert (
        client.post(url + "/attrs", json={"temp": {"type": "Property", "value": 9}}, headers=H).status_code
        == 204
    )
    assert client.patch(url, json={"level": {"type": "Property", "value": 4}}, headers=H).status_code == 204
    r = client.post(
        "/ngsi-ld/v1/entityOperations/upsert?options=update",
        json=[{"id": "urn:ngsi-ld:Tank:1", "type": "Tank", "level": {"type": "Property", "value": 5}}],
        headers=H,
    )
    assert r.status_code in (200, 201, 204), r.text
    got = client.get(f"{T}/urn:ngsi-ld:Tank:1", headers=G).json()
    assert values(got, "level") == [1, 2, 3, 4, 5]
    assert values(got, "name") == ["tank"]
    assert values(got, "temp") == [9]
    assert all(i["instanceId"].startswith("urn:ngsi-ld:attribute:instance:") for i in got["level"])
    assert len({i["instanceId"] for i in got["level"]}) == 5


def test_attribute_and_entity_deletion_are_recorded(client: Any, platform: Any) -> None:
    body = {
        "id": "urn:ngsi-ld:Tank:2",
        "type": "Tank",
        "level": {"type": "Property", "value": 1},
        "owner": {"type": "Relationship", "object": "urn:ngsi-ld:Person:1"},
    }
    client.post(E, json=body, headers=H)
    assert client.delete(f"{E}/urn:ngsi-ld:Tank:2/attrs/owner", headers=G).status_code == 204
    got = client.get(f"{T}/urn:ngsi-ld:Tank:2?timeproperty=deletedAt", headers=G).json()
    assert set(got) == {"id", "type", "owner"}
    [deletion] = got["owner"]
    assert deletion["type"] == "Relationship" and deletion["object"] == "urn:ngsi-ld:null"
    assert deletion["deletedAt"].endswith("Z")
    # a deleted entity has no temporal representation, but its history (with deletion records) is kept
    before = history_rows(platform, "urn:ngsi-ld:Tank:2")
    assert client.delete(f"{E}/urn:ngsi-ld:Tank:2").status_code == 204
    r = client.get(f"{T}/urn:ngsi-ld:Tank:2", headers=G)
    assert r.status_code == 404 and r.json()["type"].endswith("ResourceNotFound")
    assert history_rows(platform, "urn:ngsi-ld:Tank:2") == before + 1  # + the deletion record of level


def test_history_commits_and_rolls_back_with_the_write(client: Any, platform: Any) -> None:
    broker = platform.parts["broker"]

    def boom(*_args: Any) -> None:
        raise RuntimeError("a later listener fails")

    broker.listeners.append(boom)
    try:
        with pytest.raises(RuntimeError):
            broker.upsert(
                None,
                [{"id": "urn:ngsi-ld:Tank:9", "type": "Tank", "level": {"type": "Property", "value": 1}}],
            )
    finally:
        broker.listeners.remove(boom)
    assert history_rows(platform, "urn:ngsi-ld:Tank:9") == 0
    # nothing of the failed write lingers on the pooled connection: a batch records exactly its own instances
    batch = [
        {"id": f"urn:ngsi-ld:Tank:{i}", "type": "Tank", "level": {"type": "Property", "value": i}}
        for i in range(10, 13)
    ]
    assert client.post("/ngsi-ld/v1/entityOperations/create", json=batch, headers=H).status_code == 201
    assert [history_rows(platform, f"urn:ngsi-ld:Tank:{i}") for i in (9, 10, 11, 12)] == [0, 1, 1, 1]


def test_series_are_remembered_only_once_durable(client: Any, platform: Any) -> None:
    """A series made by a transaction is cached once its COMMIT succeeded: a rollback or a failed COMMIT can
    never leave the cache pointing at a series that does not exist."""
    store = platform.parts["temporal"]
    key = ("default", "urn:ngsi-ld:Tank:77", "https://uri.etsi.org/ngsi-ld/default-context/level", "")
    with platform.engine.connect() as conn:
        trans = conn.begin()
        store._series_ids(conn, {key})
        store._series_ids(conn, {key})  # found again inside the same transaction: still not cached
        in_cache = key in store._sids
        trans.rollback()
    assert not in_cache

    def refuse(conn: object) -> None:
        raise OSError("disk full")

    body = {"id": "urn:ngsi-ld:Tank:77", "type": "Tank", "level": {"type": "Property", "value": 5}}
    sa.event.listen(platform.engine, "commit", refuse)
    try:
        with pytest.raises(OSError):
            platform.parts["broker"].upsert(None, [body])
    finally:
        sa.event.remove(platform.engine, "commit", refuse)
    assert key not in store._sids
    assert client.post("/ngsi-ld/v1/entities", json=body, headers=H).status_code == 201
    store.staging.settle()  # on SQLite the history is logged; expanding it makes the series
    with platform.engine.connect() as check:
        sid = check.execute(
            sa.select(series.c.sid).where(series.c.entity_id == "urn:ngsi-ld:Tank:77")
        ).scalar_one()
    assert store._sids[key] == sid  # cached by the transaction that made it, once committed
    patch = {"level": {"type": "Property", "value": 6}}
    r = client.patch("/ngsi-ld/v1/entities/urn:ngsi-ld:Tank:77/attrs", json=patch, headers=H)
    assert r.status_code == 204
    assert history_rows(platform, "urn:ngsi-ld:Tank:77") == 2


def test_scope_history(client: Any) -> None:
    body = {
        "id": "urn:ngsi-ld:Tank:3",
        "type": "Tank",
        "scope": "/Hokkaido/Sapporo",
        "level": {"type": "Property", "value": 1},
    }
    client.post(E, json=body, headers=H)
    assert client.delete(f"{E}/urn:ngsi-ld:Tank:3/attrs/scope", headers=G).status_code == 204
    got = client.get(
        f"{T}/urn:ngsi-ld:Tank:3?timeproperty=deletedAt&options=temporalValues", headers=G
    ).json()
    assert got["scope"]["values"][0][0] == []


# --- temporal create, update and representations ------------------------------------------------------------


def test_create_retrieve_and_update_a_temporal_entity(client: Any) -> None:
    r = client.post(T, json=vehicle(), headers=H)
    assert r.status_code == 201, r.text
    assert r.headers["location"] == f"{T}/urn:ngsi-ld:Vehicle:1"
    got = client.get(f"{T}/urn:ngsi-ld:Vehicle:1", headers=G).json()
    assert got["type"] == "Vehicle"
    assert values(got, "speed") == [120, 80, 100]  # ascending by observedAt
    assert got["speed"][0]["observedAt"] == "2020-08-01T12:03:00Z"
    assert "createdAt" not in got["speed"][0]
    # the current state holds the latest observation of each attribute
    current = client.get(f"{E}/urn:ngsi-ld:Vehicle:1", headers=G).json()
    assert current["speed"]["value"] == 100 and current["fuelLevel"]["value"] == 40
    # posting again adds; an instance with the same observedAt replaces the recorded one
    update = {
        "id": "urn:ngsi-ld:Vehicle:1",
        "type": "Vehicle",
        "speed": [
            {"type": "Property", "value": 121, "observedAt": "2020-08-01T12:03:00Z"},
            {"type": "Property", "value": 90, "observedAt": "2020-08-01T11:00:00Z"},
        ],
    }
    assert client.post(T, json=update, headers=H).status_code == 204
    got = client.get(f"{T}/urn:ngsi-ld:Vehicle:1", headers=G).json()
    assert values(got, "speed") == [90, 121, 80, 100]
    # an older observation does not overwrite the current state
    assert client.get(f"{E}/urn:ngsi-ld:Vehicle:1", headers=G).json()["speed"]["value"] == 100
    sys = client.get(f"{T}/urn:ngsi-ld:Vehicle:1?options=sysAttrs", headers=G).json()
    assert sys["speed"][0]["createdAt"].endswith("Z") and sys["createdAt"].endswith("Z")


def test_create_with_ld_json_and_answer_in_ld_json(client: Any) -> None:
    body = vehicle() | {"@context": CTX}
    assert client.post(T, json=body, headers={"Content-Type": "application/ld+json"}).status_code == 201
    r = client.get(f"{T}/urn:ngsi-ld:Vehicle:1", headers=G | {"Accept": "application/ld+json"})
    assert r.json()["@context"] == CTX and "speed" in r.json()
    # without a context the names stay expanded
    plain = client.get(f"{T}/urn:ngsi-ld:Vehicle:1").json()
    assert "https://ngsi-ld-test-suite/context#speed" in plain


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"type": "Vehicle", "speed": [{"type": "Property", "value": 1}]}, "id"),
        ({"id": "", "type": "Vehicle"}, "id"),
        ({"id": "not a uri", "type": "Vehicle"}, "URI"),
        ({"id": "urn:ngsi-ld:Vehicle:9"}, "type"),
        (
            {
                "id": "urn:ngsi-ld:Vehicle:9",
                "type": "Vehicle",
                "speed": [{"type": "Property", "value": 1, "observedAt": "yesterday"}],
            },
            "observedAt",
        ),
        ({"id": "urn:ngsi-ld:Vehicle:9", "type": "Vehicle", "speed": [{"type": "Property"}]}, "value"),
    ],
)
def test_invalid_temporal_entities_are_rejected(client: Any, body: dict[str, Any], fragment: str) -> None:
    r = client.post(T, json=body, headers=H)
    assert r.status_code == 400, r.text
    assert fragment.lower() in r.json()["detail"].lower()
    assert client.get(f"{E}/urn:ngsi-ld:Vehicle:9").status_code == 404


def test_temporal_values_for_each_attribute_type(client: Any) -> None:
    body = {
        "id": "urn:ngsi-ld:Vehicle:2",
        "type": "Vehicle",
        "speed": [
            {"type": "Property", "value": 1, "observedAt": "2020-08-01T12:00:00Z"},
            {
                "type": "Property",
                "value": 2,
                "observedAt": "2020-08-01T12:01:00Z",
                "datasetId": "urn:ngsi-ld:Dataset:gps",
            },
        ],
        "isParkedIn": [
            {"type": "Relationship", "object": "urn:ngsi-ld:Parking:1", "observedAt": "2020-08-01T12:00:00Z"}
        ],
        "name": [
            {
                "type": "LanguageProperty",
                "languageMap": {"ja": "車", "en": "car"},
                "observedAt": "2020-08-01T12:00:00Z",
            }
        ],
    }
    assert client.post(T, json=body, headers=H).status_code == 201
    got = client.get(f"{T}/urn:ngsi-ld:Vehicle:2?options=temporalValues", headers=G).json()
    assert got["isParkedIn"] == {
        "type": "Relationship",
        "objects": [["urn:ngsi-ld:Parking:1", "2020-08-01T12:00:00Z"]],
    }
    assert got["name"] == {
        "type": "LanguageProperty",
        "languageMaps": [[{"languageMap": {"ja": "車", "en": "car"}}, "2020-08-01T12:00:00Z"]],
    }
    # one object per datasetId
    by_ds = {s.get("datasetId"): s["values"] for s in got["speed"]}
    assert by_ds == {
        None: [[1, "2020-08-01T12:00:00Z"]],
        "urn:ngsi-ld:Dataset:gps": [[2, "2020-08-01T12:01:00Z"]],
    }
    only_gps = client.get(
        f"{T}/urn:ngsi-ld:Vehicle:2?options=temporalValues&datasetId=urn:ngsi-ld:Dataset:gps", headers=G
    ).json()
    assert only_gps["speed"]["datasetId"] == "urn:ngsi-ld:Dataset:gps" and "isParkedIn" not in only_gps
    # format wins over options; lang picks one language
    fmt = client.get(
        f"{T}/urn:ngsi-ld:Vehicle:2?format=temporalValues&options=aggregatedValues&lang=en", headers=G
    ).json()
    assert fmt["name"] == {"type": "Property", "values": [["car", "2020-08-01T12:00:00Z"]]}


# --- temporal queries ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "speed", "fuel"),
    [
        ("timerel=after&timeAt=2020-08-01T12:04:00Z", [80, 100], [53, 40]),
        ("timerel=before&timeAt=2020-08-01T12:05:00Z", [120], [67]),
        ("timerel=between&timeAt=2020-08-01T12:00:00Z&endTimeAt=2020-08-01T13:00:00Z", [120, 80, 100], [67]),
        ("lastN=2", [80, 100], [53, 40]),
        ("timerel=before&timeAt=2020-08-01T14:00:00Z&lastN=1", [100], [53]),
    ],
)
def test_time_ranges_and_last_n(client: Any, params: str, speed: list[int], fuel: list[int]) -> None:
    client.post(T, json=vehicle(), headers=H)
    got = client.get(f"{T}/urn:ngsi-ld:Vehicle:1?{params}", headers=G).json()
    assert values(got, "speed") == speed and values(got, "fuelLevel") == fuel


def test_attribute_without_instances_in_range_is_left_out(client: Any) -> None:
    client.post(T, json=vehicle(), headers=H)
    got = client.get(f"{T}/urn:ngsi-ld:Vehicle:1?timerel=after&timeAt=2020-08-01T13:00:00Z", headers=G).json()
    assert "speed" not in got and values(got, "fuelLevel") == [53, 40]


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ("timerel=after", "timeAt"),
        ("timerel=between&timeAt=2020-08-01T12:00:00Z", "endTimeAt"),
        ("timerel=after&timeAt=yesterday", "timeAt"),
        ("timerel=during&timeAt=2020-08-01T12:00:00Z", "timerel"),
        ("timerel=between&timeAt=2020-08-02T00:00:00Z&endTimeAt=2020-08-01T00:00:00Z", "later"),
        ("timeAt=2020-08-01T12:00:00Z", "timerel"),
        ("lastN=0", "lastN"),
        ("timeproperty=sometime", "timeproperty"),
        ("options=aggregatedValues", "aggrMethods"),
        ("options=aggregatedValues&aggrMethods=median", "median"),
        ("options=aggregatedValues&aggrMethods=avg&aggrPeriodDuration=1 hour", "duration"),
        ("attrs=speed&pick=speed", "pick"),
    ],
)
def test_invalid_temporal_parameters(client: Any, params: str, fragment: str) -> None:
    client.post(T, json=vehicle(), headers=H)
    r = client.get(f"{T}/urn:ngsi-ld:Vehicle:1?{params}", headers=G)
    assert r.status_code == 400, r.text
    assert r.json()["type"] == BAD and fragment.lower() in r.json()["detail"].lower()


def test_unknown_options_and_format_are_invalid_requests(client: Any) -> None:
    for params in ("options=bogus", "format=bogus"):
        r = client.get(f"{T}?type=Vehicle&{params}", headers=G)
        assert r.status_code == 400 and r.json()["type"].endswith("InvalidRequest")


def test_retrieve_errors(client: Any) -> None:
    client.post(T, json=vehicle(), headers=H)
    assert client.get(f"{T}/not-a-uri").status_code == 400
    assert client.get(f"{T}/urn:ngsi-ld:Vehicle:404").status_code == 404
    assert client.get(f"{T}/urn:ngsi-ld:Vehicle:1?attrs=unknownAttribute", headers=G).status_code == 404
    assert client.get(f"{T}/urn:ngsi-ld:Vehicle:1?pick=unknown", headers=G).status_code == 404
    picked = client.get(f"{T}/urn:ngsi-ld:Vehicle:1?pick=id,speed", headers=G).json()
    assert set(picked) == {"id", "speed"}
    omitted = client.get(f"{T}/urn:ngsi-ld:Vehicle:1?omit=type,speed", headers=G).json()
    assert set(omitted) == {"id", "fuelLevel"}


def test_query_selects_on_current_state_and_time(client: Any) -> None:
    client.post(T, json=vehicle("urn:ngsi-ld:Vehicle:A"), headers=H)
    late = vehicle("urn:ngsi-ld:Vehicle:B")
    for attr in ("speed", "fuelLevel"):
        for inst in late[attr]:
            inst["observedAt"] = inst["observedAt"].replace("2020-08", "2020-09")
    late["speed"][-1]["value"] = 10
    client.post(T, json=late, headers=H)
    client.post(T, json=vehicle("urn:ngsi-ld:Bus:C", type="Bus"), headers=H)
    after = "timerel=after&timeAt=2020-07-01T00:00:00Z"
    got = client.get(f"{T}?type=Vehicle&{after}", headers=G).json()
    assert [e["id"] for e in got] == ["urn:ngsi-ld:Vehicle:A", "urn:ngsi-ld:Vehicle:B"]
    # q applies to the current state (B's latest speed is 10)
    got = client.get(f"{T}?type=Vehicle&q=speed>90&{after}", headers=G).json()
    assert [e["id"] for e in got] == ["urn:ngsi-ld:Vehicle:A"] and values(got[0], "speed") == [120, 80, 100]
    # entities without instances in the time range are left out, and limit/count count the ones kept
    r = client.get(f"{T}?type=Vehicle,Bus&timerel=after&timeAt=2020-08-15T00:00:00Z&count=true", headers=G)
    assert [e["id"] for e in r.json()] == ["urn:ngsi-ld:Vehicle:B"] and r.headers[
        "NGSILD-Results-Count"
    ] == "1"
    r = client.get(f"{T}?type=Vehicle,Bus&{after}&limit=1&offset=1&count=true", headers=G)
    assert [e["id"] for e in r.json()] == ["urn:ngsi-ld:Vehicle:A"] and r.headers[
        "NGSILD-Results-Count"
    ] == "3"
    got = client.get(f"{T}?type=Vehicle&attrs=speed&{after}&options=temporalValues", headers=G).json()
    assert all(set(e) == {"id", "type", "speed"} for e in got)
    assert client.get(f"{T}?id=urn:ngsi-ld:Vehicle:A&{after}", headers=G).status_code == 400


def test_query_by_post_and_order_by(client: Any) -> None:
    for eid, name in (("urn:ngsi-ld:Vehicle:A", "b"), ("urn:ngsi-ld:Vehicle:B", "a")):
        client.post(
            T,
            json=vehicle(
                eid, name=[{"type": "Property", "value": name, "observedAt": "2020-08-01T12:00:00Z"}]
            ),
            headers=H,
        )
    query = {
        "type": "Query",
        "entities": [{"type": "Vehicle"}],
        "attrs": ["speed"],
        "temporalQ": {"timerel": "before", "timeAt": "2020-08-01T12:04:00Z"},
    }
    r = client.post("/ngsi-ld/v1/temporal/entityOperations/query", json=query, headers=H)
    assert r.status_code == 200, r.text
    assert [(e["id"], values(e, "speed")) for e in r.json()] == [
        ("urn:ngsi-ld:Vehicle:A", [120]),
        ("urn:ngsi-ld:Vehicle:B", [120]),
    ]
    got = client.get(
        f"{T}?type=Vehicle&orderBy=name&timerel=after&timeAt=2020-01-01T00:00:00Z", headers=G
    ).json()
    assert [e["id"] for e in got] == ["urn:ngsi-ld:Vehicle:B", "urn:ngsi-ld:Vehicle:A"]
    got = client.get(
        f"{T}?type=Vehicle&orderBy=id;desc&timerel=after&timeAt=2020-01-01T00:00:00Z", headers=G
    ).json()
    assert [e["id"] for e in got] == ["urn:ngsi-ld:Vehicle:B", "urn:ngsi-ld:Vehicle:A"]


# --- aggregation --------------------------------------------------------------------------------------------


def test_aggregated_values_per_hour(client: Any) -> None:
    client.post(T, json=vehicle(), headers=H)
    url = f"{T}/urn:ngsi-ld:Vehicle:1?options=aggregatedValues&aggrPeriodDuration=PT1H"
    got = client.get(url + "&aggrMethods=avg,max,totalCount,distinctCount,sum,sumsq,min", headers=G).json()
    speed = got["speed"]
    hour = ["2020-08-01T12:03:00Z", "2020-08-01T13:03:00Z"]
    assert speed["type"] == "Property"
    assert (
        speed["avg"] == [[100.0, *hour]]
        and speed["max"] == [[120.0, *hour]]
        and speed["min"] == [[80.0, *hour]]
    )
    assert speed["totalCount"] == [[3, *hour]] and speed["distinctCount"] == [[3, *hour]]
    assert speed["sum"] == [[300.0, *hour]] and speed["sumsq"] == [[120.0**2 + 80**2 + 100**2, *hour]]
    assert [b[0] for b in got["fuelLevel"]["avg"]] == [67.0, 53.0, 40.0]
    stddev = client.get(url + "&aggrMethods=stddev", headers=G).json()["speed"]["stddev"][0][0]
    assert stddev == pytest.approx(20.0)
    # with timerel=after the periods start at timeAt
    got = client.get(
        url + "&aggrMethods=totalCount&timerel=after&timeAt=2020-08-01T12:30:00Z", headers=G
    ).json()
    assert got["fuelLevel"]["totalCount"] == [
        [1, "2020-08-01T12:30:00Z", "2020-08-01T13:30:00Z"],
        [1, "2020-08-01T13:30:00Z", "2020-08-01T14:30:00Z"],
    ]


def test_aggregation_over_calendar_months_and_strings(client: Any) -> None:
    body = {
        "id": "urn:ngsi-ld:Vehicle:3",
        "type": "Vehicle",
        "speed": [
            {"type": "Property", "value": v, "observedAt": t}
            for v, t in (
                (1, "2020-01-31T00:00:00Z"),
                (3, "2020-02-15T00:00:00Z"),
                (5, "2020-02-29T12:00:00Z"),
            )
        ],
        "state": [
            {"type": "Property", "value": "b", "observedAt": "2020-01-31T00:00:00Z"},
            {"type": "Property", "value": "a", "observedAt": "2020-02-01T00:00:00Z"},
        ],
    }
    client.post(T, json=body, headers=H)
    got = client.get(
        f"{T}/urn:ngsi-ld:Vehicle:3?options=aggregatedValues&aggrPeriodDuration=P1M"
        "&aggrMethods=sum,min,totalCount",
        headers=G,
    ).json()
    # P1M from 31 January: the next period starts on 29 February (the month's last day), then 31 March
    assert got["speed"]["sum"] == [
        [4.0, "2020-01-31T00:00:00Z", "2020-02-29T00:00:00Z"],
        [5.0, "2020-02-29T00:00:00Z", "2020-03-31T00:00:00Z"],
    ]
    assert got["state"]["min"] == [["a", "2020-01-31T00:00:00Z", "2020-02-29T00:00:00Z"]]
    assert got["state"]["totalCount"] == [[2, "2020-01-31T00:00:00Z", "2020-02-29T00:00:00Z"]]
    whole = client.get(
        f"{T}/urn:ngsi-ld:Vehicle:3?options=aggregatedValues&aggrMethods=avg", headers=G
    ).json()
    assert whole["speed"]["avg"] == [[3.0, "2020-01-31T00:00:00Z", "2020-02-29T12:00:00Z"]]


def test_aggregation_reads_the_covering_index(platform: Any, client: Any) -> None:
    client.post(T, json=vehicle(), headers=H)
    c = instances.c
    bucket = sa.cast((c.ts - 0) / 3600, sa.Integer).label("b")
    stmt = (
        sa.select(bucket, sa.func.avg(c.value_num))
        .where(c.sid == 1, c.deleted.is_(False), c.ts >= 0, c.ts < 2e9)
        .group_by(sa.literal_column("b"))
    )
    with platform.engine.connect() as conn:
        sql = str(stmt.compile(conn, compile_kwargs={"literal_binds": True}))
        if platform.engine.dialect.name == "sqlite":
            plan = " ".join(str(r[-1]) for r in conn.execute(sa.text("EXPLAIN QUERY PLAN " + sql)))
            assert "COVERING INDEX ix_broker_temporal_instances_time" in plan, plan
        else:
            # a handful of rows would be read by a sequential scan; ask what plan the index gives
            conn.exec_driver_sql("SET enable_seqscan = off")
            plan = " ".join(str(r[0]) for r in conn.execute(sa.text("EXPLAIN " + sql)))
            assert "Index Only Scan using ix_broker_temporal_instances_time" in plan, plan


# --- pagination ---------------------------------------------------------------------------------------------


def twenty(eid: str) -> dict[str, Any]:
    return {
        "id": eid,
        "type": "Vehicle",
        "speed": [
            {"type": "Property", "value": i, "observedAt": f"2020-01-01T01:{i:02d}:00Z"} for i in range(1, 21)
        ],
        "fuelLevel": [
            {"type": "Property", "value": i, "observedAt": f"2020-01-01T01:{i + 2:02d}:00Z"}
            for i in range(1, 21)
        ],
    }


def test_instance_limit_answers_206_with_content_range(client: Any, platform: Any) -> None:
    platform.parts["temporal"].instance_limit = 10
    client.post(T, json=twenty("urn:ngsi-ld:Vehicle:P"), headers=H)
    r = client.get(f"{T}/urn:ngsi-ld:Vehicle:P", headers=G)
    assert r.status_code == 206
    assert r.headers["Content-Range"] == "date-time 2020-01-01T01:01:00Z-2020-01-01T01:10:00Z/*"
    body = r.json()
    # cut at one instant: fuelLevel stops where speed had to stop, so the range holds everything
    assert values(body, "speed") == list(range(1, 11)) and values(body, "fuelLevel") == list(range(1, 9))
    r = client.get(
        f"{T}/urn:ngsi-ld:Vehicle:P?lastN=15&timerel=before&timeAt=2021-01-01T00:00:00Z", headers=G
    )
    assert r.status_code == 206
    assert r.headers["Content-Range"] == "date-time 2021-01-01T00:00:00Z-2020-01-01T01:13:00Z/15"
    assert values(r.json(), "fuelLevel") == list(range(11, 21))
    # lastN within the limit is what the client asked for: a complete answer
    r = client.get(f"{T}/urn:ngsi-ld:Vehicle:P?lastN=4", headers=G)
    assert r.status_code == 200 and values(r.json(), "speed") == [17, 18, 19, 20]
    r = client.get(f"{T}?type=Vehicle&timerel=after&timeAt=2019-01-01T00:00:00Z", headers=G)
    assert r.status_code == 206 and r.headers["Content-Range"].startswith("date-time 2019-01-01T00:00:00Z-")


# --- temporal attribute operations --------------------------------------------------------------------------


def test_append_and_delete_attribute_history(client: Any) -> None:
    fuel = vehicle()["fuelLevel"] + [
        {
            "type": "Property",
            "value": 5,
            "observedAt": "2020-08-01T15:00:00Z",
            "datasetId": "urn:ngsi-ld:Dataset:fuel",
        }
    ]
    client.post(T, json=vehicle(fuelLevel=fuel), headers=H)
    url = f"{T}/urn:ngsi-ld:Vehicle:1"
    extra = {
        "added": [
            {"type": "Property", "value": 1, "observedAt": "2020-08-01T12:03:00Z"},
            {"type": "Property", "value": 2, "observedAt": "2020-08-01T12:04:00Z"},
        ]
    }
    assert client.post(url + "/attrs", json=extra, headers=H).status_code == 204
    assert values(client.get(url, headers=G).json(), "added") == [1, 2]
    assert client.post(f"{T}/urn:ngsi-ld:Vehicle:404/attrs", json=extra, headers=H).status_code == 404
    assert client.post(f"{T}//attrs", json=extra, headers=H).status_code == 400
    # without datasetId only the default instance's history goes
    assert client.delete(url + "/attrs/fuelLevel", headers=G).status_code == 204
    assert values(client.get(url, headers=G).json(), "fuelLevel") == [5]
    assert (
        client.delete(url + "/attrs/fuelLevel?datasetId=urn:ngsi-ld:Dataset:fuel", headers=G).status_code
        == 204
    )
    assert "fuelLevel" not in client.get(url, headers=G).json()
    assert client.delete(url + "/attrs/fuelLevel", headers=G).status_code == 404
    assert client.delete(url + "/attrs/speed?deleteAll=true", headers=G).status_code == 204
    assert "speed" not in client.get(url, headers=G).json()
    assert client.delete(url + "/attrs/bad(name", headers=G).status_code == 400


def test_modify_and_delete_one_instance(client: Any) -> None:
    client.post(T, json=vehicle(), headers=H)
    url = f"{T}/urn:ngsi-ld:Vehicle:1"
    first = client.get(url, headers=G).json()["speed"][0]["instanceId"]
    r = client.patch(f"{url}/attrs/speed/{first}", json={"value": 129}, headers=H)
    assert r.status_code == 204, r.text
    speed = client.get(url, headers=G).json()["speed"]
    assert speed[0]["instanceId"] == first and speed[0]["value"] == 129
    assert speed[0]["observedAt"] == "2020-08-01T12:03:00Z"
    missing = "urn:ngsi-ld:attribute:instance:none"
    assert client.patch(f"{url}/attrs/speed/{missing}", json={"value": 1}, headers=H).status_code == 404
    assert client.patch(f"{url}/attrs/nothere/{first}", json={"value": 1}, headers=H).status_code == 404
    assert client.patch(f"{url}/attrs/speed/invalidId", json={"value": 1}, headers=H).status_code == 400
    assert client.delete(f"{url}/attrs/speed/{first}", headers=G).status_code == 204
    assert values(client.get(url, headers=G).json(), "speed") == [80, 100]
    assert client.delete(f"{url}/attrs/speed/{first}", headers=G).status_code == 404
    assert client.delete(f"{url}/attrs//{first}", headers=G).status_code == 400


def test_delete_temporal_entity_removes_entity_and_history(client: Any, platform: Any) -> None:
    client.post(T, json=vehicle(), headers=H)
    assert client.delete(f"{T}/urn:ngsi-ld:Vehicle:1").status_code == 204
    assert client.get(f"{E}/urn:ngsi-ld:Vehicle:1").status_code == 404
    assert history_rows(platform, "urn:ngsi-ld:Vehicle:1") == 0
    assert client.delete(f"{T}/urn:ngsi-ld:Vehicle:1").status_code == 404
    assert client.delete(f"{T}/invalidId").status_code == 400
    # the same id can be created afresh
    assert client.post(T, json=vehicle(), headers=H).status_code == 201


def test_tenants_are_isolated(client: Any) -> None:
    assert client.post(T, json=vehicle(), headers=H | {"NGSILD-Tenant": "011002"}).status_code == 201
    assert client.get(f"{T}/urn:ngsi-ld:Vehicle:1", headers=G).status_code == 404
    got = client.get(f"{T}/urn:ngsi-ld:Vehicle:1", headers=G | {"NGSILD-Tenant": "011002"}).json()
    assert values(got, "speed") == [120, 80, 100]


# --- pure helpers -------------------------------------------------------------------------------------------


def test_parse_duration() -> None:
    assert parse_duration("PT1H") == Period(0, 3600)
    assert parse_duration("P1DT30M") == Period(0, 86400 + 1800)
    assert parse_duration("P1Y2M") == Period(14, 0)
    assert parse_duration("PT0.5S") == Period(0, 0.5)
    for bad in ("P", "PT", "1H", "PT1H30", "P1DT"):
        with pytest.raises(BadRequest):
            parse_duration(bad)


def test_parse_temporal_query_bounds() -> None:
    tq = parse_temporal_query("between", "2020-01-01T00:00:00Z", "2020-01-02T00:00:00+09:00", None, "3")
    assert tq.start == 1577836800.0 and tq.end == 1577890800.0 and tq.last_n == 3
    assert parse_temporal_query().timeproperty == "observedAt"


def _rows(times: list[float]) -> list[HistRow]:
    return [HistRow(f"i{t}", {}, False, t, f"t{int(t)}", "", "") for t in times]


def test_paginate_cuts_all_series_at_one_instant() -> None:
    a = SeriesResult("e", "a", "", _rows([1, 2, 3]), cut=True)
    b = SeriesResult("e", "b", "", _rows([2.5, 3.5]))
    assert paginate([a, b], TemporalQuery()) == "date-time t1-t3/*"
    assert [r.time for r in b.rows] == [2.5]
    c = SeriesResult("e", "a", "", _rows([7, 8, 9]), cut=True)
    d = SeriesResult("e", "b", "", _rows([5, 6, 9.5]))
    assert paginate([c, d], TemporalQuery(last_n=50)) == "date-time t9-t7/50"
    assert [r.time for r in d.rows] == [9.5]
    assert paginate([SeriesResult("e", "a", "", _rows([1]))], TemporalQuery()) is None


def test_aggregate_python_months() -> None:
    jan31 = 1580428800.0  # 2020-01-31T00:00:00Z
    out = aggregate_python(
        [(jan31, {"type": "Property", "value": 2}), (jan31 + 40 * 86400, {"type": "Property", "value": 4})],
        jan31,
        jan31 + 40 * 86400,
        Period(1, 0),
        ["avg", "distinctCount"],
    )
    assert out["avg"] == [
        [2.0, "2020-01-31T00:00:00Z", "2020-02-29T00:00:00Z"],
        [4.0, "2020-02-29T00:00:00Z", "2020-03-31T00:00:00Z"],
    ]
    assert [b[0] for b in out["distinctCount"]] == [1, 1]


def test_unknown_query_parameters_are_invalid_requests(client: Any) -> None:
    client.post(T, json=vehicle(), headers=H)
    for method, url in (("get", f"{T}?type=Vehicle&bogus=1"), ("get", f"{T}/urn:ngsi-ld:Vehicle:1?bogus=1")):
        r = getattr(client, method)(url, headers=G)
        assert r.status_code == 400 and r.json()["type"].endswith("InvalidRequest"), r.text
    r = client.post(f"{T}?bogus=1", json=vehicle("urn:ngsi-ld:Vehicle:2"), headers=H)
    assert r.status_code == 400 and r.json()["type"].endswith("InvalidRequest")
    assert client.get(f"{T}/urn:ngsi-ld:Vehicle:1?type=Bus", headers=G).status_code == 404
    assert client.get(f"{T}/urn:ngsi-ld:Vehicle:1?type=Vehicle", headers=G).status_code == 200


def test_two_same_time_instances_in_one_write_keep_the_last(client: Any, platform: Any) -> None:
    body = {"id": "urn:ngsi-ld:Vehicle:same", "type": "Vehicle", "speed": [
        {"type": "Property", "value": 3, "observedAt": "2024-01-02T00:00:00Z"},
        {"type": "Property", "value": 4, "observedAt": "2024-01-02T00:00:00Z"}]}
    assert client.post(T, json=body, headers=H).status_code == 201
    r = client.get(f"{T}/urn:ngsi-ld:Vehicle:same", headers=G, params={"options": "temporalValues"})
    assert r.json()["speed"]["values"] == [[4, "2024-01-02T00:00:00Z"]]
