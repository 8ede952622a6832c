"""Catalog actions: organizations, groups, datasets, link resources, licences; validation, permissions."""

from __future__ import annotations

from typing import Any

from society5.core.auth import ANONYMOUS, SUPERUSER, Principal
from society5.opendata.actions import AuthorizationError, NotFoundError, ValidationError, call

from .conftest import Ckan, Tokens

FULL = {
    "name": "aed-sapporo", "title": "AED設置箇所一覧（札幌市）", "owner_org": "sapporo", "notes": "市内のAED",
    "tags": [{"name": "防災"}, {"name": "医療"}], "license_id": "gsl-2.0", "frequency": "monthly",
    "contact_name": "札幌市 保健福祉局", "contact_email": "aed@city.sapporo.jp",
    "contact_url": "https://www.city.sapporo.jp/", "spatial": [141.2, 42.9, 141.5, 43.2],
    "temporal_start": "2024-04-01", "temporal_end": "2025-03-31", "language": "ja", "conforms_to": "aed",
    "extras": [{"key": "update_note", "value": "毎月1日"}], "version": "1.0",
}


def test_organization_lifecycle(ckan: Ckan, tokens: Tokens, orgs: dict[str, Any]) -> None:
    sapporo = orgs["sapporo"]
    assert sapporo["tenant"] == "011002" and sapporo["is_organization"] and sapporo["package_count"] == 0
    assert ckan.ok("organization_list") == ["hakodate", "sapporo"]  # title asc: 函 before 札
    full = ckan.ok("organization_list", all_fields=True, sort="name desc", limit=1)
    assert [o["name"] for o in full] == ["sapporo"] and full[0]["tenant"] == "011002"
    assert ckan.ok("organization_show", id=sapporo["id"])["title"] == "札幌市"
    patched = ckan.ok("organization_patch", tokens.admin, id="sapporo", description="道央の中心都市")
    assert patched["title"] == "札幌市" and patched["description"] == "道央の中心都市"
    ckan.error(ckan.post("organization_patch", tokens.sapporo, id="sapporo", title="x"), 403,
               "Authorization Error")
    ckan.error(ckan.post("organization_create", tokens.sapporo, name="otaru", tenant="012033"), 403,
               "Authorization Error")
    err = ckan.error(ckan.post("organization_create", tokens.admin, name="Sapporo!", tenant="bad code"), 409,
                     "Validation Error")
    assert "lowercase" in err["name"][0] and err["tenant"]
    err = ckan.error(ckan.post("organization_create", tokens.admin, name="sapporo"), 409, "Validation Error")
    assert err["name"] == ["Group name already exists in database"]
    ckan.ok("package_create", tokens.sapporo, name="ds-1", owner_org="sapporo")
    err = ckan.error(ckan.post("organization_delete", tokens.admin, id="sapporo"), 409, "Validation Error")
    assert "still has datasets" in err["message"]  # text, as CKAN clients expect
    assert ckan.ok("organization_show", id="sapporo", include_datasets=True)["packages"][0]["name"] == "ds-1"
    ckan.ok("organization_delete", tokens.admin, id="hakodate")
    ckan.error(ckan.post("organization_show", id="hakodate"), 404, "Not Found Error")
    assert ckan.ok("organization_list") == ["sapporo"]


def test_dataset_round_trip_with_japanese_portal_fields(ckan: Ckan, tokens: Tokens, orgs: Any) -> None:
    ckan.ok("group_create", tokens.admin, name="bousai", title="防災")
    made = ckan.ok("package_create", tokens.sapporo, **FULL, groups=[{"name": "bousai"}],
                   resources=[{"url": "https://example.jp/aed.geojson", "name": "AED 位置"}])
    shown = ckan.ok("package_show", id="aed-sapporo")
    assert shown == made
    for key in ("frequency", "contact_name", "contact_email", "contact_url", "temporal_start", "temporal_end",
                "language", "conforms_to", "extras", "version", "notes", "title"):
        assert shown[key] == FULL[key], key
    assert shown["spatial"]["type"] == "Polygon" and shown["spatial"]["coordinates"][0][0] == [141.2, 42.9]
    assert shown["type"] == "dataset" and shown["state"] == "active" and shown["private"] is False
    assert shown["license_id"] == "gsl-2.0" and "政府標準利用規約" in shown["license_title"]
    assert shown["organization"]["name"] == "sapporo" and shown["organization"]["tenant"] == "011002"
    assert shown["owner_org"] == orgs["sapporo"]["id"]
    assert [t["name"] for t in shown["tags"]] == ["防災", "医療"] and shown["num_tags"] == 2
    assert [g["name"] for g in shown["groups"]] == ["bousai"] and shown["groups"][0]["title"] == "防災"
    res = shown["resources"][0]
    assert res["format"] == "GeoJSON" and res["datastore_active"] is False and res["position"] == 0
    assert shown["num_resources"] == 1 and shown["metadata_created"] <= shown["metadata_modified"]
    # update keeps tags, groups and resources when left out, clears other fields (CKAN 2.10)
    updated = ckan.ok("package_update", tokens.sapporo, id=made["id"], name="aed-sapporo",
                      owner_org="sapporo", title="AED一覧")
    assert updated["frequency"] is None and updated["title"] == "AED一覧"
    assert updated["num_tags"] == 2 and updated["groups"] and updated["num_resources"] == 1
    patched = ckan.ok("package_patch", tokens.sapporo, id="aed-sapporo", frequency="daily", private=True)
    assert patched["frequency"] == "daily" and patched["private"] is True and patched["title"] == "AED一覧"
    assert patched["metadata_created"] == made["metadata_created"]
    # rename, then the old name is free and the id still finds it
    renamed = ckan.ok("package_patch", tokens.sapporo, id=made["id"], name="aed")
    assert ckan.ok("package_show", tokens.sapporo, id="aed")["id"] == renamed["id"] == made["id"]
    # group renamed: the dataset shows (and is searched by) the new name
    ckan.ok("group_patch", tokens.admin, id="bousai", name="disaster", title="防災・減災")
    again = ckan.ok("package_show", tokens.sapporo, id="aed")
    assert [(g["name"], g["title"]) for g in again["groups"]] == [("disaster", "防災・減災")]
    found = ckan.ok("package_search", tokens.sapporo, fq="groups:disaster", include_private=True)
    assert found["count"] == 1
    ckan.ok("group_delete", tokens.admin, id="disaster")
    assert ckan.ok("package_show", tokens.sapporo, id="aed")["groups"] == []


