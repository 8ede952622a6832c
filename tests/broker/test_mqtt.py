"""MQTT ingestion bridge against the real Mosquitto on 127.0.0.1:1883, on SQLite and PostgreSQL."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest
import sqlalchemy.exc as sa_exc

from society5.broker.core import Broker
from society5.broker.mqtt import BridgeConfig, MqttBridge, running
from society5.broker.mqtt_store import DeadLetters, Incoming, MqttWriter, WritePolicy
from society5.broker.service import start as start_broker
from society5.broker.temporal import TemporalRequest
from society5.core.errors import ConfigError, NotFound
from society5.core.platform import Platform

MQTT_URL = "mqtt://127.0.0.1:1883"
T0 = "2025-01-15T03:00:00Z"
T1 = "2025-01-15T03:01:00Z"
T2 = "2025-01-15T03:02:00Z"


def wait_for(check: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = check()
        if got:
            return got
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def broker(platform: Platform) -> Broker:
    return start_broker(platform)


@pytest.fixture
def prefix() -> str:
    """A topic prefix of this test alone: parallel runs and other tests never see its messages."""
    return f"t{uuid.uuid4().hex[:12]}"


def config(prefix: str, **options: Any) -> BridgeConfig:
    options.setdefault("session_expiry_s", 0)  # no session left behind in Mosquitto
    return BridgeConfig.from_url(MQTT_URL, client_id=f"{prefix}-bridge", prefix=prefix, **options)


@pytest.fixture
def bridge(broker: Broker, prefix: str) -> Iterator[MqttBridge]:
    with running(broker, config(prefix)) as b:
        assert b.subscribed.wait(10), "the bridge did not subscribe"
        yield b


@pytest.fixture
def publisher() -> Iterator[mqtt.Client]:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:10]}")
    client.connect("127.0.0.1", 1883)
    client.loop_start()
    yield client
    client.disconnect()
    client.loop_stop()


def publish(client: mqtt.Client, topic: str, payload: Any) -> None:
    body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    info = client.publish(topic, body, qos=1)
    info.wait_for_publish(5)
    assert info.is_published()


def history(platform: Platform, broker: Broker, eid: str, attr: str, tenant: str = "default") -> list[Any]:
    """(observedAt, value) of every recorded instance of one attribute, oldest first."""
    iri = broker.context().expand(attr)
    result = platform.parts["temporal"].retrieve(tenant, eid, TemporalRequest())
    rows = [r for s in result.entities[0].series if s.attr == iri for r in s.rows if not r.deleted]
    return sorted(((r.inst.get("observedAt"), r.inst.get("value")) for r in rows), key=lambda x: x[0] or "")


def settled(bridge: MqttBridge, count: int) -> Callable[[], bool]:
    """True once ``count`` messages arrived and every one of them is written."""
    return lambda: bridge.stats["received"] >= count and bridge.idle()


# --- writing ----------------------------------------------------------------------------------------------


def test_attrs_message_creates_the_entity_then_updates_it_with_history(
        platform: Platform, broker: Broker, bridge: MqttBridge, publisher: mqtt.Client, prefix: str) -> None:
    eid = "urn:ngsi-ld:WaterTank:011002:t1"
    topic = f"{prefix}/default/WaterTank/{eid}/attrs"
    publish(publisher, topic, {"level": 3.5, "name": "浄水場タンク", "observedAt": T0,
                               "status": {"type": "Property", "value": "ok", "observedAt": T0}})
    wait_for(settled(bridge, 1), what="the first message")
    doc = broker.get("default", eid)
    assert doc["type"] == "WaterTank"
    assert doc["level"] == {"type": "Property", "value": 3.5, "observedAt": T0}
    assert doc["name"]["value"] == "浄水場タンク"
    level = {"type": "Property", "value": 3.1, "observedAt": T1, "unitCode": "MTR"}
    publish(publisher, topic, {"level": level})
    wait_for(settled(bridge, 2), what="the update")
    doc = broker.get("default", eid)
    assert doc["level"] == {"type": "Property", "value": 3.1, "observedAt": T1, "unitCode": "MTR"}
    assert doc["status"]["value"] == "ok"  # an update keeps the attributes the message does not name
    assert history(platform, broker, eid, "level") == [(T0, 3.5), (T1, 3.1)]
    assert bridge.stats["values"] == 4 and bridge.stats["dead"] == 0


def test_single_value_topics(platform: Platform, broker: Broker, bridge: MqttBridge, publisher: mqtt.Client,
                             prefix: str) -> None:
    eid = "urn:ngsi-ld:Device:011002:power-1"
    base = f"{prefix}/default/Device/{eid}"
    publish(publisher, f"{base}/power", b"1.25")
    publish(publisher, f"{base}/mode", b'"eco"')
    publish(publisher, f"{base}/online", b"true")
    publish(publisher, f"{base}/power", {"value": 1.5, "observedAt": T1, "unitCode": "KWT"})
    wait_for(settled(bridge, 4), what="four messages")
    doc = broker.get("default", eid, fmt="keyValues")
    assert doc == {"id": eid, "type": "Device", "power": 1.5, "mode": "eco", "online": True}
    # the value without observedAt was recorded at its arrival; the later, timestamped one is current
    assert history(platform, broker, eid, "power") == [(None, 1.25), (T1, 1.5)]


def test_messages_to_a_tenant_go_to_that_tenant(platform: Platform, broker: Broker, bridge: MqttBridge,
                                                publisher: mqtt.Client, prefix: str) -> None:
    platform.tenants.ensure("011002", name="札幌市")
    eid = "urn:ngsi-ld:Device:sapporo-1"
    publish(publisher, f"{prefix}/011002/Device/{eid}/temperature", b"-3.5")
    wait_for(settled(bridge, 1))
    assert broker.get("011002", eid, fmt="keyValues")["temperature"] == -3.5
    with pytest.raises(NotFound):
        broker.get("default", eid)


def test_acknowledgement_comes_only_after_the_commit(
        platform: Platform, broker: Broker, bridge: MqttBridge, publisher: mqtt.Client, prefix: str) -> None:
    # Every PUBACK the bridge sends is checked against the database at that moment: the k-th acknowledged
    # message (each writes its own entity) must already be readable by another connection.
    client = bridge._client
    assert client is not None
    real_ack = client.ack
    seen: list[tuple[int, int]] = []

    def checking_ack(mid: int, qos: int) -> Any:
        stored = len(broker.find("default", type="Meter", limit=1000))
        seen.append((len(seen) + 1, stored))
        return real_ack(mid, qos)

    client.ack = checking_ack  # type: ignore[method-assign]
    for i in range(60):
        publisher.publish(f"{prefix}/default/Meter/urn:ngsi-ld:Meter:ack-{i}/reading", str(i).encode(), qos=1)
    wait_for(lambda: len(seen) == 60, what="60 acknowledgements")
    assert all(stored >= acked for acked, stored in seen), seen
    assert len(broker.find("default", type="Meter", limit=1000)) == 60


def test_unacknowledged_messages_are_delivered_again_after_a_restart(
        platform: Platform, broker: Broker, publisher: mqtt.Client, prefix: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The first bridge cannot commit (the database is "down"), so it never acknowledges; Mosquitto keeps the
    # messages in the bridge's session and gives them to the next bridge with the same client id.
    cfg = config(prefix, session_expiry_s=60)
    first = MqttBridge(broker, cfg)

    def database_down(batch: Any) -> Any:
        raise sa_exc.OperationalError("INSERT …", None, Exception("database is down"))

    monkeypatch.setattr(first.writer, "write", database_down)
    first.start()
    try:
        assert first.subscribed.wait(10)
        for i in range(5):
            topic = f"{prefix}/default/Meter/urn:ngsi-ld:Meter:re-{i}/reading"
            publish(publisher, topic, {"value": i, "observedAt": T0})
        wait_for(lambda: first.stats["received"] == 5, what="the first bridge to hold the messages")
    finally:
        first.stop()
    assert broker.find("default", type="Meter") == []
    with running(broker, cfg) as second:
        wait_for(lambda: len(broker.find("default", type="Meter")) == 5, what="redelivery")
        wait_for(second.idle)
    for i in range(5):
        assert history(platform, broker, f"urn:ngsi-ld:Meter:re-{i}", "reading") == [(T0, i)]
    with running(broker, config(prefix)):  # the same client id with expiry 0 ends the session in Mosquitto
        pass


def test_a_duplicate_delivery_does_not_add_history(
        platform: Platform, broker: Broker, bridge: MqttBridge, publisher: mqtt.Client, prefix: str) -> None:
    eid = "urn:ngsi-ld:Buoy:rumoi-1"
    topic = f"{prefix}/default/Buoy/{eid}/attrs"
    first = {"waterTemperature": 8.5, "observedAt": T1}
    publish(publisher, topic, first)
    wait_for(settled(bridge, 1))
    publish(publisher, topic, first)  # the same message again, as a QoS 1 re-delivery would be
    publish(publisher, topic, {"waterTemperature": 8.7, "observedAt": T2})
    publish(publisher, topic, first)  # late: after a newer observation
    publish(publisher, topic, {"waterTemperature": 8.1, "observedAt": T0})  # an older one, for the first time
    publish(publisher, topic, first)
    wait_for(settled(bridge, 6))
    assert history(platform, broker, eid, "waterTemperature") == [(T0, 8.1), (T1, 8.5), (T2, 8.7)]
    # a late observation goes to history but never replaces a newer current value
    assert broker.get("default", eid)["waterTemperature"] == {"type": "Property", "value": 8.7,
                                                               "observedAt": T2}


def test_duplicates_inside_one_batch(platform: Platform, broker: Broker) -> None:
    writer = MqttWriter(broker)
    eid = "urn:ngsi-ld:Buoy:oshoro-1"
    topic = f"society5/default/Buoy/{eid}/attrs"

    def msg(value: float, at: str | None) -> Incoming:
        body: dict[str, Any] = {"waveHeight": value}
        if at:
            body["observedAt"] = at
        return Incoming(topic, orjson.dumps(body))

    report = writer.write([msg(1.0, T0), msg(1.2, T1), msg(1.0, T0), msg(1.2, T1), msg(0.9, T2)])
    assert report.values == 3 and report.dead == 0
    assert history(platform, broker, eid, "waveHeight") == [(T0, 1.0), (T1, 1.2), (T2, 0.9)]
    assert writer.write([msg(1.2, T1), msg(0.9, T2)]).values == 1  # the late T1 copy replaces its instance
    assert len(history(platform, broker, eid, "waveHeight")) == 3
    writer.write([msg(1.2, T1), msg(1.0, T0), msg(1.2, T1)])  # late copies only, in one batch
    assert broker.get("default", eid)["waveHeight"]["observedAt"] == T2
    assert len(history(platform, broker, eid, "waveHeight")) == 3
    # without observedAt, a value equal to the current one is the same observation (as over HTTP)
    writer.write([msg(2.0, None), msg(2.0, None)])
    writer.write([msg(2.0, None)])
    assert [v for _, v in history(platform, broker, eid, "waveHeight")].count(2.0) == 1


# --- bad messages -----------------------------------------------------------------------------------------


BAD = [
    ("default/Device/urn:ngsi-ld:Device:bad/attrs", b"{not json", "not JSON"),
    ("default/Device/urn:ngsi-ld:Device:bad/attrs", b"[1, 2]", "JSON object"),
    ("default/Device/urn:ngsi-ld:Device:bad/location", b'"here"', "location"),
    ("default/Device/urn:ngsi-ld:Device:bad/attrs", b'{"temperature": 1, "observedAt": "yesterday"}',
     "observedAt"),
    ("default/Device/urn:ngsi-ld:Device:bad/attrs", b'{"id": "urn:ngsi-ld:Device:other", "t": 1}', "differs"),
    ("default/Device/not-a-uri/temperature", b"1", "not a valid URI"),
    ("bad.tenant!/Device/urn:ngsi-ld:Device:bad/temperature", b"1", "tenant"),
    ("nosuch/Device/urn:ngsi-ld:Device:bad/temperature", b"1", "does not exist"),
]


def test_bad_messages_become_dead_letters_and_the_bridge_goes_on(
        platform: Platform, broker: Broker, bridge: MqttBridge, publisher: mqtt.Client, prefix: str) -> None:
    for rest, payload, _ in BAD:
        publish(publisher, f"{prefix}/{rest}", payload)
    publish(publisher, f"{prefix}/default/Device/urn:ngsi-ld:Device:good/temperature", b"20.5")
    wait_for(settled(bridge, len(BAD) + 1), what="every message")
    assert broker.get("default", "urn:ngsi-ld:Device:good", fmt="keyValues")["temperature"] == 20.5
    with pytest.raises(NotFound):
        broker.get("default", "urn:ngsi-ld:Device:bad")
    letters, total = DeadLetters(platform.engine).list()
    assert total == len(BAD) == bridge.stats["dead"]
    by_topic: dict[str, list[str]] = {}
    for row in letters:
        by_topic.setdefault(row["topic"], []).append(row["error"])
    for rest, _payload, fragment in BAD:
        errors = by_topic[f"{prefix}/{rest}"]
        assert any(fragment in e for e in errors), (rest, errors)
    bad_json = next(r for r in letters if r["payload"] == "{not json")
    assert bad_json["tenant"] == "default" and bad_json["received_at"].endswith("Z")


def test_a_long_payload_is_cut_in_the_dead_letter(platform: Platform, broker: Broker) -> None:
    writer = MqttWriter(broker, payload_limit=100)
    writer.write([Incoming("society5/default/Device/urn:ngsi-ld:Device:x/attrs", b"[" + b"1," * 5000)])
    (row,), _ = writer.dead_letters.list()
    assert row["payload"].startswith("[1,1,") and row["payload"].endswith("(10001 bytes)")
    assert len(row["payload"]) < 130


def test_tenant_mapping_limits_what_mqtt_may_write(platform: Platform, broker: Broker) -> None:
    platform.tenants.ensure("011002")
    platform.tenants.ensure("012025")
    writer = MqttWriter(broker, WritePolicy({"011002": "urn:ngsi-ld:Device:011002:", "default": ""}))

    def msg(tenant: str, eid: str) -> Incoming:
        return Incoming(f"society5/{tenant}/Device/{eid}/temperature", b"1")

    report = writer.write([
        msg("011002", "urn:ngsi-ld:Device:011002:a"),  # inside the tenant's prefix
        msg("011002", "urn:ngsi-ld:Device:012025:b"),  # outside it
        msg("012025", "urn:ngsi-ld:Device:012025:c"),  # a tenant MQTT may not write to
        msg("default", "urn:ngsi-ld:Device:anything"),  # "" = any id
    ])
    assert report.entities == 2 and report.dead == 2
    errors = {r["topic"].split("/")[1]: r["error"] for r in writer.dead_letters.list()[0]}
    assert "may write only entities whose id starts with 'urn:ngsi-ld:Device:011002:'" in errors["011002"]
    assert "not in SOCIETY5_MQTT_TENANTS" in errors["012025"]
    assert broker.get("011002", "urn:ngsi-ld:Device:011002:a")


# --- connection -------------------------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_unreachable_broker_is_retried_without_raising(broker: Broker, prefix: str) -> None:
    cfg = BridgeConfig.from_url(f"mqtt://127.0.0.1:{_closed_port()}", client_id=f"{prefix}-x", prefix=prefix)
    bridge = MqttBridge(broker, cfg).start()
    try:
        wait_for(lambda: bridge.stats["failed_connects"] >= 2, timeout=15, what="two connection attempts")
        assert bridge._thread is not None and bridge._thread.is_alive()
        assert not bridge.connected.is_set()
    finally:
        bridge.stop(timeout=10)
        assert not bridge._thread.is_alive()  # the retry wait wakes on stop instead of sleeping it out


def test_bad_broker_urls_are_config_errors() -> None:
    for url in ("http://127.0.0.1:1883", "mqtt://", "mqtt://host:99999", "127.0.0.1:1883"):
        with pytest.raises(ConfigError):
            BridgeConfig.from_url(url)
    with pytest.raises(ConfigError):
        BridgeConfig.from_url(MQTT_URL, prefix="a/+/b")
    cfg = BridgeConfig.from_url("mqtts://dev%40011002:p%3Ass@mqtt.example.jp")
    assert (cfg.tls, cfg.port, cfg.username, cfg.password) == (True, 8883, "dev@011002", "p:ss")
    assert cfg.client_id.startswith("society5-bridge-")
    shared = BridgeConfig.from_url(MQTT_URL, shared_group="s5")
    assert shared.topic_filters() == ["$share/s5/society5/+/+/+/+"]


def test_one_bridge_per_client_id_on_a_host(broker: Broker, prefix: str) -> None:
    # Two server workers with the same settings: one runs the bridge, the other stands by and takes over.
    with running(broker, config(prefix)) as one:
        assert one.subscribed.wait(10)
        other = MqttBridge(broker, config(prefix)).start()
        time.sleep(0.5)
        assert other._client is None
    try:
        assert other.subscribed.wait(15), "the standby bridge did not take over"
    finally:
        other.stop()


# --- started by the server and by `society5 mqtt` ---------------------------------------------------------


def test_the_server_starts_the_bridge(platform: Platform, publisher: mqtt.Client, prefix: str) -> None:
    from fastapi.testclient import TestClient

    from society5.broker.service import service as broker_service
    from society5.web.app import create_app

    platform.settings = platform.settings.model_copy(update={
        "mqtt_url": MQTT_URL, "mqtt_topic_prefix": prefix, "mqtt_client_id": f"{prefix}-server",
        "mqtt_session_expiry_s": 0})
    app = create_app(platform.settings, services=[broker_service], platform=platform)
    with TestClient(app) as client:
        bridge = platform.parts["mqtt_bridge"]
        assert bridge.subscribed.wait(10)
        publish(publisher, f"{prefix}/default/Device/urn:ngsi-ld:Device:srv-1/temperature", b"12.5")
        wait_for(settled(bridge, 1))
        got = client.get("/ngsi-ld/v1/entities/urn:ngsi-ld:Device:srv-1", params={"options": "keyValues"})
        assert got.status_code == 200 and got.json()["temperature"] == 12.5
        state = client.get("/admin/mqtt/dead-letters").json()["bridge"]
        assert state["running"] and state["connected"] and state["values"] == 1
    assert not bridge.connected.is_set()  # stopped with the server


def test_an_unreachable_broker_keeps_the_server_up(platform: Platform, prefix: str) -> None:
    from fastapi.testclient import TestClient

    from society5.broker.service import service as broker_service
    from society5.web.app import create_app

    platform.settings = platform.settings.model_copy(update={
        "mqtt_url": f"mqtt://127.0.0.1:{_closed_port()}", "mqtt_client_id": f"{prefix}-down"})
    app = create_app(platform.settings, services=[broker_service], platform=platform)
    with TestClient(app) as client:
        bridge = platform.parts["mqtt_bridge"]
        wait_for(lambda: bridge.stats["failed_connects"] >= 1, timeout=15)
        assert client.get("/healthz").status_code == 200
        created = client.post("/ngsi-ld/v1/entities", json={"id": "urn:ngsi-ld:T:1", "type": "T", "a": 1})
        assert created.status_code == 201
        state = client.get("/admin/mqtt/dead-letters").json()["bridge"]
        assert state["running"] and not state["connected"]


def test_the_mqtt_command_runs_the_bridge_until_stopped(tmp_path: Any, prefix: str,
                                                        publisher: mqtt.Client) -> None:
    import os
    import signal
    import sqlite3
    import subprocess
    import sys
    from pathlib import Path

    db = tmp_path / "cli.db"
    env = dict(os.environ, SOCIETY5_DATABASE_URL=f"sqlite:///{db}", SOCIETY5_MQTT_URL=MQTT_URL,
               SOCIETY5_MQTT_TOPIC_PREFIX=prefix, SOCIETY5_MQTT_CLIENT_ID=f"{prefix}-cli",
               SOCIETY5_MQTT_SESSION_EXPIRY_S="0", SOCIETY5_LOG_LEVEL="WARNING")
    proc = subprocess.Popen([str(Path(sys.executable).with_name("society5")), "mqtt"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def stored() -> bool:
        # QoS 1 messages published before the bridge subscribed are not kept: publish until one lands.
        publisher.publish(f"{prefix}/default/Device/urn:ngsi-ld:Device:cli-1/temperature", b"3", qos=1)
        time.sleep(0.2)
        try:
            with sqlite3.connect(db) as conn:
                return bool(conn.execute("SELECT count(*) FROM broker_entities WHERE id = ?",
                                         ("urn:ngsi-ld:Device:cli-1",)).fetchone()[0])
        except sqlite3.OperationalError:  # not migrated yet
            return False

    try:
        wait_for(stored, timeout=90, what="the command to store a message")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert b"MQTT bridge stopped" in err


def test_the_mqtt_command_needs_a_url(tmp_path: Any) -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if k != "SOCIETY5_MQTT_URL"}
    env["SOCIETY5_DATABASE_URL"] = f"sqlite:///{tmp_path / 'x.db'}"
    got = subprocess.run([str(Path(sys.executable).with_name("society5")), "mqtt"], env=env,
                         capture_output=True, timeout=60)
    assert got.returncode == 2 and b"SOCIETY5_MQTT_URL" in got.stderr
