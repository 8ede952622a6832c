"""Uploaded resources: streamed multipart, size limit, hash and format, downloads and their visibility."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import pytest

from society5.core.auth import SUPERUSER
from society5.core.platform import Platform
from society5.opendata import files
from society5.opendata.actions import ActionContext, Upload, ValidationError, call

from .conftest import Ckan, Tokens


def poll(check: Any, timeout_s: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (got := check()):
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)
    return got

CSV = "名称,住所,緯度,経度\n札幌市役所,札幌市中央区北1条西2丁目,43.0621,141.3544\n".encode()


def upload(ckan: Ckan, token: str, content: bytes, filename: str = "AED一覧.csv", **fields: Any) -> Any:
    return ckan.client.post("/api/3/action/resource_create", headers={"Authorization": token},
                            data=fields, files={"upload": (filename, content, "text/csv")})


def stored_files(platform: Platform) -> list[str]:
    root = Path(platform.settings.opendata_dir)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_upload_and_download(ckan: Ckan, tokens: Tokens, orgs: Any, od_platform: Platform) -> None:
    ckan.ok("package_create", tokens.sapporo, name="aed", owner_org="sapporo")
    response = upload(ckan, tokens.sapporo, CSV, package_id="aed", description="市内のAED")
    assert response.status_code == 200, response.text
    res = response.json()["result"]
    assert res["url_type"] == "upload" and res["format"] == "CSV" and res["mimetype"] == "text/csv"
    assert res["size"] == len(CSV) and res["hash"] == "sha256:" + hashlib.sha256(CSV).hexdigest()
    assert res["name"] == "AED一覧.csv" and res["description"] == "市内のAED"
    assert res["datastore_active"] is False and res["datastore_status"] == "pending"
    assert res["validation_status"] == "success" and res["encoding"] == "utf-8"
    assert res["url"].startswith(f"http://testserver/dataset/{res['package_id']}/resource/{res['id']}/download/")
    # the app's outbox loads the file into the datastore after the upload's commit
    loaded = poll(lambda: (r := ckan.ok("resource_show", id=res["id"]))["datastore_status"] == "active" and r)
    assert loaded["datastore_active"] is True and loaded["datastore_rows_loaded"] == 1
    found = ckan.ok("datastore_search", resource_id=res["id"])
    assert [r["名称"] for r in found["records"]] == ["札幌市役所"]
    download = ckan.client.get(res["url"].removeprefix("http://testserver"))
    assert download.status_code == 200 and download.content == CSV
    assert download.headers["content-type"].startswith("text/csv")
    assert "filename*=UTF-8''AED" in download.headers["content-disposition"]
    assert stored_files(od_platform) == [f"resources/{res['id']}"]  # nothing left in tmp
    # a new file replaces the old one; the URL stays
    newer = CSV + "道庁,札幌市中央区北3条西6丁目,43.0643,141.3469\n".encode()
    replaced = ckan.client.post("/api/3/action/resource_update", headers={"Authorization": tokens.sapporo},
                                data={"id": res["id"]}, files={"upload": ("AED一覧.csv", newer, "text/csv")})
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["result"]["size"] == len(newer)
    assert ckan.client.get(res["url"].removeprefix("http://testserver")).content == newer
    # a package_update that round-trips package_show keeps the uploaded file
    shown = ckan.ok("package_show", id="aed")
    ckan.ok("package_update", tokens.sapporo, **{**shown, "title": "AED"})
    assert ckan.ok("resource_show", id=res["id"])["url_type"] == "upload"
    ckan.ok("resource_delete", tokens.sapporo, id=res["id"])
    assert stored_files(od_platform) == []
    assert ckan.client.get(res["url"].removeprefix("http://testserver")).status_code == 404


def test_private_downloads_need_a_token_that_may_read(ckan: Ckan, tokens: Tokens, orgs: Any) -> None:
    ckan.ok("package_create", tokens.sapporo, name="staff", owner_org="sapporo", private=True)
    res = upload(ckan, tokens.sapporo, CSV, package_id="staff").json()["result"]
    path = res["url"].removeprefix("http://testserver")
    assert ckan.client.get(path).status_code == 404
    assert ckan.client.get(path, headers={"Authorization": tokens.hakodate}).status_code == 404
    assert ckan.client.get(path, headers={"Authorization": tokens.reader}).content == CSV
    wrong = path.replace("/dataset/staff/", "/dataset/other/").replace(res["package_id"], "other")
    assert ckan.client.get(wrong, headers={"Authorization": tokens.admin}).status_code == 404
    other = upload(ckan, tokens.hakodate, CSV, package_id="staff")
    ckan.error(other, 404, "Not Found Error")  # 函館 cannot even see 札幌's private dataset


def test_too_large_and_invalid_uploads_keep_nothing(ckan: Ckan, tokens: Tokens, orgs: Any,
                                                     od_platform: Platform) -> None:
    ckan.ok("package_create", tokens.sapporo, name="big", owner_org="sapporo")
    huge = b"a,b\n" + b"1,2\n" * 300_000  # 1.2 MB against the fixture's 1 MB limit
    err = ckan.error(upload(ckan, tokens.sapporo, huge, package_id="big"), 409, "Validation Error")
    assert "too large" in err["upload"][0] and "1 MB" in err["upload"][0]
    err = ckan.error(upload(ckan, tokens.sapporo, CSV, package_id="big", datastore_active="perhaps"), 409,
                     "Validation Error")
    assert "datastore_active" in err
    ckan.error(upload(ckan, tokens.hakodate, CSV, package_id="big"), 403, "Authorization Error")
    ckan.error(upload(ckan, tokens.sapporo, CSV, package_id="nowhere"), 404, "Not Found Error")
    broken = ckan.client.post("/api/3/action/resource_create", headers={
        "Authorization": tokens.sapporo, "Content-Type": "multipart/form-data; boundary=xyz"},
        content=b"--xyz\r\nContent-Disposition: form-data; name=\"upload\"; filename=\"a.csv\"\r\n\r\nabc")
    ckan.error(broken, 409, "Validation Error")
    assert ckan.ok("package_show", id="big")["num_resources"] == 0
    assert stored_files(od_platform) == []


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_in_process_upload_copies_the_file(ctx_of: Any, tmp_path: Path, od_platform: Platform) -> None:
    admin = ctx_of(SUPERUSER)
    call("organization_create", admin, {"name": "otaru", "tenant": "012033"})
    call("package_create", admin, {"name": "canal", "owner_org": "otaru"})
    source = tmp_path / "運河.geojson"
    source.write_bytes(b'{"type": "FeatureCollection", "features": []}')
    admin.uploads["upload"] = Upload(filename=source.name, path=str(source), size=source.stat().st_size)
    res = call("resource_create", admin, {"package_id": "canal"})
    assert res["format"] == "GeoJSON" and res["mimetype"] == "application/geo+json"
    assert source.exists() and files.resource_path(od_platform.settings, res["id"]).read_bytes() == \
        source.read_bytes()
    source.write_bytes(b"x" * (2 * 1024 * 1024))  # over the 1 MB limit: refused, nothing kept
    admin.uploads["upload"] = Upload(filename="big.csv", path=str(source), size=source.stat().st_size)
    with pytest.raises(ValidationError):
        call("resource_create", admin, {"package_id": "canal"})
    assert len(call("package_show", admin, {"id": "canal"})["resources"]) == 1


BAD_AED = ("全国地方公共団体コード,ID,地方公共団体名,名称\n"
           "011002,1,札幌市,\"札幌市役所\n").encode("cp932")  # an unclosed quote, in Shift_JIS


def test_a_csv_that_cannot_be_read_is_not_published(ckan: Ckan, tokens: Tokens, orgs: Any,
                                                     od_platform: Platform) -> None:
    ckan.ok("package_create", tokens.sapporo, name="aed", owner_org="sapporo")
    before = ckan.ok("package_show", id="aed")
    response = upload(ckan, tokens.sapporo, BAD_AED, package_id="aed")
    assert response.status_code == 409, response.text
    error = response.json()["error"]
    assert error["__type"] == "Validation Error" and "upload" in error
    assert error["validation_report"]["encoding"] == "cp932" and not error["validation_report"]["ok"]
    after = ckan.ok("package_show", id="aed")
    assert after["resources"] == [] and after["metadata_modified"] == before["metadata_modified"]
    assert stored_files(od_platform) == []  # nothing kept, not even in tmp


def test_a_declared_layout_is_enforced_and_typed(ckan: Ckan, tokens: Tokens, orgs: Any, od_platform: Platform,
                                                 tmp_path: Path) -> None:
    from society5.opendata import layouts, samples

    ckan.ok("package_create", tokens.sapporo, name="aed", owner_org="sapporo", conforms_to="aed")
    wrong = upload(ckan, tokens.sapporo, CSV, package_id="aed")  # a CSV, but not the AED layout
    assert wrong.status_code == 409
    report = wrong.json()["error"]["validation_report"]
    assert report["errors"] > 0 and report["layout"]["id"] == "aed"
    good = tmp_path / "aed.csv"
    samples.write_sample_csv(good, "aed", n=5, encoding="cp932")
    response = upload(ckan, tokens.sapporo, good.read_bytes(), package_id="aed")
    assert response.status_code == 200, response.text
    res = response.json()["result"]
    assert res["validation_layout"] == "aed" and res["encoding"] == "cp932"
    poll(lambda: ckan.ok("resource_show", id=res["id"])["datastore_status"] == "active")
    found = ckan.ok("datastore_search", resource_id=res["id"])
    assert found["total"] == 5
    types = {f["id"]: f["type"] for f in found["fields"]}
    expected = {f["id"]: f["type"] for f in layouts.datastore_fields("aed")}
    assert {k: types[k] for k in expected} == expected  # typed as the layout says, not all text


def test_deleting_a_resource_drops_its_datastore_table(ckan: Ckan, tokens: Tokens, orgs: Any,
                                                       od_platform: Platform) -> None:
    import sqlalchemy as sa

    from society5.opendata import datastore

    ckan.ok("package_create", tokens.sapporo, name="aed", owner_org="sapporo")
    res = upload(ckan, tokens.sapporo, CSV, package_id="aed").json()["result"]
    poll(lambda: ckan.ok("resource_show", id=res["id"])["datastore_status"] == "active")
    dump = ckan.client.get(f"/datastore/dump/{res['id']}?bom=true")
    assert dump.status_code == 200 and dump.content.startswith("\ufeff名称,住所,緯度,経度".encode())
    table = datastore.table_name(res["id"])
    assert table in sa.inspect(od_platform.engine).get_table_names()
    ckan.ok("resource_delete", tokens.sapporo, id=res["id"])
    assert table not in sa.inspect(od_platform.engine).get_table_names()
    assert ckan.post("datastore_search", None, resource_id=res["id"]).status_code == 404
    assert ckan.client.get(f"/datastore/dump/{res['id']}").status_code == 404


def test_concurrent_writers_of_one_dataset_lose_nothing(ckan: Ckan, tokens: Tokens, orgs: Any,
                                                        od_platform: Platform) -> None:
    """A datastore load noting progress on a resource while an officer edits the dataset: each writer
    writes the whole dataset back, so without row locks (PostgreSQL) one would erase the other's change."""
    from concurrent.futures import ThreadPoolExecutor

    ckan.ok("package_create", tokens.sapporo, name="aed", owner_org="sapporo")
    res = ckan.ok("resource_create", tokens.sapporo, package_id="aed", url="https://example.com/a.csv")
    ctx = ActionContext(od_platform, SUPERUSER)

    def edit_notes(n: int) -> None:
        call("package_patch", ctx, {"id": "aed", "notes": f"版 {n}"})

    def note_progress(n: int) -> None:
        call("resource_patch", ctx, {"id": res["id"], f"note_{n}": n})  # each write adds its own member

    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(fn, n) for n in range(1, 16) for fn in (edit_notes, note_progress)]
    for future in futures:
        future.result()
    shown = ckan.ok("package_show", id="aed")["resources"][0]
    assert {k: v for k, v in shown.items() if k.startswith("note_")} == {f"note_{n}": n for n in range(1, 16)}