def test_validation_names_every_field_and_writes_nothing(ckan: Ckan, tokens: Tokens, orgs: Any) -> None:
    bad = {"name": "A", "owner_org": "nowhere", "license_id": "cc-nc", "frequency": "sometimes",
           "contact_email": "not-an-email", "spatial": {"type": "Point", "coordinates": [200, 95]},
           "temporal_start": "2025-04-01", "temporal_end": "2024-01-01", "private": "perhaps",
           "tags": [{"name": "bad/tag"}], "extras": [{"key": "title", "value": "x"}], "language": "日本語",
           "resources": [{"url": "javascript:alert(1)"}]}
    err = ckan.error(ckan.post("package_create", tokens.admin, **bad), 409, "Validation Error")
    assert err["owner_org"] == ["Organization does not exist"]
    assert err["name"] == ["Must be at least 2 characters long",
                           "Must be purely lowercase alphanumeric (ascii) characters and these symbols: -_"]
    for field in ("license_id", "frequency", "contact_email", "spatial", "temporal_end", "private", "tags",
                  "extras", "language"):
        assert err[field], field
    assert err["resources"] == [{"url": ["Must be an http://, https:// or ftp:// URL"]}]
    assert ckan.ok("package_list") == []
    ckan.ok("package_create", tokens.sapporo, name="taken", owner_org="sapporo")
    err = ckan.error(ckan.post("package_create", tokens.sapporo, name="taken", owner_org="sapporo"), 409,
                     "Validation Error")
    assert err["name"] == ["That URL is already in use."]
    err = ckan.error(ckan.post("package_create", tokens.sapporo, name="no-org"), 409, "Validation Error")
    assert err["owner_org"] == ["Missing value"]


def test_municipalities_edit_only_their_own(ckan: Ckan, tokens: Tokens, orgs: Any) -> None:
    ckan.ok("package_create", tokens.sapporo, name="snow", owner_org="sapporo")
    ckan.error(ckan.post("package_create", tokens.hakodate, name="intruder", owner_org="sapporo"), 403,
               "Authorization Error")
    ckan.error(ckan.post("package_patch", tokens.hakodate, id="snow", title="x"), 403, "Authorization Error")
    ckan.error(ckan.post("package_delete", tokens.hakodate, id="snow"), 403, "Authorization Error")
    ckan.error(ckan.post("package_patch", tokens.reader, id="snow", title="x"), 403, "Authorization Error")
    ckan.error(ckan.post("package_patch", None, id="snow", title="x"), 403, "Authorization Error")
    # moving a dataset into another municipality's organization needs that one's rights too
    ckan.error(ckan.post("package_patch", tokens.sapporo, id="snow", owner_org="hakodate"), 403,
               "Authorization Error")
    assert ckan.ok("package_show", id="snow")["organization"]["name"] == "sapporo"
    ckan.error(ckan.post("dataset_purge", tokens.sapporo, id="snow"), 403, "Authorization Error")


