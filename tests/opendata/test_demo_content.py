"""The portal's demo content: 179 + 1 municipality organizations, categories, datasets, publishers."""

from __future__ import annotations

import csv
import random
import re
from collections.abc import Callable

import pytest

from society5.broker.service import start
from society5.core.auth import ANONYMOUS, SUPERUSER, Principal
from society5.core.platform import Platform
from society5.demo import demo_entities
from society5.opendata import demo_content, files, samples
from society5.opendata.actions import ActionContext, call
from society5.opendata.demo_data import build_initiatives


def test_demo_content_loads_twice_without_duplicates(
        od_platform: Platform, ctx_of: Callable[[Principal], ActionContext]) -> None:
    broker = start(od_platform)
    rng = random.Random(5)
    for code in ("011002", "012106"):  # the demo's sensors the broker-fed datasets are bound to
        broker.upsert(code, demo_entities(code, rng))
    first = demo_content.load(od_platform)
    second = demo_content.load(od_platform)
    assert first == {"organizations": 182, "groups": 8, "datasets": 7, "publishers": 2}
    assert second == {"organizations": 0, "groups": 0, "datasets": 0, "publishers": 0}
    ctx = ctx_of(ANONYMOUS)
    orgs = call("organization_list", ctx, {"all_fields": True, "limit": 1000})
    municipal = [o for o in orgs if re.fullmatch(r"01\d{4}", o["name"])]
    assert len(municipal) == 180 and len({o["name"] for o in orgs}) == len(orgs)
    sapporo = call("organization_show", ctx, {"id": "011002"})
    assert sapporo["title"] == "札幌市"
    assert call("organization_show", ctx, {"id": "010006"})["title"] == "北海道"
    assert all("架空" in o["title"] for o in orgs if o["name"].startswith("demo-partner"))
    packages = call("package_list", ctx, {})
    assert len(packages) == len(set(packages)) == 9
    for name in [p for p in packages if p.startswith("sample-")]:
        assert samples.SAMPLE_LABEL in call("package_show", ctx, {"id": name})["title"]
    pedestrians = call("publisher_list", ctx, {"package_id": demo_content.PEDESTRIANS})
    assert len(pedestrians) == 1 and pedestrians[0]["last_error"] is None and pedestrians[0]["last_rows"] > 0
    with files.resource_path(od_platform.settings, pedestrians[0]["csv_resource_id"]).open(
            encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    assert {r["計測地点"] for r in rows} == {
        "地下歩行空間 大通", "地下歩行空間 さっぽろ", "地下歩行空間 すすきの", "地下歩行空間 チ・カ・ホ中央"}
    assert all(r["時間帯(開始)"][-2:] in ("00", "15", "30", "45") for r in rows)
    initiatives = call("package_show", ctx, {"id": demo_content.INITIATIVES})
    table = call("datastore_search", ctx_of(SUPERUSER), {"resource_id": initiatives["resources"][0]["id"],
                                                          "filters": {"実施主体": "岩見沢市"}})
    assert [r["分野"] for r in table["records"]] == ["農林水産業"]


def test_the_committed_initiatives_are_what_the_script_derives() -> None:
    if not build_initiatives.DEFAULT_REPORT.exists():
        pytest.skip("the report is not beside this checkout")
    with build_initiatives.OUT.open(encoding="utf-8", newline="") as f:
        committed = list(csv.reader(f))
    assert committed[0] == build_initiatives.COLUMNS
    assert committed[1:] == build_initiatives.build(build_initiatives.DEFAULT_REPORT)
    by_body = {row[2]: row for row in committed[1:]}
    assert by_body["更別村"][3] == "016390"  # the report's 更別町 is 更別村
    assert by_body["増毛町・東神楽町"][3] == "014818;014532"
    assert len(committed) - 1 >= 50
