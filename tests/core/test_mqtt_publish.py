"""Publishing to MQTT endpoint URIs through the real Mosquitto on 127.0.0.1:1883."""

from __future__ import annotations

import threading
import uuid

import paho.mqtt.client as mqtt
import pytest

from society5.core.mqtt_publish import close_all, parse_target, publish


def test_parse_target_reads_credentials_port_and_topic() -> None:
    t = parse_target("mqtts://dev%40town:p%2Fw@broker.example:8884/society5/011002/alerts")
    assert (t.tls, t.host, t.port, t.username, t.password, t.topic) == (
        True, "broker.example", 8884, "dev@town", "p/w", "society5/011002/alerts")
    assert parse_target("mqtt://127.0.0.1/a").port == 1883


@pytest.mark.parametrize("uri,problem", [
    ("http://127.0.0.1/topic", "mqtt://"),
    ("mqtt:///topic", "no host"),
    ("mqtt://127.0.0.1", "one topic"),
    ("mqtt://127.0.0.1/a/#", "no wildcards"),
    ("mqtt://127.0.0.1:99999/a", "invalid port"),
])
def test_parse_target_rejects_bad_uris(uri: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_target(uri)


def test_publish_reaches_a_subscriber() -> None:
    topic = f"society5-test/{uuid.uuid4().hex}"
    got: list[bytes] = []
    ready, arrived = threading.Event(), threading.Event()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    sub.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
    sub.on_subscribe = lambda *_: ready.set()

    def on_message(_c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        got.append(msg.payload)
        arrived.set()

    sub.on_message = on_message
    sub.connect("127.0.0.1", 1883)
    sub.loop_start()
    try:
        assert ready.wait(5)
        publish(f"mqtt://127.0.0.1:1883/{topic}", "{\"n\":\"北海道\"}".encode(), qos=1)
        assert arrived.wait(5)
        assert got == ["{\"n\":\"北海道\"}".encode()]
    finally:
        sub.loop_stop()
        sub.disconnect()
        close_all()


def test_publish_to_a_closed_port_raises_for_a_retry() -> None:
    with pytest.raises(ConnectionError):
        publish("mqtt://127.0.0.1:1/a", b"x", qos=1, timeout_s=1.0)
