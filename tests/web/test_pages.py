"""The web shell's pages in-process: top page, languages, entity browser and view, login, tenant isolation."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import APIRouter
from fastapi.responses import HTMLResponse
from fastapi.testclient import TestClient

from society5.core.platform import Platform
from society5.core.service import Service
from society5.core.timeutil import to_jst
from society5.web.i18n import MESSAGES, missing_keys

SAPPORO, IWAMIZAWA = "011002", "012106"
PASSWORD = "correct-horse-1"


def point(lon: float, lat: float) -> dict[str, Any]:
    return {"type": "Point", "coordinates": [lon, lat]}


SAPPORO_ENTITIES = [
    {"id": "urn:ngsi-ld:WeatherObserved:a-1", "type": "WeatherObserved", "scope": "/public",
     "name": "気象観測点 A", "location": point(141.35, 43.06),
     "temperature": {"value": -5.0, "unitCode": "CEL", "observedAt": "2025-01-10T00:30:00Z"}},
    {"id": "urn:ngsi-ld:Device:a-1", "type": "Device", "scope": "/public/sensors", "name": "センサー A1",
     "location": point(141.40, 43.10), "temperature": {"value": 3.0, "unitCode": "CEL"}},
    {"id": "urn:ngsi-ld:Device:a-secret", "type": "Device", "name": "非公開センサー A",
     "location": point(141.36, 43.05), "temperature": {"value": -1.0, "unitCode": "CEL"}},
    {"id": "urn:ngsi-ld:Alert:a-1", "type": "Alert", "name": "非公開アラート", "severity": "high"},
]
IWAMIZAWA_ENTITIES = [
    {"id": "urn:ngsi-ld:RoadSegment:b-1", "type": "RoadSegment", "scope": "/public", "name": "除雪路線 B",
     "location": {"type": "LineString", "coordinates": [[141.77, 43.19], [141.78, 43.20]]}},
    {"id": "urn:ngsi-ld:Vehicle:b-secret", "type": "Vehicle", "name": "非公開車両 B",
     "location": point(141.77, 43.2)},
]


def _bears_pages() -> APIRouter:
    router = APIRouter()

    @router.get("/bears", response_class=HTMLResponse)
    def bears() -> str:
        return "<p>bears</p>"

    return router


BEARS = Service(name="bears", title="ヒグマ出没情報", title_en="Brown bear sightings",
                description="出没情報を地図で共有します。", pages=_bears_pages())


@pytest.fixture
def site(platform: Platform) -> Iterator[TestClient]:
    """The broker, the web shell and a stand-in service with pages; auth on, two tenants, three users."""
    from society5.broker.service import service as broker_service
    from society5.web.app import create_app
    from society5.web.service import service as web_service

    platform.settings = platform.settings.model_copy(update={"auth": "on"})
    app = create_app(platform.settings, services=[broker_service, web_service, BEARS], platform=platform)
    broker = platform.parts["broker"]
    platform.tenants.ensure(SAPPORO, name="札幌市", name_en="Sapporo")
    platform.tenants.ensure(IWAMIZAWA, name="岩見沢市", name_en="Iwamizawa")
    broker.upsert(SAPPORO, SAPPORO_ENTITIES)
    broker.upsert(IWAMIZAWA, IWAMIZAWA_ENTITIES)
    platform.users.create("sapporo", PASSWORD, "operator", SAPPORO, "札幌市 職員")
    platform.users.create("iwamizawa", PASSWORD, "operator", IWAMIZAWA, "岩見沢市 職員")
    platform.users.create("admin", PASSWORD, "admin", None, "管理者")
    with TestClient(app) as client:
        yield client


def ids(html: str) -> list[str]:
    return re.findall(r'<td data-label="[^"]*" class="cell-id"><a href="[^"]*">([^<]+)</a>', html)


def features(html: str, map_id: str = "results-map") -> list[dict[str, Any]]:
    m = re.search(rf'<script type="application/json" id="{map_id}-data">(.*?)</script>', html, re.S)
    assert m, "the page has no map data"
    return json.loads(m.group(1))["features"]  # type: ignore[no-any-return]


def form_errors(html: str) -> list[str]:
    return re.findall(r'data-testid="form-error">([^<]*)<', html)


def login(client: TestClient, user: str, password: str = PASSWORD, next_url: str = "/") -> Any:
    return client.post("/login", data={"username": user, "password": password, "next": next_url},
                       follow_redirects=False)


def test_every_text_exists_in_both_languages() -> None:
    assert missing_keys() == {}
    assert MESSAGES["ja"]["site_name"] == "北海道 Society 5.0 データ連携基盤"


def test_top_page_lists_services_in_japanese(site: TestClient) -> None:
    r = site.get("/")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    html = r.text
    assert '<html lang="ja">' in html
    assert "北海道 Society 5.0 データ連携基盤" in html
    assert ">トップ<" in html and ">エンティティ<" in html and 'href="/docs"' in html and ">ログイン<" in html
    cards = re.findall(r'<li class="card" data-service="([^"]+)">', html)
    assert cards == ["broker", "bears"]  # the web shell itself is not listed
    broker_card = html.split('data-service="broker"')[1].split("</li>")[0]
    assert "データ連携基盤 (NGSI-LD)" in broker_card and "Data-linkage platform" in broker_card
    assert 'href="/entities"' in broker_card and 'href="/docs"' in broker_card
    bears_card = html.split('data-service="bears"')[1].split("</li>")[0]
    assert "ヒグマ出没情報" in bears_card and "出没情報を地図で共有します。" in bears_card
    assert 'href="/bears"' in bears_card
    # Two tenants; anonymous callers see the public types only (WeatherObserved, Device, RoadSegment).
    assert "テナント（市町村など）2 件 ・ あなたが見られるエンティティ型 3 種類" in html
    assert "Content-Security-Policy" in r.headers


def test_stats_count_the_types_the_caller_may_see(site: TestClient) -> None:
    login(site, "sapporo")
    assert "エンティティ型 4 種類" in site.get("/").text  # + Sapporo's private Alert
    login(site, "admin")
    assert "エンティティ型 5 種類" in site.get("/").text  # + Iwamizawa's private Vehicle


def test_lang_parameter_switches_to_english_and_is_remembered(site: TestClient) -> None:
    r = site.get("/?lang=en")
    assert r.status_code == 200
    assert '<html lang="en">' in r.text
    assert "Hokkaido Society 5.0 Data Platform" in r.text and ">Log in<" in r.text
    assert "Browse entities" in r.text and "Brown bear sightings" in r.text
    assert "2 tenants (municipalities and others)" in r.text
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("s5_lang=en") and "samesite=lax" in cookie.lower()
    r = site.get("/entities")
    assert '<html lang="en">' in r.text and "<h1>Entities</h1>" in r.text
    assert '<html lang="ja">' in site.get("/?lang=ja").text
    assert '<html lang="ja">' in site.get("/entities").text
    r = site.get("/?lang=fr")  # unknown: the remembered language, no new cookie
    assert '<html lang="ja">' in r.text and "set-cookie" not in r.headers


def test_browser_lists_tenants_and_types(site: TestClient) -> None:
    html = site.get(f"/entities?tenant={SAPPORO}").text
    tenants = re.findall(r'<option value="([^"]*)"[^>]*>([^<]*)</option>', html.split('id="f-tenant"')[1]
                         .split("</select>")[0])
    assert tenants == [("default", "default 既定テナント"), (SAPPORO, "011002 札幌市"),
                       (IWAMIZAWA, "012106 岩見沢市")]
    assert f'<option value="{SAPPORO}" selected>' in html
    types = re.findall(r'<option value="([^"]*)"', html.split('id="f-type"')[1].split("</select>")[0])
    assert types == ["", "Device", "WeatherObserved"]  # anonymous: public types of this tenant only
    assert 'placeholder="例: temperature&lt;0"' in html


def test_browser_finds_entities_by_type(site: TestClient, platform: Platform) -> None:
    r = site.get(f"/entities?tenant={SAPPORO}&type=WeatherObserved")
    assert r.status_code == 200
    assert ids(r.text) == ["urn:ngsi-ld:WeatherObserved:a-1"]
    assert "気象観測点 A" in r.text
    modified = platform.parts["broker"].retrieve(SAPPORO, "urn:ngsi-ld:WeatherObserved:a-1")["modifiedAt"]
    assert f'class="nowrap">{to_jst(modified)}</td>' in r.text
    feats = features(r.text)
    assert [f["geometry"] for f in feats] == [point(141.35, 43.06)]
    view = f"/entities/view?id=urn%3Angsi-ld%3AWeatherObserved%3Aa-1&tenant={SAPPORO}"
    assert feats[0]["properties"]["url"] == view
    # The map is configured with the GSI standard tiles and their attribution.
    assert 'data-tiles="https://cyberjapandata.gsi.go.jp/xyz/std/{z}/{x}/{y}.png"' in r.text
    assert "地理院タイル" in r.text and "/static/vendor/leaflet/leaflet.js" in r.text


def test_browser_filters_with_q(site: TestClient) -> None:
    r = site.get("/entities", params={"tenant": SAPPORO, "q": "temperature<0"})
    assert r.status_code == 200
    assert ids(r.text) == ["urn:ngsi-ld:WeatherObserved:a-1"]  # the cold private sensor stays hidden
    r = site.get("/entities", params={"tenant": SAPPORO, "q": "temperature>=0", "type": "Device"})
    assert ids(r.text) == ["urn:ngsi-ld:Device:a-1"]
    r = site.get("/entities", params={"tenant": SAPPORO, "q": "temperature>100"})
    assert r.status_code == 200 and ids(r.text) == [] and "条件に合うエンティティはありません。" in r.text


def test_browser_searches_a_map_area(site: TestClient) -> None:
    r = site.get("/entities", params={"tenant": SAPPORO, "bbox": "141.3,43.0,141.37,43.08"})
    assert r.status_code == 200
    assert ids(r.text) == ["urn:ngsi-ld:WeatherObserved:a-1"]
    assert 'data-bbox="141.3,43.0,141.37,43.08"' in r.text and 'id="clear-area"' in r.text
    # The road lies half outside this box: "within" leaves it out.
    r = site.get("/entities", params={"tenant": IWAMIZAWA, "bbox": "141.7,43.1,141.775,43.3"})
    assert ids(r.text) == []
    r = site.get("/entities", params={"tenant": IWAMIZAWA, "bbox": "141.7,43.1,141.8,43.3"})
    assert ids(r.text) == ["urn:ngsi-ld:RoadSegment:b-1"]


def test_browser_pages_through_results(site: TestClient) -> None:
    first = site.get(f"/entities?tenant={SAPPORO}&limit=1")
    second = site.get(f"/entities?tenant={SAPPORO}&limit=1&page=2")
    assert ids(first.text) == ["urn:ngsi-ld:Device:a-1"]
    assert ids(second.text) == ["urn:ngsi-ld:WeatherObserved:a-1"]
    assert "2 件中 1–1 件を表示" in first.text and "1 / 2 ページ" in first.text
    assert 'rel="next"' in first.text and 'rel="prev"' not in first.text
    assert 'href="/entities?tenant=011002&amp;limit=1&amp;page=1" rel="prev"' in second.text


@pytest.mark.parametrize(
    ("params", "status", "message"),
    [
        ({"q": "temperature<<"}, 400, "条件 (q) が正しくありません"),
        ({"q": "(temperature<0"}, 400, "条件 (q) が正しくありません"),
        ({"type": "(Device"}, 400, "型の指定が正しくありません"),
        ({"bbox": "141,43,142"}, 400, "地図の範囲が正しくありません"),
        ({"bbox": "142,43,141,44"}, 400, "地図の範囲が正しくありません"),
        ({"bbox": "141,43,142,95"}, 400, "地図の範囲が正しくありません"),
        ({"limit": "0"}, 400, "件数は 1〜200 の整数"),
        ({"limit": "many"}, 400, "件数は 1〜200 の整数"),
        ({"page": "-1"}, 400, "ページ番号は 1 以上"),
        ({"tenant": "999999"}, 404, "テナントを確認してください"),
        ({"tenant": "bad tenant!"}, 400, "テナントを確認してください"),
    ],
)
def test_bad_input_is_shown_in_the_form(site: TestClient, params: dict[str, str], status: int,
                                        message: str) -> None:
    r = site.get("/entities", params={"tenant": SAPPORO, **params})
    assert r.status_code == status
    assert r.headers["content-type"].startswith("text/html")
    errors = form_errors(r.text)
    assert len(errors) == 1 and message in errors[0]
    assert ids(r.text) == []
    if "q" in params:  # the form keeps what was typed, so it can be fixed
        assert f'value="{params["q"].replace("<", "&lt;")}"' in r.text


def test_bad_q_error_in_english(site: TestClient) -> None:
    r = site.get("/entities", params={"tenant": SAPPORO, "q": "temperature<<", "lang": "en"})
    assert r.status_code == 400
    assert form_errors(r.text)[0].startswith("The condition (q) is not valid:")


def test_entity_view_shows_all_attributes(site: TestClient) -> None:
    r = site.get("/entities/view", params={"id": "urn:ngsi-ld:WeatherObserved:a-1", "tenant": SAPPORO})
    assert r.status_code == 200
    html = r.text
    assert "<h1 class=\"entity-title\">気象観測点 A</h1>" in html
    for name in ("name", "location", "temperature"):
        assert f'<th scope="row">{name}</th>' in html
    assert "-5.0" in html and "CEL" in html and "観測 2025-01-10 09:30" in html  # observedAt in JST
    assert "<details class=\"normalized\">" in html and "&#34;type&#34;: &#34;GeoProperty&#34;" in html
    assert [f["geometry"] for f in features(html, "entity-map")] == [point(141.35, 43.06)]


@pytest.mark.parametrize(
    ("params", "status", "message"),
    [
        ({}, 400, "id を指定してください"),
        ({"id": "not a uri"}, 400, "not a valid URI"),
        ({"id": "urn:ngsi-ld:Device:nope"}, 404, "エンティティ urn:ngsi-ld:Device:nope は見つかりません"),
        ({"id": "urn:ngsi-ld:Device:a-1", "tenant": "999999"}, 404, "テナントを確認してください"),
    ],
)
def test_entity_view_bad_input(site: TestClient, params: dict[str, str], status: int, message: str) -> None:
    r = site.get("/entities/view", params={"tenant": SAPPORO, **params})
    assert r.status_code == status
    assert r.headers["content-type"].startswith("text/html") and message in r.text


def test_private_entity_is_visible_only_after_login(site: TestClient) -> None:
    secret = "urn:ngsi-ld:Device:a-secret"
    r = site.get(f"/entities?tenant={SAPPORO}&type=Device")
    assert ids(r.text) == ["urn:ngsi-ld:Device:a-1"]
    assert "ログインしていないため、公開データ" in r.text
    assert site.get("/entities/view", params={"id": secret, "tenant": SAPPORO}).status_code == 404

    r = login(site, "sapporo", next_url=f"/entities?tenant={SAPPORO}&type=Device")
    assert r.status_code == 303
    assert r.headers["location"] == f"/entities?tenant={SAPPORO}&type=Device"
    cookie = r.headers["set-cookie"].lower()
    assert cookie.startswith("s5_session=") and "httponly" in cookie and "samesite=lax" in cookie

    r = site.get(f"/entities?tenant={SAPPORO}&type=Device")
    assert ids(r.text) == ["urn:ngsi-ld:Device:a-1", secret]
    assert len(features(r.text)) == 2
    assert '<span class="nav-user"' in r.text and "札幌市 職員" in r.text and ">ログアウト<" in r.text
    assert "ログインしていないため" not in r.text
    view = site.get("/entities/view", params={"id": secret, "tenant": SAPPORO})
    assert view.status_code == 200 and "非公開センサー A" in view.text
    # Without a tenant the browser opens the user's own tenant.
    assert secret in ids(site.get("/entities?type=Device").text)

    r = site.post("/logout", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/"
    assert 's5_session=""' in r.headers["set-cookie"] or "max-age=0" in r.headers["set-cookie"].lower()
    assert ids(site.get(f"/entities?tenant={SAPPORO}&type=Device").text) == ["urn:ngsi-ld:Device:a-1"]


def test_logout_by_get_also_clears_the_session(site: TestClient) -> None:
    login(site, "sapporo")
    assert "札幌市 職員" in site.get("/").text
    assert site.get("/logout", follow_redirects=False).status_code == 303
    assert "札幌市 職員" not in site.get("/").text


def test_wrong_password_is_401_with_the_form_again(site: TestClient) -> None:
    r = login(site, "sapporo", password="wrong-password")
    assert r.status_code == 401
    assert "ユーザー名またはパスワードが正しくありません。" in r.text
    assert 'name="username" autocomplete="username" required value="sapporo"' in r.text
    assert "s5_session" not in r.headers.get("set-cookie", "")
    assert login(site, "nobody").status_code == 401
    r = site.post("/login", data={"username": "sapporo"})
    assert r.status_code == 400 and "ユーザー名とパスワードを入力してください。" in r.text
    r = site.post("/login", content=b"\xff\xfe", headers={"content-type": "application/json"})
    assert r.status_code == 400


def test_login_never_redirects_to_another_site(site: TestClient) -> None:
    for target in ("//evil.example/", "https://evil.example/", "\\\\evil.example", "javascript:alert(1)"):
        r = login(site, "sapporo", next_url=target)
        assert r.status_code == 303 and r.headers["location"] == "/"


def test_an_operator_does_not_see_another_tenants_private_entities(site: TestClient) -> None:
    login(site, "iwamizawa")
    r = site.get(f"/entities?tenant={SAPPORO}")
    assert ids(r.text) == ["urn:ngsi-ld:Device:a-1", "urn:ngsi-ld:WeatherObserved:a-1"]
    assert "ログインしていないため" not in r.text and "非公開データを見る権限がないため" in r.text
    types = re.findall(r'<option value="([^"]*)"', r.text.split('id="f-type"')[1].split("</select>")[0])
    assert "Alert" not in types
    for secret in ("urn:ngsi-ld:Device:a-secret", "urn:ngsi-ld:Alert:a-1"):
        assert site.get("/entities/view", params={"id": secret, "tenant": SAPPORO}).status_code == 404
    own = site.get(f"/entities?tenant={IWAMIZAWA}")
    assert ids(own.text) == ["urn:ngsi-ld:RoadSegment:b-1", "urn:ngsi-ld:Vehicle:b-secret"]


def test_a_forged_session_cookie_is_anonymous(site: TestClient) -> None:
    site.cookies.set("s5_session", "eyJyIjoiYWRtaW4ifQ.forged")
    r = site.get(f"/entities?tenant={SAPPORO}&type=Device")
    assert r.status_code == 200 and ids(r.text) == ["urn:ngsi-ld:Device:a-1"]


def test_text_from_entities_is_escaped(site: TestClient, platform: Platform) -> None:
    evil = "</script><img src=x onerror=alert(1)>"
    platform.parts["broker"].upsert(SAPPORO, [{"id": "urn:ngsi-ld:Device:evil", "type": "Device",
                                               "scope": "/public", "name": evil,
                                               "location": point(141.3, 43.0)}])
    for r in (site.get(f"/entities?tenant={SAPPORO}&type=Device"),
              site.get("/entities/view", params={"id": "urn:ngsi-ld:Device:evil", "tenant": SAPPORO})):
        assert r.status_code == 200
        assert evil not in r.text and "<img src=x" not in r.text
    page = site.get(f"/entities?tenant={SAPPORO}&type=Device").text
    names = [f["properties"]["name"] for f in features(page)]
    assert evil in names  # intact as data, escaped as markup


def test_static_files_and_leaflet_are_served(site: TestClient) -> None:
    for path, kind in (("/static/web.css", "text/css"), ("/static/web.js", "javascript"),
                       ("/static/vendor/leaflet/leaflet.js", "javascript"),
                       ("/static/vendor/leaflet/leaflet.css", "text/css"),
                       ("/static/vendor/leaflet/images/marker-icon.png", "image/png")):
        r = site.get(path)
        assert r.status_code == 200, path
        assert kind in r.headers["content-type"], path
    assert site.get("/static/vendor/leaflet/../../../pages.py").status_code == 404
    assert site.get("/static/nope.css").status_code == 404
