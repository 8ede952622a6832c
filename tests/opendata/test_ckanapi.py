"""End to end with the real ``ckanapi`` client (``RemoteCKAN``) against ``society5 serve`` with auth on."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import ckanapi
import httpx
import pytest

from society5.core.platform import Platform
from tests.conftest import make_settings
from tests.server import Server

CSV = "日時,地点,方向,人数,推計値フラグ\n2025-02-01T08:00,北1条,北行,412,0\n".encode()


def wait_for(check: Callable[[], bool], timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_ckanapi_end_to_end(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'ckanapi.db'}"
    plat = Platform.open(make_settings(db, auth="on"))
    admin = plat.keys.create("admin").key
    sapporo = plat.keys.create("operator", tenant="011002").key
    hakodate = plat.keys.create("operator", tenant="012025").key
    plat.close()
    server = Server(db, auth="on", env={"SOCIETY5_OPENDATA_DIR": str(tmp_path / "opendata")}).start()
    try:
        site = ckanapi.RemoteCKAN(server.url, apikey=admin)
        org = site.action.organization_create(name="sapporo", title="札幌市", tenant="011002")
        assert org["tenant"] == "011002"
        officer = ckanapi.RemoteCKAN(server.url, apikey=sapporo)
        pkg = officer.action.package_create(
            name="chikaho-counts", title="札幌駅前通地下歩行空間 歩行者数", owner_org="sapporo",
            tags=[{"name": "歩行者"}, {"name": "交通"}], frequency="daily", license_id="CC-BY-4.0")
        source = tmp_path / "counts.csv"
        source.write_bytes(CSV)
        with open(source, "rb") as fh:
            res = officer.action.resource_create(package_id=pkg["id"], name="15分毎の歩行者数", upload=fh)
        assert res["format"] == "CSV" and res["url_type"] == "upload" and res["size"] == len(CSV)
        public = ckanapi.RemoteCKAN(server.url)
        found = public.action.package_search(q="地下歩行", **{"facet.field": ["tags", "res_format"]})
        assert found["count"] == 1 and found["facets"]["res_format"] == {"CSV": 1}
        assert {i["name"] for i in found["search_facets"]["tags"]["items"]} == {"歩行者", "交通"}
        shown = public.action.package_show(id="chikaho-counts")
        assert shown["resources"][0]["id"] == res["id"] and shown["organization"]["title"] == "札幌市"
        patched = officer.action.package_patch(id="chikaho-counts", notes="15分毎、方向別")
        assert patched["notes"] == "15分毎、方向別" and patched["num_resources"] == 1
        assert httpx.get(res["url"]).content == CSV
        with pytest.raises(ckanapi.ValidationError) as bad:
            officer.action.package_create(name="x", owner_org="sapporo")
        assert "name" in bad.value.error_dict
        with pytest.raises(ckanapi.NotFound):
            public.action.package_show(id="missing")
        with pytest.raises(ckanapi.NotAuthorized):
            other = ckanapi.RemoteCKAN(server.url, apikey=hakodate)
            other.action.package_patch(id="chikaho-counts", title="x")
        with pytest.raises(ckanapi.NotAuthorized):
            public.action.package_create(name="anonymous", owner_org="sapporo")
        # the uploaded CSV reaches the datastore by itself (the server's outbox), and a table made with
        # datastore_create answers filtered, sorted queries through the client
        loaded = wait_for(lambda: public.action.resource_show(id=res["id"])["datastore_status"] == "active")
        assert loaded
        rows = public.action.datastore_search(resource_id=res["id"], filters={"地点": "北1条"})
        assert rows["total"] == 1 and rows["records"][0]["人数"] == "412"  # no layout declared: text
        table = officer.action.datastore_create(
            resource={"package_id": pkg["id"], "name": "地点別集計"}, primary_key=["地点"],
            fields=[{"id": "地点", "type": "text"}, {"id": "人数", "type": "int"}],
            records=[{"地点": "北1条", "人数": 412}, {"地点": "北2条", "人数": 388},
                     {"地点": "大通", "人数": 951}])
        assert table["primary_key"] == ["地点"]
        found_rows = public.action.datastore_search(resource_id=table["resource_id"], sort="人数 desc",
                                                    limit=2)
        assert [r["地点"] for r in found_rows["records"]] == ["大通", "北1条"] and found_rows["total"] == 3
        with pytest.raises(ckanapi.ValidationError):
            public.action.datastore_search(resource_id=table["resource_id"], sort="no_such_field asc")
        dump = httpx.get(f"{server.url}/datastore/dump/{table['resource_id']}")
        assert dump.status_code == 200 and dump.text.splitlines()[0] == "地点,人数"
    finally:
        server.stop()
