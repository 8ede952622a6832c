"""Broker-fed datasets: public entities only, rounded places, stable URLs, regeneration on change, bins."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from society5.broker.service import start
from society5.core.auth import ANONYMOUS, SUPERUSER, Principal
from society5.core.platform import Platform
from society5.opendata import files, jobs, publish_shapes, publishers
from society5.opendata.actions import ActionContext, AuthorizationError, ValidationError, call
from society5.opendata.publish_spec import parse_spec

SAPPORO = Principal("operator", tenant="011002")
HAKODATE = Principal("operator", tenant="012025")
JST = publish_shapes.JST


def bear(n: int, public: bool = True, count: int = 1, lon: float = 141.123456,
         lat: float = 43.067891) -> dict[str, Any]:
    ent: dict[str, Any] = {
        "id": f"urn:ngsi-ld:BearSighting:{n}", "type": "BearSighting",
        "location": {"type": "Point", "coordinates": [lon, lat]},
        "count": {"value": count, "observedAt": "2024-05-01T03:00:00Z"},
        "reporter": "山田 太郎",  # personal data: must never be published
    }
    if public:
        ent["scope"] = "/public"
    return ent


@pytest.fixture
def live(od_platform: Platform, ctx_of: Callable[[Principal], ActionContext]) -> Platform:
    start(od_platform)
    admin = ctx_of(SUPERUSER)
    call("organization_create", admin, {"name": "sapporo", "title": "札幌市", "tenant": "011002"})
    call("organization_create", admin, {"name": "hakodate", "title": "函館市", "tenant": "012025"})
    call("package_create", admin, {"name": "bears", "title": "ヒグマ出没情報", "owner_org": "sapporo"})
    call("package_create", admin, {"name": "counts", "title": "通行量", "owner_org": "sapporo"})
    return od_platform


def csv_rows(platform: Platform, resource_id: str) -> list[list[str]]:
    text = files.resource_path(platform.settings, resource_id).read_text(encoding="utf-8-sig")
    return [line.split(",") for line in text.splitlines()]


def geojson(platform: Platform, resource_id: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(files.resource_path(platform.settings, resource_id).read_text())
    return loaded


def deliver_all(platform: Platform) -> None:
    while platform.outbox.deliver_due():
        pass


def test_snapshot_publishes_public_entities_only_with_rounded_places(
        live: Platform, ctx_of: Callable[[Principal], ActionContext]) -> None:
    live.parts["broker"].upsert("011002", [bear(1, count=2), bear(2, count=5), bear(3, public=False)])
    pub = call("publisher_create", ctx_of(SAPPORO), {
        "package_id": "bears", "entity_type": "BearSighting", "attrs": ["count"], "coordinate_digits": 3})
    rows = csv_rows(live, pub["csv_resource_id"])
    assert rows[0] == ["ID", "種別", "count", "緯度", "経度", "観測日時(JST)", "観測日時(UTC)"]
    assert rows[1:] == [
        ["urn:ngsi-ld:BearSighting:1", "BearSighting", "2", "43.068", "141.123", "2024-05-01T12:00:00+09:00",
         "2024-05-01T03:00:00Z"],
        ["urn:ngsi-ld:BearSighting:2", "BearSighting", "5", "43.068", "141.123", "2024-05-01T12:00:00+09:00",
         "2024-05-01T03:00:00Z"]]
    features = geojson(live, pub["geojson_resource_id"])["features"]
    assert [f["id"] for f in features] == ["urn:ngsi-ld:BearSighting:1", "urn:ngsi-ld:BearSighting:2"]
    assert features[0]["geometry"] == {"type": "Point", "coordinates": [141.123, 43.068]}
    table = call("datastore_search", ctx_of(ANONYMOUS), {"resource_id": pub["csv_resource_id"]})
    assert [r["ID"] for r in table["records"]] == ["urn:ngsi-ld:BearSighting:1", "urn:ngsi-ld:BearSighting:2"]
    everything = "".join(files.resource_path(live.settings, rid).read_text(encoding="utf-8-sig")
                         for rid in (pub["csv_resource_id"], pub["geojson_resource_id"]))
    assert "BearSighting:3" not in everything and "山田" not in everything and "141.123456" not in everything
    assert pub["last_rows"] == 2 and pub["last_error"] is None


def test_bad_bindings_are_refused_whole_and_create_nothing(
        live: Platform, ctx_of: Callable[[Principal], ActionContext]) -> None:
    sapporo = ctx_of(SAPPORO)
    with pytest.raises(ValidationError) as err:
        call("publisher_create", sapporo, {"package_id": "bears", "entity_type": "Bear Sighting",
                                           "attrs": ["reporter"], "coordinate_digits": 9})
    assert set(err.value.fields) == {"entity_type", "attrs", "coordinate_digits"}
    with pytest.raises(ValidationError) as err:
        call("publisher_create", sapporo, {"package_id": "bears", "entity_type": "BearSighting",
                                           "public_only": False})
    assert "public_only" in err.value.fields
    with pytest.raises(ValidationError) as err:
        call("publisher_create", sapporo, {"package_id": "bears", "entity_type": "BearSighting",
                                           "tenant": "012025"})
    assert "tenant" in err.value.fields
    with pytest.raises(ValidationError) as err:
        call("publisher_create", sapporo, {"package_id": "counts", "shape": "time_bins",
                                           "entity_type": "CrowdFlowObserved", "bin_minutes": 7})
    assert set(err.value.fields) == {"count_attr", "bin_minutes"}
    with pytest.raises(ValidationError) as err:
        call("publisher_create", sapporo, {"package_id": "bears", "entity_type": "BearSighting",
                                           "q": "count>>"})
    assert "q" in err.value.fields
    with pytest.raises(AuthorizationError):
        call("publisher_create", ctx_of(HAKODATE), {"package_id": "bears", "entity_type": "BearSighting"})
    assert call("package_show", sapporo, {"id": "bears"})["resources"] == []
    assert call("publisher_list", sapporo, {}) == []


def test_a_change_regenerates_once_and_the_url_stays(
        live: Platform, ctx_of: Callable[[Principal], ActionContext]) -> None:
    broker = live.parts["broker"]
    broker.upsert("011002", [bear(1), bear(9, public=False)])
    pub = call("publisher_create", ctx_of(SAPPORO), {
        "package_id": "bears", "entity_type": "BearSighting", "attrs": ["count"]})
    before = call("resource_show", ctx_of(ANONYMOUS), {"id": pub["csv_resource_id"]})
    watcher = jobs.watcher_of(live)
    watcher.debouncer = jobs.Debouncer(quiet_s=0)
    deliver_all(live)
    watcher.debouncer.take_due()  # the creation's own entities, delivered late: not a change to test
    for count in range(10, 15):  # a burst of updates
        broker.upsert("011002", [{"id": "urn:ngsi-ld:BearSighting:1", "type": "BearSighting",
                                  "count": {"value": count, "observedAt": "2024-05-02T00:00:00Z"}}])
    broker.upsert("011002", [bear(2, count=7), bear(9, public=False, count=99)])
    assert jobs.run_changed(live) == []  # committed, but not delivered yet: nothing to do
    deliver_all(live)
    assert jobs.run_changed(live) == [pub["id"]]
    assert jobs.run_changed(live) == []  # the burst regenerated once
    rows = csv_rows(live, pub["csv_resource_id"])
    assert [(r[0], r[2]) for r in rows[1:]] == [("urn:ngsi-ld:BearSighting:1", "14"),
                                                ("urn:ngsi-ld:BearSighting:2", "7")]
    after = call("resource_show", ctx_of(ANONYMOUS), {"id": pub["csv_resource_id"]})
    assert after["url"] == before["url"] and after["url"].endswith("/download/bearsighting.csv")
    shown = call("publisher_show", ctx_of(ANONYMOUS), {"id": pub["id"]})
    assert shown["runs"] == 2 and shown["last_rows"] == 2
    table = call("datastore_search", ctx_of(ANONYMOUS), {"resource_id": pub["csv_resource_id"],
                                                         "sort": "ID"})
    assert [(r["ID"], r["count"]) for r in table["records"]] == [("urn:ngsi-ld:BearSighting:1", 14),
                                                                 ("urn:ngsi-ld:BearSighting:2", 7)]
    package = call("package_show", ctx_of(ANONYMOUS), {"id": "bears"})
    assert [r["id"] for r in package["resources"]] == [pub["csv_resource_id"], pub["geojson_resource_id"]]


def test_time_bins_from_history(live: Platform, ctx_of: Callable[[Principal], ActionContext]) -> None:
    broker, temporal = live.parts["broker"], live.parts["temporal"]
    day = datetime(2024, 5, 1, tzinfo=JST)

    def at(minute: int) -> str:
        return (day + timedelta(minutes=minute)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def sensor(n: int, public: bool) -> dict[str, Any]:
        ent: dict[str, Any] = {
            "id": f"urn:ngsi-ld:CrowdFlowObserved:chikaho-{n}", "type": "CrowdFlowObserved",
            "name": f"地点{n}", "direction": "inbound",
            "location": {"type": "Point", "coordinates": [141.35, 43.06]},
            "peopleCount": {"value": 10, "observedAt": at(1)}}
        if public:
            ent["scope"] = "/public"
        return ent

    broker.upsert("011002", [sensor(1, True), sensor(2, False)])
    for n in (1, 2):
        temporal.append("011002", f"urn:ngsi-ld:CrowdFlowObserved:chikaho-{n}", {"peopleCount": [
            {"type": "Property", "value": 6, "observedAt": at(14)},
            {"type": "Property", "value": 30, "observedAt": at(31)},  # no observation in 00:15–00:30
            {"type": "Property", "value": 500, "observedAt": at(50)},  # in the open bin: not published
        ]}, broker.context())
    spec = parse_spec({"shape": "time_bins", "entity_type": "CrowdFlowObserved", "count_attr": "peopleCount"},
                      "011002")
    table = publishers.build(live, spec, now=day + timedelta(minutes=55))
    assert table.header == ["計測地点ID", "計測地点", "日付", "時間帯(開始)", "方向", "通行量",
                            "推計値フラグ"]
    sid = "urn:ngsi-ld:CrowdFlowObserved:chikaho-1"
    assert table.rows == [[sid, "地点1", "2024-05-01", "00:00", "入方向", "16", "0"],
                          [sid, "地点1", "2024-05-01", "00:15", "入方向", "23", "1"],
                          [sid, "地点1", "2024-05-01", "00:30", "入方向", "30", "0"]]
    assert table.features[0]["properties"]["通行量"] == 30


def test_bins_fill_gaps_only_between_observations() -> None:
    step = 900.0
    assert publish_shapes.filled({0.0: 10, 2700.0: 40}, step, True) == [
        (0.0, 10, False), (900.0, 20.0, True), (1800.0, 30.0, True), (2700.0, 40, False)]
    assert publish_shapes.filled({0.0: 10, 2700.0: 40}, step, False) == [(0.0, 10, False),
                                                                          (2700.0, 40, False)]


@given(st.dictionaries(st.integers(0, 200), st.integers(0, 10_000), min_size=1, max_size=30))
def test_filled_bins_are_contiguous_and_keep_observed_values(observed: dict[int, int]) -> None:
    step = 900.0
    values = {k * step: float(v) for k, v in observed.items()}
    out = publish_shapes.filled(values, step, True)
    starts = [s for s, _, _ in out]
    assert starts == [min(values) + k * step for k in range(len(out))] and starts[-1] == max(values)
    assert {s: v for s, v, est in out if not est} == values


def test_bin_window_is_whole_bins_from_a_jst_midnight() -> None:
    spec = parse_spec({"shape": "time_bins", "entity_type": "X", "count_attr": "c", "window_days": 1}, "t")
    start, end = publish_shapes.bin_window(datetime(2024, 5, 1, 15, 7, tzinfo=UTC), spec)  # 00:07 JST, May 2
    assert end == datetime(2024, 5, 1, 15, 0, tzinfo=UTC)
    assert start.astimezone(JST) == datetime(2024, 5, 1, 0, 0, tzinfo=JST)


def test_the_schedule_is_claimed_once(live: Platform, ctx_of: Callable[[Principal], ActionContext]) -> None:
    pub = call("publisher_create", ctx_of(SAPPORO), {"package_id": "bears", "entity_type": "BearSighting"})
    assert publishers.claim_due(live) == []
    with live.engine.begin() as conn:
        conn.execute(sa.update(publishers.publishers).values(next_run_at="2000-01-01T00:00:00.000000Z"))
    assert publishers.claim_due(live) == [pub["id"]]
    assert publishers.claim_due(live) == []  # another process finds it claimed
    assert jobs.run_due(live) == []


def test_only_the_organizations_editors_manage_a_publisher(
        live: Platform, ctx_of: Callable[[Principal], ActionContext]) -> None:
    call("package_patch", ctx_of(SUPERUSER), {"id": "counts", "private": True})
    pub = call("publisher_create", ctx_of(SAPPORO), {"package_id": "counts", "entity_type": "BearSighting",
                                                     "public_only": False})
    assert call("publisher_list", ctx_of(ANONYMOUS), {}) == []  # a private dataset's publisher is hidden
    assert [p["id"] for p in call("publisher_list", ctx_of(SAPPORO), {"package_id": "counts"})] == [pub["id"]]
    with pytest.raises(AuthorizationError):
        call("publisher_run", ctx_of(Principal("reader", tenant="011002")), {"id": pub["id"]})
    call("publisher_delete", ctx_of(SAPPORO), {"id": pub["id"], "delete_resources": True})
    assert call("publisher_list", ctx_of(SAPPORO), {}) == []
    assert call("package_show", ctx_of(SAPPORO), {"id": "counts"})["resources"] == []


def test_debouncer_waits_for_quiet_but_not_forever() -> None:
    now = [0.0]
    debouncer = jobs.Debouncer(quiet_s=5, max_wait_s=20, clock=lambda: now[0])
    for t in range(0, 30, 2):  # a change every 2 s, never quiet
        now[0] = float(t)
        debouncer.touch("p")
        if t < 20:
            assert debouncer.take_due() == []
    assert debouncer.take_due() == ["p"]  # 20 s after the first change of the burst
    debouncer.touch("q")
    now[0] += 5
    assert debouncer.take_due() == ["q"]
