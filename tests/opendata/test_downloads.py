"""CSV downloads in Shift_JIS and UTF-8 (BOM): the same rows either way, formulas escaped, access checked."""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from society5.core.auth import Principal
from society5.core.platform import Platform
from society5.opendata import actions, csvio, downloads, files
from society5.opendata.actions import ActionContext, Upload
from tests.opendata.conftest import Ckan, Tokens

ADMIN = Principal(role="admin", name="test-admin")
HEADER = ["名称", "住所", "備考", "数"]
ROWS = [
    ["札幌市役所", "北海道札幌市中央区北1条西2丁目", "=HYPERLINK(\"http://x\")", "-12.5"],
    ["髙橋商店①", "函館市～本町", "+81 3 1234", "+3"],
    ["@地下歩行空間", "小樽市, 色内", "－危険", "1,234"],
    ["改行を含む\n名称", "\"引用\"付き", "", "0"],
]


def decode(data: bytes, encoding: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode(encoding), newline="")))


def upload(ctx: ActionContext, package_id: str, name: str, data: bytes, tmp_path: Path) -> dict[str, Any]:
    path = tmp_path / name
    path.write_bytes(data)
    ctx.uploads["upload"] = Upload(filename=name, path=str(path), size=len(data))
    try:
        result: dict[str, Any] = actions.call("resource_create", ctx, {"package_id": package_id})
    finally:
        ctx.uploads.clear()
    return result


@pytest.fixture
def dataset(ckan: Ckan, orgs: dict[str, Any], ctx_of: Callable[[Principal], ActionContext]) -> dict[str, Any]:
    created: dict[str, Any] = actions.call("package_create", ctx_of(ADMIN), {
        "name": "shops", "title": "店舗一覧", "owner_org": "sapporo"})
    return created


def utf8_csv(header: list[str], rows: list[list[str]]) -> bytes:
    buf = io.StringIO(newline="")
    csv.writer(buf, lineterminator="\r\n").writerows([header, *rows])
    return buf.getvalue().encode("utf-8")


def expected(rows: list[list[str]]) -> list[list[str]]:
    return [HEADER, *([csvio.escape_formula(c) for c in row] for row in rows)]


def test_sjis_and_utf8bom_downloads_decode_to_the_same_escaped_rows(
        ckan: Ckan, dataset: dict[str, Any], ctx_of: Callable[[Principal], ActionContext],
        tmp_path: Path) -> None:
    res = upload(ctx_of(ADMIN), dataset["id"], "shops.csv", utf8_csv(HEADER, ROWS), tmp_path)
    sjis = ckan.client.get(downloads.variant_url("shops", res, "sjis"))
    bom = ckan.client.get(downloads.variant_url("shops", res, "utf8bom"))
    assert sjis.status_code == 200 and bom.status_code == 200
    assert sjis.headers["content-type"] == "text/csv; charset=Shift_JIS"
    assert "filename*=UTF-8''shops_sjis.csv" in sjis.headers["content-disposition"]
    assert bom.content.startswith(codecs.BOM_UTF8) and not sjis.content.startswith(codecs.BOM_UTF8)
    from_sjis = decode(sjis.content, "cp932")
    from_bom = decode(bom.content, "utf-8-sig")
    assert from_sjis == from_bom == expected(ROWS)
    # formulas are escaped, plain signed numbers stay numbers
    assert from_bom[1][2] == "'=HYPERLINK(\"http://x\")" and from_bom[1][3] == "-12.5"
    assert from_bom[2][2] == "'+81 3 1234" and from_bom[2][3] == "+3"
    assert from_bom[3][0] == "'@地下歩行空間" and from_bom[3][2] == "'－危険"
    # the original file is served byte for byte, unescaped
    original = ckan.client.get(res["url"].replace("http://testserver", ""))
    assert original.content == utf8_csv(HEADER, ROWS)


def test_a_shift_jis_upload_comes_back_as_utf8_with_bom(
        ckan: Ckan, dataset: dict[str, Any], ctx_of: Callable[[Principal], ActionContext],
        tmp_path: Path) -> None:
    data = utf8_csv(HEADER, ROWS).decode("utf-8").encode("cp932")
    res = upload(ctx_of(ADMIN), dataset["id"], "shops-sjis.csv", data, tmp_path)
    bom = ckan.client.get(downloads.variant_url("shops", res, "utf8bom"))
    plain = ckan.client.get(downloads.variant_url(dataset["id"], res, "utf8"))  # by id works too
    assert decode(bom.content, "utf-8-sig") == decode(plain.content, "utf-8") == expected(ROWS)
    assert not plain.content.startswith(codecs.BOM_UTF8)


def test_characters_shift_jis_lacks_are_replaced_with_geta(
        ckan: Ckan, dataset: dict[str, Any], ctx_of: Callable[[Principal], ActionContext],
        tmp_path: Path) -> None:
    res = upload(ctx_of(ADMIN), dataset["id"], "names.csv", utf8_csv(HEADER, [["𠮷野家", "a", "b", "1"]]),
                 tmp_path)
    rows = decode(ckan.client.get(downloads.variant_url("shops", res, "sjis")).content, "cp932")
    assert rows[1][0] == "〓野家"
    rows = decode(ckan.client.get(downloads.variant_url("shops", res, "utf8bom")).content, "utf-8-sig")
    assert rows[1][0] == "𠮷野家"


