#!/usr/bin/env python3
"""Broker benchmark: a real ``society5 serve`` measured over HTTP against raw baselines.

Usage::

    python bench/broker.py [--database-url URL] [--quick] [--duration S] [--profile DIR]

Four figures, printed as the LAST line of stdout::

    ingest_ratio=<a> patch_ratio=<b> get_ratio=<c> query_p95_ms=<d>

* ``ingest_ratio``: attribute updates/s through ``POST /ngsi-ld/v1/entityOperations/upsert`` (update phase:
  the same ids upserted a second time) ÷ rows/s of a raw ``executemany`` writing the same rows into a plain
  table with the same durability settings (SQLite WAL + synchronous=NORMAL; PostgreSQL: an ordinary, logged
  table in the same fresh database), committing per batch.
* ``patch_ratio`` / ``get_ratio``: successful requests/s of ``PATCH /entities/{id}/attrs`` / ``GET
  /entities/{id}`` with 16 keep-alive clients ÷ requests/s of ``GET /healthz`` (same client, concurrency,
  duration; the mean of a baseline run before and after).
* ``query_p95_ms``: p95 latency of a ``type`` + ``q`` + ``near`` geo-query over 100,000 stored entities.

Every non-2xx response (and every 207 partial failure of a batch) is counted and printed; the exit status is
3 when there were any. See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import math
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

try:
    import httpx
    import orjson
    from rich.console import Console
    from rich.table import Table
except ImportError:  # pragma: no cover - started with a Python that lacks the project's dependencies
    _VENV = Path(__file__).resolve().parents[1] / ".venv"
    if __name__ == "__main__" and (_VENV / "bin" / "python").exists() and Path(sys.prefix).resolve() != _VENV:
        os.execv(str(_VENV / "bin" / "python"), [str(_VENV / "bin" / "python"), *sys.argv])
    raise

ROOT = Path(__file__).resolve().parents[1]
NGSI = "/ngsi-ld/v1"
FINAL_LINE = re.compile(
    r"^ingest_ratio=(\d+\.\d+) patch_ratio=(\d+\.\d+) get_ratio=(\d+\.\d+) query_p95_ms=(\d+\.\d+)$"
)
TARGETS = {"ingest_ratio": (">=", 0.15), "patch_ratio": (">=", 0.5), "get_ratio": (">=", 0.6),
           "query_p95_ms": ("<=", 50.0)}
# A log record starts with a line in the format of society5.core.logs or uvicorn's ("ERROR:    ...").
LOG_RECORD = re.compile(r"^(?=\d{4}-\d\d-\d\d \d\d:\d\d:\d\d|(?:DEBUG|INFO|WARNING|ERROR|CRITICAL):)", re.M)
ERROR_RECORD = re.compile(r"^(?:\S+ \S+ (?:ERROR|CRITICAL) |(?:ERROR|CRITICAL):)")
# Town centres (lat, lon) the query data set is concentrated around; the rest is spread over Hokkaido.
TOWNS: dict[str, tuple[float, float]] = {
    "Sapporo": (43.0621, 141.3544), "Asahikawa": (43.7706, 142.3650), "Hakodate": (41.7687, 140.7288),
    "Kushiro": (42.9849, 144.3820), "Obihiro": (42.9236, 143.1966), "Otaru": (43.1907, 140.9947),
    "Kitami": (43.8030, 143.8908), "Tomakomai": (42.6342, 141.6055), "Muroran": (42.3152, 140.9737),
    "Iwamizawa": (43.1961, 141.7759), "Abashiri": (44.0206, 144.2733), "Wakkanai": (45.4156, 141.6730),
}
LON_RANGE, LAT_RANGE = (139.5, 145.5), (41.5, 45.5)
TOWN_SHARE, TOWN_SIGMA_KM = 0.4, 8.0
ATTRS = ("temperature", "humidity", "batteryLevel", "rssi", "status")
JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
ACCEPT_JSON = {"Accept": "application/json"}

err_console = Console(stderr=True)


# --- configuration ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    batch_entities: int
    batches: int
    hot_entities: int  # PATCH / GET are spread over this many entities
    duration_s: int  # each wrk phase
    warmup_s: int
    concurrency: int
    query_entities: int
    query_requests: int
    query_warmup: int

    @classmethod
    def of(cls, quick: bool, duration: int | None, concurrency: int, query_entities: int | None) -> Sizes:
        sizes = cls._of(quick, duration, concurrency)
        if query_entities is not None:
            sizes = dataclasses.replace(sizes, query_entities=query_entities)
        return sizes

    @classmethod
    def _of(cls, quick: bool, duration: int | None, concurrency: int) -> Sizes:
        if quick:
            return cls(batch_entities=250, batches=4, hot_entities=500, duration_s=duration or 2, warmup_s=1,
                       concurrency=concurrency, query_entities=5_000, query_requests=50, query_warmup=5)
        return cls(batch_entities=1_000, batches=20, hot_entities=1_000, duration_s=duration or 10,
                   warmup_s=2, concurrency=concurrency, query_entities=100_000, query_requests=200,
                   query_warmup=20)


# --- results ------------------------------------------------------------------------------------------------


@dataclass
class Phase:
    """One measured phase: items done in seconds, with latencies (ms) where they were recorded."""

    name: str
    items: int  # successful operations (requests, or attributes for ingest)
    seconds: float
    unit: str = "req/s"
    requests: int = 0
    non2xx: int = 0
    status_5xx: int = 0
    socket_errors: int = 0
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    note: str = ""

    @property
    def rate(self) -> float:
        return self.items / self.seconds if self.seconds > 0 else 0.0

    @property
    def failures(self) -> int:
        return self.non2xx + self.socket_errors


@dataclass
class Report:
    db_kind: str = "sqlite"
    load_generator: str = "wrk"
    load_runs: int = 0  # concurrent load-generator runs
    phases: list[Phase] = field(default_factory=list)
    facts: list[tuple[str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def add(self, phase: Phase) -> Phase:
        self.phases.append(phase)
        if phase.failures:
            self.problems.append(f"{phase.name}: {phase.non2xx} non-2xx responses "
                                 f"({phase.status_5xx} 5xx), {phase.socket_errors} socket errors/timeouts")
        return phase

    @property
    def failures(self) -> int:
        return sum(p.failures for p in self.phases)


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (no interpolation), the usual definition for latency reports."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


# --- the server ---------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def server_command() -> list[str]:
    """``society5`` from this interpreter's environment, else the checkout's .venv, else ``python -m``."""
    for candidate in (Path(sys.executable).parent / "society5", ROOT / ".venv" / "bin" / "society5"):
        if candidate.exists():
            return [str(candidate)]
    found = shutil.which("society5")
    if found:
        return [found]
    return [sys.executable, "-m", "society5.cli.main"]


class Server:
    """``society5 serve`` as a subprocess with auth off, on a free loopback port."""

    def __init__(self, database_url: str, log_path: Path):
        self.database_url = database_url
        self.log_path = log_path
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 90.0, extra_env: dict[str, str] | None = None) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SOCIETY5_")}
        env.update({"SOCIETY5_AUTH": "off", "SOCIETY5_DATABASE_URL": self.database_url,
                    "SOCIETY5_DEMO": "false", "SOCIETY5_LOG_LEVEL": "WARNING", **(extra_env or {})})
        cmd = [*server_command(), "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited ({self.proc.returncode}):\n{self.log_tail()}")
            try:
                if httpx.get(self.base + "/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the server did not answer /healthz within {timeout_s:.0f} s:\n{self.log_tail()}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def log_errors(self) -> tuple[list[str], int]:
        """The error records the server logged (ERROR/CRITICAL or a traceback), less those caused by a client
        that hung up mid-request (wrk closes its connections when a phase ends), which are only counted."""
        errors, disconnects = [], 0
        for record in LOG_RECORD.split(self.log_text()):
            if not (ERROR_RECORD.match(record) or "Traceback (most recent call last)" in record):
                continue
            if "ClientDisconnect" in record:
                disconnects += 1
            else:
                errors.append(record.strip())
        return errors, disconnects


# --- databases ----------------------------------------------------------------------------------------------


def db_label(url: str) -> str:
    """What the run's database is called (a PostgreSQL database is dropped at the end)."""
    if url.startswith("sqlite"):
        return url.removeprefix("sqlite:///") + " (a new file, deleted afterwards)"
    return f"database {urlsplit(url).path.lstrip('/')} (created for this run, dropped afterwards)"


