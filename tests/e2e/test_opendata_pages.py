"""The open-data portal in real headless Chromium: facet search, dataset page with preview and map, an officer
publishing a dataset (a bad file refused with its report, then a good one), and the phone layout."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from society5.core.auth import Principal
from society5.core.platform import Platform
from society5.opendata import actions, samples
from society5.opendata.actions import ActionContext, Upload
from tests.conftest import make_settings
from tests.e2e.conftest import STAFF_PASSWORD, STAFF_USER, LiveServer, serve_in_thread

pytestmark = pytest.mark.browser

ADMIN = Principal(role="admin", name="e2e-admin")


def _seed(plat: Platform, folder: Path) -> None:
    """Sapporo and Hakodate, a category, a public AED dataset (CSV with 緯度/経度) and an event dataset."""
    ctx = ActionContext(plat, ADMIN, base_url="")
    actions.call("organization_create", ctx, {"name": "sapporo", "title": "札幌市", "tenant": "011002"})
    actions.call("organization_create", ctx, {"name": "hakodate", "title": "函館市", "tenant": "012025"})
    actions.call("group_create", ctx, {"name": "bousai", "title": "防災"})
    aed = actions.call("package_create", ctx, {
        "name": "sapporo-aed", "title": "札幌市 AED設置箇所一覧", "owner_org": "sapporo",
        "conforms_to": "aed",
        "groups": [{"name": "bousai"}], "tags": [{"name": "AED"}]})
    path = folder / "aed.csv"
    samples.write_sample_csv(path, "aed", n=6)
    ctx.uploads["upload"] = Upload("aed.csv", str(path), path.stat().st_size)
    actions.call("resource_create", ctx, {"package_id": aed["id"], "name": "AED一覧"})
    ctx.uploads.clear()
    actions.call("package_create", ctx, {"name": "hakodate-events", "title": "函館市 イベント一覧",
                                         "owner_org": "hakodate", "tags": [{"name": "観光"}]})


@pytest.fixture(scope="module")
def portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """uvicorn on a loopback port with the web shell (login, stylesheet) and the open-data service."""

    from society5.opendata.service import service as opendata_service
    from society5.web.app import create_app
    from society5.web.service import service as web_service

    folder = tmp_path_factory.mktemp("e2e-opendata")
    settings = make_settings(f"sqlite:///{folder / 'portal.db'}", auth="on", preload_contexts=None,
                             opendata_dir=str(folder / "opendata"))
    plat = Platform.open(settings)
    app = create_app(settings, services=[web_service, opendata_service], platform=plat)
    plat.users.create(STAFF_USER, STAFF_PASSWORD, "operator", "011002", "札幌市 職員")
    _seed(plat, folder)
    yield from serve_in_thread(app, plat)


def count(page: Any) -> int:
    return int(page.locator("#result-count").get_attribute("data-total"))


def test_search_filter_by_a_facet_and_open_a_dataset(page: Any, portal: LiveServer) -> None:
    page.goto(portal.url + "/dataset")
    assert page.locator("html").get_attribute("lang") == "ja"
    assert count(page) == 2
    page.fill("#f-q", "札幌")
    page.press("#f-q", "Enter")  # the keyboard submits the search
    page.wait_for_url(re.compile(r"q=%E6%9C%AD%E5%B9%8C"))
    assert count(page) == 1
    page.goto(portal.url + "/dataset")
    page.locator("[data-facet='groups'] a", has_text="防災").click()
    page.wait_for_url(re.compile(r"groups=bousai"))
    assert count(page) == 1
    assert page.locator("#active-filters .chip").inner_text().startswith("カテゴリ: 防災")
    page.locator("#results a", has_text="札幌市 AED設置箇所一覧").click()
    page.wait_for_url(re.compile(r"/dataset/sapporo-aed$"))

    assert page.locator("#dataset-title").inner_text().startswith("札幌市 AED設置箇所一覧")
    preview = page.locator(".preview-table")
    assert preview.locator("tbody tr").count() == 6
    assert preview.locator("thead th").first.inner_text() == "全国地方公共団体コード"
    page.wait_for_selector("#dataset-map[data-ready='1']")
    assert page.locator("#dataset-map .leaflet-tile-pane").count() == 1
    assert page.locator("#dataset-map path.leaflet-interactive").count() == 6  # one circle per row
    assert "地理院タイル" in page.locator("#dataset-map .leaflet-control-attribution").inner_text()
    variants = page.locator("a.download-variant").all_inner_texts()
    assert variants == ["UTF-8 (BOM付き, Excel 向け)", "Shift_JIS"]
    with page.expect_download() as info:
        page.locator("a.download-variant", has_text="Shift_JIS").click()
    data = Path(info.value.path()).read_bytes()
    assert data.decode("cp932").startswith("全国地方公共団体コード,ID,")
    assert "package_show?id=sapporo-aed" in page.locator("#api-hints").inner_text()


def _bad_csv() -> bytes:
    rows = samples.sample_rows("aed", n=2)
    rows[0]["緯度"] = "北緯43度"
    header = list(rows[0])
    lines = [",".join(header)] + [",".join(r[c] for c in header) for r in rows]
    return ("\r\n".join(lines) + "\r\n").encode("cp932")


def test_officer_logs_in_is_refused_a_bad_file_then_publishes(page: Any, portal: LiveServer,
                                                               tmp_path: Path) -> None:
    page.goto(portal.url + "/dataset/new")
    assert "ログインしてください" in page.locator("#login-hint").inner_text()
    page.click("#login-link")
    page.fill("input[name=username]", STAFF_USER)
    page.fill("input[name=password]", STAFF_PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/dataset/new$"))

    page.fill("#f-title", "Sapporo AED 2025")
    assert page.input_value("#f-name") == "sapporo-aed-2025"  # suggested from the title
    page.fill("#f-title", "札幌市 AED設置箇所一覧 2025年度")
    page.fill("#f-name", "sapporo-aed-2025")
    page.select_option("#f-conforms_to", "aed")
    assert page.locator("#f-owner_org option").all_inner_texts() == ["札幌市"]  # only its own organization
    assert page.input_value("#f-license_id") == "CC-BY-4.0"
    page.fill("#f-tags", "AED、防災")
    page.check("#f-group-bousai")
    page.set_input_files("#f-upload", files=[{"name": "aed.csv", "mimeType": "text/csv",
                                              "buffer": _bad_csv()}])
    page.click("#btn-submit")
    page.wait_for_selector("#report")
    assert page.locator("#report").get_attribute("data-ok") == "false"
    assert "公開していません" in page.locator("#form-message").inner_text()
    bad = page.locator("#report-problems tr[data-severity='error']")
    assert bad.count() >= 1
    assert "北緯43度" in bad.first.inner_text() and "緯度" in bad.first.inner_text()
    assert page.input_value("#f-title") == "札幌市 AED設置箇所一覧 2025年度"  # kept for the next try
    assert page.input_value("#f-conforms_to") == "aed"

    good = tmp_path / "aed-good.csv"
    samples.write_sample_csv(good, "aed", n=3, encoding="shift_jis")
    page.set_input_files("#f-upload", str(good))
    page.click("#btn-submit")
    page.wait_for_url(re.compile(r"/dataset/sapporo-aed-2025\?published=1"))
    assert "公開しました" in page.locator("#page-notice").inner_text()
    assert page.locator(".preview-table tbody tr").count() == 3
    assert page.locator("#edit-link").is_visible()
    page.goto(portal.url + "/dataset?q=2025年度")
    assert count(page) == 1


def test_phone_layout(phone: Any, portal: LiveServer) -> None:
    for path in ("/dataset", "/dataset/sapporo-aed", "/organization", "/group", "/dataset?lang=en"):
        phone.goto(portal.url + path)
        width = phone.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert width[0] <= width[1], f"{path} is wider than the phone: {width}"
    phone.goto(portal.url + "/dataset")
    facets = phone.locator(".od-facets-box")
    assert facets.is_visible()
    box = phone.locator("#results .od-card").first.bounding_box()
    assert box is not None and box["width"] <= 390
    phone.goto(portal.url + "/dataset/sapporo-aed")
    phone.wait_for_selector("#dataset-map[data-ready='1']")
    map_box = phone.locator("#dataset-map").bounding_box()
    assert map_box is not None and map_box["width"] <= 390 and map_box["height"] >= 200
    # the wide preview table scrolls inside its own box instead of widening the page
    scroller = phone.locator(".od-scroll").first
    assert scroller.evaluate("el => el.scrollWidth > el.clientWidth")
