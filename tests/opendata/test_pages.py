"""The portal pages in-process: search, facets, paging, dataset page, organizations, the officer's form."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from society5.core.auth import Principal
from society5.core.platform import Platform
from society5.core.sessions import make_session
from society5.opendata import actions, pages, samples
from society5.opendata.actions import ActionContext, NotFoundError, Upload
from tests.opendata.conftest import Ckan, Tokens

ADMIN = Principal(role="admin", name="test-admin")
SAPPORO_STAFF = Principal(role="operator", tenant="011002", name="札幌市 職員")
SAPPORO_READER = Principal(role="reader", tenant="011002", name="札幌市 閲覧")


def session(platform: Platform, who: Principal) -> dict[str, str]:
    """The Cookie header of a staff member logged in to the web pages."""
    return {"Cookie": f"s5_session={make_session(who, platform.settings.effective_secret(), 1)}"}


def text_of(html: str) -> str:
    """The visible text of a page, whitespace collapsed (for asserting on what a person reads)."""
    body = re.sub(r"<script.*?</script>", " ", html, flags=re.S)
    return " ".join(re.sub(r"<[^>]+>", " ", body).split())


def links(html: str) -> list[str]:
    return [h.replace("&amp;", "&") for h in re.findall(r'href="([^"]+)"', html)]


def map_features(html: str) -> list[dict[str, Any]]:
    """The GeoJSON features a dataset page hands to its map."""
    found = re.search(r'<script type="application/json" id="dataset-map-data">(.*?)</script>', html, re.S)
    assert found is not None, "the page has no map"
    features: list[dict[str, Any]] = json.loads(found.group(1))["features"]
    return features


def upload_file(ctx: ActionContext, package_id: str, path: Path, **extra: Any) -> dict[str, Any]:
    ctx.uploads["upload"] = Upload(filename=path.name, path=str(path), size=path.stat().st_size)
    try:
        result: dict[str, Any] = actions.call("resource_create", ctx, {"package_id": package_id, **extra})
    finally:
        ctx.uploads.clear()
    return result


@pytest.fixture
def catalog(ckan: Ckan, orgs: dict[str, Any], ctx_of: Callable[[Principal], ActionContext],
            tmp_path: Path) -> dict[str, Any]:
    """A group, a public AED dataset with a CSV upload, a public event dataset and a private one."""
    admin = ctx_of(ADMIN)
    actions.call("group_create", admin, {"name": "bousai", "title": "防災"})
    aed = actions.call("package_create", admin, {
        "name": "sapporo-aed", "title": "札幌市 AED設置箇所一覧", "owner_org": "sapporo",
        "conforms_to": "aed",
        "frequency": "monthly", "tags": [{"name": "AED"}, {"name": "防災"}], "groups": [{"name": "bousai"}],
        "contact_name": "札幌市保健所", "temporal_start": "2024-04-01", "temporal_end": "2025-03-31"})
    csv_path = tmp_path / "aed.csv"
    samples.write_sample_csv(csv_path, "aed", n=4)
    upload_file(admin, aed["id"], csv_path, name="AED一覧")
    actions.call("package_create", admin, {"name": "hakodate-events", "title": "函館市 イベント一覧",
                                           "owner_org": "hakodate", "license_id": "gsl-2.0",
                                           "tags": [{"name": "観光"}]})
    actions.call("package_create", admin, {"name": "sapporo-secret", "title": "札幌市 内部資料",
                                           "owner_org": "sapporo", "private": True})
    return {"aed": aed, "csv": csv_path}


def test_search_page_in_japanese_and_english(ckan: Ckan, catalog: dict[str, Any]) -> None:
    page = ckan.client.get("/dataset")
    assert page.status_code == 200
    assert '<html lang="ja">' in page.text
    text = text_of(page.text)
    assert "データセット検索" in text and "2 件中 1–2 件" in text
    assert "札幌市 AED設置箇所一覧" in text and "函館市 イベント一覧" in text
    # facets with counts, and the standard layout and frequency shown by name
    org_facet = r'data-facet="organization".*?札幌市</span> <span class="facet-count">1'
    assert re.search(org_facet, page.text, re.S)
    assert "AED設置箇所一覧" in text and "毎月" in text
    assert page.headers["content-security-policy"].startswith("default-src 'self'")

    english = ckan.client.get("/dataset?lang=en")
    assert '<html lang="en">' in english.text
    assert "1–2 of 2" in text_of(english.text) and "Monthly" in text_of(english.text)
    assert english.cookies.get("s5_lang") == "en"


def test_facet_links_filter_and_can_be_removed(ckan: Ckan, catalog: dict[str, Any]) -> None:
    page = ckan.client.get("/dataset?q=札幌")
    org_link = next(h for h in links(page.text) if "organization=sapporo" in h)
    assert "q=" in org_link  # the text query is kept
    filtered = ckan.client.get(org_link)
    assert 'data-total="1"' in filtered.text and "sapporo-aed" in filtered.text
    chip = re.search(r'<a class="chip" href="([^"]+)" data-field="organization"', filtered.text)
    assert chip is not None and "organization=" not in chip.group(1).replace("&amp;", "&")
    # two facets together: AND
    both = ckan.client.get("/dataset?organization=hakodate&tags=AED")
    assert 'data-total="0"' in both.text and "該当するデータセットはありません" in both.text
    # a license facet by its id, shown by its title
    gsl = ckan.client.get("/dataset?license_id=gsl-2.0")
    assert 'data-total="1"' in gsl.text and "政府標準利用規約" in text_of(gsl.text)


def test_paging_links(ckan: Ckan, orgs: dict[str, Any], ctx_of: Callable[[Principal], ActionContext]) -> None:
    admin = ctx_of(ADMIN)
    for i in range(pages.ROWS + 5):
        actions.call("package_create", admin, {"name": f"ds-{i:02d}", "title": f"データ {i:02d}",
                                               "owner_org": "sapporo"})
    first = ckan.client.get("/dataset?sort=title_string+asc")
    assert f"{pages.ROWS + 5} 件中 1–{pages.ROWS} 件" in text_of(first.text)
    nxt = re.search(r'href="([^"]+)" rel="next"', first.text)
    assert nxt is not None
    second = ckan.client.get(nxt.group(1).replace("&amp;", "&"))
    assert f"{pages.ROWS + 5} 件中 {pages.ROWS + 1}–{pages.ROWS + 5} 件" in text_of(second.text)
    assert "データ 24" in second.text and "データ 00" not in second.text
    assert 'rel="prev"' in second.text and 'rel="next"' not in second.text
    # nonsense stays harmless: an unknown sort falls back, a bad page number is page 1
    assert ckan.client.get("/dataset?sort=drop+table&page=abc").status_code == 200


def test_private_datasets_are_invisible_to_anonymous_users(ckan: Ckan, catalog: dict[str, Any],
                                                           od_platform: Platform, tokens: Tokens) -> None:
    anonymous = ckan.client.get("/dataset?q=内部資料")
    assert 'data-total="0"' in anonymous.text
    hidden = ckan.client.get("/dataset/sapporo-secret")
    assert hidden.status_code == 404 and "内部資料" not in hidden.text
    org_page = ckan.client.get("/organization/sapporo")
    assert "sapporo-secret" not in org_page.text
    # the tenant's own staff (session cookie) and its API keys see it
    staff = session(od_platform, SAPPORO_READER)
    assert 'data-total="1"' in ckan.client.get("/dataset?q=内部資料", headers=staff).text
    shown = ckan.client.get("/dataset/sapporo-secret", headers={"Authorization": f"Bearer {tokens.reader}"})
    assert shown.status_code == 200 and "非公開" in text_of(shown.text)
    # another municipality's staff does not
    other = session(od_platform, Principal(role="operator", tenant="012025", name="函館"))
    assert ckan.client.get("/dataset/sapporo-secret", headers=other).status_code == 404


def test_dataset_page_shows_metadata_downloads_preview_map_and_api_hints(
        ckan: Ckan, catalog: dict[str, Any]) -> None:
    page = ckan.client.get("/dataset/sapporo-aed")
    assert page.status_code == 200
    text = text_of(page.text)
    for expected in ("札幌市 AED設置箇所一覧", "クリエイティブ・コモンズ 表示 4.0", "毎月", "札幌市保健所",
                     "2024-04-01 – 2025-03-31", "AED設置箇所一覧", "防災"):
        assert expected in text, expected
    assert 'href="https://creativecommons.org/licenses/by/4.0/deed.ja"' in page.text
    hrefs = links(page.text)
    original = next(h for h in hrefs if "/download/aed.csv" in h)
    assert original.startswith("http://testserver/dataset/")
    assert any("/csv/aed_sjis.csv?encoding=sjis" in h for h in hrefs)
    assert any("/csv/aed_utf8bom.csv?encoding=utf8bom" in h for h in hrefs)
    # preview: the first rows of the file, header from the layout
    assert re.search(r"(ファイル|データストア)の先頭 4 行", text)  # the datastore once uploads load into it
    first_row = samples.sample_rows("aed", n=4)[0]
    assert first_row["名称"] in text and "全国地方公共団体コード" in text
    # map: one point per row with 緯度/経度, on GSI tiles
    points = [f for f in map_features(page.text) if f["geometry"]["type"] == "Point"]
    assert len(points) == 4
    assert points[0]["geometry"]["coordinates"] == [float(first_row["経度"]), float(first_row["緯度"])]
    assert 'data-tiles="https://cyberjapandata.gsi.go.jp/xyz/std/{z}/{x}/{y}.png"' in page.text
    assert 'src="/static/vendor/leaflet/leaflet.js"' in page.text
    # API hints
    assert "http://testserver/api/3/action/package_show?id=sapporo-aed" in text
    assert "curl &#39;http://testserver/api/3/action/package_show?id=sapporo-aed&#39;" in page.text
    assert "/dataset/sapporo-aed.ttl" in hrefs
    # anonymous visitors get no edit link
    assert "/dataset/sapporo-aed/edit" not in hrefs


def test_dataset_preview_comes_from_the_datastore_when_loaded(
        ckan: Ckan, orgs: dict[str, Any], ctx_of: Callable[[Principal], ActionContext]) -> None:
    admin = ctx_of(ADMIN)
    pkg = actions.call("package_create", admin,
                       {"name": "counts", "title": "歩行者数", "owner_org": "sapporo"})
    actions.call("datastore_create", admin, {
        "resource": {"package_id": pkg["id"], "name": "地下歩行空間 15分値", "format": "CSV"},
        "fields": [{"id": "地点", "type": "text"}, {"id": "緯度", "type": "numeric"},
                   {"id": "経度", "type": "numeric"}, {"id": "人数", "type": "int"}],
        "records": [{"地点": f"北{i}条", "緯度": 43.06 + i / 100, "経度": 141.35, "人数": 100 + i}
                    for i in range(3)]})
    page = ckan.client.get("/dataset/counts")
    text = text_of(page.text)
    assert "データストアの先頭 3 行" in text and "北2条" in text
    assert '<th scope="col">地点</th>' in page.text and '<th scope="col">_id</th>' not in page.text
    assert "datastore_search?resource_id=" in text
    points = [f["geometry"]["coordinates"] for f in map_features(page.text)]
    expected = [[141.35, round(43.06 + i / 100, 6)] for i in range(3)]
    assert [[lon, round(lat, 6)] for lon, lat in points] == expected


def test_organization_and_group_pages(ckan: Ckan, catalog: dict[str, Any]) -> None:
    listing = ckan.client.get("/organization")
    assert listing.status_code == 200
    assert "札幌市" in listing.text and "函館市" in listing.text
    only = ckan.client.get("/organization?q=函館")
    assert "函館市" in only.text and "/organization/sapporo" not in only.text
    org = ckan.client.get("/organization/sapporo?lang=en")
    assert org.status_code == 200 and "札幌市 AED設置箇所一覧" in org.text and 'data-total="1"' in org.text
    assert ckan.client.get("/organization/nowhere").status_code == 404
    home = ckan.client.get("/opendata", follow_redirects=False)  # where the web shell's top page links
    assert home.status_code == 307 and home.headers["location"] == "/dataset"
    groups = ckan.client.get("/group")
    assert "防災" in groups.text and "/dataset?groups=bousai" in groups.text


# ---------------------------------------------------------------- the officer's form


def form(**fields: str) -> dict[str, str]:
    base = {"title": "AED設置箇所一覧（テスト）", "name": "test-aed", "owner_org": "sapporo",
            "license_id": "CC-BY-4.0", "conforms_to": "aed", "tags": "AED、防災", "frequency": "monthly"}
    return {**base, **fields}


def test_officer_form_needs_a_staff_login(ckan: Ckan, orgs: dict[str, Any], od_platform: Platform) -> None:
    anonymous = ckan.client.get("/dataset/new")
    assert anonymous.status_code == 401 and 'href="/login?next=%2Fdataset%2Fnew"' in anonymous.text
    reader = ckan.client.get("/dataset/new", headers=session(od_platform, SAPPORO_READER))
    assert reader.status_code == 403
    staff = ckan.client.get("/dataset/new", headers=session(od_platform, SAPPORO_STAFF))
    assert staff.status_code == 200
    # only the organizations this operator may edit; every input has its label
    assert '<option value="sapporo"' in staff.text and '<option value="hakodate"' not in staff.text
    for field_id in re.findall(r'<(?:input|select|textarea) id="([^"]+)"', staff.text):
        assert f'for="{field_id}"' in staff.text, field_id
    assert 'value="CC-BY-4.0" selected' in staff.text
    refused = ckan.client.post("/dataset/new", data=form(), files={"upload": ("a.csv", b"x\n1\n")})
    assert refused.status_code == 401


def test_officer_form_refuses_a_bad_file_and_shows_the_report(
        ckan: Ckan, orgs: dict[str, Any], od_platform: Platform, ctx_of: Callable[[Principal], ActionContext],
        tmp_path: Path) -> None:
    staff = session(od_platform, SAPPORO_STAFF)
    rows = samples.sample_rows("aed", n=3)
    rows[1]["緯度"] = "143.5"  # latitude and longitude swapped
    header = list(rows[0])
    body = "\n".join([",".join(header)] + [",".join(r[c] for c in header) for r in rows]) + "\n"
    response = ckan.client.post("/dataset/new", data=form(), headers=staff,
                                files={"upload": ("aed.csv", body.encode("cp932"), "text/csv")})
    assert response.status_code == 422
    text = text_of(response.text)
    assert "問題があるため公開していません" in text and "Shift_JIS" in text
    problem = re.search(r'<tr data-kind="[^"]+" data-severity="error">(.*?)</tr>', response.text, re.S)
    assert problem is not None and "緯度" in problem.group(1) and "143.5" in problem.group(1)
    assert 'data-label="行" class="nowrap">3<' in problem.group(1)  # the physical line of the bad row
    # the metadata typed in is kept for the next try
    assert 'value="AED設置箇所一覧（テスト）"' in response.text
    # nothing was written: no dataset, not even a draft; no stored file
    with pytest.raises(NotFoundError):
        actions.call("package_show", ctx_of(ADMIN), {"id": "test-aed"})
    stored = Path(od_platform.settings.opendata_dir) / "resources"
    assert not stored.exists() or not any(stored.iterdir())
    # a non-CSV file cannot be declared in a standard layout
    pdf = ckan.client.post("/dataset/new", data=form(), headers=staff,
                           files={"upload": ("aed.pdf", b"%PDF-1.4", "application/pdf")})
    assert pdf.status_code == 422 and "CSV ファイルにだけ" in text_of(pdf.text)
    # the English form reports in English
    english = ckan.client.post("/dataset/new?lang=en", data=form(), headers=staff,
                               files={"upload": ("aed.csv", body.encode("utf-8"), "text/csv")})
    assert english.status_code == 422 and "Not published" in text_of(english.text)


def test_officer_form_publishes_a_good_file(ckan: Ckan, orgs: dict[str, Any], od_platform: Platform,
                                            ctx_of: Callable[[Principal], ActionContext],
                                            tmp_path: Path) -> None:
    staff = session(od_platform, SAPPORO_STAFF)
    good = tmp_path / "aed.csv"
    samples.write_sample_csv(good, "aed", n=5, encoding="shift_jis")
    response = ckan.client.post("/dataset/new", data=form(private=""), headers=staff, follow_redirects=False,
                                files={"upload": ("aed.csv", good.read_bytes(), "text/csv")})
    assert response.status_code == 303, text_of(response.text)[:2000]
    assert response.headers["location"] == "/dataset/test-aed?published=1"
    pkg = actions.call("package_show", ctx_of(ADMIN), {"id": "test-aed"})
    assert pkg["state"] == "active" and pkg["private"] is False and pkg["conforms_to"] == "aed"
    assert pkg["license_id"] == "CC-BY-4.0" and pkg["frequency"] == "monthly"
    assert sorted(t["name"] for t in pkg["tags"]) == ["AED", "防災"]
    (res,) = pkg["resources"]
    assert res["url_type"] == "upload" and res["validation_status"] == "success"
    assert res["encoding"] == "cp932" and res["validation_layout"] == "aed"
    shown = ckan.client.get(response.headers["location"])
    assert "データセットを公開しました" in text_of(shown.text)
    download = ckan.client.get(res["url"].replace("http://testserver", ""))
    assert download.status_code == 200 and download.content == good.read_bytes()
    # the same name again is refused with a message on the name field
    again = ckan.client.post("/dataset/new", data=form(), headers=staff,
                             files={"upload": ("aed.csv", good.read_bytes(), "text/csv")})
    assert again.status_code == 409 and "この URL 名は既に使われています" in text_of(again.text)


def test_officer_cannot_publish_for_another_municipality(ckan: Ckan, orgs: dict[str, Any],
                                                         od_platform: Platform, tmp_path: Path) -> None:
    staff = session(od_platform, SAPPORO_STAFF)
    good = tmp_path / "aed.csv"
    samples.write_sample_csv(good, "aed", n=2)
    response = ckan.client.post("/dataset/new", data=form(owner_org="hakodate"), headers=staff,
                                files={"upload": ("aed.csv", good.read_bytes(), "text/csv")})
    assert response.status_code == 403
    assert 'data-total="0"' in ckan.client.get("/dataset").text


def test_a_file_over_the_size_limit_is_refused_while_it_streams(ckan: Ckan, orgs: dict[str, Any],
                                                                 od_platform: Platform) -> None:
    big = b"ID,name\n" + b"1,xxxxxxxxxxxxxxxx\n" * 70_000  # > 1 MB, the limit the fixture sets
    response = ckan.client.post("/dataset/new", data=form(), headers=session(od_platform, SAPPORO_STAFF),
                                files={"upload": ("big.csv", big, "text/csv")})
    assert response.status_code == 400 and "ファイルが大きすぎます" in text_of(response.text)
    assert not any((Path(od_platform.settings.opendata_dir) / "tmp").glob("*"))  # the spooled part is gone
    assert 'data-total="0"' in ckan.client.get("/dataset").text


def test_cross_site_posts_are_refused(ckan: Ckan, orgs: dict[str, Any], od_platform: Platform,
                                      tmp_path: Path) -> None:
    headers = {**session(od_platform, SAPPORO_STAFF), "Origin": "https://evil.example"}
    response = ckan.client.post("/dataset/new", data=form(), headers=headers,
                                files={"upload": ("a.csv", io.BytesIO(b"a\n1\n"), "text/csv")})
    assert response.status_code == 403 and "別のサイト" in text_of(response.text)


def test_edit_form_updates_metadata_and_a_bad_file_changes_nothing(
        ckan: Ckan, catalog: dict[str, Any], od_platform: Platform,
        ctx_of: Callable[[Principal], ActionContext]) -> None:
    staff = session(od_platform, SAPPORO_STAFF)
    page = ckan.client.get("/dataset/sapporo-aed/edit", headers=staff)
    assert page.status_code == 200 and 'value="札幌市 AED設置箇所一覧"' in page.text
    assert re.search(r'id="f-name" name="name" value="sapporo-aed"[^>]*readonly', page.text)
    # another municipality's public dataset can be read, not edited
    foreign = ckan.client.get("/dataset/hakodate-events/edit", headers=staff)
    assert foreign.status_code == 403 and "編集できません" in text_of(foreign.text)

    fields = form(title="札幌市 AED設置箇所一覧（更新）", name="sapporo-aed", frequency="weekly")
    bad = ckan.client.post("/dataset/sapporo-aed/edit", data=fields, headers=staff,
                           files={"upload": ("aed.csv", "ID,名称\n1,x\n".encode(), "text/csv")})
    assert bad.status_code == 422
    before = actions.call("package_show", ctx_of(ADMIN), {"id": "sapporo-aed"})
    assert before["title"] == "札幌市 AED設置箇所一覧" and len(before["resources"]) == 1

    saved = ckan.client.post("/dataset/sapporo-aed/edit", data=fields, headers=staff, follow_redirects=False,
                             files={"upload": ("", b"", "application/octet-stream")})
    assert saved.status_code == 303 and saved.headers["location"] == "/dataset/sapporo-aed?saved=1"
    after = actions.call("package_show", ctx_of(ADMIN), {"id": "sapporo-aed"})
    assert after["title"] == "札幌市 AED設置箇所一覧（更新）" and after["frequency"] == "weekly"
    assert len(after["resources"]) == 1 and after["groups"] == []  # the unticked category is removed


def test_descriptions_are_markdown_rendered_safely(ckan: Ckan, orgs: dict[str, Any],
                                                   ctx_of: Callable[[Principal], ActionContext]) -> None:
    notes = ("**架空** のデータです <script>alert(1)</script>\n\n"
             "- [出典](https://example.com/a)\n- [x](javascript:alert(1))")
    actions.call("package_create", ctx_of(ADMIN), {"name": "md", "title": "MD", "owner_org": "sapporo",
                                                   "notes": notes})
    page = ckan.client.get("/dataset/md").text
    assert "<strong>架空</strong>" in page and '<a href="https://example.com/a">出典</a>' in page
    assert "<script>alert(1)</script>" not in page and 'href="javascript:' not in page
    card = ckan.client.get("/dataset?q=MD").text
    assert "架空 のデータです" in text_of(card) and "**" not in text_of(card)
