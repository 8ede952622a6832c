"""The MQTT bridge's admin API and admin page: dead letters and bridge state, for admins only."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from society5.broker.mqtt_store import Incoming, MqttWriter
from society5.core.platform import Platform

PASSWORD = "correct-horse-1"
URL = "/admin/mqtt/dead-letters"


@pytest.fixture
def site(platform: Platform) -> Iterator[TestClient]:
    from society5.broker.service import service as broker_service
    from society5.web.app import create_app
    from society5.web.service import service as web_service

    platform.settings = platform.settings.model_copy(update={"auth": "on"})
    app = create_app(platform.settings, services=[broker_service, web_service], platform=platform)
    platform.tenants.ensure("011002", name="札幌市")
    writer = MqttWriter(platform.parts["broker"])
    writer.write([
        Incoming("society5/default/Device/urn:ngsi-ld:Device:a/attrs", b"{oops"),
        Incoming("society5/011002/Device/urn:ngsi-ld:Device:b/location", b'"<script>alert(1)</script>"'),
        Incoming("society5/default/Device/urn:ngsi-ld:Device:c/temperature", b"1"),  # fine: stored
    ])
    platform.users.create("admin", PASSWORD, "admin", None, "管理者")
    platform.users.create("sapporo", PASSWORD, "operator", "011002", "札幌市 職員")
    with TestClient(app) as client:
        yield client


def key(platform: Platform, role: str, tenant: str | None = None) -> dict[str, str]:
    new = platform.keys.create(role, tenant=tenant, entity_prefix="urn:" if role == "device" else None)
    return {"Authorization": f"Bearer {new.key}"}


def login(client: TestClient, user: str) -> None:
    got = client.post("/login", data={"username": user, "password": PASSWORD, "next": "/"},
                      follow_redirects=False)
    assert got.status_code == 303


def test_the_api_needs_an_admin(site: TestClient, platform: Platform) -> None:
    assert site.get(URL).status_code == 401
    for role, tenant in (("operator", "011002"), ("reader", "011002"), ("device", "011002")):
        got = site.get(URL, headers=key(platform, role, tenant))
        assert got.status_code == 403, role
        assert got.json()["error"]["code"]
    got = site.get(URL, headers=key(platform, "admin"))
    assert got.status_code == 200
    body = got.json()
    assert body["total"] == 2
    newest, oldest = body["deadLetters"]
    assert oldest["payload"] == "{oops" and "not JSON" in oldest["error"] and oldest["tenant"] == "default"
    assert newest["tenant"] == "011002" and "location" in newest["error"]
    assert body["bridge"] == {"running": False, "configured": False}


def test_the_api_filters_and_pages(site: TestClient, platform: Platform) -> None:
    admin = key(platform, "admin")
    only = site.get(URL, params={"tenant": "011002"}, headers=admin).json()
    assert only["total"] == 1 and only["deadLetters"][0]["tenant"] == "011002"
    page = site.get(URL, params={"limit": 1, "offset": 1}, headers=admin).json()
    assert page["total"] == 2 and [d["payload"] for d in page["deadLetters"]] == ["{oops"]
    assert site.get(URL, params={"limit": 0}, headers=admin).status_code == 400
    huge = site.get(URL, params={"offset": 2**63}, headers=admin)  # beyond SQLite's integers: 4xx
    assert huge.status_code == 400 and "offset" in huge.text


def test_the_admin_page_in_japanese_and_english(site: TestClient) -> None:
    assert site.get("/admin/mqtt").status_code == 401
    login(site, "sapporo")
    denied = site.get("/admin/mqtt")
    assert denied.status_code == 403 and "管理者" in denied.text
    login(site, "admin")
    page = site.get("/admin/mqtt")
    assert page.status_code == 200
    assert "取り込めなかったメッセージ" in page.text and "MQTT ブローカーが設定されていません" in page.text
    assert 'data-total="2"' in page.text and "{oops" in page.text
    assert "<script>alert(1)</script>" not in page.text  # payloads are text, never markup
    english = site.get("/admin/mqtt?lang=en")
    assert "Messages that could not be stored" in english.text and "Reason" in english.text
