"""Sightings: validation, storage as BearSighting entities, verification, merging, proposals, public view."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from society5.core.errors import BadRequest, NotFound, TooManyRequests
from society5.services.bears import models
from society5.services.bears.sightings import listeners, sightings_of
from tests.services.bears.conftest import OTHER_TENANT, TENANT

MOIWA = (43.0236, 141.3221)  # 藻岩山の麓


def report(minutes_ago: float = 10, lat: float = MOIWA[0], lon: float = MOIWA[1], **extra: object) -> dict:
    when = datetime.now(UTC) - timedelta(minutes=minutes_ago)
    return {"observed_at": when.isoformat(), "lat": lat, "lon": lon, **extra}


def test_a_sighting_is_a_broker_entity_with_its_municipality(bears_platform) -> None:
    store = sightings_of(bears_platform)
    made = store.create(TENANT, report(count=2, cubs=1, kind="sighting", area_name="藻岩山"))
    ent = bears_platform.parts["broker"].get(TENANT, made["id"], fmt="keyValues")
    assert ent["type"] == models.ENTITY_TYPE
    assert ent["location"]["coordinates"] == [MOIWA[1], MOIWA[0]]
    assert ent["municipalityCode"] == "011002" and ent["municipalityName"] == "札幌市"
    assert ent["bearCount"] == 2 and ent["cubCount"] == 1 and ent["verificationStatus"] == "unverified"
    assert store.get(TENANT, made["id"])["area_name"] == "藻岩山"


def test_a_time_without_offset_is_japan_time(bears_platform) -> None:
    local = (datetime.now(UTC) + timedelta(hours=9) - timedelta(minutes=5)).replace(tzinfo=None)
    made = sightings_of(bears_platform).create(TENANT, report() | {"observed_at": local.isoformat()})
    got = datetime.fromisoformat(made["observed_at"].replace("Z", "+00:00"))
    assert abs((datetime.now(UTC) - got) - timedelta(minutes=5)) < timedelta(minutes=1)


@pytest.mark.parametrize(("data", "field"), [
    (report(lat=43.0, lon=140.0), "lat/lon"),  # 石狩湾の沖
    (report(lat=41.53, lon=140.91), "lat/lon"),  # 青森県大間
    (report(lat=35.68, lon=139.76), "lat/lon"),  # 東京
    (report(count=1, cubs=2), "cubs"),
    (report(minutes_ago=-60), "observed_at"),
    (report(kind="ufo"), "kind"),
    (report(area_name="a\x00b"), "area_name"),
    (report(extra_field=1), "extra_field"),
])
def test_bad_reports_are_refused_naming_the_field_and_nothing_is_stored(bears_platform, data, field) -> None:
    store = sightings_of(bears_platform)
    with pytest.raises(BadRequest) as err:
        store.create(TENANT, data)
    assert err.value.detail.startswith(field)
    assert store.list(TENANT) == []


def test_verify_reject_and_listeners_hear_each_change(bears_platform) -> None:
    heard: list[tuple[str, str]] = []
    listener = lambda _p, tenant, s, event: heard.append((event, s["state"]))  # noqa: E731
    listeners.append(listener)
    try:
        store = sightings_of(bears_platform)
        a = store.create(TENANT, report())
        store.set_state(TENANT, a["id"], "verified", "担当 太郎", note="現地確認")
        b = store.create(TENANT, report(minutes_ago=20), state="verified")
        store.update(TENANT, b["id"], {"response": "パトロール実施", "behaviour": "fleeing"})
    finally:
        listeners.remove(listener)
    assert heard == [("created", "unverified"), ("verified", "verified"), ("created", "verified"),
                     ("verified", "verified"), ("updated", "verified")]
    got = store.get(TENANT, a["id"])
    assert got["state"] == "verified" and got["verified_by"] == "担当 太郎"
    assert store.get(TENANT, b["id"])["response"] == "パトロール実施"
    with pytest.raises(BadRequest):
        store.update(TENANT, b["id"], {"cubs": 3})


def test_close_reports_are_proposed_as_one_event_and_merge_keeps_the_originals(bears_platform) -> None:
    store = sightings_of(bears_platform)
    a = store.create(TENANT, report(minutes_ago=30, count=1))
    b = store.create(TENANT, report(minutes_ago=10, lat=MOIWA[0] + 0.004, count=2))  # 450 m north
    far = store.create(TENANT, report(minutes_ago=15, lat=43.2, lon=141.6))  # another place
    late = store.create(TENANT, report(minutes_ago=60 * 20))  # same place, 20 hours earlier
    groups = store.proposals(TENANT)
    assert [sorted(s["id"] for s in g) for g in groups] == [sorted([a["id"], b["id"]])]
    merged = store.merge(TENANT, a["id"], [b["id"]], "staff")
    assert merged["report_count"] == 2 and merged["count"] == 2
    shown = {s["id"] for s in store.list(TENANT)}
    assert shown == {a["id"], far["id"], late["id"]}
    assert {s["id"] for s in store.list(TENANT, merged=True)} == shown | {b["id"]}
    assert store.get(TENANT, b["id"])["merged_into"] == a["id"]
    with pytest.raises(NotFound):
        store.merge(TENANT, a["id"], ["urn:ngsi-ld:BearSighting:011002-nope"], "staff")


def test_resident_reports_are_rate_limited_per_client(bears_platform) -> None:
    store = sightings_of(bears_platform)
    limit = bears_platform.settings.bears_report_limit
    for i in range(limit):
        store.create(TENANT, report(minutes_ago=i + 1, source="resident"), client="phone-1")
    with pytest.raises(TooManyRequests):
        store.create(TENANT, report(source="resident"), client="phone-1")
    store.create(TENANT, report(source="resident"), client="phone-2")
    assert len(store.list(TENANT)) == limit + 1


def test_tenants_do_not_see_each_others_sightings(bears_platform) -> None:
    store = sightings_of(bears_platform)
    made = store.create(TENANT, report())
    assert store.list(OTHER_TENANT) == []
    with pytest.raises(NotFound):
        store.get(OTHER_TENANT, made["id"])


def test_list_filters_by_time_kind_and_state(bears_platform) -> None:
    store = sightings_of(bears_platform)
    old = store.create(TENANT, report(minutes_ago=60 * 24 * 10))
    trace = store.create(TENANT, report(kind="trace", trace="footprints", count=0))
    store.set_state(TENANT, trace["id"], "rejected", "staff")
    recent = {s["id"] for s in store.list(TENANT, since=datetime.now(UTC) - timedelta(days=7))}
    assert recent == {trace["id"]}
    assert [s["id"] for s in store.list(TENANT, kinds=["sighting"])] == [old["id"]]
    assert [s["id"] for s in store.list(TENANT, states=["rejected"])] == [trace["id"]]
