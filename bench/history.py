#!/usr/bin/env python3
"""Batch ingest as history grows: staged history (the default on SQLite) against rows written straight into
the history index, on the same database in the same run.

Usage::

    python bench/history.py [--history-rows 0,1000000] [--batches 20] [--entities 1000]

For each history size: a database with ``--entities`` Devices (5 Property attributes each) and that many
history rows spread evenly over their series is built once and copied; then ``--batches`` upsert batches
(every entity, new values) run through the broker in this process, once with staging and once without.
The staged run includes moving the staged rows into the index, as the server's job does: in a background
thread while batches run, and the rest at the end. Each line of output gives batch times and
``ratio`` = straight time ÷ staged time (above 1: staging is faster). The last line is
``history_ratio=<ratio at the largest size>``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

try:
    import orjson
except ImportError:  # pragma: no cover - started with a Python that lacks the project's dependencies
    _VENV = Path(__file__).resolve().parents[1] / ".venv"
    if __name__ == "__main__" and (_VENV / "bin" / "python").exists() and Path(sys.prefix).resolve() != _VENV:
        os.execv(str(_VENV / "bin" / "python"), [str(_VENV / "bin" / "python"), *sys.argv])
    raise

sys.path.insert(0, str(Path(__file__).resolve().parent))
from broker import ATTRS, device_attrs, device_id
from society5.broker.service import start
from society5.core.platform import Platform
from society5.core.settings import Settings

NOW = "2026-01-01T00:00:00.000000Z"
COLUMNS = ("sid, instance_id, deleted, ts, observed_at, created_at, modified_at, created_ts, modified_ts, "
           "value_num, instance")


def batch(entities: int, round_: int) -> bytes:
    return orjson.dumps([{"id": device_id(i), "type": "Device", **device_attrs(i, round_)}
                         for i in range(entities)])


def build(path: Path, entities: int, history_rows: int) -> None:
    """The entities through the broker, then ``history_rows`` older rows straight into the history index
    (as a database that has been running for a while holds them)."""
    plat = Platform.open(Settings(database_url=f"sqlite:///{path}", auth="off", demo=False))
    try:
        broker = start(plat)
        broker.batch_upsert(None, orjson.loads(batch(entities, 0)))
        plat.parts["temporal"].staging.settle()
    finally:
        plat.close()
    db = sqlite3.connect(path, isolation_level=None)
    try:
        sids = [r[0] for r in db.execute("SELECT sid FROM broker_temporal_series ORDER BY sid")]
        per_series = history_rows // max(len(sids), 1)
        sql = (f"INSERT INTO broker_temporal_instances ({COLUMNS}) "
               f"VALUES (?, ?, 0, ?, NULL, '{NOW}', '{NOW}', ?, ?, ?, ?)")
        for k in range(per_series):  # one sample a minute, oldest first
            ts = 1.7e9 + 60.0 * k
            db.execute("BEGIN")
            db.executemany(sql, ((sid, f"urn:ngsi-ld:attribute:instance:{sid}-{k}", ts, ts, ts, float(k),
                                  f'{{"type":"Property","value":{k}}}') for sid in sids))
            db.execute("COMMIT")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()


def run(path: Path, entities: int, batches: int, staged: bool) -> dict[str, Any]:
    settings = Settings(database_url=f"sqlite:///{path}", auth="off", demo=False, temporal_staging=staged)
    plat = Platform.open(settings)
    stop = threading.Event()
    try:
        broker = start(plat)
        staging = plat.parts["temporal"].staging

        moves: list[float] = []

        def mover() -> None:  # what the server's job does, every second
            while not stop.wait(1.0):
                t0 = time.perf_counter()
                if staging.move_due():
                    moves.append(time.perf_counter() - t0)

        thread = threading.Thread(target=mover, daemon=True)
        if staged:
            thread.start()
        bodies = [batch(entities, r) for r in range(1, batches + 1)]
        times = []
        cpu0 = time.process_time()
        started = time.perf_counter()
        for body in bodies:
            t0 = time.perf_counter()
            broker.batch_upsert(None, orjson.loads(body))
            times.append(time.perf_counter() - t0)
        stop.set()
        if staged:
            thread.join()
        t0 = time.perf_counter()
        staging.settle()
        rest = time.perf_counter() - t0
        total = time.perf_counter() - started
        cpu = time.process_time() - cpu0
        return {"cpu_s": cpu, "median_ms": statistics.median(times) * 1000, "rest_ms": rest * 1000,
                "max_ms": max(times) * 1000, "moves": len(moves), "move_ms": sum(moves) * 1000,
                "total_s": total, "attrs_per_s": entities * len(ATTRS) * batches / total}
    finally:
        stop.set()
        plat.close()


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--history-rows", default="0,1000000",
                    help="comma-separated history sizes (rows) to measure at")
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--entities", type=int, default=1000)
    args = ap.parse_args(argv)
    sizes = [int(x) for x in args.history_rows.split(",")]
    ratio = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for rows in sizes:
            base = Path(tmp) / f"base{rows}.db"
            t0 = time.perf_counter()
            build(base, args.entities, rows)
            print(f"history {rows:,} rows: built in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
            result = {}
            for staged in (True, False):
                copy = Path(tmp) / f"run{rows}{staged}.db"
                shutil.copy(base, copy)
                result[staged] = run(copy, args.entities, args.batches, staged)
            s, d = result[True], result[False]
            ratio = d["total_s"] / s["total_s"]
            print(f"history={rows:>9,} staged: {s['attrs_per_s']:>9,.0f} attrs/s, batch median "
                  f"{s['median_ms']:6.1f} ms (max {s['max_ms']:.0f}), "
                  f"{s['moves']} moves {s['move_ms']:.0f} ms, "
                  f"final move {s['rest_ms']:6.1f} ms, CPU {s['cpu_s']:.2f} s | "
                  f"straight: {d['attrs_per_s']:>9,.0f} attrs/s, batch median {d['median_ms']:6.1f} ms "
                  f"(max {d['max_ms']:.0f}), "
                  f"CPU {d['cpu_s']:.2f} s | "
                  f"ratio {ratio:.2f}")
    print(f"history_ratio={ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
