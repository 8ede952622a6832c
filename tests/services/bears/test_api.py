"""The sightings HTTP API: staff writes, the public's rounded view, errors that name the field."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.services.bears.conftest import TENANT

H = {"NGSILD-Tenant": TENANT}


def body(**extra: object) -> dict:
    when = datetime.now(UTC) - timedelta(minutes=5)
    return {"observed_at": when.isoformat(), "lat": 43.023612, "lon": 141.322187, **extra}


def test_staff_record_is_verified_and_shown_rounded_to_the_public(bears_client) -> None:
    r = bears_client.post("/bears/sightings", json=body(source="staff", count=1), headers=H)
    assert r.status_code == 201, r.text
    made = r.json()
    assert made["state"] == "verified"
    geo = bears_client.get("/bears/sightings.geojson", params={"municipality": TENANT}).json()
    assert [f["id"] for f in geo["features"]] == [made["id"]]
    assert geo["features"][0]["geometry"]["coordinates"] == [141.322, 43.024]


def test_bad_input_is_a_4xx_naming_the_field(bears_client) -> None:
    r = bears_client.post("/bears/sightings", json=body(lat=43.0, lon=140.0), headers=H)
    assert r.status_code == 400 and r.json()["error"]["detail"].startswith("lat/lon")
    r = bears_client.post("/bears/sightings", json=body(count="many"), headers=H)
    assert r.status_code in (400, 422) and "count" in r.text
    r = bears_client.get("/bears/sightings", params={"kind": "ufo"}, headers=H)
    assert r.status_code == 400 and "kind" in r.json()["error"]["detail"]
    r = bears_client.post("/bears/sightings/urn:ngsi-ld:BearSighting:011002-x/verify", json={"state": "ok"},
                          headers=H)
    assert r.status_code in (400, 422)
    assert bears_client.get("/bears/sightings", headers=H).json() == []


def test_verify_and_merge_over_http(bears_client) -> None:
    a = bears_client.post("/bears/sightings", json=body(source="police"), headers=H).json()
    b = bears_client.post("/bears/sightings", json=body(source="resident", lat=43.0245), headers=H).json()
    assert b["state"] == "unverified"
    assert len(bears_client.get("/bears/proposals", headers=H).json()) == 1
    r = bears_client.post(f"/bears/sightings/{b['id']}/verify",
                          json={"state": "rejected", "note": "見間違い"}, headers=H)
    assert r.json()["state"] == "rejected"
    r = bears_client.post(f"/bears/sightings/{a['id']}/merge", json={"others": [b["id"]]}, headers=H)
    assert r.status_code == 200 and r.json()["report_count"] == 2
