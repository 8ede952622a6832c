"""Open data: verified sightings published per municipality as CSV and GeoJSON, rounded, nothing personal."""

from __future__ import annotations

import csv
import io
import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from society5.opendata import files
from society5.opendata.actions import NotFoundError, call
from society5.services.bears import publish
from society5.services.bears.sightings import sightings_of
from tests.services.bears.conftest import OTHER_TENANT, TENANT

MOIWA = (43.023612, 141.322187)
IWAMIZAWA = (43.196134, 141.775912)


@pytest.fixture
def od_bears(bears_platform, tmp_path: Path):  # type: ignore[no-untyped-def]
    bears_platform.settings = bears_platform.settings.model_copy(
        update={"opendata_dir": str(tmp_path / "opendata"), "bears_public_decimals": 3})
    return bears_platform


def report(lat: float, lon: float, minutes_ago: float = 30, **extra: object) -> dict:
    when = datetime.now(UTC) - timedelta(minutes=minutes_ago)
    return {"observed_at": when.isoformat(), "lat": lat, "lon": lon, **extra}


def resources(platform, tenant: str) -> dict[str, dict]:  # type: ignore[no-untyped-def]
    package = call("package_show", publish._context(platform), {"id": publish.DATASET_PREFIX + tenant})
    return {r["format"]: r for r in package["resources"]}


def read_csv(platform, tenant: str) -> list[dict[str, str]]:  # type: ignore[no-untyped-def]
    path = files.resource_path(platform.settings, resources(platform, tenant)["CSV"]["id"])
    text = path.read_bytes().decode("utf-8-sig")
    return list(csv.DictReader(io.StringIO(text)))


def read_geojson(platform, tenant: str) -> dict:  # type: ignore[no-untyped-def]
    path = files.resource_path(platform.settings, resources(platform, tenant)["GeoJSON"]["id"])
    return json.loads(path.read_bytes())


def test_only_verified_sightings_are_published_rounded_and_without_personal_data(od_bears) -> None:
    store = sightings_of(od_bears)
    verified = store.create(TENANT, report(*MOIWA, count=2, cubs=1, behaviour="feeding", direction="NE",
                                           area_name="藻岩山", description="山田太郎 090-1234-5678 が見た"),
                            client="hash-of-client", contact="taro@example.jp")
    store.set_state(TENANT, verified["id"], "verified", "staff")
    store.set_attrs(TENANT, verified["id"], {"photo": "img-of-a-person"})
    store.create(TENANT, report(43.03, 141.33, area_name="未確認の通報"))  # unverified: left out
    rejected = store.create(TENANT, report(43.04, 141.34, area_name="却下"))
    store.set_state(TENANT, rejected["id"], "rejected", "staff")

    assert publish.publish_now(od_bears) == {TENANT: 1}
    rows = read_csv(od_bears, TENANT)
    assert list(rows[0]) == publish.HEADER
    assert len(rows) == 1
    row = rows[0]
    assert row["全国地方公共団体コード"] == "011002" and row["市区町村名"] == "札幌市"
    assert row["緯度"] == "43.024" and row["経度"] == "141.322"
    assert row["種別"] == "目撃" and row["頭数"] == "2" and row["子グマ頭数"] == "1"
    assert row["行動"] == "採食" and row["移動方向"] == "北東" and row["確認状況"] == "確認済"
    assert row["出没日時"].endswith("+09:00")
    everything = json.dumps(rows, ensure_ascii=False) + json.dumps(read_geojson(od_bears, TENANT),
                                                                   ensure_ascii=False)
    for secret in ("taro@example.jp", "hash-of-client", "山田", "090-1234", "img-of-a-person", "43.0236"):
        assert secret not in everything
    feature = read_geojson(od_bears, TENANT)["features"][0]
    assert feature["geometry"] == {"type": "Point", "coordinates": [141.322, 43.024]}
    assert feature["properties"]["種別"] == "目撃" and "緯度" not in feature["properties"]
    assert feature["properties"]["頭数"] == 2 and feature["properties"]["警戒レベル"] in (None, 1, 2, 3)


def test_a_rerun_replaces_the_files_under_the_same_resources(od_bears) -> None:
    store = sightings_of(od_bears)
    first = store.create(TENANT, report(*MOIWA), state="verified")
    publish.publish_now(od_bears)
    before = resources(od_bears, TENANT)
    second = store.create(TENANT, report(43.05, 141.30, minutes_ago=5), state="verified")
    store.set_state(TENANT, first["id"], "rejected", "staff")
    publish.publish_now(od_bears)
    after = resources(od_bears, TENANT)
    assert {k: v["id"] for k, v in after.items()} == {k: v["id"] for k, v in before.items()}
    assert len(after) == 2
    assert [r["ID"] for r in read_csv(od_bears, TENANT)] == [second["id"]]
    assert [f["id"] for f in read_geojson(od_bears, TENANT)["features"]] == [second["id"]]
    found = call("datastore_search", publish._context(od_bears), {"resource_id": after["CSV"]["id"]})
    assert [r["ID"] for r in found["records"]] == [second["id"]]


def test_each_municipality_has_its_own_dataset(od_bears) -> None:
    store = sightings_of(od_bears)
    sapporo = store.create(TENANT, report(*MOIWA), state="verified")
    iwamizawa = store.create(OTHER_TENANT, report(*IWAMIZAWA), state="verified")
    assert publish.publish_now(od_bears) == {TENANT: 1, OTHER_TENANT: 1}
    assert [r["ID"] for r in read_csv(od_bears, TENANT)] == [sapporo["id"]]
    assert [r["ID"] for r in read_csv(od_bears, OTHER_TENANT)] == [iwamizawa["id"]]
    ctx = publish._context(od_bears)
    package = call("package_show", ctx, {"id": publish.DATASET_PREFIX + OTHER_TENANT})
    assert package["organization"]["name"] == OTHER_TENANT and "岩見沢市" in package["title"]


def test_a_municipality_without_verified_sightings_gets_no_dataset(od_bears) -> None:
    sightings_of(od_bears).create(TENANT, report(*MOIWA))  # unverified only
    assert publish.publish_now(od_bears) == {}
    with pytest.raises(NotFoundError):
        call("package_show", publish._context(od_bears), {"id": publish.DATASET_PREFIX + TENANT})


def test_the_daily_job_skips_apps_without_the_catalog_and_publishes_once_a_day(od_bears, caplog) -> None:
    sightings_of(od_bears).create(TENANT, report(*MOIWA), state="verified")
    with caplog.at_level(logging.INFO, logger="society5.services.bears.publish"):
        assert publish.run_daily(od_bears) == {}
    assert "opendata service is not installed" in caplog.text

    from society5.opendata import ingest

    ingest.register(od_bears)  # what the opendata service's start-up does
    assert publish.run_daily(od_bears) == {TENANT: 1}
    assert publish.run_daily(od_bears) == {}  # the same day: nothing
    od_bears.parts.pop("bears.publish")  # a restarted process reads the day from the dataset
    assert publish.run_daily(od_bears) == {}
    tomorrow = datetime.now(UTC) + timedelta(days=1)
    assert publish.run_daily(od_bears, now=tomorrow) == {TENANT: 1}
