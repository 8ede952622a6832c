"""Camera images announced over MQTT: ``{MQTT_TOPIC_PREFIX}-bears/{tenant}/{camera key}/image``.

A camera gateway publishes a small JSON notice, ``{"url": "http://…/frame.jpg", "taken_at": "…"}``
(``taken_at`` optional: the EXIF time is used), and serves the frame itself over HTTP; images do not travel
through the MQTT broker. The notice is taken off the network thread and handled by a worker: the URL is
fetched (http/https only, no redirects, BEARS_MAX_IMAGE_MB, a timeout) and the frame ingested like an upload.
A bad notice or a failed fetch is logged and dropped; nothing here may stop the subscriber.

Connection settings are the MQTT bridge's (MQTT_URL with credentials and TLS, MQTT_SHARED_GROUP so that
several hosts share the notices); the client id is its own.
"""

from __future__ import annotations

import json
import logging
import queue
import socket
import threading
from typing import Any
from urllib.parse import urlsplit

import httpx

from society5.core.errors import ApiError
from society5.services.bears import cameras, images

log = logging.getLogger(__name__)

NOTICE_MAX = 4096  # bytes of a notice: a URL and a time
QUEUE_MAX = 1000  # notices waiting for the worker; more are dropped (logged)
FETCH_TIMEOUT_S = 20.0


class Notice(ValueError):
    """A notice we cannot use; the message says why."""


def notice_root(prefix: str) -> str:
    """Notices live beside the broker bridge's topics, not under them: ``{prefix}/+/+/+/+`` would take
    ``{prefix}/bears/{tenant}/{camera}/image`` for an attribute write of tenant "bears"."""
    return f"{prefix}-bears"


def parse_notice(topic: str, payload: bytes, prefix: str) -> tuple[str, str, str, Any]:
    """(tenant, camera key, url, taken_at or None) of a notice, or :class:`Notice`."""
    levels = topic.split("/")
    root = notice_root(prefix)
    head = root.split("/")
    if levels[:len(head)] != head or len(levels) != len(head) + 3 or levels[-1] != "image":
        raise Notice(f"topic {topic!r}: expected {root}/{{tenant}}/{{camera key}}/image")
    tenant, key = levels[len(head)], levels[len(head) + 1]
    if not cameras.KEY_RE.match(key):
        raise Notice(f"topic {topic!r}: {key!r} is not a camera key")
    if len(payload) > NOTICE_MAX:
        raise Notice(f"notice of {len(payload)} bytes; expected a small JSON object")
    try:
        body = json.loads(payload)
    except ValueError:
        raise Notice("notice is not JSON") from None
    if not isinstance(body, dict) or not isinstance(body.get("url"), str):
        raise Notice('notice must be a JSON object with "url"')
    url = body["url"].strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Notice(f"url {url[:200]!r}: only http:// and https:// URLs are fetched")
    taken = body.get("taken_at")
    if taken is not None and not isinstance(taken, str):
        raise Notice("taken_at must be an ISO 8601 string")
    try:
        when = images.parse_time(taken)
    except ApiError as err:
        raise Notice(err.detail) from None
    return tenant, key, url, when


def fetch(url: str, max_bytes: int, timeout: float = FETCH_TIMEOUT_S) -> bytes:
    """The body at ``url``, refused once it passes ``max_bytes`` (read as it streams, never all at once)."""
    with httpx.Client(timeout=timeout, follow_redirects=False) as client, client.stream("GET", url) as resp:
        if resp.status_code != 200:
            raise Notice(f"GET {url[:200]} answered {resp.status_code}")
        length = resp.headers.get("content-length")
        if length and length.isdigit() and int(length) > max_bytes:
            raise Notice(f"{url[:200]}: {length} bytes is more than {max_bytes}")
        chunks, size = [], 0
        for chunk in resp.iter_bytes():
            size += len(chunk)
            if size > max_bytes:
                raise Notice(f"{url[:200]}: more than {max_bytes} bytes")
            chunks.append(chunk)
    return b"".join(chunks)


class ImageSubscriber:
    """Subscribes to image notices and ingests what they point at; ``start()`` returns at once."""

    def __init__(self, platform: Any) -> None:
        from society5.broker.mqtt import BridgeConfig

        settings = platform.settings
        self.platform = platform
        self.config = BridgeConfig.from_settings(settings)
        base = settings.mqtt_client_id or f"society5-bridge-{socket.gethostname()}"
        self.client_id = base[:50] + "-bears"
        self.topic = f"{notice_root(self.config.prefix)}/+/+/image"
        if settings.mqtt_shared_group:
            self.topic = f"$share/{settings.mqtt_shared_group}-bears/{self.topic}"
        self.subscribed = threading.Event()
        self.stats = {"received": 0, "stored": 0, "failed": 0, "dropped": 0}
        self._queue: queue.Queue[tuple[str, bytes] | None] = queue.Queue(QUEUE_MAX)
        self._worker: threading.Thread | None = None
        self._client: Any = None

    def start(self) -> ImageSubscriber:
        import paho.mqtt.client as mqtt

        cfg = self.config
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5)
        if cfg.username is not None:
            client.username_pw_set(cfg.username, cfg.password)
        if cfg.tls:
            import ssl

            client.tls_set_context(ssl.create_default_context())
        client.reconnect_delay_set(1, cfg.reconnect_max_s)
        client.on_connect = self._on_connect
        client.on_subscribe = lambda *_a: self.subscribed.set()
        client.on_message = self._on_message
        self._worker = threading.Thread(target=self._work, name="bears-mqtt-images", daemon=True)
        self._worker.start()
        client.connect_async(cfg.host, cfg.port, keepalive=60)
        client.loop_start()
        self._client = client
        log.info("subscribing to %s on %s for camera images", self.topic, cfg.where)
        return self

    def stop(self) -> None:
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
        if self._worker is not None:
            self._queue.put(None)
            self._worker.join(timeout=30)

    def _on_connect(self, client: Any, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if reason.is_failure:
            log.warning("MQTT broker %s refused the bears image subscriber: %s", self.config.where, reason)
            return
        client.subscribe(self.topic, qos=1)

    def _on_message(self, _client: Any, _userdata: Any, msg: Any) -> None:
        self.stats["received"] += 1
        try:
            self._queue.put_nowait((msg.topic, bytes(msg.payload)))
        except queue.Full:
            self.stats["dropped"] += 1
            log.warning("bears image notices come faster than they are fetched; dropped one on %s",
                        msg.topic)

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                self.handle(*item)
                self.stats["stored"] += 1
            except (Notice, ApiError, httpx.HTTPError) as err:
                self.stats["failed"] += 1
                log.warning("bears image notice on %s dropped: %s", item[0], getattr(err, "detail", err))
            except Exception:
                self.stats["failed"] += 1
                log.exception("bears image notice on %s failed", item[0])

    def handle(self, topic: str, payload: bytes) -> dict[str, Any]:
        tenant, key, url, when = parse_notice(topic, payload, self.config.prefix)
        if not self.platform.tenants.exists(tenant):
            raise Notice(f"topic {topic!r}: {tenant!r} is not a tenant")
        cameras.get(self.platform, tenant, key)  # an unknown camera is refused before fetching anything
        settings = self.platform.settings
        data = fetch(url, settings.bears_max_image_mb * 2**20)
        return images.ingest(self.platform, tenant, data, camera_id=key, source="mqtt", taken_at=when)