def libpq_url(url: str) -> str:
    """SQLAlchemy ``postgresql+psycopg://`` → the libpq form psycopg accepts."""
    scheme, rest = url.split("://", 1)
    return "postgresql://" + rest if scheme.startswith("postgres") else url


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


@contextmanager
def bench_database(database_url: str | None, workdir: Path) -> Iterator[tuple[str, str]]:
    """Yields (server URL, kind). SQLite: a new file; PostgreSQL: a fresh ``s5bench_*`` database, dropped
    afterwards (no other database is touched)."""
    if database_url is None or database_url.startswith("sqlite"):
        if database_url is None:
            path = workdir / "broker.db"
        else:
            path = Path(database_url.removeprefix("sqlite:///")).expanduser().resolve()
            if path.exists():
                raise SystemExit(f"{path} exists; the benchmark needs a new, empty SQLite file")
        try:
            yield f"sqlite:///{path}", "sqlite"
        finally:
            if database_url is not None:
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{path}{suffix}").unlink(missing_ok=True)
        return
    if not database_url.startswith("postgres"):
        raise SystemExit(f"unsupported database URL {database_url!r} (sqlite:/// or postgresql:// only)")
    import psycopg

    name = f"s5bench_{uuid.uuid4().hex[:10]}"
    admin = libpq_url(database_url)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield with_database(database_url.replace("postgres://", "postgresql://", 1), name), "postgresql"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- data ---------------------------------------------------------------------------------------------------


def device_id(i: int) -> str:
    return f"urn:ngsi-ld:Device:s5bench-{i:06d}"


def device_attrs(i: int, round_: int) -> dict[str, dict[str, Any]]:
    """The five Property attributes of device ``i``; every round gives different values."""
    return {
        "temperature": {"type": "Property", "value": round(-10 + (i * 7 + round_ * 13) % 400 / 10, 1)},
        "humidity": {"type": "Property", "value": round(((i + round_ * 17) % 100) / 100, 2)},
        "batteryLevel": {"type": "Property", "value": round(1 - ((i + round_) % 50) / 100, 2)},
        "rssi": {"type": "Property", "value": -40 - (i + round_ * 3) % 60},
        "status": {"type": "Property", "value": ("ok", "warn", "fail")[(i + round_) % 3]},
    }


def device_batches(sizes: Sizes, round_: int) -> list[list[dict[str, Any]]]:
    batches = []
    for b in range(sizes.batches):
        start = b * sizes.batch_entities
        batches.append([{"id": device_id(i), "type": "Device", **device_attrs(i, round_)}
                        for i in range(start, start + sizes.batch_entities)])
    return batches


