"""Webhook (JSON POST with an HMAC-SHA256 signature) and MQTT (through the real Mosquitto on 1883)."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import uuid
from collections.abc import Callable, Iterator

import paho.mqtt.client as mqtt
import pytest

from society5.core.mqtt_publish import close_all
from society5.core.platform import Platform
from society5.notify.notifier import Notifier
from society5.notify.recipients import RecipientStore

from .conftest import StandIn

SECRET = "s3cret-signing-key-0123"
TEST = {"name": "防災システム", "sender": "tester"}


def test_webhook_body_and_signature(platform: Platform, hook: StandIn,
                                    make_notifier: Callable[..., Notifier]) -> None:
    notifier = make_notifier()
    store = RecipientStore(platform.engine)
    store.create("011002", {"id": "sys", "name": "防災システム", "channels": {"webhook": hook.url + "/in"},
                            "webhook_secret": SECRET})
    store.create("011002", {"id": "plain", "name": "署名なし", "channels": {"webhook": hook.url + "/plain"}})
    ids = notifier.tell(["sys", "plain"], "notify.test", TEST, tenant="011002", urgent=True)
    assert platform.outbox.deliver_due() == 2
    signed, unsigned = sorted(hook.requests, key=lambda r: r.path)  # /in, /plain
    expected = "sha256=" + hmac.new(SECRET.encode(), signed.body, hashlib.sha256).hexdigest()
    assert signed.headers["x-society5-signature"] == expected
    assert signed.headers["content-type"] == "application/json"
    body = signed.json()
    assert body["deliveryId"] == signed.headers["x-society5-delivery"] and body["deliveryId"] in ids
    assert (body["tenant"], body["recipient"], body["template"], body["lang"], body["urgent"]) == (
        "011002", "sys", "notify.test", "ja", True)
    assert body["title"] == "【テスト】通知の確認" and "防災システム 様" in body["text"]
    assert "x-society5-signature" not in unsigned.headers
    assert {d.status for d in notifier.deliveries.list("011002")} == {"sent"}


def test_webhook_gone_is_final(platform: Platform, hook: StandIn,
                               make_notifier: Callable[..., Notifier]) -> None:
    notifier = make_notifier()
    RecipientStore(platform.engine).create("011002", {"id": "old", "name": "旧システム",
                                                      "channels": {"webhook": hook.url}})
    hook.answer(410, body=b"gone")
    [delivery_id] = notifier.tell(["old"], "notify.test", TEST, tenant="011002")
    platform.outbox.deliver_due()
    platform.outbox.deliver_due()
    dead = notifier.deliveries.get(delivery_id)
    assert dead is not None and (dead.status, dead.attempts) == ("dead", 1)
    assert "410" in (dead.last_error or "")
    assert len(hook.requests) == 1


@pytest.fixture
def subscriber() -> Iterator[tuple[str, list[bytes], threading.Event]]:
    topic = f"society5-test/notify/{uuid.uuid4().hex}"
    got: list[bytes] = []
    ready, arrived = threading.Event(), threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
    client.on_subscribe = lambda *_: ready.set()

    def on_message(_c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        got.append(bytes(msg.payload))
        arrived.set()

    client.on_message = on_message
    client.connect("127.0.0.1", 1883)
    client.loop_start()
    assert ready.wait(5)
    yield topic, got, arrived
    client.loop_stop()
    client.disconnect()
    close_all()


def test_mqtt_publishes_json(platform: Platform, make_notifier: Callable[..., Notifier],
                             subscriber: tuple[str, list[bytes], threading.Event]) -> None:
    topic, got, arrived = subscriber
    notifier = make_notifier()
    RecipientStore(platform.engine).create("011002", {
        "id": "panel", "name": "Display panel", "language": "en",
        "channels": {"mqtt": f"mqtt://127.0.0.1:1883/{topic}"}})
    [delivery_id] = notifier.tell(["panel"], "notify.test", TEST, tenant="011002")
    platform.outbox.deliver_due()
    assert arrived.wait(5)
    [payload] = got
    body = json.loads(payload)
    assert body["deliveryId"] == delivery_id and body["title"] == "[Test] Notification check"
    assert notifier.deliveries.get(delivery_id).status == "sent"  # type: ignore[union-attr]


def test_mqtt_broker_down_is_retried(platform: Platform, make_notifier: Callable[..., Notifier]) -> None:
    notifier = make_notifier(notify_escalate_after=5, notify_timeout_s=0.5)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket closes
    RecipientStore(platform.engine).create("011002", {
        "id": "panel", "name": "Panel", "channels": {"mqtt": f"mqtt://127.0.0.1:{port}/x"}})
    [delivery_id] = notifier.tell(["panel"], "notify.test", TEST, tenant="011002")
    platform.outbox.deliver_due()
    failed = notifier.deliveries.get(delivery_id)
    assert failed is not None and failed.status == "failed" and "ConnectionError" in (failed.last_error or "")
