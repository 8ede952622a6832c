"""Recipients through the Python API: validation naming the field, updates, routes, tenant isolation."""

from __future__ import annotations

from typing import Any

import pytest

from society5.core.errors import AlreadyExists, BadRequest, NotFound
from society5.core.platform import Platform
from society5.notify.recipients import RecipientStore

from .conftest import LINE_USER

TARO: dict[str, Any] = {
    "id": "taro", "name": "北海 太郎", "channels": {"mail": "taro@example.jp", "line": LINE_USER},
    "quiet_hours": {"start": "22:00", "end": "07:00"}, "tags": ["bears"],
}


def test_create_get_update_delete(platform: Platform) -> None:
    store = RecipientStore(platform.engine)
    created = store.create("011002", TARO)
    assert created.language == "ja" and created.active and created.created_at
    got = store.get("011002", "taro")
    assert got == created
    assert got.route() == ["line", "mail"]  # unranked channels follow the default order
    assert got.quiet_hours is not None and got.quiet_hours.timezone == "Asia/Tokyo"
    changed = store.update("011002", "taro", {"order": ["mail"], "language": "en", "quiet_hours": None})
    assert changed.route() == ["mail", "line"] and changed.language == "en" and changed.quiet_hours is None
    assert store.get("011002", "taro").route() == ["mail", "line"]
    assert store.ids("011002", "bears") == ["taro"]
    store.update("011002", "taro", {"active": False})
    assert store.ids("011002", "bears") == []
    store.delete("011002", "taro")
    with pytest.raises(NotFound):
        store.get("011002", "taro")
    with pytest.raises(NotFound):
        store.delete("011002", "taro")


def test_ids_are_per_tenant(platform: Platform) -> None:
    store = RecipientStore(platform.engine)
    store.create("011002", TARO)
    store.create("012025", {**TARO, "name": "函館の太郎"})
    with pytest.raises(AlreadyExists):
        store.create("011002", TARO)
    assert store.get("012025", "taro").name == "函館の太郎"
    assert [r.name for r in store.list("011002")] == ["北海 太郎"]
    store.delete("012025", "taro")
    assert store.get("011002", "taro").name == "北海 太郎"


def test_the_public_form_hides_the_webhook_secret(platform: Platform) -> None:
    store = RecipientStore(platform.engine)
    r = store.create("011002", {"id": "sys", "name": "防災システム",
                                "channels": {"webhook": "https://bousai.example.jp/hook"},
                                "webhook_secret": "0123456789abcdef"})
    public = r.public()
    assert public["webhook_secret_set"] is True
    assert "0123456789abcdef" not in str(public)


@pytest.mark.parametrize("change,field", [
    ({"id": "bad id"}, "id"),
    ({"id": ""}, "id"),
    ({"name": ""}, "name"),
    ({"name": 5}, "name"),
    ({"language": "fr"}, "language"),
    ({"channels": {}}, "channels"),
    ({"channels": {"fax": "011-000"}}, "channels.fax"),
    ({"channels": {"mail": "not-an-address"}}, "channels.mail"),
    ({"channels": {"line": "taro"}}, "channels.line"),
    ({"channels": {"webhook": "ftp://x.example.jp"}}, "channels.webhook"),
    ({"channels": {"mqtt": "mqtt://broker.example.jp/a/#"}}, "channels.mqtt"),
    ({"order": ["webhook"]}, "order"),
    ({"order": ["mail", "mail"]}, "order"),
    ({"order": "mail"}, "order"),
    ({"quiet_hours": {"start": "25:00", "end": "07:00"}}, "quiet_hours.start"),
    ({"quiet_hours": {"start": "22:00"}}, "quiet_hours.end"),
    ({"quiet_hours": {"start": "22:00", "end": "22:00"}}, "quiet_hours"),
    ({"quiet_hours": {"start": "22:00", "end": "07:00", "timezone": "Mars/Base"}}, "quiet_hours.timezone"),
    ({"quiet_hours": "22-7"}, "quiet_hours"),
    ({"webhook_secret": "short"}, "webhook_secret"),
    ({"tags": ["ok", "not ok"]}, "tags"),
    ({"active": "yes"}, "active"),
    ({"colour": "red"}, "colour"),
])
def test_invalid_input_names_the_field(platform: Platform, change: dict[str, Any], field: str) -> None:
    store = RecipientStore(platform.engine)
    with pytest.raises(BadRequest) as caught:
        store.create("011002", {**TARO, **change})
    assert caught.value.detail.startswith(field), caught.value.detail
    assert store.list("011002") == []


def test_required_fields_and_immutable_id(platform: Platform) -> None:
    store = RecipientStore(platform.engine)
    with pytest.raises(BadRequest, match=r"^name"):
        store.create("011002", {"id": "a", "channels": {"mail": "a@example.jp"}})
    with pytest.raises(BadRequest, match=r"^channels"):
        store.create("011002", {"id": "a", "name": "A"})
    store.create("011002", TARO)
    with pytest.raises(BadRequest, match=r"^id"):
        store.update("011002", "taro", {"id": "jiro"})
    with pytest.raises(BadRequest, match=r"^order"):  # removing a ranked channel's address
        store.update("011002", "taro", {"order": ["line"], "channels": {"mail": "taro@example.jp"}})
    with pytest.raises(BadRequest, match="tenant"):
        store.create("bad tenant!", TARO)
