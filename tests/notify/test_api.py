"""The /notify HTTP API: recipients per tenant, roles, validation errors (never a 500), log, test send."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from society5.core.platform import Platform
from society5.core.service import discover
from society5.notify.service import service as notify_service
from society5.web.app import create_app

from .conftest import LINE_USER, StandIn, poll

TARO = {"id": "taro", "name": "北海 太郎", "channels": {"mail": "taro@example.jp", "line": LINE_USER},
        "quiet_hours": {"start": "22:00", "end": "07:00"}, "tags": ["bears"]}
SAPPORO = {"NGSILD-Tenant": "011002"}


class Api:
    def __init__(self, client: TestClient, platform: Platform):
        self.client = client
        keys = platform.keys
        self.admin = {"Authorization": f"Bearer {keys.create('admin').key}"}
        self.op = {"Authorization": f"Bearer {keys.create('operator', tenant='011002').key}", **SAPPORO}
        self.other_op = {"Authorization": f"Bearer {keys.create('operator', tenant='012025').key}"}
        self.reader = {"Authorization": f"Bearer {keys.create('reader', tenant='011002').key}", **SAPPORO}


@pytest.fixture
def api(platform: Platform) -> Iterator[Api]:
    platform.settings = platform.settings.model_copy(update={"auth": "on"})
    app = create_app(platform.settings, services=[notify_service], platform=platform)
    with TestClient(app) as client:
        yield Api(client, platform)


def _error(response: Any, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()["error"]
    assert body["status"] == status and body["code"] and body["title"]
    return str(body["detail"])


def test_recipient_crud(api: Api) -> None:
    c = api.client
    created = c.post("/notify/recipients", json=TARO, headers=api.op)
    assert created.status_code == 201, created.text
    assert created.headers["location"] == "/notify/recipients/taro"
    assert created.json()["order"] == ["line", "mail"] and created.json()["tenant"] == "011002"
    assert [r["id"] for r in c.get("/notify/recipients", headers=api.op).json()] == ["taro"]
    assert c.get("/notify/recipients?tag=bears", headers=api.op).json()[0]["id"] == "taro"
    assert c.get("/notify/recipients?tag=snow", headers=api.op).json() == []
    changed = c.patch("/notify/recipients/taro", json={"language": "en", "order": ["mail"]}, headers=api.op)
    assert changed.status_code == 200 and changed.json()["order"] == ["mail", "line"]
    assert c.get("/notify/recipients/taro", headers=api.op).json()["language"] == "en"
    assert "AlreadyExists" in c.post("/notify/recipients", json=TARO, headers=api.op).text
    assert c.delete("/notify/recipients/taro", headers=api.op).status_code == 204
    assert "taro" in _error(c.get("/notify/recipients/taro", headers=api.op), 404)
    _error(c.delete("/notify/recipients/taro", headers=api.op), 404)


def test_roles_and_tenants(api: Api) -> None:
    c = api.client
    hakodate = {"NGSILD-Tenant": "012025"}
    assert c.post("/notify/recipients", json=TARO, headers={**api.admin, **hakodate}).status_code == 201
    assert c.get("/notify/recipients", headers=api.op).json() == []  # 012025's taro is not visible in 011002
    _error(c.get("/notify/recipients/taro", headers=api.op), 404)
    assert "012025" in _error(c.get("/notify/recipients", headers={**api.other_op, **SAPPORO}), 403)
    assert "default" in _error(c.get("/notify/recipients", headers=api.other_op), 403)  # no header: default
    assert c.get("/notify/recipients", headers={**api.other_op, **hakodate}).json()[0]["id"] == "taro"
    _error(c.post("/notify/recipients", json=TARO, headers=api.reader), 403)
    _error(c.get("/notify/deliveries", headers=SAPPORO), 401)
    assert c.get("/notify/recipients", headers={**api.admin, **SAPPORO}).json() == []


@pytest.mark.parametrize("body,field", [
    ({**TARO, "id": "bad id"}, "id"),
    ({k: v for k, v in TARO.items() if k != "name"}, "name"),
    ({**TARO, "name": 5}, "name"),
    ({**TARO, "language": "fr"}, "language"),
    ({**TARO, "channels": {"mail": "nope"}}, "channels.mail"),
    ({**TARO, "channels": {"fax": "011-000-0000"}}, "channels.fax"),
    ({**TARO, "channels": {"mail": 5}}, "channels.mail"),
    ({**TARO, "channels": []}, "channels"),
    ({**TARO, "order": ["pigeon"]}, "order"),
    ({**TARO, "order": ["webhook"]}, "order"),
    ({**TARO, "quiet_hours": {"start": "22:00", "end": "31:00"}}, "quiet_hours.end"),
    ({**TARO, "quiet_hours": {"start": "22:00", "end": "07:00", "timezone": "Nowhere/City"}},
     "quiet_hours.timezone"),
    ({**TARO, "quiet_hours": {"start": "22:00", "end": "07:00", "extra": 1}}, "quiet_hours.extra"),
    ({**TARO, "webhook_secret": "short"}, "webhook_secret"),
    ({**TARO, "tags": "bears"}, "tags"),
    ({**TARO, "active": "yes"}, "active"),
    ({**TARO, "colour": "red"}, "colour"),
])
def test_invalid_recipients_are_4xx_naming_the_field(api: Api, body: dict[str, Any], field: str) -> None:
    detail = _error(api.client.post("/notify/recipients", json=body, headers=api.op), 400)
    assert detail.startswith(field), detail
    assert api.client.get("/notify/recipients", headers=api.op).json() == []


@pytest.mark.parametrize("method,path,kwargs,needle", [
    ("post", "/notify/recipients", {"content": b"{not json", "headers": {"Content-Type": "application/json"}},
     "JSON"),
    ("post", "/notify/recipients", {"json": [TARO]}, "dictionary"),
    ("post", "/notify/recipients", {"json": TARO, "headers": {"NGSILD-Tenant": "bad tenant!"}},
     "NGSILD-Tenant"),
    ("patch", "/notify/recipients/taro", {"json": {"id": "jiro"}}, "id"),
    ("get", "/notify/deliveries?status=lost", {}, "status"),
    ("get", "/notify/deliveries?limit=0", {}, "limit"),
    ("get", "/notify/deliveries?offset=-1", {}, "offset"),
    ("post", "/notify/test", {"json": {"recipient": "taro", "channel": "fax"}}, "channel"),
    ("post", "/notify/test", {"json": {}}, "recipient"),
])
def test_bad_requests_are_400_never_500(api: Api, method: str, path: str, kwargs: dict[str, Any],
                                        needle: str) -> None:
    kwargs = dict(kwargs)  # the parameters are shared by the SQLite and PostgreSQL runs
    headers = {**api.admin, **SAPPORO, **kwargs.pop("headers", {})}
    api.client.post("/notify/recipients", json=TARO, headers={**api.admin, **SAPPORO})
    response = getattr(api.client, method)(path, headers=headers, **kwargs)
    assert needle in _error(response, 400)


def test_a_test_message_is_sent_and_logged(api: Api, hook: StandIn) -> None:
    c = api.client
    body = {"id": "sys", "name": "防災システム", "channels": {"webhook": hook.url, "mail": "sys@example.jp"},
            "quiet_hours": {"start": "00:00", "end": "23:59"}}  # quiet all day: a test is sent anyway
    assert c.post("/notify/recipients", json=body, headers=api.op).status_code == 201
    _error(c.post("/notify/test", json={"recipient": "sys"}, headers=api.op), 403)
    _error(c.post("/notify/test", json={"recipient": "ghost"}, headers={**api.admin, **SAPPORO}), 404)
    admin = {**api.admin, **SAPPORO}
    sent = c.post("/notify/test", json={"recipient": "sys", "channel": "webhook"}, headers=admin)
    assert sent.status_code == 202, sent.text
    [delivery_id] = sent.json()["deliveries"]
    poll(lambda: hook.requests)  # the app's outbox dispatcher delivers it
    assert hook.requests[0].json()["title"] == "【テスト】通知の確認"
    entry = poll(lambda: [d for d in c.get("/notify/deliveries?status=sent", headers=api.op).json()
                          if d["id"] == delivery_id])
    assert entry[0]["recipient"] == "sys" and entry[0]["channel"] == "webhook" and entry[0]["attempts"] == 1
    one = c.get(f"/notify/deliveries/{delivery_id}", headers=api.op).json()
    assert "防災システム 様" in one["text"]
    assert c.get("/notify/deliveries?recipient=nobody", headers=api.op).json() == []
    _error(c.get(f"/notify/deliveries/{delivery_id}", headers={**api.admin, "NGSILD-Tenant": "012025"}), 404)
    assert "notify.test" in c.get("/notify/templates", headers=api.op).json()


def test_every_notify_operation_is_documented(api: Api) -> None:
    spec = api.client.get("/openapi.json").json()
    ops = [(path, op) for path, item in spec["paths"].items() if path.startswith("/notify")
           for op in item.values()]
    assert len(ops) >= 9
    assert all(op.get("summary") for _, op in ops)


def test_staff_page_ja_and_en(api: Api) -> None:
    c = api.client
    c.post("/notify/recipients", json=TARO, headers=api.op)
    page = c.get("/notify", headers=api.op)
    assert page.status_code == 200 and "宛先" in page.text and "北海 太郎" in page.text
    assert 'name="viewport"' in page.text and "line → mail" in page.text
    assert "Recipients" in c.get("/notify?lang=en", headers=api.op).text
    anonymous = c.get("/notify")
    assert anonymous.status_code == 401 and "/login?next=/notify" in anonymous.text
    assert c.get("/notify?tenant=012025", headers=api.op).status_code == 403


def test_the_service_is_installed_and_builds_the_notifier(api: Api, platform: Platform) -> None:
    assert "notify" in [s.name for s in discover()]
    assert platform.parts["notify"].outbox is platform.outbox
    assert "notify.delivery" in platform.outbox.handlers