def test_private_deleted_and_draft_datasets_are_invisible(ckan: Ckan, tokens: Tokens, orgs: Any) -> None:
    ckan.ok("package_create", tokens.sapporo, name="secret", owner_org="sapporo", private=True)
    ckan.ok("package_create", tokens.sapporo, name="open", owner_org="sapporo")
    ckan.ok("package_create", tokens.sapporo, name="wip", owner_org="sapporo", state="draft")
    for token in (None, tokens.hakodate):
        ckan.error(ckan.post("package_show", token, id="secret"), 404, "Not Found Error")
        ckan.error(ckan.post("package_show", token, id="wip"), 404, "Not Found Error")
    assert ckan.ok("package_show", tokens.reader, id="secret")["private"] is True
    assert ckan.ok("package_show", tokens.admin, id="wip")["state"] == "draft"
    assert ckan.ok("package_list", tokens.admin) == ["open"]
    assert ckan.ok("organization_show", id="sapporo")["package_count"] == 1
    assert ckan.ok("organization_show", tokens.reader, id="sapporo")["package_count"] == 2
    assert ckan.ok("package_delete", tokens.sapporo, id="open") is None
    ckan.error(ckan.post("package_show", None, id="open"), 404, "Not Found Error")
    assert ckan.ok("package_show", tokens.sapporo, id="open")["state"] == "deleted"
    assert ckan.ok("package_search")["count"] == 0
    ckan.ok("dataset_purge", tokens.admin, id="open")
    ckan.error(ckan.post("package_show", tokens.admin, id="open"), 404, "Not Found Error")
    ckan.ok("package_create", tokens.sapporo, name="open", owner_org="sapporo")  # the name is free again


def test_link_resources(ckan: Ckan, tokens: Tokens, orgs: Any) -> None:
    pkg = ckan.ok("package_create", tokens.sapporo, name="buses", owner_org="sapporo")
    res = ckan.ok("resource_create", tokens.sapporo, package_id="buses", url="https://example.jp/gtfs/stops.xlsx",
                  description="停留所", validation_status="pending")
    assert res["format"] == "XLSX" and res["name"] == "stops.xlsx" and res["url_type"] is None
    assert res["package_id"] == pkg["id"] and res["validation_status"] == "pending"
    assert ckan.ok("resource_show", id=res["id"]) == res
    patched = ckan.ok("resource_patch", tokens.sapporo, id=res["id"], datastore_active=True)
    assert patched["datastore_active"] is True and patched["description"] == "停留所"
    assert ckan.ok("package_show", id="buses")["resources"][0]["datastore_active"] is True
    ckan.error(ckan.post("resource_patch", tokens.hakodate, id=res["id"], name="x"), 403,
               "Authorization Error")
    err = ckan.error(ckan.post("resource_create", tokens.sapporo, package_id="buses"), 409,
                     "Validation Error")
    assert "url" in err
    ckan.error(ckan.post("resource_create", tokens.sapporo, package_id="nothing", url="https://a.jp/x"), 404,
               "Not Found Error")
    ckan.ok("resource_delete", tokens.sapporo, id=res["id"])
    ckan.error(ckan.post("resource_show", id=res["id"]), 404, "Not Found Error")
    assert ckan.ok("package_show", id="buses")["num_resources"] == 0


def test_site_licences_and_tags(ckan: Ckan, tokens: Tokens, orgs: Any) -> None:
    licences = {lic["id"]: lic for lic in ckan.ok("license_list")}
    assert {"CC-BY-4.0", "CC0-1.0", "CC-BY-SA-4.0", "gsl-2.0", "odc-odbl", "other-open"} <= set(licences)
    made = ckan.ok("package_create", tokens.sapporo, name="x1", owner_org="sapporo")
    assert made["license_id"] == "CC-BY-4.0"
    ckan.ok("package_create", tokens.sapporo, name="x2", owner_org="sapporo", tags=["除雪", "道路"])
    ckan.ok("package_create", tokens.sapporo, name="x3", owner_org="sapporo", tags=["除雪車"], private=True)
    assert ckan.ok("tag_list") == ["道路", "除雪"]  # code point order
    assert ckan.ok("tag_list", tokens.reader, query="除雪") == ["除雪", "除雪車"]
    assert ckan.ok("tag_list", all_fields=True, query="道")[0]["name"] == "道路"
    status = ckan.ok("status_show")
    assert status["ckan_version"].startswith("2.10") and status["site_title"]
    assert ckan.ok("site_read") is True
    assert "owner_org" in ckan.ok("help_show", name="package_create")


def test_in_process_calls(ctx_of: Any) -> None:
    """Other modules (datastore, DCAT, pages) call the same actions without HTTP."""
    admin = ctx_of(SUPERUSER)
    call("organization_create", admin, {"name": "otaru", "title": "小樽市", "tenant": "012033"})
    operator = ctx_of(Principal(role="operator", tenant="012033"))
    made = call("package_create", operator, {"name": "canal", "owner_org": "otaru", "private": True})
    assert made["organization"]["tenant"] == "012033"
    try:
        call("package_show", ctx_of(ANONYMOUS), {"id": "canal"})
        raise AssertionError("a private dataset was shown to anonymous")
    except NotFoundError:
        pass
    for principal, data, error in (
        (ANONYMOUS, {"name": "x-1", "owner_org": "otaru"}, AuthorizationError),
        (Principal(role="operator", tenant="011002"), {"name": "x-2", "owner_org": "otaru"},
         AuthorizationError),
        (SUPERUSER, {"name": "x-3", "owner_org": "otaru", "temporal_start": "April"}, ValidationError),
    ):
        try:
            call("package_create", ctx_of(principal), data)
            raise AssertionError(f"{data} was accepted")
        except error:
            pass
