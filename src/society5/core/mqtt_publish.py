"""Publishing to MQTT endpoints named by URI (``mqtt://user:pass@host:port/topic``, ``mqtts://`` for TLS).

Used by subscriptions with MQTT endpoints and by the notify layer's MQTT channel. One connected client per
broker and credentials is kept and reused: otherwise each message would pay a connect or TLS handshake.
A failed publish raises (``ConnectionError``/``TimeoutError``), so the outbox retries it.
"""

from __future__ import annotations

import logging
import ssl
import threading
import uuid
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MqttTarget:
    tls: bool
    host: str
    port: int
    username: str | None
    password: str | None
    topic: str

    @property
    def broker_key(self) -> tuple[bool, str, int, str | None, str | None]:
        return (self.tls, self.host, self.port, self.username, self.password)


def parse_target(uri: str) -> MqttTarget:
    """Split an MQTT endpoint URI; ``ValueError`` says what is wrong with it."""
    parts = urlsplit(uri)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ValueError(f"an MQTT endpoint must start with mqtt:// or mqtts://, not {uri!r}")
    if not parts.hostname:
        raise ValueError(f"the MQTT endpoint {uri!r} names no host")
    topic = unquote(parts.path[1:]) if parts.path.startswith("/") else ""
    # A "#" starts a URI fragment, so urlsplit would silently cut a multi-level wildcard off the topic.
    if not topic or "+" in topic or "#" in uri:
        raise ValueError(f"the MQTT endpoint {uri!r} must name one topic (no wildcards) after the host")
    try:
        port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
    except ValueError as err:
        raise ValueError(f"the MQTT endpoint {uri!r} has an invalid port") from err
    return MqttTarget(
        tls=parts.scheme == "mqtts",
        host=parts.hostname,
        port=port,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        topic=topic,
    )


class _Connection:
    def __init__(self, target: MqttTarget, connect_timeout_s: float):
        self.connected = threading.Event()
        client_id = f"society5-pub-{uuid.uuid4().hex[:12]}"
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        if target.username is not None:
            self.client.username_pw_set(target.username, target.password)
        if target.tls:
            self.client.tls_set_context(ssl.create_default_context())
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.connect_async(target.host, target.port, keepalive=30)
        self.client.loop_start()
        if not self.connected.wait(connect_timeout_s):
            self.close()
            raise ConnectionError(f"MQTT broker {target.host}:{target.port} did not accept a connection")

    def _on_connect(self, _c: object, _u: object, _f: object, reason: object, _p: object = None) -> None:
        if not getattr(reason, "is_failure", False):
            self.connected.set()

    def _on_disconnect(self, *_args: object) -> None:
        self.connected.clear()

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


_lock = threading.Lock()
_connections: dict[tuple[bool, str, int, str | None, str | None], _Connection] = {}


def publish(uri: str, payload: bytes, qos: int = 0, retain: bool = False, timeout_s: float = 5.0) -> None:
    """Publish one message and wait until the broker has it (PUBACK for QoS 1, PUBCOMP for QoS 2)."""
    if qos not in (0, 1, 2):
        raise ValueError(f"MQTT QoS must be 0, 1 or 2, not {qos!r}")
    target = parse_target(uri)
    with _lock:
        conn = _connections.get(target.broker_key)
        if conn is None or not conn.connected.is_set():
            if conn is not None:
                conn.close()
            conn = _Connection(target, timeout_s)
            _connections[target.broker_key] = conn
    where = f"{target.host}:{target.port}"
    info = conn.client.publish(target.topic, payload, qos=qos, retain=retain)
    if info.rc != mqtt.MQTT_ERR_SUCCESS:
        raise ConnectionError(f"MQTT publish to {where} failed: {mqtt.error_string(info.rc)}")
    info.wait_for_publish(timeout_s)
    if not info.is_published():
        raise TimeoutError(f"MQTT broker {where} did not acknowledge within {timeout_s} s")


def close_all() -> None:
    with _lock:
        for conn in _connections.values():
            conn.close()
        _connections.clear()
