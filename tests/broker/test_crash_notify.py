"""SIGKILL amid acknowledged HTTP and MQTT writes with a subscription: history and notifications survive."""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest

from tests.server import Server, wait_until

H = {"Content-Type": "application/json"}
HTTP_TANK, MQTT_TANK = "urn:ngsi-ld:Tank:http", "urn:ngsi-ld:Tank:mqtt"


class Receiver:
    """A webhook that stays up while the server dies and restarts; records (entity, level) pairs."""

    def __init__(self) -> None:
        self.seen: set[tuple[str, int]] = set()
        seen = self.seen

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                for entity in body["data"]:
                    seen.add((entity["id"], entity["level"]))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/notify"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def _history(url: str, eid: str) -> set[int]:
    r = httpx.get(f"{url}/ngsi-ld/v1/temporal/entities/{eid}",
                  params={"attrs": "level", "options": "temporalValues"}, timeout=30)
    assert r.status_code in (200, 206), r.text
    return {int(v[0]) for v in r.json().get("level", {}).get("values", [])}


def _until_the_bridge_writes(http: httpx.Client, prefix: str) -> None:
    """Publish a probe until the bridge has written one: QoS 1 messages sent before the bridge's first
    subscription are dropped by Mosquitto, and the writers below must only count what reaches it."""
    probe = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{prefix}-probe")
    probe.connect("127.0.0.1", 1883)
    probe.loop_start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            probe.publish(f"{prefix}/default/Tank/{MQTT_TANK}/attrs", json.dumps({"probe": 1}), qos=1)
            time.sleep(0.2)
            if "probe" in http.get(f"/ngsi-ld/v1/entities/{MQTT_TANK}", headers=H).json():
                return
        raise AssertionError("the MQTT bridge wrote nothing within 60 s")
    finally:
        probe.loop_stop()
        probe.disconnect()


@pytest.mark.slow
def test_kill9_loses_no_acknowledged_write_and_no_notification(db_url: str, platform: object) -> None:
    receiver = Receiver()
    prefix = f"s5crash{uuid.uuid4().hex[:8]}"
    env = {"SOCIETY5_MQTT_URL": "mqtt://127.0.0.1:1883", "SOCIETY5_MQTT_TOPIC_PREFIX": prefix,
           "SOCIETY5_MQTT_CLIENT_ID": f"{prefix}-bridge", "SOCIETY5_TEMPORAL_INSTANCE_LIMIT": "1000000"}
    server = Server(db_url, env=env).start()
    with httpx.Client(base_url=server.url, timeout=10) as http:
        for eid in (HTTP_TANK, MQTT_TANK):
            r = http.post("/ngsi-ld/v1/entities", headers=H,
                          json={"id": eid, "type": "Tank", "level": {"type": "Property", "value": 0}})
            assert r.status_code == 201, r.text
        sub = {"type": "Subscription", "entities": [{"type": "Tank"}], "watchedAttributes": ["level"],
               "notification": {"format": "keyValues", "attributes": ["level"],
                                "endpoint": {"uri": receiver.url, "accept": "application/json"}}}
        assert http.post("/ngsi-ld/v1/subscriptions", headers=H, json=sub).status_code == 201
        _until_the_bridge_writes(http, prefix)

    acked_http: list[int] = []
    acked_mqtt: list[int] = []
    stop = threading.Event()

    def http_writer() -> None:
        with httpx.Client(base_url=server.url, timeout=5) as http:
            for i in range(1, 100_000):
                if stop.is_set():
                    return
                try:
                    r = http.patch(f"/ngsi-ld/v1/entities/{HTTP_TANK}/attrs", headers=H,
                                   json={"level": {"type": "Property", "value": i}})
                except httpx.HTTPError:
                    return  # the server died: what was not acknowledged may be lost
                if r.status_code == 204:
                    acked_http.append(i)

    def mqtt_writer() -> None:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{prefix}-sensor")
        client.connect("127.0.0.1", 1883)
        client.loop_start()
        topic = f"{prefix}/default/Tank/{MQTT_TANK}/attrs"
        try:
            for i in range(1, 100_000):
                if stop.is_set():
                    return
                observed = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(1_700_000_000 + i)) + "Z"
                info = client.publish(topic, json.dumps({"level": i, "observedAt": observed}), qos=1)
                info.wait_for_publish(5)
                if info.is_published():  # PUBACK: Mosquitto holds it for the bridge's persistent session
                    acked_mqtt.append(i)
                time.sleep(0.002)
        finally:
            client.loop_stop()
            client.disconnect()

    threads = [threading.Thread(target=http_writer), threading.Thread(target=mqtt_writer)]
    for th in threads:
        th.start()
    wait_until(lambda: len(acked_http) > 50 and len(acked_mqtt) > 50, 60)
    server.kill9()
    stop.set()
    for th in threads:
        th.join(15)
    assert len(acked_http) > 20 and len(acked_mqtt) > 20, (len(acked_http), len(acked_mqtt))

    restarted = Server(db_url, env=env).start()
    try:
        http_history = _history(restarted.url, HTTP_TANK)
        # Messages the killed bridge had not committed are redelivered to the restarted one, which writes
        # them in its own time.
        wait_until(lambda: set(acked_mqtt) <= _history(restarted.url, MQTT_TANK), 60)
        mqtt_history = _history(restarted.url, MQTT_TANK)
        lost_http = sorted(set(acked_http) - http_history)
        lost_mqtt = sorted(set(acked_mqtt) - mqtt_history)
        assert not lost_http, f"{len(lost_http)} HTTP writes lost from history: {lost_http[:5]}"
        assert not lost_mqtt, f"{len(lost_mqtt)} MQTT writes lost from history: {lost_mqtt[:5]}"
        # Every acknowledged HTTP write is one change and owes one notification. MQTT messages that arrive
        # together are one change of the entity (history keeps each; the notification carries the newest),
        # so for MQTT the newest acknowledged value must be notified, and nothing that was never written.
        due = {(HTTP_TANK, i) for i in acked_http} | {(MQTT_TANK, max(acked_mqtt))}
        # messages the killed process had claimed come back when their 60 s lease runs out
        wait_until(lambda: due <= receiver.seen, 120)
        missing = sorted(due - receiver.seen)
        assert not missing, f"{len(missing)} acked writes never notified: {missing[:5]}"
        invented = {(e, v) for e, v in receiver.seen if v and v not in (http_history if e == HTTP_TANK
                                                                           else mqtt_history)}
        assert not invented, f"notified values that history lacks: {sorted(invented)[:5]}"
    finally:
        restarted.stop()
        receiver.server.shutdown()
