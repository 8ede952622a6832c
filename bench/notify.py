#!/usr/bin/env python3
"""Notification, MQTT-ingest and history benchmark: a real ``society5 serve`` against same-run baselines.

Usage::

    python bench/notify.py [--database-url URL] [--quick] [--skip-mqtt]

Three figures, printed as the LAST line of stdout::

    notify_p99_ms=<a> mqtt_ingest_ratio=<b> temporal_p95_ms=<c>

* ``notify_p99_ms``: p99 of the time from a ``PATCH …/attrs/{attr}`` response to the webhook receiving the
  notification it caused, at 200 updates/s spread over 100 entities with 100 active subscriptions (one per
  entity), the receiver an HTTP/1.1 server on loopback in this process.
* ``mqtt_ingest_ratio``: attribute values/s stored from MQTT (QoS 1, many devices) ÷ messages/s a plain
  paho-mqtt subscriber receives from the same publisher in the same run (``society5.cli.bench_mqtt``).
* ``temporal_p95_ms``: p95 latency of an hourly-average aggregation over 30 days of 1-minute history of one
  entity (``aggrMethods=avg&aggrPeriodDuration=PT1H``, 720 buckets of 60 values) with 10 million history rows
  stored. The rows are written straight into the history tables (the ingest path is measured elsewhere).

See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

try:
    import httpx
    from rich.console import Console
    from rich.table import Table
except ImportError:  # pragma: no cover - started with a Python that lacks the project's dependencies
    _VENV = Path(__file__).resolve().parents[1] / ".venv"
    if __name__ == "__main__" and (_VENV / "bin" / "python").exists() and Path(sys.prefix).resolve() != _VENV:
        os.execv(str(_VENV / "bin" / "python"), [str(_VENV / "bin" / "python"), *sys.argv])
    raise


def _load_broker_bench() -> Any:
    spec = importlib.util.spec_from_file_location("s5_bench_broker", Path(__file__).with_name("broker.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


bb = _load_broker_bench()  # the server runner, database set-up and percentile of the broker benchmark
NGSI = "/ngsi-ld/v1"
JSON = {"Content-Type": "application/json"}
TARGETS = {"notify_p99_ms": ("<=", 100.0), "mqtt_ingest_ratio": (">=", 0.5), "temporal_p95_ms": ("<=", 200.0)}
POWER_IRI = "https://uri.etsi.org/ngsi-ld/default-context/power"
DAY_S = 86_400
err = Console(stderr=True)


@dataclass
class Sizes:
    subscriptions: int = 100
    rate: int = 200  # PATCHes per second
    notify_seconds: float = 20.0
    history_rows: int = 10_000_000
    days: int = 30
    queries: int = 100
    mqtt_seconds: float = 10.0

    @classmethod
    def of(cls, quick: bool) -> Sizes:
        if quick:
            return cls(subscriptions=20, rate=50, notify_seconds=3.0, history_rows=200_000, queries=10,
                       mqtt_seconds=2.0)
        return cls()


@dataclass
class Result:
    figures: dict[str, float] = field(default_factory=dict)
    facts: list[tuple[str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


# --- notification latency -----------------------------------------------------------------------------------


class Receiver:
    """A loopback webhook that stamps each notification's arrival by the ``seq`` value it carries."""

    def __init__(self) -> None:
        self.arrived: dict[int, float] = {}
        self.count = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a real receiver would offer

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                now = time.monotonic()
                try:
                    for entity in json.loads(body).get("data", []):
                        seq = entity.get("seq")
                        seq = seq.get("value") if isinstance(seq, dict) else seq
                        if isinstance(seq, int):
                            receiver.arrived.setdefault(seq, now)
                    receiver.count += 1
                except ValueError:
                    pass
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/notify"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def measure_notify(base: str, sizes: Sizes, result: Result) -> None:
    receiver = Receiver()
    ids = [f"urn:ngsi-ld:Sensor:nb-{i:04d}" for i in range(sizes.subscriptions)]
    with httpx.Client(base_url=base, timeout=30) as client:
        body = [{"id": eid, "type": "Sensor", "seq": {"type": "Property", "value": -1}} for eid in ids]
        r = client.post(f"{NGSI}/entityOperations/upsert", json=body, headers=JSON)
        r.raise_for_status()
        for eid in ids:
            sub = {"type": "Subscription", "entities": [{"id": eid, "type": "Sensor"}],
                   "watchedAttributes": ["seq"],
                   "notification": {"attributes": ["seq"], "format": "keyValues",
                                    "endpoint": {"uri": receiver.url, "accept": "application/json"}}}
            r = client.post(f"{NGSI}/subscriptions", json=sub, headers=JSON)
            if r.status_code != 201:
                raise SystemExit(f"creating a subscription failed: {r.status_code} {r.text}")
    total = int(sizes.rate * sizes.notify_seconds)
    answered: dict[int, float] = {}
    failures: list[str] = []
    workers = 8
    start = time.monotonic() + 0.5

    def send(worker: int) -> None:
        with httpx.Client(base_url=base, timeout=30) as client:
            for seq in range(worker, total, workers):
                due = start + seq / sizes.rate
                pause = due - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                eid = ids[seq % len(ids)]
                resp = client.patch(f"{NGSI}/entities/{eid}/attrs/seq",
                                    json={"type": "Property", "value": seq}, headers=JSON)
                if resp.status_code == 204:
                    answered[seq] = time.monotonic()
                else:
                    failures.append(f"{resp.status_code} {resp.text[:200]}")

    threads = [threading.Thread(target=send, args=(w,)) for w in range(workers)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    sent_for = time.monotonic() - start
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(receiver.arrived) < len(answered):
        time.sleep(0.05)
    receiver.close()
    arrived = receiver.arrived
    latencies = [max(0.0, (arrived[s] - t) * 1000) for s, t in answered.items() if s in arrived]
    missing = len(answered) - len(latencies)
    result.figures["notify_p99_ms"] = bb.percentile(latencies, 99)
    result.facts += [
        ("PATCHes answered 204", f"{len(answered)} of {total} in {sent_for:.1f} s "
                                 f"({len(answered) / sent_for:.0f}/s; target rate {sizes.rate}/s)"),
        ("notification latency p50 / p95 / p99 / max",
         " / ".join(f"{bb.percentile(latencies, p):.1f}" for p in (50, 95, 99))
         + f" / {max(latencies, default=float('nan')):.1f} ms"),
        ("notifications received", f"{receiver.count} ({missing} updates never notified)"),
    ]
    if failures:
        result.problems.append(f"{len(failures)} PATCHes failed; first: {failures[0]}")
    if missing:
        result.problems.append(f"{missing} acknowledged updates were not notified within 30 s")


# --- history aggregation ------------------------------------------------------------------------------------


def fill_history(url: str, base: str, sizes: Sizes, result: Result) -> list[str]:
    """Entities with 30 days of 1-minute power readings, written straight into the history tables."""
    per_entity = sizes.days * 1440
    count = max(1, -(-sizes.history_rows // per_entity))
    ids = [f"urn:ngsi-ld:PowerMeter:tb-{i:04d}" for i in range(count)]
    with httpx.Client(base_url=base, timeout=60) as client:
        body = [{"id": eid, "type": "PowerMeter", "power": {"type": "Property", "value": 0.0}} for eid in ids]
        client.post(f"{NGSI}/entityOperations/upsert", json=body, headers=JSON).raise_for_status()
        # Any read of history first expands what the server has logged: on SQLite the series these rows
        # belong to are made then.
        client.get(f"{NGSI}/temporal/entities/{ids[0]}", headers=JSON).raise_for_status()
    t0 = time.perf_counter()
    end = (int(time.time()) // 3600) * 3600
    first = end - sizes.days * DAY_S
    rng = random.Random(7)
    if url.startswith("sqlite"):
        rows = _fill_sqlite(url.removeprefix("sqlite:///"), ids, first, per_entity, rng)
    else:
        rows = _fill_postgres(bb.libpq_url(url), ids, first, per_entity, rng)
    took = time.perf_counter() - t0
    result.facts.append(("history rows written directly", f"{rows:,} in {took:.0f} s ({count} entities × "
                                                         f"{per_entity:,} one-minute readings)"))
    return ids


def _readings(sid: int, first: int, n: int, rng: random.Random) -> Any:
    now = "2026-01-01T00:00:00Z"
    for k in range(n):
        ts = first + 60 * k
        value = round(0.3 + rng.random() * 2.5, 3)
        observed = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
        doc = f'{{"type":"Property","value":{value},"observedAt":"{observed}"}}'
        yield (sid, f"urn:ngsi-ld:attribute:instance:bench-{sid}-{k}", False, float(ts), observed, now, now,
               float(ts), float(ts), value, doc)


COLUMNS = ("sid", "instance_id", "deleted", "ts", "observed_at", "created_at", "modified_at", "created_ts",
           "modified_ts", "value_num", "instance")


def _sids(cur: Any, ids: list[str], mark: str) -> list[int]:
    sids = []
    for eid in ids:
        cur.execute(f"SELECT sid FROM broker_temporal_series WHERE entity_id = {mark} AND attr = {mark}",
                    (eid, POWER_IRI))
        sids.append(cur.fetchone()[0])
    return sids


def _fill_sqlite(path: str, ids: list[str], first: int, n: int, rng: random.Random) -> int:
    import sqlite3

    conn = sqlite3.connect(path, timeout=60)
    conn.execute("PRAGMA synchronous=NORMAL")
    sql = f"INSERT INTO broker_temporal_instances ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * 11)})"
    total = 0
    for sid in _sids(conn.cursor(), ids, "?"):
        with conn:
            conn.executemany(sql, _readings(sid, first, n, rng))
        total += n
    conn.execute("ANALYZE")
    conn.close()
    return total


def _fill_postgres(url: str, ids: list[str], first: int, n: int, rng: random.Random) -> int:
    import psycopg

    total = 0
    with psycopg.connect(url) as conn:
        sids = _sids(conn.cursor(), ids, "%s")
        for sid in sids:
            copy_sql = f"COPY broker_temporal_instances ({', '.join(COLUMNS)}) FROM STDIN"
            with conn.cursor().copy(copy_sql) as copy:
                for row in _readings(sid, first, n, rng):
                    copy.write_row(row)
            conn.commit()
            total += n
        conn.execute("ANALYZE broker_temporal_instances")
        conn.commit()
    return total


def measure_temporal(base: str, ids: list[str], sizes: Sizes, result: Result) -> None:
    end = (int(time.time()) // 3600) * 3600
    first = end - sizes.days * DAY_S
    iso = lambda t: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))  # noqa: E731
    params = {"attrs": "power", "aggrMethods": "avg", "aggrPeriodDuration": "PT1H", "timerel": "between",
              "timeAt": iso(first), "endTimeAt": iso(end), "options": "aggregatedValues"}
    rng = random.Random(3)
    times: list[float] = []
    buckets = set()
    with httpx.Client(base_url=base, timeout=60) as client:
        client.get(f"{NGSI}/temporal/entities/{ids[0]}", params=params)  # warm the connection and caches
        for _ in range(sizes.queries):
            eid = rng.choice(ids)
            t0 = time.perf_counter()
            r = client.get(f"{NGSI}/temporal/entities/{eid}", params=params)
            times.append((time.perf_counter() - t0) * 1000)
            if r.status_code != 200:
                result.problems.append(f"temporal query answered {r.status_code}: {r.text[:300]}")
                break
            buckets.add(len(r.json()["power"]["avg"]))
    result.figures["temporal_p95_ms"] = bb.percentile(times, 95)
    result.facts.append(("hourly-average query p50 / p95 / max",
                         f"{bb.percentile(times, 50):.1f} / {bb.percentile(times, 95):.1f} / "
                         f"{max(times):.1f} ms "
                         f"({len(times)} queries; buckets per answer {sorted(buckets)})"))
    if buckets != {sizes.days * 24}:
        result.problems.append(f"expected {sizes.days * 24} hourly buckets per answer, got {sorted(buckets)}")


# --- MQTT ingest --------------------------------------------------------------------------------------------


def measure_mqtt(url: str, sizes: Sizes, result: Result) -> None:
    from society5.cli.bench_mqtt import measure_mqtt_ingest
    from society5.core.settings import Settings

    figures = measure_mqtt_ingest(Settings(database_url=url, auth="off"), seconds=sizes.mqtt_seconds)
    result.figures["mqtt_ingest_ratio"] = figures["ratio"]
    result.facts.append(("MQTT values stored / plain subscriber msgs per s",
                         f"{figures['stored_per_s']:,.0f} / {figures['plain_per_s']:,.0f}"))


# --- the run ------------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    sizes = Sizes.of(args.quick)
    result = Result()
    wall0 = time.perf_counter()
    with (tempfile.TemporaryDirectory(prefix="s5bench_") as tmp,
          bb.bench_database(args.database_url, Path(tmp)) as (url, kind)):
        err.print(f"[bold]society5 notify benchmark[/bold] ({'quick' if args.quick else 'full'}, {kind})")
        server = bb.Server(url, Path(tmp) / "server.log")
        server.start()
        try:
            err.print(f"notifications: {sizes.subscriptions} subscriptions, {sizes.rate} PATCH/s …")
            measure_notify(server.base, sizes, result)
            err.print(f"history: {sizes.history_rows:,} rows …")
            ids = fill_history(url, server.base, sizes, result)
            err.print("hourly aggregations …")
            measure_temporal(server.base, ids, sizes, result)
        finally:
            server.stop()
        errors, _ = server.log_errors()
        if errors:
            result.problems.append(f"the server logged {len(errors)} error(s); "
                                   f"the last:\n{errors[-1][-2000:]}")
        if not args.skip_mqtt:
            err.print("MQTT ingest …")
            measure_mqtt(url, sizes, result)
    result.facts.append(("wall time", f"{time.perf_counter() - wall0:.0f} s"))
    result.facts.append(("source", bb.source_version()))
    result.facts.append(("machine", f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}"))
    report(result, kind)
    f = result.figures
    print(f"notify_p99_ms={f.get('notify_p99_ms', float('nan')):.2f} "
          f"mqtt_ingest_ratio={f.get('mqtt_ingest_ratio', float('nan')):.3f} "
          f"temporal_p95_ms={f.get('temporal_p95_ms', float('nan')):.2f}", flush=True)
    return 3 if result.problems else 0


def report(result: Result, kind: str) -> None:
    console = Console()
    table = Table(title=f"society5 notify benchmark ({kind})")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("target")
    for name, (op, target) in TARGETS.items():
        value = result.figures.get(name)
        if value is None:
            table.add_row(name, "not measured", f"{op} {target}")
            continue
        met = value <= target if op == "<=" else value >= target
        table.add_row(name, f"{value:.3f}", f"{op} {target} {'met' if met else 'MISSED'}")
    console.print(table)
    for key, value in result.facts:
        console.print(f"  {key}: {value}")
    for problem in result.problems:
        console.print(f"[red]problem:[/red] {problem}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="society5 notification / MQTT / history benchmark")
    ap.add_argument("--database-url", default=None,
                    help="sqlite:///NEW_FILE or postgresql+psycopg://user@host/db (a fresh s5bench_* "
                         "database is created there and dropped); default: a temporary SQLite file")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test, not a measurement")
    ap.add_argument("--skip-mqtt", action="store_true", help="leave out the MQTT ingest figure")
    return ap.parse_args(argv)


if __name__ == "__main__":
    sys.exit(run(parse_args()))
