"""The bears pages in headless Chromium: the public map's markers, a resident's report filed on a phone."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from society5.core.platform import Platform
from tests.conftest import make_settings
from tests.e2e.conftest import SAPPORO, LiveServer, serve_in_thread

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def bears_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The shell, the broker and the bears service over temp SQLite, with one verified sighting in Sapporo."""
    from society5.broker.service import service as broker_service
    from society5.services.bears.service import service as bears_service
    from society5.services.bears.sightings import sightings_of
    from society5.web.app import create_app
    from society5.web.service import service as web_service

    db = tmp_path_factory.mktemp("e2e-bears") / "bears.db"
    settings = make_settings(f"sqlite:///{db}", auth="on", preload_contexts=None,
                             bears_dir=str(tmp_path_factory.mktemp("bears-files")))
    plat = Platform.open(settings)
    app = create_app(settings, services=[broker_service, web_service, bears_service], platform=plat)
    plat.tenants.ensure(SAPPORO, name="札幌市", name_en="Sapporo", lat=43.06, lon=141.35)
    when = datetime.now(UTC) - timedelta(hours=3)
    sightings_of(plat).create(SAPPORO, {"observed_at": when.isoformat(), "lat": 43.0236, "lon": 141.3221,
                                        "source": "staff", "area_name": "円山公園"}, state="verified")
    yield from serve_in_thread(app, plat)


def test_public_map_draws_the_sighting(page: Any, bears_server: LiveServer) -> None:
    response = page.goto(bears_server.url + "/bears/")
    assert response.status == 200
    page.wait_for_selector("#bears-map[data-ready='1']")
    assert page.locator("#bears-map path.bear-marker").count() == 1
    assert "地理院タイル" in page.locator("#bears-map .leaflet-control-attribution").inner_text()
    item = page.locator("#sighting-list li.sighting").first
    assert "確認済" in item.inner_text() and "円山公園" in item.inner_text()
    page.locator("#bears-map path.bear-marker").click()
    assert "目撃" in page.locator(".leaflet-popup-content").inner_text()


def test_a_resident_reports_from_a_phone_and_sees_it_unverified(phone: Any, bears_server: LiveServer) -> None:
    phone.goto(bears_server.url + "/bears/report")
    phone.wait_for_selector("#report-map[data-ready='1']")
    box = phone.locator("#report-map").bounding_box()
    # The map opens on Sapporo's centre: a tap there marks a place on land in Sapporo.
    phone.touchscreen.tap(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    phone.wait_for_selector("#report-map[data-picked='1']")
    lat, lon = float(phone.input_value("#f-lat")), float(phone.input_value("#f-lon"))
    assert abs(lat - 43.06) < 0.05 and abs(lon - 141.35) < 0.05
    assert phone.locator("#report-map .leaflet-marker-icon").count() == 1
    phone.select_option("#f-kind", "sighting")
    phone.fill("#f-count", "2")
    phone.fill("#f-cubs", "1")
    phone.select_option("#f-behaviour", "passing")
    phone.fill("#f-area", "テスト公園の北")
    assert phone.locator("#f-photo").get_attribute("accept") == "image/*"
    phone.locator("#btn-send").tap()
    phone.wait_for_selector("#report-done:not([hidden])")
    assert "通報を受け付けました" in phone.locator("#report-done").inner_text()
    assert phone.locator("#report-form").is_hidden()

    phone.locator("#done-map").tap()
    phone.wait_for_url(re.compile(r"/bears/\?focus="))
    phone.wait_for_selector("#bears-map[data-ready='1']")
    assert phone.locator("#bears-map path.bear-marker").count() == 2
    mine = phone.locator("#sighting-list li.sighting.focused")
    assert mine.count() == 1
    text = mine.inner_text()
    assert "未確認" in text and "テスト公園の北" in text and "2頭" in text
    assert phone.locator(".leaflet-popup-content").inner_text().startswith("目撃 · 未確認")
    # A phone-sized page does not scroll sideways.
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390


def test_a_report_at_sea_shows_the_reason_in_japanese(phone: Any, bears_server: LiveServer) -> None:
    phone.goto(bears_server.url + "/bears/report")
    phone.wait_for_selector("#report-map[data-ready='1']")
    phone.fill("#f-lat", "43.2")
    phone.fill("#f-lon", "140.3")
    phone.locator("#btn-send").tap()
    error = phone.locator("#report-error")
    error.wait_for(state="visible")
    assert "海上" in error.inner_text()
    assert phone.locator("#report-form").is_visible()
