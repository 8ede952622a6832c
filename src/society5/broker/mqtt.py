"""The MQTT ingestion bridge: sensors publish to Mosquitto, the bridge writes what they send into the broker.

Topic scheme and payloads: :mod:`society5.broker.mqtt_topics`; writing and dead letters:
:mod:`society5.broker.mqtt_store`; operators' guide (Mosquitto ACLs, device passwords): ``docs/mqtt.md``.

Delivery: the bridge subscribes with QoS 1 and acknowledges (PUBACK) a message only after the transaction
that stores it has committed, so a message the bridge dies holding is delivered again. It connects with
MQTT 5, a stable client id and a session that outlives the connection (``SOCIETY5_MQTT_SESSION_EXPIRY_S``),
so Mosquitto also keeps what arrives while the bridge restarts. Messages that arrive together are written
together: the paho network thread queues them, one writer thread drains the queue into one transaction per
tenant, then acknowledges the whole batch. ``Receive Maximum`` lets Mosquitto send that many messages ahead
of the acknowledgements; without it a broker stops after 20 and batches would stay tiny.

An unreachable broker is retried with backoff (logged, never raised): the server keeps running. Only one
bridge per client id runs on a host (a lock file), so ``society5 serve --workers N`` starts one, and another
worker takes over when it exits.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import queue
import socket
import ssl
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
import sqlalchemy.exc as sa_exc
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from society5.broker.core import Broker
from society5.broker.mqtt_store import Incoming, MqttWriter, WritePolicy, WriteReport
from society5.broker.mqtt_topics import DEFAULT_PREFIX, subscriptions
from society5.core.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BridgeConfig:
    host: str
    port: int = 1883
    tls: bool = False
    username: str | None = None
    password: str | None = None
    client_id: str = ""
    prefix: str = DEFAULT_PREFIX
    shared_group: str = ""  # several hosts split one stream through a shared subscription
    tenants: dict[str, str] = field(default_factory=dict)
    receive_max: int = 2000
    batch_max: int = 1000
    session_expiry_s: int = 3600
    payload_limit: int = 4096
    reconnect_max_s: int = 60

    @classmethod
    def from_url(cls, url: str, **options: Any) -> BridgeConfig:
        """``mqtt://user:password@host:port`` (``mqtts://`` for TLS); ConfigError says what is wrong."""
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ConfigError(
                f"SOCIETY5_MQTT_URL must look like mqtt://host:1883 or mqtts://host:8883, not {url!r}")
        try:
            port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
        except ValueError as err:
            raise ConfigError(f"SOCIETY5_MQTT_URL {url!r} has an invalid port") from err
        options = {k: v for k, v in options.items() if v is not None}
        if not options.get("client_id"):
            options["client_id"] = f"society5-bridge-{socket.gethostname()}"[:64]
        return cls(host=parts.hostname, port=port, tls=parts.scheme == "mqtts",
                   username=unquote(parts.username) if parts.username else None,
                   password=unquote(parts.password) if parts.password else None, **options)

    @classmethod
    def from_settings(cls, settings: Any) -> BridgeConfig:
        return cls.from_url(
            settings.mqtt_url, client_id=settings.mqtt_client_id, prefix=settings.mqtt_topic_prefix,
            shared_group=settings.mqtt_shared_group, tenants=dict(settings.mqtt_tenants),
            receive_max=settings.mqtt_receive_max, batch_max=settings.mqtt_batch_max,
            session_expiry_s=settings.mqtt_session_expiry_s,
            payload_limit=settings.mqtt_dead_letter_payload_max,
        )

    def __post_init__(self) -> None:
        if not self.prefix or any(c in self.prefix for c in "+#") or self.prefix.startswith(("/", "$")) or (
            self.prefix.endswith("/")
        ):
            raise ConfigError(f"SOCIETY5_MQTT_TOPIC_PREFIX {self.prefix!r}: use topic levels such as "
                              "society5 (no wildcards, no leading or trailing /)")
        if self.shared_group and any(c in self.shared_group for c in "+#/"):
            raise ConfigError(f"SOCIETY5_MQTT_SHARED_GROUP {self.shared_group!r} must be one topic level")

    @property
    def where(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"

    def topic_filters(self) -> list[str]:
        filters = subscriptions(self.prefix)
        return [f"$share/{self.shared_group}/{f}" for f in filters] if self.shared_group else filters


class MqttBridge:
    """Subscribe, store, acknowledge. ``start()`` returns at once; ``stop()`` finishes the batch in hand."""

    def __init__(self, broker: Broker, config: BridgeConfig):
        self.broker = broker
        self.config = config
        self.writer = MqttWriter(broker, WritePolicy(config.tenants), config.prefix, config.payload_limit)
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.stats = {"received": 0, "values": 0, "entities": 0, "dead": 0, "batches": 0, "connects": 0,
                      "failed_connects": 0, "dropped_qos0": 0}
        self.last_commit = 0.0  # time.monotonic() of the last committed batch
        self._queue: queue.SimpleQueue[Incoming] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._generation = 0  # bumped on every connection: acks for older connections are void
        self._thread: threading.Thread | None = None
        self._client: mqtt.Client | None = None
        self._lock_file: Any = None
        self._lock_path = ""
        self._done = 0  # messages written and acknowledged (only the writer thread changes it)
        self._told_standby = False

    # -- lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> MqttBridge:
        self._thread = threading.Thread(target=self._run, name="mqtt-bridge", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
        client = self._client
        if client is not None:
            client.disconnect()
            client.loop_stop()
        if self._lock_file is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._lock_path)  # before unlocking: a standby then finds it replaced, and retries
            self._lock_file.close()
            self._lock_file = None

    def idle(self) -> bool:
        """Every message received so far is written (or dead-lettered) and acknowledged."""
        return self._done >= self.stats["received"]

    def _run(self) -> None:
        while not self._take_lock():
            if self._stopping.wait(5.0):
                return
        self._client = self._make_client()
        cfg = self.config
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = cfg.session_expiry_s
        props.ReceiveMaximum = cfg.receive_max
        self._client.connect_async(cfg.host, cfg.port, keepalive=30, clean_start=False, properties=props)
        self._client.loop_start()
        log.info("MQTT bridge connecting to %s as %s (topics %s)", cfg.where, cfg.client_id,
                 cfg.topic_filters())
        self._write_loop()

    def _take_lock(self) -> bool:
        try:
            import fcntl
        except ImportError:  # not POSIX: run without the one-bridge-per-host guard
            return True
        key = f"{self.config.client_id}@{self.config.host}:{self.config.port}".encode()
        path = os.path.join(tempfile.gettempdir(), f"society5-mqtt-{hashlib.sha1(key).hexdigest()[:16]}.lock")
        handle = open(path, "a+")  # noqa: SIM115 - held open for the bridge's life
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # The holder removes the file when it stops: a lock taken on a file already removed is no lock.
            if os.fstat(handle.fileno()).st_ino != os.stat(path).st_ino:
                raise OSError("the lock file was replaced")
        except OSError:
            handle.close()
            if not self._told_standby:
                log.info("another process runs the MQTT bridge %s on this host; standing by",
                         self.config.client_id)
                self._told_standby = True
            return False
        self._lock_file = handle
        self._lock_path = path
        return True

    def _make_client(self) -> mqtt.Client:
        cfg = self.config
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cfg.client_id,
                             protocol=mqtt.MQTTv5, manual_ack=True)
        if cfg.username is not None:
            client.username_pw_set(cfg.username, cfg.password)
        if cfg.tls:
            client.tls_set_context(ssl.create_default_context())
        client.reconnect_delay_set(1, cfg.reconnect_max_s)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    # -- paho callbacks (network thread) ---------------------------------------------------------------------
    def _on_connect(self, client: mqtt.Client, _userdata: Any, flags: Any, reason: Any, _props: Any) -> None:
        if reason.is_failure:
            self.stats["failed_connects"] += 1
            log.warning("MQTT broker %s refused the bridge: %s", self.config.where, reason)
            return
        self._generation += 1
        self.stats["connects"] += 1
        self.connected.set()
        log.info("MQTT bridge connected to %s (session %s)", self.config.where,
                 "resumed" if flags.session_present else "new")
        client.subscribe([(f, 1) for f in self.config.topic_filters()])

    def _on_connect_fail(self, _client: mqtt.Client, _userdata: Any) -> None:
        self.stats["failed_connects"] += 1
        failures = self.stats["failed_connects"]
        if failures <= 3 or failures % 10 == 0:  # an outage must not flood the log
            log.warning("MQTT broker %s unreachable (attempt %d); retrying with backoff up to %d s",
                        self.config.where, failures, self.config.reconnect_max_s)

    def _on_disconnect(self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any,
                       _props: Any) -> None:
        self.connected.clear()
        self.subscribed.clear()
        if not self._stopping.is_set():
            log.warning("MQTT bridge lost its connection to %s (%s); reconnecting", self.config.where, reason)

    def _on_subscribe(self, _client: mqtt.Client, _userdata: Any, _mid: int, codes: Any, _props: Any) -> None:
        refused = [c for c in codes if c.is_failure]
        if refused:
            log.error("MQTT broker %s refused the bridge's subscription: %s (check its ACL)",
                      self.config.where, refused)
            return
        self.subscribed.set()

    def _on_message(self, _client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            topic = msg.topic
        except UnicodeDecodeError:  # MQTT demands UTF-8 topics; keep the message as a dead letter anyway
            topic = msg._topic.decode("utf-8", errors="replace")
        if msg.qos == 0 and self._queue.qsize() > 10 * self.config.receive_max:
            # Receive Maximum bounds only QoS 1 and 2: a QoS 0 flood would otherwise grow the queue unbounded.
            self.stats["dropped_qos0"] += 1
            if self.stats["dropped_qos0"] % 1000 == 1:
                log.warning("MQTT bridge is behind: dropped %d QoS 0 messages", self.stats["dropped_qos0"])
            return
        self.stats["received"] += 1
        self._queue.put(Incoming(topic, bytes(msg.payload), mid=msg.mid, qos=msg.qos,
                                 generation=self._generation))

    # -- the writer (bridge thread) --------------------------------------------------------------------------
    def _write_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                first = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            batch = [first]
            while len(batch) < self.config.batch_max:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if self._store(batch):
                self._ack(batch)
                self._done += len(batch)

    def _store(self, batch: list[Incoming]) -> bool:
        """Write the batch; True once it is committed (False: stopping before the database came back)."""
        delay = 0.5
        while True:
            try:
                try:
                    report = self.writer.write(batch)
                except (sa_exc.OperationalError, sa_exc.InterfaceError):
                    raise
                except Exception:
                    log.exception("storing a batch of %d MQTT messages failed; storing them one by one",
                                  len(batch))
                    report = self.writer.write_each(batch)
            except (sa_exc.OperationalError, sa_exc.InterfaceError) as err:
                # The database is down or busy: keep the messages (unacknowledged) and try again.
                log.warning("database unavailable for MQTT messages (%s); retrying in %.1f s",
                            str(err).splitlines()[0], delay)
                if self._stopping.wait(delay):
                    return False
                delay = min(delay * 2, 30.0)
                continue
            self._count(report)
            return True

    def _count(self, report: WriteReport) -> None:
        self.stats["values"] += report.values
        self.stats["entities"] += report.entities
        self.stats["dead"] += report.dead
        self.stats["batches"] += 1
        self.last_commit = time.monotonic()

    def _ack(self, batch: list[Incoming]) -> None:
        client = self._client
        if client is None:
            return
        generation = self._generation
        for m in batch:
            # After a reconnect the broker re-sends what was not acknowledged; an ack meant for the old
            # connection could acknowledge a different message that happens to reuse the packet id.
            if m.qos and m.generation == generation:
                client.ack(m.mid, m.qos)


class _Off:
    def stop(self) -> None:
        """Nothing runs when no MQTT broker is configured."""


def start(platform: Any) -> MqttBridge | _Off:
    """The broker service's background hook: run the bridge when ``SOCIETY5_MQTT_URL`` is set."""
    settings = platform.settings
    if not settings.mqtt_url:
        return _Off()
    broker = platform.parts.get("broker")
    if broker is None:
        raise ConfigError("the MQTT bridge needs the broker service")
    bridge = MqttBridge(broker, BridgeConfig.from_settings(settings)).start()
    platform.parts["mqtt_bridge"] = bridge
    return bridge


@contextlib.contextmanager
def running(broker: Broker, config: BridgeConfig) -> Any:
    """A bridge for the duration of a ``with`` block (tests, benchmarks, ``society5 mqtt``)."""
    bridge = MqttBridge(broker, config).start()
    try:
        yield bridge
    finally:
        bridge.stop()