def test_a_datastore_table_is_exported_in_pages(
        ckan: Ckan, dataset: dict[str, Any], ctx_of: Callable[[Principal], ActionContext],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(downloads, "EXPORT_PAGE", 2)  # five rows: three queries
    records = [{"地点": f"北{i}条", "人数": i * 10, "メモ": "=1+1" if i == 3 else ""} for i in range(5)]
    created = actions.call("datastore_create", ctx_of(ADMIN), {
        "resource": {"package_id": dataset["id"], "name": "歩行者数"},
        "fields": [{"id": "地点", "type": "text"}, {"id": "人数", "type": "int"},
                   {"id": "メモ", "type": "text"}],
        "records": records})
    res = {"id": created["resource_id"], "name": "歩行者数"}
    sjis = ckan.client.get(downloads.variant_url("shops", res, "sjis"))
    bom = ckan.client.get(downloads.variant_url("shops", res, "utf8bom"))
    assert sjis.status_code == 200, sjis.text
    rows = decode(sjis.content, "cp932")
    assert rows == decode(bom.content, "utf-8-sig")
    assert rows[0] == ["地点", "人数", "メモ"]
    assert rows[1:] == [[f"北{i}条", str(i * 10), "'=1+1" if i == 3 else ""] for i in range(5)]


def test_access_and_bad_requests(ckan: Ckan, orgs: dict[str, Any], tokens: Tokens,
                                 ctx_of: Callable[[Principal], ActionContext], tmp_path: Path) -> None:
    admin = ctx_of(ADMIN)
    secret = actions.call("package_create", admin,
                          {"name": "secret", "owner_org": "sapporo", "private": True})
    res = upload(admin, secret["id"], "s.csv", utf8_csv(HEADER, ROWS[:1]), tmp_path)
    url = downloads.variant_url("secret", res, "sjis")
    hidden = ckan.client.get(url)
    assert hidden.status_code == 404 and hidden.json()["error"]["__type"] == "Not Found Error"
    assert ckan.client.get(url, headers={"Authorization": tokens.reader}).status_code == 200
    assert ckan.client.get(url, headers={"Authorization": tokens.hakodate}).status_code == 404
    bad_token = ckan.client.get(url, headers={"Authorization": "nonsense"})
    assert bad_token.status_code == 403
    # an unknown encoding names the parameter; a link or another dataset's resource has no CSV here
    wrong = ckan.client.get(url.replace("encoding=sjis", "encoding=latin1"),
                            headers={"Authorization": tokens.admin})
    assert wrong.status_code == 409 and "encoding" in wrong.json()["error"]
    link = actions.call("resource_create", admin, {"package_id": secret["id"], "url": "https://example.com/a.csv"})
    gone = ckan.client.get(downloads.variant_url("secret", link, "sjis"),
                           headers={"Authorization": tokens.admin})
    assert gone.status_code == 404
    other = actions.call("package_create", admin, {"name": "other", "owner_org": "sapporo"})
    crossed = ckan.client.get(downloads.variant_url(other["name"], res, "sjis"),
                              headers={"Authorization": tokens.admin})
    assert crossed.status_code == 404
    with pytest.raises(ValueError):
        downloads.variant_url("secret", res, "ebcdic")


# Cells as offices type them: any text Shift_JIS can hold, with the characters that matter to CSV and to
# spreadsheets mixed in.
CELL = st.text(alphabet=st.one_of(
    st.characters(codec="cp932", exclude_categories=("Cs", "Cc", "Co"),
                  exclude_characters="¢£¬‖−〜"),  # CP932 maps these to their full-width twins
    st.sampled_from(list("=+-@,\"\n\t ＝＋－＠'"))), max_size=12)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # file handling only: one database is enough
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.lists(CELL, min_size=4, max_size=4), min_size=1, max_size=6))
def test_any_cells_survive_both_encodings_escaped(ckan: Ckan, dataset: dict[str, Any], od_platform: Platform,
                                                  rows: list[list[str]]) -> None:
    rows = [r for r in rows if any(c.strip() for c in r)] or [["a", "b", "c", "d"]]  # blank lines are skipped
    res = _csv_resource(ckan, dataset, od_platform)
    files.resource_path(od_platform.settings, res["id"]).write_bytes(utf8_csv(HEADER, rows))
    sjis = decode(ckan.client.get(downloads.variant_url("shops", res, "sjis")).content, "cp932")
    bom = decode(ckan.client.get(downloads.variant_url("shops", res, "utf8bom")).content, "utf-8-sig")
    assert sjis == bom == expected(rows)
    # only plain numbers (-12.5, +0) may keep a leading sign: spreadsheets read them as the same number
    assert not any(c.startswith(("=", "+", "-", "@", "＝", "＋", "－", "＠")) and not csvio.is_plain_number(c)
                   for row in bom[1:] for c in row)


def _csv_resource(ckan: Ckan, dataset: dict[str, Any], od_platform: Platform) -> dict[str, Any]:
    """One uploaded CSV resource for the whole property test (each example rewrites its file)."""
    shown = actions.call("package_show", ActionContext(od_platform, ADMIN), {"id": dataset["id"]})
    if shown["resources"]:
        found: dict[str, Any] = shown["resources"][0]
        return found
    path = Path(od_platform.settings.opendata_dir) / "seed.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(utf8_csv(HEADER, [["a", "b", "c", "d"]]))
    seed = Upload("cells.csv", str(path), path.stat().st_size)
    ctx = ActionContext(od_platform, ADMIN, uploads={"upload": seed})
    created: dict[str, Any] = actions.call("resource_create", ctx, {"package_id": dataset["id"]})
    return created
