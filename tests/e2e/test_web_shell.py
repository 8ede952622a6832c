"""The web shell in real headless Chromium: languages, entity search with the GSI map, login, phone layout."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.e2e.conftest import SAPPORO, STAFF_PASSWORD, STAFF_USER, LiveServer

pytestmark = pytest.mark.browser

GSI = "https://cyberjapandata.gsi.go.jp/xyz/std/{z}/{x}/{y}.png"


def wait_map(page: Any, selector: str = "#results-map") -> None:
    page.wait_for_selector(f"{selector}[data-ready='1']")


def row_ids(page: Any) -> list[str]:
    return page.locator("#results tbody td.cell-id").all_inner_texts()


def test_top_page_is_japanese_and_switches_to_english(page: Any, live_server: LiveServer) -> None:
    response = page.goto(live_server.url + "/")
    assert response.status == 200
    assert page.locator("html").get_attribute("lang") == "ja"
    assert page.locator("header .brand").inner_text() == "北海道 Society 5.0 データ連携基盤"
    nav = page.locator("nav.site-nav").inner_text().split()
    assert nav == ["トップ", "エンティティ", "API", "docs", "ログイン"]
    broker_card = page.locator("li.card[data-service='broker']")
    assert "データ連携基盤 (NGSI-LD)" in broker_card.inner_text()
    assert broker_card.locator("a[href='/entities']").is_visible()
    assert broker_card.locator("a[href='/docs']").is_visible()

    page.click("text=English")
    page.wait_for_url(re.compile(r"lang=en"))
    assert page.locator("html").get_attribute("lang") == "en"
    assert page.locator("header .brand").inner_text() == "Hokkaido Society 5.0 Data Platform"
    assert "Browse entities" in broker_card.inner_text()
    # The choice sticks (cookie s5_lang) on pages opened without ?lang.
    page.goto(live_server.url + "/entities")
    assert page.locator("h1").inner_text() == "Entities"
    assert {c["name"]: c["value"] for c in page.context.cookies()}["s5_lang"] == "en"


def test_search_by_type_draws_markers_on_the_gsi_map(page: Any, live_server: LiveServer) -> None:
    page.goto(live_server.url + "/entities")
    page.select_option("#f-tenant", SAPPORO)  # submits the form, so the type list is this tenant's
    page.wait_for_url(re.compile(f"tenant={SAPPORO}"))
    page.select_option("#f-type", "Device")
    page.click("#btn-search")
    page.wait_for_url(re.compile("type=Device"))
    wait_map(page)
    ids = row_ids(page)
    assert sorted(ids) == [f"urn:ngsi-ld:Device:e2e-public-{i}" for i in (1, 2, 3)]
    assert page.locator("#results-map .leaflet-marker-icon").count() == 3
    assert page.locator("#results-map").get_attribute("data-tiles") == GSI
    tiles = page.locator("#results-map .leaflet-tile-pane img")
    assert tiles.count() > 0
    assert tiles.first.get_attribute("src").startswith("https://cyberjapandata.gsi.go.jp/xyz/std/")
    assert "地理院タイル" in page.locator("#results-map .leaflet-control-attribution").inner_text()

    # All types: points are markers, the road and the parcel are vector paths.
    page.select_option("#f-type", "")
    page.click("#btn-search")
    page.wait_for_url(re.compile("type=&"))
    wait_map(page)
    assert len(row_ids(page)) == 5
    assert page.locator("#results-map .leaflet-marker-icon").count() == 3
    assert page.locator("#results-map .leaflet-overlay-pane path").count() == 2


def test_search_this_map_area_and_open_an_entity(page: Any, live_server: LiveServer) -> None:
    page.goto(f"{live_server.url}/entities?tenant={SAPPORO}")
    wait_map(page)
    assert len(row_ids(page)) == 5
    # Look only at the parcel's corner of the map, then ask for what lies within the view.
    page.evaluate("document.getElementById('results-map').s5map"
                  ".fitBounds([[43.095, 141.395], [43.115, 141.415]])")
    page.click("#btn-area")
    page.wait_for_url(re.compile("bbox="))
    wait_map(page)
    assert row_ids(page) == ["urn:ngsi-ld:AgriParcel:e2e-1"]
    assert page.locator("#clear-area").is_visible()

    page.click("text=urn:ngsi-ld:AgriParcel:e2e-1")
    page.wait_for_url(re.compile(r"/entities/view\?"))
    wait_map(page, "#entity-map")
    assert page.locator("h1").inner_text() == "圃場 1"
    assert "AgriParcel" in page.locator("dl.meta").inner_text()
    assert page.locator("#entity-map .leaflet-overlay-pane path").count() == 1
    assert not page.locator("#normalized").is_visible()
    page.click("details.normalized summary")
    assert '"type": "GeoProperty"' in page.locator("#normalized").inner_text()


def test_bad_q_shows_the_error_in_the_form(page: Any, live_server: LiveServer) -> None:
    page.goto(f"{live_server.url}/entities?tenant={SAPPORO}")
    page.fill("#f-q", "temperature<<")
    with page.expect_navigation() as nav:
        page.click("#btn-search")
    assert nav.value.status == 400
    assert "条件 (q) が正しくありません" in page.locator("[data-testid=form-error]").inner_text()
    assert page.locator("#f-q").input_value() == "temperature<<"


def test_login_through_the_form_shows_private_entities(page: Any, live_server: LiveServer) -> None:
    page.goto(f"{live_server.url}/entities?tenant={SAPPORO}&type=Device")
    assert "urn:ngsi-ld:Device:e2e-private-1" not in row_ids(page)
    page.click("nav.site-nav >> text=ログイン")
    page.fill("input[name=username]", STAFF_USER)
    page.fill("input[name=password]", "wrong-password")
    with page.expect_navigation() as nav:
        page.click("form.stack button[type=submit]")
    assert nav.value.status == 401
    assert page.locator("#login-error").inner_text() == "ユーザー名またはパスワードが正しくありません。"

    page.fill("input[name=password]", STAFF_PASSWORD)
    page.click("form.stack button[type=submit]")
    page.wait_for_url(re.compile(r"/entities\?tenant=011002&type=Device"))  # back where the login started
    wait_map(page)
    assert "urn:ngsi-ld:Device:e2e-private-1" in row_ids(page)
    assert "非公開センサー" in page.locator("#results").inner_text()
    assert page.locator("#results-map .leaflet-marker-icon").count() == 4
    assert page.locator(".nav-user").inner_text() == "札幌市 職員"
    session = next(c for c in page.context.cookies() if c["name"] == "s5_session")
    assert session["httpOnly"] and session["sameSite"] == "Lax"

    page.click("nav.site-nav >> text=ログアウト")
    page.wait_for_url(live_server.url + "/")
    page.goto(f"{live_server.url}/entities?tenant={SAPPORO}&type=Device")
    assert "urn:ngsi-ld:Device:e2e-private-1" not in row_ids(page)


def test_phone_layout_has_no_horizontal_overflow(phone: Any, live_server: LiveServer) -> None:
    view = f"/entities/view?tenant={SAPPORO}&id=urn:ngsi-ld:Device:e2e-public-1"
    for path in ("/", f"/entities?tenant={SAPPORO}", view, "/login", "/?lang=en"):
        phone.goto(live_server.url + path)
        width = phone.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert width[0] <= width[1], f"{path}: page is {width[0]} px wide in a {width[1]} px viewport"
    phone.goto(f"{live_server.url}/entities?tenant={SAPPORO}")
    wait_map(phone)
    box = phone.locator("#results-map").bounding_box()
    assert box["width"] <= 390 and box["height"] >= 250
    assert phone.locator("#btn-area").is_visible()