def raw_rows(batches: list[list[dict[str, Any]]]) -> list[list[tuple[str, str, str]]]:
    """The same attribute rows the broker writes: (entity_id, attr, value_json), one per attribute."""
    return [[(ent["id"], name, orjson.dumps(ent[name]).decode()) for ent in batch for name in ATTRS]
            for batch in batches]


def vehicles(count: int, seed: int = 5) -> Iterator[dict[str, Any]]:
    """``count`` Vehicles over Hokkaido; ``TOWN_SHARE`` of them Gaussian around the town centres."""
    rng = random.Random(seed)
    centres = list(TOWNS.values())
    for i in range(count):
        if rng.random() < TOWN_SHARE:
            lat0, lon0 = centres[i % len(centres)]
            lat = lat0 + rng.gauss(0, TOWN_SIGMA_KM) / 111.2
            lon = lon0 + rng.gauss(0, TOWN_SIGMA_KM) / (111.2 * math.cos(math.radians(lat0)))
            lon, lat = min(max(lon, LON_RANGE[0]), LON_RANGE[1]), min(max(lat, LAT_RANGE[0]), LAT_RANGE[1])
        else:
            lon, lat = rng.uniform(*LON_RANGE), rng.uniform(*LAT_RANGE)
        yield {
            "id": f"urn:ngsi-ld:Vehicle:s5bench-{i:06d}", "type": "Vehicle",
            "location": {"type": "GeoProperty", "value": {"type": "Point",
                                                          "coordinates": [round(lon, 6), round(lat, 6)]}},
            "speed": {"type": "Property", "value": round(rng.uniform(0, 100), 1), "unitCode": "KMH"},
            "heading": {"type": "Property", "value": rng.randrange(360)},
            "fuelLevel": {"type": "Property", "value": round(rng.random(), 2)},
            "vehicleType": {"type": "Property", "value": rng.choice(("car", "bus", "truck", "snowPlow"))},
        }


# --- ingest -------------------------------------------------------------------------------------------------


def upsert_phase(client: httpx.Client, name: str, batches: list[list[dict[str, Any]]], expect: int) -> Phase:
    """POST every batch to upsert; items = attributes written (successful batches only)."""
    bodies = [orjson.dumps(batch) for batch in batches]
    ok_attrs = non2xx = s5xx = partial = 0
    latencies: list[float] = []
    started = time.perf_counter()
    for batch, body in zip(batches, bodies, strict=True):
        t0 = time.perf_counter()
        resp = client.post(f"{NGSI}/entityOperations/upsert", content=body, headers=JSON_HEADERS)
        latencies.append((time.perf_counter() - t0) * 1000)
        if resp.status_code == 207:
            partial += 1
            failed = len(resp.json().get("errors", []))
            ok_attrs += (len(batch) - failed) * len(ATTRS)
            non2xx += 1
        elif 200 <= resp.status_code < 300:
            ok_attrs += len(batch) * len(ATTRS)
            if resp.status_code != expect:
                partial += 1
        else:
            non2xx += 1
            s5xx += resp.status_code >= 500
            err_console.print(f"[red]{name}: HTTP {resp.status_code}[/red] {resp.text[:300]}")
    seconds = time.perf_counter() - started
    note = f"{len(batches)} batches × {len(batches[0]) if batches else 0} entities"
    if partial:
        note += f"; {partial} batches answered 207 or an unexpected 2xx"
    return Phase(name, ok_attrs, seconds, unit="attrs/s", requests=len(batches), non2xx=non2xx,
                 status_5xx=s5xx,
                 p50_ms=percentile(latencies, 50), p95_ms=percentile(latencies, 95),
                 p99_ms=percentile(latencies, 99), max_ms=max(latencies, default=math.nan), note=note)


RAW_REPEATS = 3  # the raw baselines take well under a second: the median of three runs steadies them


def _median_run(name: str, runs: list[float], rows: int, batches: int, note: str) -> Phase:
    seconds = statistics.median(runs)
    rates = ", ".join(f"{rows / s:,.0f}" for s in runs)
    return Phase(name, rows, seconds, unit="rows/s", requests=batches,
                 note=f"{note}; median of {len(runs)} runs ({rates} rows/s)")


def raw_sqlite_phase(path: Path, rows: list[list[tuple[str, str, str]]]) -> Phase:
    runs = []
    for _ in range(RAW_REPEATS):
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("CREATE TABLE raw_attrs (entity_id TEXT, attr TEXT, value_json TEXT)")
            started = time.perf_counter()
            for batch in rows:
                conn.execute("BEGIN")
                conn.executemany("INSERT INTO raw_attrs (entity_id, attr, value_json) VALUES (?, ?, ?)",
                                 batch)
                conn.execute("COMMIT")
            runs.append(time.perf_counter() - started)
        finally:
            conn.close()
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
    return _median_run("raw SQLite executemany", runs, sum(len(b) for b in rows), len(rows),
                       "a new file, WAL, synchronous=NORMAL, commit per batch")


def raw_postgres_phase(server_url: str, rows: list[list[tuple[str, str, str]]]) -> Phase:
    import psycopg

    runs = []
    with psycopg.connect(libpq_url(server_url)) as conn:
        for _ in range(RAW_REPEATS):
            # An ordinary (WAL-logged) table, like the broker's: a TEMP table skips the WAL and would flatter
            # the baseline. It lives in the benchmark's own database, which is dropped afterwards.
            conn.execute("CREATE TABLE s5bench_raw_attrs (entity_id text, attr text, value_json text)")
            conn.commit()
            started = time.perf_counter()
            for batch in rows:
                with conn.cursor() as cur:
                    cur.executemany("INSERT INTO s5bench_raw_attrs (entity_id, attr, value_json) "
                                    "VALUES (%s, %s, %s)", batch)
                conn.commit()
            runs.append(time.perf_counter() - started)
            conn.execute("DROP TABLE s5bench_raw_attrs")
            conn.commit()
    return _median_run("raw psycopg executemany", runs, sum(len(b) for b in rows), len(rows),
                       "a logged table, commit per batch")


