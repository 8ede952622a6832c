"""The bears pages: public map and list, report and sign-up forms, the console's access and isolation."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from society5.core.auth import Principal
from society5.core.sessions import make_session
from society5.core.timeutil import iso
from society5.services.bears import tables
from society5.services.bears.sightings import sightings_of
from tests.services.bears.conftest import OTHER_TENANT, TENANT


def sighting(platform: Any, tenant: str, *, hours_ago: float = 1, **extra: Any) -> dict[str, Any]:
    state = extra.pop("state", "unverified")
    when = datetime.now(UTC) - timedelta(hours=hours_ago)
    lat, lon = (43.0236, 141.3221) if tenant == TENANT else (43.196, 141.776)
    data = {"observed_at": when.isoformat(), "lat": lat, "lon": lon, "source": "resident", **extra}
    return sightings_of(platform).create(tenant, data, state=state)


def alert_row(platform: Any, tenant: str, sighting_id: str, *, level: int = 2, expired: bool = False,
              cancelled: bool = False, headline: str = "札幌市中央区でヒグマ出没") -> None:
    now = datetime.now(UTC)
    with platform.engine.begin() as conn:
        conn.execute(tables.alerts.insert().values(
            id=f"urn:ngsi-ld:Alert:{tenant}-{sighting_id[-6:]}", tenant=tenant, sighting_id=sighting_id,
            level=level, lat=43.02, lon=141.32, radius_m=1000, issued_at=iso(now - timedelta(hours=1)),
            expires_at=iso(now + timedelta(hours=-0.5 if expired else 5)),
            cancelled_at=iso(now) if cancelled else None, recipients=12,
            info={"headline_ja": headline, "headline_en": "Bear in Chuo-ku", "place": "中央区"}))


def test_public_map_lists_recent_sightings_in_jst_with_state(bears_client, bears_platform) -> None:
    fresh = sighting(bears_platform, TENANT, hours_ago=2, area_name="円山公園")
    old = sighting(bears_platform, OTHER_TENANT, hours_ago=24 * 20, kind="trace", trace="dung", count=0)
    rejected = sighting(bears_platform, TENANT)
    sightings_of(bears_platform).set_state(TENANT, rejected["id"], "rejected", "staff")
    r = bears_client.get("/bears/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    html = r.text
    assert '<html lang="ja">' in html and "ヒグマ出没マップ" in html
    assert "script-src 'self'" in r.headers["content-security-policy"] and "<script>" not in html
    items = re.findall(r'<li class="sighting([^"]*)"[^>]*data-id="([^"]+)"', html)
    assert [i[1] for i in items] == [fresh["id"], old["id"]]  # newest first, the rejected one hidden
    assert items[0][0] == "" and "older" in items[1][0]  # older than 7 days fades
    assert "未確認" in html and "円山公園" in html and "痕跡" in html
    jst = (datetime.fromisoformat(fresh["observed_at"]) + timedelta(hours=9)).strftime("%Y-%m-%d %H")
    assert jst in html
    assert 'data-geojson="/bears/sightings.geojson?days=30"' in html
    assert 'href="/static/vendor/leaflet/leaflet.css"' in html and "地理院タイル" in html
    assert bears_client.get("/static/vendor/leaflet/leaflet.js").status_code == 200
    assert bears_client.get("/bears-static/bears.js").status_code == 200

    html = bears_client.get("/bears/", params={"days": 7, "kind": "sighting"}).text
    assert fresh["id"] in html and old["id"] not in html
    assert 'data-geojson="/bears/sightings.geojson?days=7&amp;kind=sighting"' in html
    html = bears_client.get("/bears/", params={"days": "999", "kind": "<x>", "focus": fresh["id"]}).text
    assert 'data-period-days="30"' in html and f'data-focus="{fresh["id"]}"' in html and "<x>" not in html


def test_public_map_switches_to_english_and_remembers(bears_client, bears_platform) -> None:
    sighting(bears_platform, TENANT)
    r = bears_client.get("/bears/", params={"lang": "en"})
    assert '<html lang="en">' in r.text and "Brown bear sightings" in r.text and "Unverified" in r.text
    assert r.cookies.get("s5_lang") == "en"
    assert "Report a brown bear" in bears_client.get("/bears/report").text


def test_active_alerts_show_as_a_banner(bears_client, bears_platform) -> None:
    s = sighting(bears_platform, TENANT)  # unverified: the alerts part raises nothing of its own for it
    alert_row(bears_platform, TENANT, s["id"], level=3)
    alert_row(bears_platform, OTHER_TENANT, s["id"] + "x", expired=True, headline="期限切れの警報")
    alert_row(bears_platform, TENANT, s["id"] + "y", cancelled=True, headline="取消した警報")
    html = bears_client.get("/bears/").text
    banner = html[html.index('class="bears-alerts"'):html.index("</section>")]
    assert "危険" in banner and "札幌市中央区でヒグマ出没" in banner
    assert "期限切れの警報" not in html and "取消した警報" not in html
    assert "focus=" + s["id"].replace(":", "%3A") in banner
    assert "Bear in Chuo-ku" in bears_client.get("/bears/", params={"lang": "en"}).text


def test_geojson_shows_a_new_report_at_once_despite_the_cache(bears_client) -> None:
    assert bears_client.get("/bears/sightings.geojson").json()["features"] == []
    made = bears_client.post("/bears/reports", json={"lat": 43.0236, "lon": 141.3221}).json()
    features = bears_client.get("/bears/sightings.geojson").json()["features"]
    assert [f["id"] for f in features] == [made["id"]] and features[0]["properties"]["state"] == "unverified"


def test_report_form_renders_for_phones(bears_client) -> None:
    html = bears_client.get("/bears/report").text
    assert "ヒグマ出没の通報" in html and "110番" in html
    assert re.search(r'<input id="f-photo" name="photo" type="file" accept="image/\*" capture', html)
    for field in ("lat", "lon", "kind", "count", "cubs", "behaviour", "direction", "observed_at", "contact"):
        assert f'name="{field}"' in html
    assert 'data-api="/bears/reports"' in html and 'for="f-kind"' in html
    assert '<option value="trace">痕跡</option>' in html


def test_report_form_works_without_scripts(bears_client) -> None:
    bad = {"lat": "41.0", "lon": "140.9", "kind": "sighting", "count": "1", "cubs": "0", "area_name": "青森"}
    r = bears_client.post("/bears/report", data=bad)
    assert r.status_code == 400 and "北海道の外" in r.text and 'role="alert"' in r.text
    assert 'value="青森"' in r.text  # what was typed stays
    good = {**bad, "lat": "43.0236", "lon": "141.3221"}
    r = bears_client.post("/bears/report", data=good)
    assert r.status_code == 201 and "通報を受け付けました" in r.text
    made = bears_client.get("/bears/sightings", headers={"NGSILD-Tenant": TENANT}).json()
    assert len(made) == 1 and made[0]["source"] == "resident"
    assert "focus=" + made[0]["id"].replace(":", "%3A") in r.text


def test_subscribe_page_offers_point_or_municipality(bears_client) -> None:
    html = bears_client.get("/bears/subscribe").text
    assert "ヒグマ出没情報を受け取る" in html and 'type="email"' in html
    assert f'<option value="{TENANT}">札幌市 ({TENANT})</option>' in html
    assert 'data-api="/bears/subscribe"' in html and 'name="radius_m"' in html


# -- the console, with logins --------------------------------------------------------------------------------


@pytest.fixture
def staff_app(bears_platform):  # type: ignore[no-untyped-def]
    """The bears app with authentication on; ``login(role, tenant)`` gives a client with a staff session."""
    from society5.broker.service import service as broker_service
    from society5.notify.service import service as notify_service
    from society5.services.bears.service import service as bears_service
    from society5.web.app import create_app

    bears_platform.settings = bears_platform.settings.model_copy(update={"auth": "on"})
    app = create_app(bears_platform.settings, services=[broker_service, notify_service, bears_service],
                     platform=bears_platform)
    clients: list[TestClient] = []

    def login(role: str | None, tenant: str | None = TENANT) -> TestClient:
        c = TestClient(app)
        c.__enter__()
        clients.append(c)
        if role is not None:
            cookie = make_session(Principal(role=role, tenant=tenant, name=f"{role}-user"),
                                  bears_platform.settings.effective_secret(), 1)
            c.cookies.set("s5_session", cookie)
        return c

    yield login
    for c in clients:
        c.__exit__(None, None, None)


def test_console_sends_anonymous_users_to_login(staff_app) -> None:
    r = staff_app(None).get("/bears/console", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login?next=%2Fbears%2Fconsole"


def test_console_shows_only_the_staff_members_tenant(staff_app, bears_platform) -> None:
    mine = sighting(bears_platform, TENANT, area_name="自分の市の通報", photo="img-1")
    theirs = sighting(bears_platform, OTHER_TENANT, area_name="他の市の通報")
    sighting(bears_platform, TENANT, hours_ago=0.5, area_name="近くの通報")  # with `mine`: a merge proposal
    broker = bears_platform.parts["broker"]
    broker.upsert(TENANT, [{"id": "urn:ngsi-ld:CameraTrap:011002-cam1", "type": "CameraTrap",
                            "name": "藻岩山カメラ", "status": "maintenance", "lastLabel": "other_animal",
                            "batteryLevel": 80,
                            "location": {"type": "Point", "coordinates": [141.32, 43.02]}}])
    broker.upsert(OTHER_TENANT, [{"id": "urn:ngsi-ld:CameraTrap:012106-cam9", "type": "CameraTrap",
                                  "name": "岩見沢カメラ", "status": "ok"}])
    alert_row(bears_platform, TENANT, mine["id"], headline="自分の市の警報")
    alert_row(bears_platform, OTHER_TENANT, theirs["id"], headline="他の市の警報")
    now = iso(datetime.now(UTC))
    with bears_platform.engine.begin() as conn:
        for tenant, note in ((TENANT, "自分の市の出動"), (OTHER_TENANT, "他の市の出動")):
            conn.execute(tables.dispatches.insert().values(
                id=f"d-{tenant}", tenant=tenant, sighting_id=None, image_id=None, lat=43.0, lon=141.3,
                observed_at=now, status="open", note=note, created_at=now, updated_at=now))

    client = staff_app("operator", TENANT)
    for params in ({}, {"tenant": OTHER_TENANT}):  # a staff member cannot pick another tenant
        r = client.get("/bears/console", params=params)
        assert r.status_code == 200
        html = r.text
        assert "職員コンソール" in html and "札幌市" in html
        assert "自分の市の通報" in html and "他の市の通報" not in html
        assert "藻岩山カメラ" in html and "岩見沢カメラ" not in html
        assert "点検中" in html and "その他の動物" in html  # camera status and last label in Japanese
        assert "自分の市の警報" in html and "他の市の警報" not in html
        assert "自分の市の出動" in html and "他の市の出動" not in html
        assert f'data-verify="verified" data-id="{mine["id"]}"' in html and "確認" in html and "却下" in html
        assert 'data-merge="' in html
        assert f'src="/bears/images/img-1/thumb?tenant={TENANT}"' in html

    reader = staff_app("reader", TENANT).get("/bears/console").text
    assert "自分の市の通報" in reader and "data-verify" not in reader and "data-merge" not in reader


def test_console_admin_chooses_and_others_are_refused(staff_app, bears_platform) -> None:
    sighting(bears_platform, OTHER_TENANT, area_name="岩見沢の通報")
    admin = staff_app("admin", None)
    html = admin.get("/bears/console", params={"tenant": OTHER_TENANT}).text
    assert "岩見沢の通報" in html and f'<option value="{OTHER_TENANT}" selected>' in html
    r = admin.get("/bears/console", params={"tenant": "../x"})
    assert r.status_code == 400
    r = staff_app("device", TENANT).get("/bears/console")
    assert r.status_code == 403 and "職員" in r.text and "岩見沢の通報" not in r.text
