#!/usr/bin/env python3
"""Bear-alert fan-out: one verified sighting inside the areas of 10,000 subscribers, until all messages land.

Usage::

    python bench/bears_alerts.py [--database-url URL] [--subscribers N] [--channel webhook|mail|both]
                                 [--quick]

The platform runs in this process as a server does (broker, notify, the outbox dispatcher with
SOCIETY5_OUTBOX_WORKERS workers); the sinks run in a child process so they do not share its interpreter: an
HTTP/1.1 keep-alive webhook receiver and an aiosmtpd SMTP server, each recording when every message arrived.
The clock starts when staff verify the sighting (the API call that raises the alert) and each subscriber's
latency is its message's arrival. The per-destination rate limits are lifted (``NOTIFY_RATE_*=0``): the sink
is one machine standing in for thousands of receivers, and the figure is the platform's own capacity.

The LAST line of stdout is ``fanout_p99_s=<x> delivered=<n>/<N>`` for the last run (webhook unless
``--channel mail``). Never asserts on time.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

try:
    import sqlalchemy as sa
except ImportError:  # pragma: no cover - started with a Python that lacks the project's dependencies
    _VENV = Path(__file__).resolve().parents[1] / ".venv"
    if __name__ == "__main__" and (_VENV / "bin" / "python").exists() and Path(sys.prefix).resolve() != _VENV:
        os.execv(str(_VENV / "bin" / "python"), [str(_VENV / "bin" / "python"), *sys.argv])
    raise

TENANT = "011002"
SPOT = (43.0236, 141.3221)


# -- the sinks (child process) -----------------------------------------------------------------------------
def _sinks(conn: Any) -> None:
    import asyncio
    import socket
    import threading

    from aiosmtpd.controller import Controller

    arrivals: list[float] = []
    lock = threading.Lock()
    answer = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"

    class Hook(asyncio.Protocol):
        """A minimal HTTP/1.1 keep-alive receiver on raw asyncio (well over 5,000 requests a second on one
        core): a thread-per-connection http.server would measure the sink, not the platform. Every request
        is answered 200 as soon as its body has arrived."""

        def connection_made(self, transport: Any) -> None:
            self.transport = transport  # asyncio sets TCP_NODELAY on its TCP connections
            self.buffer = b""

        def data_received(self, data: bytes) -> None:
            self.buffer += data
            while True:
                end = self.buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                length = 0
                for line in self.buffer[:end].split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                total = end + 4 + length
                if len(self.buffer) < total:
                    return
                self.buffer = self.buffer[total:]
                with lock:
                    arrivals.append(time.time())
                self.transport.write(answer)

    def serve_http(ready: Any) -> None:
        try:
            import uvloop

            loop = uvloop.new_event_loop()
        except ImportError:
            loop = asyncio.new_event_loop()
        server = loop.run_until_complete(loop.create_server(Hook, "127.0.0.1", 0, backlog=1024))
        ready.append(server.sockets[0].getsockname()[1])
        loop.run_forever()

    started: list[int] = []
    threading.Thread(target=serve_http, args=(started,), daemon=True).start()
    while not started:
        time.sleep(0.01)
    http_port = started[0]

    class Box:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            with lock:
                arrivals.extend([time.time()] * len(envelope.rcpt_tos))
            return "250 OK"

    with socket.socket() as probe:  # aiosmtpd checks its own port after starting, so it needs a real one
        probe.bind(("127.0.0.1", 0))
        smtp_port = probe.getsockname()[1]
    smtp = Controller(Box(), hostname="127.0.0.1", port=smtp_port)
    smtp.start()
    conn.send((http_port, smtp_port))
    while True:
        command = conn.recv()
        if command == "take":
            with lock:
                taken, arrivals[:] = list(arrivals), []
            conn.send(taken)
        else:
            break
    smtp.stop()


# -- the platform ------------------------------------------------------------------------------------------
def _platform(database_url: str, smtp_port: int) -> Any:
    from society5.broker.service import start
    from society5.core.platform import Platform
    from society5.core.settings import Settings
    from society5.services.bears import alerts  # noqa: F401  (registers the alert listener)

    settings = Settings(
        database_url=database_url,
        auth="off",
        secret_key="bench",
        notify_rate_webhook=0,
        notify_rate_mail=0,
        smtp_host="127.0.0.1",
        smtp_port=smtp_port,
        smtp_starttls=False,
        smtp_from="bears@bench.example.jp",
        outbox_workers=int(os.environ.get("SOCIETY5_OUTBOX_WORKERS", "32")),
    )
    platform = Platform.open(settings)
    start(platform)
    platform.tenants.ensure(TENANT, name="札幌市")
    from society5.notify import notifier_of

    notifier_of(platform)
    return platform


def _subscribe(platform: Any, n: int, channel: str, hook_url: str) -> None:
    """N recipients and subscriptions written in bulk (the sign-up path is not what is measured)."""
    import random
    import secrets
    import uuid

    from society5.core.timeutil import now_iso
    from society5.notify.tables import recipients
    from society5.services.bears.tables import subscriptions

    rng = random.Random(5)
    now = now_iso()
    people, subs = [], []
    for i in range(n):
        rid = f"bench-{channel}-{i}"
        address = f"{hook_url}/hook/{i}" if channel == "webhook" else f"resident{i}@example.jp"
        people.append(
            {
                "tenant": TENANT,
                "id": rid,
                "name": f"住民{i}",
                "language": "ja" if i % 10 else "en",
                "channels": {channel: address},
                "channel_order": [],
                "quiet_start": None,
                "quiet_end": None,
                "timezone": "Asia/Tokyo",
                "webhook_secret": None,
                "tags": ["bears"],
                "active": True,
                "created_at": now,
                "updated_at": now,
            }
        )
        # Circles of 0.5–3 km whose centres lie within 400 m of the sighting: all contain it.
        subs.append(
            {
                "id": str(uuid.uuid4()),
                "tenant": TENANT,
                "recipient_id": rid,
                "kind": "resident",
                "lat": SPOT[0] + rng.uniform(-0.0035, 0.0035),
                "lon": SPOT[1] + rng.uniform(-0.0035, 0.0035),
                "radius_m": rng.uniform(500, 3000),
                "municipality": None,
                "area_name": None,
                "min_level": 1,
                "confirmed": True,
                "token": secrets.token_urlsafe(32),
                "active": True,
                "created_at": now,
                "confirmed_at": now,
                "client": None,
            }
        )
    with platform.engine.begin() as conn:
        conn.execute(recipients.insert(), people)
        conn.execute(subscriptions.insert(), subs)


def _clear(platform: Any) -> None:
    from society5.core.tables import outbox
    from society5.notify.tables import deliveries, recipients
    from society5.services.bears.tables import alerts, subscriptions

    with platform.engine.begin() as conn:
        for table in (subscriptions, recipients, alerts, deliveries, outbox):
            conn.execute(sa.delete(table))


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def run(platform: Any, sink: Any, channel: str, n: int, hook_url: str, timeout_s: float) -> tuple[float, int]:
    from society5.services.bears.sightings import sightings_of

    _clear(platform)
    _subscribe(platform, n, channel, hook_url)
    sink.send("take")
    sink.recv()
    store = sightings_of(platform)
    when = (datetime.now(UTC) - timedelta(minutes=2)).isoformat()
    s = store.create(
        TENANT,
        {
            "observed_at": when,
            "lat": SPOT[0],
            "lon": SPOT[1],
            "area_name": "ベンチ地区",
            "source": "resident",
        },
    )
    started = time.time()
    store.set_state(TENANT, s["id"], "verified", "bench")  # raises the alert and queues every message
    queued = time.time() - started
    arrivals: list[float] = []
    deadline = started + timeout_s
    while len(arrivals) < n and time.time() < deadline:
        time.sleep(0.1)
        sink.send("take")
        arrivals.extend(sink.recv())
    latencies = [t - started for t in arrivals[:n]]
    if not latencies:
        print(f"{channel}: nothing arrived within {timeout_s:.0f} s")
        return float("inf"), 0
    p50, p99 = _percentile(latencies, 0.50), _percentile(latencies, 0.99)
    if len(latencies) < n:
        p99 = float("inf")  # some never arrived: the p99 is not known to be under the timeout
    print(
        f"{channel:8s} subscribers={n} queued_in={queued:.2f}s delivered={len(latencies)}/{n} "
        f"p50={p50:.2f}s p99={p99:.2f}s max={max(latencies):.2f}s"
    )
    return p99, len(latencies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", default=None, help="default: a temporary SQLite file")
    parser.add_argument("--subscribers", type=int, default=10_000)
    parser.add_argument("--channel", choices=("webhook", "mail", "both"), default="both")
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="give up waiting after this many seconds"
    )
    parser.add_argument("--quick", action="store_true", help="200 subscribers: a smoke test only")
    args = parser.parse_args()
    n = 200 if args.quick else args.subscribers
    tmp = tempfile.TemporaryDirectory(prefix="s5bench-bears-")
    url = args.database_url or f"sqlite:///{tmp.name}/bench.db"

    parent, child = mp.Pipe()
    proc = mp.get_context("spawn").Process(target=_sinks, args=(child,), daemon=True)
    proc.start()
    http_port, smtp_port = parent.recv()
    hook_url = f"http://127.0.0.1:{http_port}"
    platform = _platform(url, smtp_port)
    platform.outbox.start()
    channels = ["mail", "webhook"] if args.channel == "both" else [args.channel]
    print(
        f"database={platform.engine.dialect.name} outbox_workers={platform.outbox.workers} "
        f"cpus={os.cpu_count()}"
    )
    result = (float("inf"), 0)
    try:
        for channel in channels:
            result = run(platform, parent, channel, n, hook_url, args.timeout)
    finally:
        platform.close()
        parent.send("stop")
        proc.join(timeout=5)
        tmp.cleanup()
    print(json.dumps({"channel": channels[-1], "p99_s": result[0], "delivered": result[1]}))
    print(f"fanout_p99_s={result[0]:.2f} delivered={result[1]}/{n}")


if __name__ == "__main__":
    main()