# --- concurrent load: wrk, or asyncio httpx when wrk is missing ---------------------------------------------


@dataclass(frozen=True)
class Workload:
    """Requests a load generator cycles through (each client starts at its own offset)."""

    name: str
    method: str
    paths: list[str]
    bodies: list[bytes] | None = None  # parallel to paths
    headers: dict[str, str] = field(default_factory=dict)


LUA = r"""
local method = [==[%(method)s]==]
local paths = {%(paths)s}
local bodies = %(bodies)s
local headers = {%(headers)s}
local threads = {}
local reqs = {}
local counter = 0

function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_no", #threads)
end

function init(args)
  non2xx = 0
  s5xx = 0
  for i, p in ipairs(paths) do
    local body = nil
    if bodies ~= nil then body = bodies[i] end
    reqs[i] = wrk.format(method, p, headers, body)
  end
  math.randomseed(thread_no * 7919)
  counter = math.random(#reqs) - 1
end

function request()
  counter = counter %% #reqs + 1
  return reqs[counter]
end

function response(status, hdrs, body)
  if status < 200 or status > 299 then non2xx = non2xx + 1 end
  if status >= 500 then s5xx = s5xx + 1 end
end

function done(summary, latency, requests)
  local n2, n5 = 0, 0
  for _, t in ipairs(threads) do
    n2 = n2 + t:get("non2xx")
    n5 = n5 + t:get("s5xx")
  end
  local e = summary.errors
  io.write(string.format(
    "BENCHJSON {\"requests\":%%.0f,\"duration_us\":%%.0f,\"socket\":%%.0f,\"non2xx\":%%.0f,\"s5xx\":%%.0f," ..
    "\"p50\":%%.0f,\"p95\":%%.0f,\"p99\":%%.0f,\"max\":%%.0f}\n",
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, n2, n5,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max))
end
"""


def _lua_str(text: str | bytes) -> str:
    value = text.decode() if isinstance(text, bytes) else text
    if "]==]" in value:
        raise ValueError("cannot quote this text for Lua")
    return f"[==[{value}]==]"


def wrk_script(work: Workload) -> str:
    return LUA % {
        "method": work.method,
        "paths": ", ".join(_lua_str(p) for p in work.paths),
        "bodies": "{" + ", ".join(_lua_str(b) for b in work.bodies) + "}" if work.bodies else "nil",
        "headers": ", ".join(f"[ {_lua_str(k)} ] = {_lua_str(v)}" for k, v in work.headers.items()),
    }


