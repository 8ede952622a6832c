"""``mqtt_ingest_ratio`` of ``society5 bench notify``: MQTT values stored per s ÷ a plain subscriber's rate.

Both phases use the same publisher (a separate process publishing QoS 1 as fast as Mosquitto accepts, for
``seconds``, round-robin over ``devices`` entity ids, one attribute value with ``observedAt`` per message):

1. a plain paho-mqtt subscriber (QoS 1, acknowledging as paho does by itself) counts what it receives;
2. the bridge stores what it receives into a fresh broker on ``settings.database_url``; its figure counts the
   attribute values committed to history (checked against the database at the end).

Each rate is counted from the first message received to the last one received (plain) or committed (bridge).
A subscriber slower than the publisher is simply saturated: Mosquitto drops what exceeds its queue for that
client, so each figure is that subscriber's capacity, never more than the publisher's rate.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa

PUBLISHER = r"""
import sys, time, orjson
import paho.mqtt.client as mqtt
host, port, prefix = sys.argv[1], int(sys.argv[2]), sys.argv[3]
seconds, devices = float(sys.argv[4]), int(sys.argv[5])
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=prefix + "-pub")
c.max_inflight_messages_set(1000)
c.max_queued_messages_set(2000)
c.connect(host, port)
c.loop_start()
topics = [f"{prefix}/default/Device/urn:ngsi-ld:Device:bench-{i:04d}/attrs" for i in range(devices)]
end = time.time() + seconds
n = 0
info = None
while time.time() < end:
    for _ in range(200):
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{n % 1000000:06d}Z"
        body = orjson.dumps({"temperature": n % 400 / 10, "observedAt": stamp})
        info = c.publish(topics[n % devices], body, qos=1)
        while info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:  # paho's own queue is full: wait for PUBACKs
            time.sleep(0.001)
            info = c.publish(topics[n % devices], body, qos=1)
        n += 1
if info is not None:
    info.wait_for_publish(30)
c.disconnect()
c.loop_stop()
print(n)
"""


def _publish(host: str, port: int, prefix: str, seconds: float, devices: int) -> int:
    args = [sys.executable, "-c", PUBLISHER, host, str(port), prefix, str(seconds), str(devices)]
    out = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 120, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def _plain_rate(host: str, port: int, prefix: str, seconds: float, devices: int) -> tuple[float, int, int]:
    import paho.mqtt.client as mqtt

    count = 0
    first = last = 0.0
    ready = threading.Event()

    def on_message(_c: Any, _u: Any, _m: Any) -> None:
        nonlocal count, first, last
        last = time.monotonic()
        if count == 0:
            first = last
        count += 1

    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=prefix + "-plain")
    sub.on_message = on_message
    sub.on_subscribe = lambda *_: ready.set()
    sub.connect(host, port)
    sub.subscribe(f"{prefix}/+/+/+/+", qos=1)
    sub.loop_start()
    try:
        if not ready.wait(10):
            raise RuntimeError("the plain subscriber could not subscribe")
        sent = _publish(host, port, prefix, seconds, devices)
        _settle(lambda: count)
    finally:
        sub.disconnect()
        sub.loop_stop()
    return count / max(last - first, 1e-9), count, sent


def _settle(progress: Any, quiet_s: float = 2.0, limit_s: float = 60.0) -> None:
    """Wait until ``progress()`` stops changing for ``quiet_s`` (or ``limit_s`` passed)."""
    end = time.monotonic() + limit_s
    seen, since = progress(), time.monotonic()
    while time.monotonic() < end:
        time.sleep(0.1)
        now = progress()
        if now != seen:
            seen, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return


def measure_mqtt_ingest(settings: Any, seconds: float = 10.0, devices: int = 200,
                        broker_url: str | None = None) -> dict[str, float]:
    """Measure both phases against the MQTT broker of ``broker_url`` (default: ``settings.mqtt_url`` or
    ``mqtt://127.0.0.1:1883``); the bridge writes into ``settings.database_url`` (a fresh database)."""
    from society5.broker.mqtt import BridgeConfig, running
    from society5.broker.service import start as start_broker
    from society5.broker.temporal_tables import instances
    from society5.core.platform import Platform

    url = broker_url or settings.mqtt_url or "mqtt://127.0.0.1:1883"
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 1883
    run = f"s5bench{uuid.uuid4().hex[:8]}"
    plain_per_s, plain_count, plain_sent = _plain_rate(host, port, run + "p", seconds, devices)

    plat = Platform.open(settings)
    try:
        broker = start_broker(plat)
        config = BridgeConfig.from_url(url, client_id=run + "-bridge", prefix=run + "b", session_expiry_s=0,
                                       receive_max=settings.mqtt_receive_max,
                                       batch_max=settings.mqtt_batch_max)
        plat.parts["temporal"].staging.settle()  # count history in one table
        with plat.engine.connect() as conn:
            before = conn.execute(sa.select(sa.func.count()).select_from(instances)).scalar() or 0
        with running(broker, config) as bridge:
            if not bridge.subscribed.wait(10):
                raise RuntimeError(f"the bridge could not subscribe at {url}")
            first: list[float] = []

            def watch() -> None:  # the time the first message arrived
                while not first and not stop.is_set():
                    if bridge.stats["received"]:
                        first.append(time.monotonic())
                    time.sleep(0.001)

            stop = threading.Event()
            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            bridge_sent = _publish(host, port, run + "b", seconds, devices)
            _settle(lambda: (bridge.stats["values"], bridge.stats["received"]))
            stop.set()
            stats = dict(bridge.stats)
            span = bridge.last_commit - first[0] if first else 0.0
        plat.parts["temporal"].staging.settle()
        with plat.engine.connect() as conn:
            stored = (conn.execute(sa.select(sa.func.count()).select_from(instances)).scalar() or 0) - before
    finally:
        plat.close()
    stored_per_s = stored / span if span > 0 else 0.0
    return {
        "stored_per_s": stored_per_s, "plain_per_s": plain_per_s,
        "ratio": stored_per_s / plain_per_s if plain_per_s else 0.0,
        "stored": stored, "bridge_received": stats["received"], "bridge_sent": bridge_sent,
        "plain_received": plain_count, "plain_sent": plain_sent, "batches": stats["batches"],
        "dead_letters": stats["dead"],
    }


if __name__ == "__main__":  # python -m society5.cli.bench_mqtt [seconds] [database-url]
    import tempfile

    from society5.core.settings import Settings

    secs = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
    db = sys.argv[2] if len(sys.argv) > 2 else f"sqlite:///{tempfile.mkdtemp()}/bench-mqtt.db"
    print(measure_mqtt_ingest(Settings(database_url=db, auth="off"), seconds=secs))
