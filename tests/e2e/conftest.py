"""Browser-test fixtures: a real uvicorn server on a loopback port over temp SQLite, and Debian's Chromium."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from society5.core.platform import Platform
from tests.conftest import make_settings

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
STAFF_USER, STAFF_PASSWORD = "staff", "staff-password-1"
SAPPORO = "011002"


def point(lon: float, lat: float) -> dict[str, Any]:
    return {"type": "Point", "coordinates": [lon, lat]}


def seed_entities() -> list[dict[str, Any]]:
    """Sapporo: three public sensors, a public road and parcel, and one private sensor (all located)."""
    ents: list[dict[str, Any]] = [
        {"id": f"urn:ngsi-ld:Device:e2e-public-{i}", "type": "Device", "scope": "/public",
         "name": f"公開センサー {i}", "location": point(141.35 + i * 0.01, 43.06 + i * 0.005),
         "temperature": {"value": -3.0 + i, "unitCode": "CEL"}}
        for i in range(1, 4)
    ]
    ents.append({"id": "urn:ngsi-ld:Device:e2e-private-1", "type": "Device", "name": "非公開センサー",
                 "location": point(141.36, 43.05), "temperature": {"value": 5.0, "unitCode": "CEL"}})
    ents.append({"id": "urn:ngsi-ld:RoadSegment:e2e-1", "type": "RoadSegment", "scope": "/public",
                 "name": "除雪路線 1",
                 "location": {"type": "LineString", "coordinates": [[141.33, 43.05], [141.35, 43.07]]}})
    ents.append({"id": "urn:ngsi-ld:AgriParcel:e2e-1", "type": "AgriParcel", "scope": "/public",
                 "name": "圃場 1",
                 "location": {"type": "Polygon", "coordinates": [[[141.40, 43.10], [141.41, 43.10],
                                                                  [141.41, 43.11], [141.40, 43.11],
                                                                  [141.40, 43.10]]]}})
    return ents


@dataclass
class LiveServer:
    url: str
    platform: Platform


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """uvicorn in a background thread on a free loopback port, with auth on and the seed data loaded."""

    from society5.broker.service import service as broker_service
    from society5.web.app import create_app
    from society5.web.service import service as web_service

    db = tmp_path_factory.mktemp("e2e") / "web.db"
    settings = make_settings(f"sqlite:///{db}", auth="on", preload_contexts=None)
    plat = Platform.open(settings)
    app = create_app(settings, services=[broker_service, web_service], platform=plat)
    plat.tenants.ensure(SAPPORO, name="札幌市", name_en="Sapporo", lat=43.06, lon=141.35)
    plat.parts["broker"].upsert(SAPPORO, seed_entities())
    plat.users.create(STAFF_USER, STAFF_PASSWORD, "operator", SAPPORO, "札幌市 職員")

    yield from serve_in_thread(app, plat)


def serve_in_thread(app: Any, plat: Platform) -> Iterator[LiveServer]:
    """Run ``app`` under uvicorn on a free loopback port in a thread; closes the platform afterwards."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name="e2e-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("the uvicorn test server did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield LiveServer(url=f"http://127.0.0.1:{port}", platform=plat)
    server.should_exit = True
    thread.join(timeout=10)
    plat.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail("browser tests need Debian's chromium: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def _offline(context: Any) -> Any:
    # GSI tiles cannot be fetched offline: fail them at once instead of waiting for a timeout.
    context.route("**/cyberjapandata.gsi.go.jp/**", lambda route: route.abort())
    context.set_default_timeout(30_000)
    return context


def _checked_page(context: Any) -> Iterator[Any]:
    """A page that fails the test afterwards if a script threw or the console showed an error (a CSP
    violation, say); failed tile loads are expected offline and ignored."""
    errors: list[str] = []
    page = context.new_page()
    page.on("pageerror", lambda err: errors.append(f"uncaught: {err}"))
    page.on("console", lambda msg: errors.append(f"console: {msg.text}")
            if msg.type == "error" and "Failed to load resource" not in msg.text else None)
    yield page
    context.close()
    assert not errors, "\n".join(errors)


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A desktop-sized page in a fresh browser context (no cookies)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="ja-JP")
    yield from _checked_page(_offline(context))


@pytest.fixture
def phone(browser: Any) -> Iterator[Any]:
    """A phone-sized page (390×844, touch) in a fresh browser context."""
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2,
                                  is_mobile=True, has_touch=True, locale="ja-JP")
    yield from _checked_page(_offline(context))
