"""Alerts and subscriptions over HTTP: staff CRUD, public double opt-in, public alerts, tenant isolation."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from xml.etree import ElementTree as ET

import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient

from society5.core.service import Service
from society5.services.bears import alerts, api, api_alerts, cap
from tests.notify.conftest import _start_smtp, mail_settings, poll
from tests.services.bears.conftest import OTHER_TENANT, TENANT

SPOT = (43.0236, 141.3221)


class Clients:
    def __init__(self, client: TestClient, platform: Any) -> None:
        keys = platform.keys
        self.http, self.platform = client, platform
        self.op = {
            "Authorization": f"Bearer {keys.create('operator', tenant=TENANT).key}",
            "NGSILD-Tenant": TENANT,
        }
        self.reader = {
            "Authorization": f"Bearer {keys.create('reader', tenant=TENANT).key}",
            "NGSILD-Tenant": TENANT,
        }
        self.other = {
            "Authorization": f"Bearer {keys.create('operator', tenant=OTHER_TENANT).key}",
            "NGSILD-Tenant": OTHER_TENANT,
        }


@pytest.fixture
def web(bears_platform) -> Iterator[Clients]:  # type: ignore[no-untyped-def]
    """The sightings and alerts routers of the bears service, with auth on and a real SMTP server."""
    from society5.broker.service import service as broker_service
    from society5.notify.service import service as notify_service
    from society5.web.app import create_app

    controller, smtp = _start_smtp(None)
    p = bears_platform
    p.settings = p.settings.model_copy(
        update={"auth": "on", "base_url": "https://bears.example.jp", **mail_settings(smtp)}
    )
    router = APIRouter()
    router.include_router(api.router)
    router.include_router(api_alerts.router)
    bears = Service(name="bears", title="ヒグマ", router=router)
    app = create_app(p.settings, services=[broker_service, notify_service, bears], platform=p)
    with TestClient(app) as c:
        clients = Clients(c, p)
        clients.smtp = smtp  # type: ignore[attr-defined]
        yield clients
    controller.stop()


def circle(**extra: Any) -> dict[str, Any]:
    return {"lat": SPOT[0], "lon": SPOT[1], "radius_m": 500, **extra}


def test_staff_crud_and_tenant_isolation(web: Clients) -> None:
    h = web.http
    r = h.post(
        "/bears/subscriptions",
        json=circle(
            channel="webhook", address="https://school.example.jp/hook", kind="school", area_name="藻岩小学校"
        ),
        headers=web.op,
    )
    assert r.status_code == 201, r.text
    sub = r.json()
    assert sub["confirmed"] and sub["active"] and sub["kind"] == "school" and "token" not in sub
    again = h.post(
        "/bears/subscriptions",
        json={"municipality": TENANT, "channel": "webhook", "address": "https://school.example.jp/hook"},
        headers=web.op,
    )
    assert again.json()["recipient_id"] == sub["recipient_id"]  # the same address reuses its recipient
    recipient = h.get(f"/notify/recipients/{sub['recipient_id']}", headers=web.op).json()
    assert recipient["tags"] == ["bears"] and recipient["channels"] == {
        "webhook": "https://school.example.jp/hook"
    }

    assert len(h.get("/bears/subscriptions", headers=web.reader).json()) == 2
    assert h.get("/bears/subscriptions", headers=web.other).json() == []
    assert h.get(f"/bears/subscriptions/{sub['id']}", headers=web.other).status_code == 404
    assert h.get("/bears/subscriptions", headers={"NGSILD-Tenant": TENANT}).status_code == 401
    assert h.get("/bears/subscriptions", headers={**web.other, "NGSILD-Tenant": TENANT}).status_code == 403
    assert (
        h.post(
            "/bears/subscriptions", json=circle(channel="mail", address="a@example.jp"), headers=web.reader
        ).status_code
        == 403
    )

    r = h.patch(f"/bears/subscriptions/{sub['id']}", json={"min_level": 2, "radius_m": 800}, headers=web.op)
    assert r.status_code == 200 and r.json()["min_level"] == 2 and r.json()["radius_m"] == 800
    assert h.delete(f"/bears/subscriptions/{sub['id']}", headers=web.other).status_code == 404
    assert h.delete(f"/bears/subscriptions/{sub['id']}", headers=web.op).status_code == 204
    assert len(h.get("/bears/subscriptions", headers=web.op).json()) == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (circle(channel="mail", address="not-an-address"), "address"),
        (circle(channel="line", address="Uabc"), "address"),
        ({"lat": SPOT[0], "lon": SPOT[1], "channel": "mail", "address": "a@example.jp"}, "radius_m"),
        (circle(radius_m=10, channel="mail", address="a@example.jp"), "radius_m"),
        (circle(lat=35.68, lon=139.76, channel="mail", address="a@example.jp"), "lat/lon"),
        ({"municipality": "131016", "channel": "mail", "address": "a@example.jp"}, "municipality"),
        (circle(municipality=TENANT, channel="mail", address="a@example.jp"), "municipality"),
        (circle(), "channel"),
        (circle(channel="mail", address="a@example.jp", min_level=4), "min_level"),
        (circle(channel="fax", address="011-000-0000"), "channel"),
    ],
)
def test_bad_subscriptions_name_the_field_and_store_nothing(web: Clients, body: dict, field: str) -> None:
    r = web.http.post("/bears/subscriptions", json=body, headers=web.op)
    assert r.status_code in (400, 422), r.text
    assert field in r.text
    assert web.http.get("/bears/subscriptions", headers=web.op).json() == []
    assert web.http.get("/notify/recipients", headers=web.op).json() == []


def _mailed_link(web: Clients, path: str, seen: int) -> str:
    """The link to ``path`` in the newest mail, once more than ``seen`` mails arrived (the app's own outbox
    dispatcher may be the one delivering)."""
    box = web.smtp.box  # type: ignore[attr-defined]

    def arrived() -> bool:
        web.platform.outbox.deliver_due()
        return len(box.messages) > seen

    poll(arrived)
    text = box.messages[-1][2].get_body(preferencelist=("plain",)).get_content()
    found = re.search(r"https://bears\.example\.jp(" + re.escape(path) + r"\?token=[\w-]+)", text)
    assert found, text
    return found.group(1)


def test_public_double_opt_in_then_alert_then_unsubscribe(web: Clients) -> None:
    h = web.http
    r = h.post("/bears/subscribe", json=circle(email="hanako@example.jp", area_name="自宅"))
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "pending" and r.json()["tenant"] == TENANT
    [pending] = h.get("/bears/subscriptions", headers=web.op).json()
    assert not pending["confirmed"]
    confirm = _mailed_link(web, "/bears/subscribe/confirm", 0)
    assert "【要確認】" in str(web.smtp.box.messages[-1][2]["Subject"])  # type: ignore[attr-defined]

    when = (datetime.now(UTC) - timedelta(minutes=3)).isoformat()
    sighting = {"observed_at": when, "lat": SPOT[0], "lon": SPOT[1], "source": "police"}
    assert h.post("/bears/sightings", json=sighting, headers=web.op).status_code == 201
    assert h.get("/bears/alerts/log", headers=web.op).json()[0]["recipients"] == 0  # not confirmed yet

    page = h.get(confirm)
    assert page.status_code == 200 and "登録が完了しました" in page.text
    assert h.get("/bears/subscriptions", headers=web.op).json()[0]["confirmed"]
    made = h.post("/bears/sightings", json={**sighting, "lat": SPOT[0] + 0.001}, headers=web.op).json()
    unsubscribe = _mailed_link(web, "/bears/unsubscribe", 1)
    assert made["id"] in web.smtp.box.messages[-1][2].get_body(preferencelist=("plain",)).get_content()  # type: ignore[attr-defined]

    page = h.get(unsubscribe)  # a mail scanner opening the link changes nothing
    assert "<form" in page.text and h.get("/bears/subscriptions", headers=web.op).json()[0]["active"]
    page = h.post(unsubscribe)
    assert page.status_code == 200 and "配信を停止しました" in page.text
    assert not h.get("/bears/subscriptions", headers=web.op).json()[0]["active"]
    assert h.get("/bears/unsubscribe", params={"token": "x" * 40}).status_code == 404


def test_public_subscribe_refuses_bad_input_and_floods(web: Clients) -> None:
    h = web.http
    assert h.post("/bears/subscribe", json=circle(email="nope")).status_code == 400
    r = h.post(
        "/bears/subscribe", json={"email": "a@example.jp", "municipality": "012025"}
    )  # 小樽市: no tenant
    assert r.status_code == 422 and r.json()["error"]["detail"].startswith("municipality")
    codes = [h.post("/bears/subscribe", json=circle(email=f"p{i}@example.jp")).status_code for i in range(6)]
    assert codes == [202] * 5 + [429]
    assert len(h.get("/bears/subscriptions", headers=web.op).json()) == 5


def test_public_alerts_are_rounded_and_staff_log_is_private(web: Clients) -> None:
    h = web.http
    when = (datetime.now(UTC) - timedelta(minutes=3)).isoformat()
    body = {
        "observed_at": when,
        "lat": 43.023612,
        "lon": 141.322187,
        "source": "staff",
        "behaviour": "staying",
    }
    s = h.post("/bears/sightings", json=body, headers=web.op).json()
    [alert] = h.get("/bears/alerts").json()
    assert alert["lat"] == 43.024 and alert["lon"] == 141.322 and alert["level"] == 2
    assert alert["level_ja"] == "警戒" and alert["sighting_id"] == s["id"] and alert["msg_type"] == "Alert"
    assert "request_id" not in alert and "recipients" not in alert
    assert h.get("/bears/alerts", params={"municipality": OTHER_TENANT}).json() == []
    assert h.get("/bears/alerts/log", headers={"NGSILD-Tenant": TENANT}).status_code == 401
    assert h.get("/bears/alerts/log", headers=web.other).json() == []
    [entry] = h.get("/bears/alerts/log", headers=web.reader).json()
    assert entry["id"] == alert["id"] and entry["lat"] == 43.023612


def test_cap_feed_and_documents_over_http(web: Clients) -> None:
    h = web.http
    when = (datetime.now(UTC) - timedelta(minutes=3)).isoformat()
    body = {"observed_at": when, "lat": 43.023612, "lon": 141.322187, "source": "staff"}
    s = h.post("/bears/sightings", json=body, headers=web.op).json()
    r = h.get("/bears/alerts.cap")
    assert r.status_code == 200 and r.headers["content-type"].startswith(cap.ATOM_TYPE)
    link = ET.fromstring(r.content).find(f"{{{cap.ATOM_NS}}}entry/{{{cap.ATOM_NS}}}link")
    assert link is not None and link.get("href", "").startswith("https://bears.example.jp/bears/alerts/")
    r = h.get(link.get("href", "").removeprefix("https://bears.example.jp"))
    assert r.status_code == 200 and r.headers["content-type"].startswith(cap.CAP_TYPE)
    doc = ET.fromstring(r.content)
    assert doc.tag == f"{{{cap.CAP_NS}}}alert"
    assert doc.findtext(f"{{{cap.CAP_NS}}}identifier") == alerts.alert_id(TENANT, s["id"])
    missing = h.get("/bears/alerts/urn:ngsi-ld:Alert:nothing.cap")
    assert missing.status_code == 404 and "error" in missing.json()