class Wrk:
    def __init__(self, binary: str, base: str, concurrency: int, threads: int, workdir: Path):
        self.binary, self.base, self.concurrency, self.threads = binary, base, concurrency, threads
        self.workdir = workdir

    def run(self, work: Workload, seconds: int) -> Phase:
        script = self.workdir / f"{re.sub(r'[^a-z0-9]+', '_', work.name.lower())}.lua"
        script.write_text(wrk_script(work))
        cmd = [self.binary, f"-t{self.threads}", f"-c{self.concurrency}", f"-d{seconds}s", "--timeout", "10s",
               "-s", str(script), self.base]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=False)
        line = next((ln for ln in out.stdout.splitlines() if ln.startswith("BENCHJSON ")), None)
        if out.returncode != 0 or line is None:
            raise RuntimeError(f"wrk failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
        data = orjson.loads(line.removeprefix("BENCHJSON "))
        requests, non2xx = int(data["requests"]), int(data["non2xx"])
        return Phase(work.name, requests - non2xx, data["duration_us"] / 1e6, requests=requests,
                     non2xx=non2xx, status_5xx=int(data["s5xx"]), socket_errors=int(data["socket"]),
                     p50_ms=data["p50"] / 1000, p95_ms=data["p95"] / 1000, p99_ms=data["p99"] / 1000,
                     max_ms=data["max"] / 1000)


class HttpxLoad:
    """The fallback load generator: ``concurrency`` asyncio clients on keep-alive connections."""

    def __init__(self, base: str, concurrency: int):
        self.base, self.concurrency = base, concurrency

    def run(self, work: Workload, seconds: int) -> Phase:
        return asyncio.run(self._run(work, seconds))

    async def _run(self, work: Workload, seconds: int) -> Phase:
        latencies: list[float] = []
        counts = {"ok": 0, "non2xx": 0, "5xx": 0, "socket": 0}
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        async with httpx.AsyncClient(base_url=self.base, limits=limits, timeout=10) as client:
            deadline = time.perf_counter() + seconds

            async def worker(offset: int) -> None:
                i = offset
                while time.perf_counter() < deadline:
                    k = i % len(work.paths)
                    i += 1
                    body = work.bodies[k] if work.bodies else None
                    t0 = time.perf_counter()
                    try:
                        resp = await client.request(work.method, work.paths[k], content=body,
                                                    headers=work.headers)
                    except httpx.HTTPError:
                        counts["socket"] += 1
                        continue
                    latencies.append((time.perf_counter() - t0) * 1000)
                    if 200 <= resp.status_code < 300:
                        counts["ok"] += 1
                    else:
                        counts["non2xx"] += 1
                        counts["5xx"] += resp.status_code >= 500

            started = time.perf_counter()
            step = max(1, len(work.paths) // self.concurrency)
            await asyncio.gather(*(worker(n * step) for n in range(self.concurrency)))
            elapsed = time.perf_counter() - started
        return Phase(work.name, counts["ok"], elapsed, requests=counts["ok"] + counts["non2xx"],
                     non2xx=counts["non2xx"], status_5xx=counts["5xx"], socket_errors=counts["socket"],
                     p50_ms=percentile(latencies, 50), p95_ms=percentile(latencies, 95),
                     p99_ms=percentile(latencies, 99), max_ms=max(latencies, default=math.nan))


def patch_workload(sizes: Sizes, rounds: int = 7) -> Workload:
    """PATCHes of one attribute over the hot entities; consecutive visits to an entity write new values
    (always ≥ 100, which no ingested temperature is, so :func:`check_patched` can count them)."""
    paths, bodies = [], []
    for r in range(rounds):
        for i in range(sizes.hot_entities):
            value = round(100 + r + i / 10_000, 4)
            paths.append(f"{NGSI}/entities/{device_id(i)}/attrs")
            bodies.append(orjson.dumps({"temperature": {"type": "Property", "value": value}}))
    return Workload("PATCH /entities/{id}/attrs", "PATCH", paths, bodies,
                    {"Content-Type": "application/json"})


def get_workload(sizes: Sizes) -> Workload:
    paths = [f"{NGSI}/entities/{device_id(i)}" for i in range(sizes.hot_entities)]
    return Workload("GET /entities/{id}", "GET", paths, headers={"Accept": "application/json"})


HEALTHZ = Workload("GET /healthz", "GET", ["/healthz"])


# --- profiling ----------------------------------------------------------------------------------------------


class Profiler:
    """With ``--profile DIR``: py-spy samples the server during each phase (SVG, collapsed stacks, ...)."""

    def __init__(self, out_dir: Path | None, fmt: str = "flamegraph"):
        self.out_dir, self.fmt = out_dir, fmt
        self.pid = 0
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)

    @contextmanager
    def phase(self, name: str, seconds: int, gil: bool = False) -> Iterator[None]:
        if self.out_dir is None:
            yield
            return
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        suffix = {"flamegraph": "svg", "raw": "txt", "speedscope": "json"}[self.fmt]
        out = self.out_dir / f"{re.sub(r'[^a-z0-9]+', '_', name.lower()).strip('_')}.{suffix}"
        # gil=True (the concurrent phases): only the thread holding the GIL, i.e. where the one-process
        # server's Python time goes; otherwise threads waiting for the GIL show up as time spent on whatever
        # line they wait at. Sequential phases sample all threads: time in C without the GIL (SQLite) shows.
        cmd = [spy, "record", "--pid", str(self.pid), "--duration", str(seconds), "--rate", "200",
               "--nonblocking", "--format", self.fmt, "--output", str(out)]
        proc = subprocess.Popen([*cmd, "--gil"] if gil else cmd,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)  # let py-spy attach
        try:
            yield
        finally:
            try:
                proc.wait(timeout=seconds + 30)
            except subprocess.TimeoutExpired:
                proc.terminate()
                proc.wait(timeout=10)


# --- the geo-query phase ------------------------------------------------------------------------------------


def query_params(rng: random.Random) -> dict[str, str]:
    lat0, lon0 = rng.choice(list(TOWNS.values()))
    # a point within ~300 m of the centre, so repeated queries are not byte-identical
    lat = lat0 + rng.uniform(-0.3, 0.3) / 111.2
    lon = lon0 + rng.uniform(-0.3, 0.3) / (111.2 * math.cos(math.radians(lat0)))
    return {"type": "Vehicle", "q": "speed>50", "georel": "near;maxDistance==2000", "geometry": "Point",
            "coordinates": f"[{lon:.6f},{lat:.6f}]"}


def load_vehicles(client: httpx.Client, count: int, batch: int = 1_000) -> Phase:
    ok = non2xx = s5xx = 0
    started = time.perf_counter()
    chunk: list[dict[str, Any]] = []
    batch_rates: list[float] = []

    def send(items: list[dict[str, Any]]) -> None:
        nonlocal ok, non2xx, s5xx
        body = orjson.dumps(items)
        t0 = time.perf_counter()
        resp = client.post(f"{NGSI}/entityOperations/upsert", content=body, headers=JSON_HEADERS)
        batch_rates.append(len(items) / (time.perf_counter() - t0))
        if resp.status_code in (201, 204):
            ok += len(items)
        else:
            non2xx += 1
            s5xx += resp.status_code >= 500
            err_console.print(f"[red]loading vehicles: HTTP {resp.status_code}[/red] {resp.text[:300]}")

    for ent in vehicles(count):
        chunk.append(ent)
        if len(chunk) == batch:
            send(chunk)
            chunk = []
    if chunk:
        send(chunk)
    tenth = max(1, len(batch_rates) // 10)
    trend = (f"first {tenth} batches {statistics.fmean(batch_rates[:tenth]):,.0f}/s, "
             f"last {tenth} {statistics.fmean(batch_rates[-tenth:]):,.0f}/s") if batch_rates else ""
    return Phase("load query data (upsert)", ok, time.perf_counter() - started, unit="entities/s",
                 requests=math.ceil(count / batch), non2xx=non2xx, status_5xx=s5xx,
                 note=f"{count:,} Vehicles in batches of {batch:,}, {TOWN_SHARE:.0%} around {len(TOWNS)} "
                      f"towns (σ {TOWN_SIGMA_KM:g} km); {trend}")


def query_phase(client: httpx.Client, sizes: Sizes, seed: int = 11) -> tuple[Phase, list[int]]:
    rng = random.Random(seed)
    non2xx = s5xx = 0
    for _ in range(sizes.query_warmup):  # not timed, but its errors count
        resp = client.get(f"{NGSI}/entities", params=query_params(rng), headers=ACCEPT_JSON)
        if not 200 <= resp.status_code < 300:
            non2xx += 1
            s5xx += resp.status_code >= 500
            err_console.print(f"[red]geo-query warm-up: HTTP {resp.status_code}[/red] {resp.text[:300]}")
    latencies: list[float] = []
    sizes_returned: list[int] = []
    started = time.perf_counter()
    for _ in range(sizes.query_requests):
        params = query_params(rng)
        t0 = time.perf_counter()
        resp = client.get(f"{NGSI}/entities", params=params, headers=ACCEPT_JSON)
        latencies.append((time.perf_counter() - t0) * 1000)
        if resp.status_code == 200:
            sizes_returned.append(len(resp.json()))
        else:
            non2xx += 1
            s5xx += resp.status_code >= 500
            err_console.print(f"[red]geo-query: HTTP {resp.status_code}[/red] {resp.text[:300]}")
    seconds = time.perf_counter() - started
    phase = Phase("GET /entities?type&q&near (sequential)", len(sizes_returned), seconds,
                  requests=len(latencies), non2xx=non2xx, status_5xx=s5xx, p50_ms=percentile(latencies, 50),
                  p95_ms=percentile(latencies, 95), p99_ms=percentile(latencies, 99), max_ms=max(latencies))
    return phase, sizes_returned


def match_counts(client: httpx.Client) -> tuple[list[int], int]:
    """Untimed: how many entities each town-centre query matches (``count=true``); non-2xx answers."""
    counts, bad = [], 0
    for lat, lon in TOWNS.values():
        params = {"type": "Vehicle", "q": "speed>50", "georel": "near;maxDistance==2000", "geometry": "Point",
                  "coordinates": f"[{lon},{lat}]", "count": "true", "limit": "0"}
        resp = client.get(f"{NGSI}/entities", params=params)
        if resp.status_code == 200:
            counts.append(int(resp.headers.get("NGSILD-Results-Count", "0")))
        else:
            bad += 1
    return counts, bad


# --- the run ------------------------------------------------------------------------------------------------


def pick_load_generator(base: str, sizes: Sizes, workdir: Path, force_httpx: bool,
                        report: Report) -> Wrk | HttpxLoad:
    binary = None if force_httpx else shutil.which("wrk")
    if binary:
        threads = 1 if (os.cpu_count() or 1) <= 2 else 2
        plural = "s" if threads > 1 else ""
        report.load_generator = f"wrk ({threads} thread{plural}, {sizes.concurrency} connections)"
        return Wrk(binary, base, sizes.concurrency, threads, workdir)
    why = "--httpx given" if force_httpx else "wrk not found (apt-get install wrk)"
    report.load_generator = (f"asyncio httpx, {sizes.concurrency} clients — {why}; "
                             "the client may be the bottleneck")
    err_console.print(f"[yellow]load generator: {report.load_generator}[/yellow]")
    return HttpxLoad(base, sizes.concurrency)


def source_version() -> str:
    """The checkout's commit, and whether the working tree differs from it (figures depend on both)."""
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "src"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    changed = len(dirty.splitlines())
    return head + (f" + uncommitted changes in {changed} file(s) under src/" if changed else "")


def run(args: argparse.Namespace) -> int:
    wall0 = time.perf_counter()
    load_before = os.getloadavg()[0]
    sizes = Sizes.of(args.quick, args.duration, args.concurrency, args.query_entities)
    report = Report()
    prof = Profiler(Path(args.profile).resolve() if args.profile else None, args.profile_format)
    with (tempfile.TemporaryDirectory(prefix="s5bench_") as tmp,
          bench_database(args.database_url, Path(tmp)) as (url, kind)):
        workdir = Path(tmp)
        report.db_kind = kind
        server = Server(url, workdir / "server.log")
        mode = "quick" if args.quick else "full"
        err_console.print(f"[bold]society5 broker benchmark[/bold] ({mode}, {kind})")
        server.start()
        prof.pid = server.pid
        try:
            ratios = measure(server, sizes, workdir, report, args, prof, url)
        finally:
            server.stop()
        log_errors, disconnects = server.log_errors()
        if log_errors:
            report.problems.append(f"the server logged {len(log_errors)} error(s); the last:\n"
                                   f"{log_errors[-1][-3000:]}")
        report.facts.append(("server log errors", str(len(log_errors))))
        # wrk hangs up on the requests in flight when a phase ends: at most one per connection and run
        expected = sizes.concurrency * report.load_runs
        report.facts.append(("client hang-ups the server logged", f"{disconnects} (≤ {expected} expected: "
                                                                   "requests in flight when a wrk run ends)"))
        if disconnects > expected:
            report.problems.append(f"the server logged {disconnects} client disconnects; at most {expected} "
                                   "were expected")
    report.facts.append(("wall time", f"{time.perf_counter() - wall0:.1f} s"))
    report.facts.append(("source", source_version()))
    report.facts.append(("machine", f"{os.cpu_count()} CPUs; 1-min load average {load_before:.2f} at start, "
                                    f"{os.getloadavg()[0]:.2f} at the end"))
    print_report(report, ratios)
    print(f"ingest_ratio={ratios['ingest_ratio']:.3f} patch_ratio={ratios['patch_ratio']:.3f} "
          f"get_ratio={ratios['get_ratio']:.3f} query_p95_ms={ratios['query_p95_ms']:.2f}", flush=True)
    return 3 if report.failures or report.problems else 0


def measure(server: Server, sizes: Sizes, workdir: Path, report: Report, args: argparse.Namespace,
            prof: Profiler, url: str) -> dict[str, float]:
    def step(text: str) -> None:
        err_console.print(f"  [dim]{time.strftime('%H:%M:%S')}[/dim] {text}")

    client = httpx.Client(base_url=server.base, timeout=300)
    try:
        # 1. ingest: create, then update the same ids; then the raw baseline writing the same rows.
        step(f"ingest: {sizes.batches} upsert batches × {sizes.batch_entities} entities × "
             f"{len(ATTRS)} attributes")
        create = device_batches(sizes, 0)
        update = device_batches(sizes, 1)
        with prof.phase("ingest create", 5):
            ins = report.add(upsert_phase(client, "upsert: create (new ids)", create, expect=201))
        with prof.phase("ingest update", 5):
            upd = report.add(upsert_phase(client, "upsert: update (same ids)", update, expect=204))
        drain_history(report, url, "the update phase")
        rows = raw_rows(update)
        if report.db_kind == "sqlite":
            # next to the server's database file: the same disk
            raw_path = Path(url.removeprefix("sqlite:///")).with_suffix(".raw.db")
            raw = report.add(raw_sqlite_phase(raw_path, rows))
        else:
            raw = report.add(raw_postgres_phase(url, rows))

        # 2. PATCH and GET under concurrency, each against the /healthz baseline.
        load = pick_load_generator(server.base, sizes, workdir, args.httpx, report)
        patch = patch_workload(sizes)
        get = get_workload(sizes)
        step(f"warm-up {sizes.warmup_s} s, then /healthz, PATCH, GET, /healthz for {sizes.duration_s} s each")

        def loaded_phase(work: Workload, seconds: int, label: str = "{}") -> Phase:
            phase = load.run(work, seconds)
            phase.name = label.format(phase.name)
            report.load_runs += 1
            return report.add(phase)  # warm-ups are in the table too: their errors count like any other

        for work in (HEALTHZ, get):
            loaded_phase(work, sizes.warmup_s, "warm-up: {}")
        base1 = loaded_phase(HEALTHZ, sizes.duration_s, "{} (before)")
        with prof.phase("patch", sizes.duration_s, gil=True):
            p = loaded_phase(patch, sizes.duration_s)
        drain_history(report, url, "the PATCH phase")
        with prof.phase("get", sizes.duration_s, gil=True):
            g = loaded_phase(get, sizes.duration_s)
        base2 = loaded_phase(HEALTHZ, sizes.duration_s, "{} (after)")
        healthz_rate = (base1.rate + base2.rate) / 2
        check_patched(client, sizes, p, report)

        # 3. the geo-query over the query data set.
        step(f"loading {sizes.query_entities:,} Vehicles for the geo-query")
        with prof.phase("load query data", 10):
            loaded = report.add(load_vehicles(client, sizes.query_entities))
        drain_history(report, url, "loading the Vehicles")
        step(f"geo-query: {sizes.query_warmup} warm-up + {sizes.query_requests} sequential requests")
        with prof.phase("query", 5):
            q, returned = query_phase(client, sizes)
        report.add(q)
        counts, bad = match_counts(client)
        if bad:
            report.problems.append(f"{bad} count=true geo-queries failed")
        report.facts += [
            ("database", f"{report.db_kind}: {db_label(url)}"),
            ("load generator", report.load_generator),
            ("ingest", f"{sizes.batches} batches × {sizes.batch_entities} entities × "
                       f"{len(ATTRS)} Property attrs"),
            ("ingest_ratio uses", "the update phase (same ids upserted again) ÷ raw executemany rows/s; "
                                  f"create-phase ratio {ins.rate / raw.rate:.3f}, mean of both "
                                  f"{(ins.rate + upd.rate) / 2 / raw.rate:.3f}"),
            ("PATCH/GET spread over", f"{sizes.hot_entities} entities, {sizes.concurrency} keep-alive "
                                      f"clients, {sizes.duration_s} s per phase"),
            ("/healthz baseline", f"{healthz_rate:,.0f} req/s (mean of before {base1.rate:,.0f} "
                                  f"and after {base2.rate:,.0f})"),
            ("entities stored at query time", f"{sizes.batches * sizes.batch_entities + loaded.items:,} "
                                              f"({loaded.items:,} Vehicles)"),
            ("entities per query response", _spread(returned) + " (default page size applies)"),
            ("matches per town-centre query", _spread(counts) + " (count=true, untimed)"),
        ]
        if prof.out_dir is not None:
            report.facts.append(("py-spy profiles", f"{prof.out_dir} (a profiled run: rates are depressed)"))
        return {
            "ingest_ratio": upd.rate / raw.rate if raw.rate else 0.0,
            "patch_ratio": p.rate / healthz_rate if healthz_rate else 0.0,
            "get_ratio": g.rate / healthz_rate if healthz_rate else 0.0,
            "query_p95_ms": q.p95_ms if q.p95_ms is not None else math.nan,
        }
    finally:
        client.close()


def history_waiting(db_path: str) -> int:
    """History rows the server has logged or staged but not yet moved into its indexed table (SQLite)."""
    db = sqlite3.connect(db_path, timeout=30)  # not mode=ro: a read-only opener may reset the server's -shm
    try:
        logged = db.execute("SELECT coalesce(sum(rows), 0) FROM broker_temporal_log").fetchone()[0]
        staged = db.execute("SELECT count(*) FROM broker_temporal_recent").fetchone()[0]
        return int(logged) + int(staged)
    finally:
        db.close()


def drain_history(report: Report, url: str, after: str) -> None:
    """SQLite: writes leave building and indexing their history rows to the server's staging job, which runs
    in quiet moments. Each timed phase starts once the job has caught up with the phase before (its
    background work would otherwise be measured as part of the next phase); how long that took is reported."""
    if report.db_kind == "sqlite":
        report.facts.append((f"history left after {after}", history_backlog(url)))


def history_backlog(url: str, limit_s: float = 120.0) -> str:
    """How many history rows waited for the staging job, and how long it took to expand and move them."""
    path = url.removeprefix("sqlite:///")
    left = history_waiting(path)
    started = time.perf_counter()
    while history_waiting(path) and time.perf_counter() - started < limit_s:
        time.sleep(0.1)
    waited = time.perf_counter() - started
    still = history_waiting(path)
    return (f"{left:,} rows logged or staged; "
            + (f"expanded and moved {waited:.1f} s later" if not still else f"{still:,} still waiting after "
               f"{limit_s:.0f} s"))


def check_patched(client: httpx.Client, sizes: Sizes, patch: Phase, report: Report) -> None:
    """The PATCHes must have landed: count the hot entities whose temperature is a PATCHed value (≥ 100)."""
    params = {"type": "Device", "q": "temperature>=100", "count": "true", "limit": "0"}
    resp = client.get(f"{NGSI}/entities", params=params)
    if resp.status_code != 200:
        report.problems.append(f"checking the PATCHes: HTTP {resp.status_code} {resp.text[:200]}")
        return
    patched = int(resp.headers.get("NGSILD-Results-Count", "0"))
    # Each client walks the request list from its own offset: at least this many distinct entities were hit.
    expected = min(sizes.hot_entities, patch.items // sizes.concurrency)
    report.facts.append(("entities showing a PATCHed value", f"{patched:,} of {sizes.hot_entities:,} "
                                                             f"(at least {expected:,} expected)"))
    if patched < max(1, expected):
        report.problems.append(f"only {patched} entities show a PATCHed value; at least {expected} expected")


def _spread(values: Sequence[int]) -> str:
    if not values:
        return "none"
    ordered = sorted(values)
    return f"min {ordered[0]}, median {ordered[len(ordered) // 2]}, max {ordered[-1]} (n={len(ordered)})"


def _ms(value: float | None) -> str:
    return "" if value is None or math.isnan(value) else f"{value:.2f}"


def print_report(report: Report, ratios: dict[str, float]) -> None:
    console = Console(width=None if sys.stdout.isatty() else 160, highlight=False)
    table = Table(title="society5 broker benchmark — raw figures")
    for col in ("phase", "ok ops", "seconds", "rate", "p50 ms", "p95 ms", "p99 ms", "max ms", "non-2xx",
                "5xx", "sock err"):
        table.add_column(col, justify="left" if col == "phase" else "right")
    for ph in report.phases:
        table.add_row(ph.name, f"{ph.items:,}", f"{ph.seconds:.2f}", f"{ph.rate:,.0f} {ph.unit}",
                      _ms(ph.p50_ms), _ms(ph.p95_ms), _ms(ph.p99_ms), _ms(ph.max_ms),
                      f"[red]{ph.non2xx}[/red]" if ph.non2xx else "0", str(ph.status_5xx),
                      f"[red]{ph.socket_errors}[/red]" if ph.socket_errors else "0")
    console.print(table)
    facts = Table(show_header=False, title="setup and checks")
    facts.add_column("what")
    facts.add_column("value")
    for ph in report.phases:
        if ph.note:
            facts.add_row(ph.name, ph.note)
    for key, value in report.facts:
        facts.add_row(key, value)
    facts.add_row("non-2xx responses / socket errors (all phases)",
                  f"[red]{report.failures}[/red]" if report.failures else "0")
    console.print(facts)
    figures = Table(title="figures")
    for col in ("figure", "value", "target", "met"):
        figures.add_column(col)
    for key, (op, target) in TARGETS.items():
        figure = ratios[key]
        met = figure >= target if op == ">=" else figure <= target
        verdict = "[green]yes[/green]" if met else "[red]no[/red]"
        figures.add_row(key, f"{figure:.3f}", f"{op} {target:g}", verdict)
    console.print(figures)
    for problem in report.problems:
        console.print(f"[bold red]problem:[/bold red] {problem}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="society5 broker benchmark (see bench/README.md)")
    ap.add_argument("--database-url", default=None,
                    help="sqlite:///NEW_FILE, or postgresql+psycopg://user@host:port/db (a fresh "
                         "s5bench_* database is created on that server and dropped afterwards); "
                         "default: a temp SQLite file")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test, not a measurement)")
    ap.add_argument("--duration", type=int, default=None, help="seconds per concurrent phase (10; quick 2)")
    ap.add_argument("--query-entities", type=int, default=None,
                    help="Vehicles stored for the geo-query (100,000; quick 5,000)")
    ap.add_argument("--concurrency", type=int, default=16, help="concurrent keep-alive clients (16)")
    ap.add_argument("--httpx", action="store_true", help="use the asyncio httpx load generator, not wrk")
    ap.add_argument("--profile", metavar="DIR", default=None,
                    help="record py-spy profiles of the server per phase into DIR (slows the server)")
    ap.add_argument("--profile-format", choices=("flamegraph", "raw", "speedscope"), default="flamegraph",
                    help="py-spy output: flame graph SVG, collapsed stacks (raw) or speedscope JSON")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
