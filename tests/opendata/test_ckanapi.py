"""End to end with the real ``ckanapi`` client (``RemoteCKAN``) against ``society5 serve`` with auth on."""

from __future__ import annotations

from pathlib import Path

import ckanapi
import httpx
import pytest

from society5.core.platform import Platform
from tests.conftest import make_settings
from tests.server import Server

CSV = "日時,地点,方向,人数,推計値フラグ\n2025-02-01T08:00,北1条,北行,412,0\n".encode()


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
    finally:
        server.stop()
