"""The datastore's CKAN actions, in-process and over HTTP: shapes, all-or-nothing writes, permissions."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from society5.core.auth import ANONYMOUS, SUPERUSER, Principal
from society5.core.platform import Platform
from society5.opendata import api  # noqa: F401  (fills the action registry)
from society5.opendata.actions import (
    ActionContext,
    AuthorizationError,
    CkanError,
    NotFoundError,
    ValidationError,
    call,
)
from tests.conftest import make_settings

TENANT = "011002"
ORG = f"sapporo-{uuid.uuid4().hex[:8]}"  # the PostgreSQL database is shared with other modules
OPERATOR = Principal(role="operator", tenant=TENANT)
OTHER = Principal(role="operator", tenant="012025")
READER = Principal(role="reader", tenant=TENANT)
FIELDS = [{"id": "設置場所名称", "type": "text"}, {"id": "台数", "type": "int"},
          {"id": "設置日", "type": "date"}]
RECORDS = [{"設置場所名称": "札幌市役所", "台数": 2, "設置日": "2020-04-01"},
           {"設置場所名称": "北海道庁", "台数": 3, "設置日": "2021-06-15"},
           {"設置場所名称": "札幌駅", "台数": 5, "設置日": "2019-01-10"}]


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def portal(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """One catalog per module and database: each test makes its own datasets, so tests cannot meet."""
    tmp = tmp_path_factory.mktemp("dsa")
    url = f"sqlite:///{tmp / 'dsa.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    plat = Platform.open(make_settings(url, opendata_dir=str(tmp / "opendata")))
    call("organization_create", ctx(plat, SUPERUSER), {"name": ORG, "title": "札幌市", "tenant": TENANT})
    yield plat
    plat.close()


def name() -> str:
    return f"aed-{uuid.uuid4().hex[:12]}"


def ctx(platform: Platform, principal: Principal = OPERATOR) -> ActionContext:
    return ActionContext(platform=platform, principal=principal, base_url="http://testserver")


def new_table(platform: Platform, private: bool = False, **extra: Any) -> str:
    package = call("package_create", ctx(platform),
                   {"name": name(), "owner_org": ORG, "private": private})
    result = call("datastore_create", ctx(platform), {
        "resource": {"package_id": package["id"], "name": "AED設置箇所一覧"}, "fields": FIELDS,
        "records": RECORDS, "primary_key": "設置場所名称", **extra})
    return str(result["resource_id"])


def test_create_with_a_new_resource_marks_it_active(portal: Platform) -> None:
    package = call("package_create", ctx(portal), {"name": name(), "owner_org": ORG})
    result = call("datastore_create", ctx(portal), {
        "resource": {"package_id": package["id"]},
        "fields": FIELDS, "records": RECORDS, "indexes": ["設置日"]})
    assert result["fields"][1] == {"id": "台数", "type": "int4"}
    assert result["indexes"] == [["設置日"]] and result["method"] == "insert"
    resource = call("resource_show", ctx(portal), {"id": result["resource_id"]})
    assert resource["datastore_active"] is True
    got = call("datastore_search", ctx(portal, ANONYMOUS), {"resource_id": result["resource_id"]})
    assert got["total"] == 3


def test_search_result_has_ckans_shape(portal: Platform) -> None:
    rid = new_table(portal)
    got = call("datastore_search", ctx(portal, ANONYMOUS), {
        "resource_id": rid, "filters": {"台数": [2, 5]}, "sort": "設置日 desc", "limit": 1})
    assert set(got) >= {"resource_id", "fields", "records", "total", "total_was_estimated", "limit", "offset",
                        "_links"}
    assert got["records"] == [{"_id": 1, "設置場所名称": "札幌市役所", "台数": 2, "設置日": "2020-04-01"}]
    assert got["total"] == 2 and got["limit"] == 1 and got["offset"] == 0
    assert [f["type"] for f in got["fields"]] == ["int", "text", "int4", "date"]
    assert "offset=1" in got["_links"]["next"]


def test_get_style_text_parameters(portal: Platform) -> None:
    rid = new_table(portal)
    got = call("datastore_search", ctx(portal, ANONYMOUS), {
        "resource_id": rid, "filters": '{"設置場所名称": "北海道庁"}', "limit": "5", "include_total": "false",
        "fields": "設置場所名称,台数", "records_format": "csv", "q": '{"設置場所名称": "道庁"}'})
    assert got["records"] == "北海道庁,3\n" and "total" not in got
    with pytest.raises(ValidationError) as err:
        call("datastore_search", ctx(portal), {"resource_id": rid, "limit": "many"})
    assert err.value.fields == {"limit": ["Invalid integer"]}
    with pytest.raises(ValidationError) as err:
        call("datastore_search", ctx(portal), {"resource_id": rid, "filters": "{broken"})
    assert "filters" in err.value.fields
    assert call("datastore_search", ctx(portal), {"resource_id": rid, "limit": 99999})["limit"] == 32000


def test_bad_names_are_named(portal: Platform) -> None:
    rid = new_table(portal)
    for data, where in [({"filters": {"色": "赤"}}, "filters"), ({"sort": "色"}, "sort"),
                        ({"fields": ["色"]}, "fields"), ({"filters": {"台数": "三"}}, "filters"),
                        ({"records_format": "xml"}, "records_format")]:
        with pytest.raises(ValidationError) as err:
            call("datastore_search", ctx(portal), {"resource_id": rid, **data})
        assert where in err.value.fields


def test_upsert_is_all_or_nothing(portal: Platform) -> None:
    rid = new_table(portal)
    with pytest.raises(ValidationError) as err:
        call("datastore_upsert", ctx(portal), {"resource_id": rid, "records": [
            {"設置場所名称": "札幌市役所", "台数": 9}, {"設置場所名称": "新庁舎", "台数": "たくさん"}]})
    assert "record 1: field '台数'" in err.value.fields["records"][0]
    got = call("datastore_search", ctx(portal),
               {"resource_id": rid, "filters": {"設置場所名称": "札幌市役所"}})
    assert got["records"][0]["台数"] == 2  # the good record of the failed call was not written
    call("datastore_upsert", ctx(portal), {"resource_id": rid, "records": [
        {"設置場所名称": "札幌市役所", "台数": 9}, {"設置場所名称": "新庁舎", "台数": 1}]})
    got = call("datastore_search", ctx(portal), {"resource_id": rid, "sort": "_id"})
    assert [(r["設置場所名称"], r["台数"]) for r in got["records"]] == [
        ("札幌市役所", 9), ("北海道庁", 3), ("札幌駅", 5), ("新庁舎", 1)]
    with pytest.raises(ValidationError, match="method"):
        call("datastore_upsert", ctx(portal), {"resource_id": rid, "records": [], "method": "merge"})
    with pytest.raises(ValidationError, match="already exists"):
        call("datastore_upsert", ctx(portal), {"resource_id": rid, "method": "insert",
                                               "records": [{"設置場所名称": "札幌駅"}]})


def test_creating_again_adds_a_column(portal: Platform) -> None:
    rid = new_table(portal)
    call("datastore_create", ctx(portal), {"resource_id": rid, "fields": [{"id": "備考", "type": "text"}]})
    info = call("datastore_info", ctx(portal), {"id": rid})
    assert [f["id"] for f in info["fields"]] == ["設置場所名称", "台数", "設置日", "備考"]
    assert info["meta"]["count"] == 3 and info["primary_key"] == ["設置場所名称"]


def test_failed_create_leaves_no_resource(portal: Platform) -> None:
    package = call("package_create", ctx(portal), {"name": name(), "owner_org": ORG})
    with pytest.raises(ValidationError, match="record 0"):
        call("datastore_create", ctx(portal), {"resource": {"package_id": package["id"]}, "fields": FIELDS,
                                               "records": [{"台数": "two"}]})
    assert call("package_show", ctx(portal), {"id": package["id"]})["resources"] == []


def test_delete_rows_then_the_table(portal: Platform) -> None:
    rid = new_table(portal)
    call("datastore_delete", ctx(portal), {"resource_id": rid, "filters": {"台数": 3}})
    assert call("datastore_search", ctx(portal), {"resource_id": rid})["total"] == 2
    call("datastore_delete", ctx(portal), {"resource_id": rid})
    assert call("resource_show", ctx(portal), {"id": rid})["datastore_active"] is False
    with pytest.raises(NotFoundError):
        call("datastore_search", ctx(portal), {"resource_id": rid})


def test_another_municipality_cannot_write(portal: Platform) -> None:
    rid = new_table(portal)
    for name, data in [("datastore_upsert", {"records": [{"設置場所名称": "x"}]}), ("datastore_delete", {}),
                       ("datastore_create", {"fields": [{"id": "y"}]})]:
        with pytest.raises(AuthorizationError):
            call(name, ctx(portal, OTHER), {"resource_id": rid, **data})
        with pytest.raises(AuthorizationError):
            call(name, ctx(portal, ANONYMOUS), {"resource_id": rid, **data})
    assert call("datastore_search", ctx(portal, OTHER), {"resource_id": rid})["total"] == 3


def test_private_tables_need_a_token_that_may_read_them(portal: Platform) -> None:
    rid = new_table(portal, private=True)
    for who in (ANONYMOUS, OTHER):
        with pytest.raises((NotFoundError, AuthorizationError)):
            call("datastore_search", ctx(portal, who), {"resource_id": rid})
        with pytest.raises((NotFoundError, AuthorizationError)):
            call("datastore_info", ctx(portal, who), {"id": rid})
    assert call("datastore_search", ctx(portal, READER), {"resource_id": rid})["total"] == 3


def test_http_get_and_post(portal: Platform) -> None:
    from fastapi.testclient import TestClient

    from society5.opendata.service import service
    from society5.web.app import create_app

    rid = new_table(portal)
    with TestClient(create_app(portal.settings, services=[service], platform=portal)) as client:
        resp = client.get("/api/3/action/datastore_search", params={
            "resource_id": rid, "filters": json.dumps({"台数": 5}), "fields": "設置場所名称"})
        assert resp.status_code == 200, resp.text
        assert resp.json()["result"]["records"] == [{"設置場所名称": "札幌駅"}]
        resp = client.post("/api/3/action/datastore_search", json={"resource_id": rid, "sort": "色 desc"})
        assert resp.status_code == 409
        assert resp.json()["error"]["__type"] == "Validation Error" and "sort" in resp.json()["error"]
        resp = client.post("/api/3/action/datastore_search", json={"resource_id": "no-such-resource"})
        assert resp.status_code == 404


def test_errors_are_ckan_errors(portal: Platform) -> None:
    with pytest.raises(CkanError):
        call("datastore_search", ctx(portal), {})
    with pytest.raises(ValidationError):
        call("datastore_create", ctx(portal), {"resource": {"package_id": "x"}, "fields": [{"id": "_bad"}]})
