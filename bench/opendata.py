#!/usr/bin/env python3
"""Open-data benchmark: a real ``society5 serve`` measured over CKAN's Action API.

Usage::

    python bench/opendata.py [--database-url URL] [--quick]

Three figures, printed as the LAST line of stdout::

    datastore_p95_ms=<a> search_p95_ms=<b> ingest_rows_per_s=<c>

* ``datastore_p95_ms``: p95 latency of ``datastore_search`` on a 1,000,000-row resource (Sapporo-style
  pedestrian counts: point, 15-minute time, date, direction, count, estimated flag) filtered on one point and
  seven days and sorted by time, with the indexes a publisher would create.
* ``search_p95_ms``: p95 latency of ``package_search`` with a text query and two facets (organization, tags)
  over 10,000 datasets, loaded through ``package_create`` over HTTP by concurrent clients.
* ``ingest_rows_per_s``: CSV rows per second loaded into the datastore (``datastore.load_rows``: read, parse,
  convert to the column types, write, index, swap in), printed beside a raw ``executemany`` (SQLite) or
  ``COPY … FORMAT csv`` (PostgreSQL) of the same rows into a plain table, as a ratio.

See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import os
import random
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
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


bb = _load_broker_bench()  # the database set-up, percentile and source version of the broker benchmark
ACTION = "/api/3/action/"
TARGETS = {"datastore_p95_ms": ("<=", 100.0), "search_p95_ms": ("<=", 100.0)}
FIELDS = [  # Sapporo's underground-walkway pedestrian counts, as a municipality publishes them
    {"id": "地点ID", "type": "text", "info": {"label": "計測地点", "notes": "Point id"}},
    {"id": "日時", "type": "timestamp", "info": {"label": "集計開始日時 (15分間)", "notes": "Bin start"}},
    {"id": "日付", "type": "date", "info": {"label": "日付"}},
    {"id": "方向", "type": "text", "info": {"label": "通行方向 (北行/南行)"}},
    {"id": "人数", "type": "int4", "info": {"label": "通行人数"}},
    {"id": "推計値", "type": "bool", "info": {"label": "推計値フラグ (欠測を推計で補完)"}},
]
PRIMARY_KEY = ["地点ID", "日時", "方向"]
INDEXES = [["地点ID", "日付", "日時"]]
FIRST_DAY = date(2024, 4, 1)
WORDS = ["人口", "防災", "観光", "子育て", "交通", "医療", "福祉", "環境", "農業", "漁業", "除雪", "避難所",
         "AED", "公共施設", "イベント", "ヒグマ", "歩行者", "気象", "財政", "教育"]
TAGS = ["防災", "観光", "子育て", "交通", "医療", "統計", "地図", "オープンデータ", "農林水産", "環境",
        "推奨データセット", "くらし"]
err = Console(stderr=True)


@dataclass
class Sizes:
    points: int = 60
    days: int = 87  # 60 points × 2 directions × 96 bins × 87 days = 1,002,240 rows
    datasets: int = 10_000
    organizations: int = 20
    create_clients: int = 8
    queries: int = 200
    warmup: int = 20

    @property
    def rows(self) -> int:
        return self.points * 2 * 96 * self.days

    @classmethod
    def of(cls, quick: bool) -> Sizes:
        if quick:
            return cls(points=4, days=8, datasets=200, organizations=4, create_clients=4, queries=20,
                       warmup=3)
        return cls()


@dataclass
class Result:
    figures: dict[str, float] = field(default_factory=dict)
    facts: list[tuple[str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


class Server(bb.Server):  # type: ignore[misc]
    """The broker benchmark's server, with uploads kept in the run's temporary folder."""

    def __init__(self, database_url: str, workdir: Path):
        super().__init__(database_url, workdir / "server.log")
        self.workdir = workdir

    def start(self, timeout_s: float = 90.0, extra_env: dict[str, str] | None = None) -> None:
        uploads = {"SOCIETY5_OPENDATA_DIR": str(self.workdir / "opendata")}
        super().start(timeout_s, {**uploads, **(extra_env or {})})


def act(client: httpx.Client, name: str, body: dict[str, Any]) -> Any:
    """POST one action: its ``result``, or a RuntimeError quoting CKAN's error."""
    resp = client.post(ACTION + name, json=body)
    try:
        doc = resp.json()
    except ValueError:
        doc = {}
    if resp.status_code != 200 or not doc.get("success"):
        raise RuntimeError(f"{name} answered {resp.status_code}: {resp.text[:500]}")
    return doc["result"]


# --- catalog: 10,000 datasets and package_search ------------------------------------------------------------


def make_organizations(client: httpx.Client, sizes: Sizes) -> list[str]:
    names = []
    for i in range(sizes.organizations):
        code = f"01{i * 7 + 100:04d}"
        name = f"bench-org-{code}"
        act(client, "organization_create", {"name": name, "title": f"ベンチ町 {code}", "tenant": code})
        names.append(name)
    return names


def dataset(i: int, orgs: list[str], rng: random.Random) -> dict[str, Any]:
    words = rng.sample(WORDS, 3)
    return {
        "name": f"bench-dataset-{i:06d}", "owner_org": orgs[i % len(orgs)],
        "title": f"{words[0]}に関する{words[1]}データ {i}",
        "notes": f"{words[0]}・{words[1]}・{words[2]}の一覧です。毎月更新します。 "
                 f"Dataset {i} about {words[2]}.",
        "tags": [{"name": t} for t in rng.sample(TAGS, 2)], "license_id": "CC-BY-4.0", "frequency": "monthly",
        "resources": [{"url": f"https://example.jp/data/{i}.csv", "name": f"{words[0]}.csv",
                       "format": "CSV"}],
    }


def load_datasets(base: str, sizes: Sizes, orgs: list[str], result: Result) -> None:
    failures: list[str] = []
    lock = threading.Lock()
    next_index = iter(range(sizes.datasets))

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=base, timeout=60) as client:
            while True:
                with lock:
                    i = next(next_index, None)
                if i is None:
                    return
                try:
                    act(client, "package_create", dataset(i, orgs, rng))
                except (RuntimeError, httpx.HTTPError) as exc:
                    with lock:
                        failures.append(str(exc))

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(w,)) for w in range(sizes.create_clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    took = time.perf_counter() - t0
    done = sizes.datasets - len(failures)
    result.facts.append(("package_create over HTTP",
                         f"{done:,} datasets in {took:.0f} s ({done / took:,.0f}/s, "
                         f"{sizes.create_clients} clients)"))
    if failures:
        result.problems.append(f"{len(failures)} package_create calls failed; first: {failures[0]}")


def measure_package_search(client: httpx.Client, sizes: Sizes, result: Result) -> None:
    rng = random.Random(11)
    times: list[float] = []
    counts: list[int] = []
    for n in range(sizes.warmup + sizes.queries):
        body = {"q": rng.choice(WORDS), "facet.field": ["organization", "tags"], "rows": 20,
                "facet.limit": 10}
        t0 = time.perf_counter()
        resp = client.post(ACTION + "package_search", json=body)
        ms = (time.perf_counter() - t0) * 1000
        if resp.status_code != 200:
            result.problems.append(f"package_search answered {resp.status_code}: {resp.text[:300]}")
            return
        doc = resp.json()["result"]
        if n >= sizes.warmup:
            times.append(ms)
            counts.append(doc["count"])
        if n == 0 and not {"organization", "tags"} <= set(doc.get("search_facets", {})):
            got = sorted(doc.get("search_facets", {}))
            result.problems.append(f"package_search returned no organization/tags facets: {got}")
    result.figures["search_p95_ms"] = bb.percentile(times, 95)
    result.facts.append(("package_search p50 / p95 / max", _lat(times) + f" ({len(times)} queries, matches "
                                                                         f"{min(counts)}–{max(counts)})"))


# --- datastore: CSV ingest and datastore_search -------------------------------------------------------------


def write_csv(path: Path, sizes: Sizes) -> None:
    rng = random.Random(5)
    with path.open("w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow([f["id"] for f in FIELDS])
        for day in range(sizes.days):
            d = FIRST_DAY + timedelta(days=day)
            stamp0 = datetime(d.year, d.month, d.day)
            for p in range(sizes.points):
                point = f"SP{p + 1:03d}"
                for b in range(96):
                    stamp = (stamp0 + timedelta(minutes=15 * b)).isoformat()
                    busy = 40 if 28 <= b <= 80 else 3
                    for direction in ("北行", "南行"):
                        out.writerow([point, stamp, d.isoformat(), direction, rng.randint(0, busy * 10),
                                      "true" if rng.random() < 0.02 else "false"])


def create_resource(client: httpx.Client, org: str) -> str:
    package = act(client, "package_create", {
        "name": "sapporo-pedestrian-counts", "owner_org": org, "title": "札幌駅前通地下歩行空間 歩行者通行量",
        "notes": "15分ごとの歩行者通行量（方向別、推計値フラグ付き）", "frequency": "daily"})
    created = act(client, "datastore_create", {
        "resource": {"package_id": package["id"], "name": "歩行者通行量", "format": "CSV"},
        "fields": FIELDS, "primary_key": PRIMARY_KEY, "indexes": INDEXES})
    return str(created["resource_id"])


def measure_ingest(url: str, rid: str, csv_path: Path, rows: int, result: Result) -> None:
    import sqlalchemy as sa

    from society5.core.db import make_engine
    from society5.core.settings import Settings
    from society5.opendata import datastore

    engine = make_engine(Settings(database_url=url, auth="off"))
    try:
        t0 = time.perf_counter()
        with csv_path.open(newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            next(reader)
            loaded = datastore.load_rows(engine, rid, None, reader, first_row=2)
        ours = time.perf_counter() - t0
        raw = raw_baseline(engine, url, csv_path)
        with engine.connect() as conn:
            stored = conn.execute(sa.text(f'SELECT count(*) FROM "{datastore.table_name(rid)}"')).scalar_one()
    finally:
        engine.dispose()
    if loaded.rows != rows or stored != rows:
        result.problems.append(f"loaded {loaded.rows:,} rows, {stored:,} stored; expected {rows:,}")
    result.figures["ingest_rows_per_s"] = rows / ours
    result.figures["ingest_ratio"] = (rows / ours) / (rows / raw)
    how = "executemany, 20,000 rows per commit" if url.startswith("sqlite") else "COPY … (FORMAT csv)"
    result.facts += [
        ("CSV → datastore (load_rows: parse, convert, write, index, swap)",
         f"{rows:,} rows in {ours:.1f} s = {rows / ours:,.0f} rows/s"),
        (f"raw baseline ({how}, no indexes)", f"{rows / raw:,.0f} rows/s in {raw:.1f} s"),
    ]


def raw_baseline(engine: Any, url: str, csv_path: Path) -> float:
    """Seconds to write the same CSV rows as they are into a plain table of the same column types."""
    cols = ", ".join(f'"{f["id"]}" {"TEXT" if f["type"] == "text" else f["type"].upper()}' for f in FIELDS)
    if url.startswith("sqlite"):
        import sqlite3

        conn = sqlite3.connect(url.removeprefix("sqlite:///"), timeout=60)
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(f"CREATE TABLE raw_ingest ({cols.replace('INT4', 'INTEGER')})")
        sql = f"INSERT INTO raw_ingest VALUES ({', '.join('?' * len(FIELDS))})"
        t0 = time.perf_counter()
        with csv_path.open(newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            next(reader)
            while chunk := [row for _, row in zip(range(20_000), reader, strict=False)]:
                with conn:
                    conn.executemany(sql, chunk)
        took = time.perf_counter() - t0
        conn.execute("DROP TABLE raw_ingest")
        conn.close()
        return took
    import psycopg

    with psycopg.connect(bb.libpq_url(url)) as conn:
        conn.execute(f"CREATE TABLE raw_ingest ({cols.replace('TIMESTAMP', 'timestamp')})")
        conn.commit()
        t0 = time.perf_counter()
        with csv_path.open("rb") as fh, conn.cursor().copy(
                "COPY raw_ingest FROM STDIN (FORMAT csv, HEADER true)") as copy:
            while block := fh.read(1 << 20):
                copy.write(block)
        conn.commit()
        took = time.perf_counter() - t0
        conn.execute("DROP TABLE raw_ingest")
        conn.commit()
    return took


def measure_datastore_search(client: httpx.Client, rid: str, sizes: Sizes, result: Result) -> None:
    rng = random.Random(3)
    times: list[float] = []
    totals: set[int] = set()
    for n in range(sizes.warmup + sizes.queries):
        start = FIRST_DAY + timedelta(days=rng.randrange(sizes.days - 6))
        body = {"resource_id": rid, "sort": "日時 asc", "limit": 100,
                "filters": {"地点ID": f"SP{rng.randrange(sizes.points) + 1:03d}",
                            "日付": [(start + timedelta(days=k)).isoformat() for k in range(7)]}}
        t0 = time.perf_counter()
        resp = client.post(ACTION + "datastore_search", json=body)
        ms = (time.perf_counter() - t0) * 1000
        if resp.status_code != 200:
            result.problems.append(f"datastore_search answered {resp.status_code}: {resp.text[:300]}")
            return
        doc = resp.json()["result"]
        stamps = [r["日時"] for r in doc["records"]]
        if stamps != sorted(stamps) or len(stamps) != 100:
            result.problems.append("datastore_search returned records out of order or too few")
            return
        if n >= sizes.warmup:
            times.append(ms)
            totals.add(doc["total"])
    result.figures["datastore_p95_ms"] = bb.percentile(times, 95)
    result.facts.append(("datastore_search p50 / p95 / max",
                         _lat(times) + f" ({len(times)} queries; total per answer {sorted(totals)})"))
    if totals != {7 * 96 * 2}:
        result.problems.append(f"each query should match {7 * 96 * 2} rows; totals were {sorted(totals)}")


def _lat(times: list[float]) -> str:
    return (f"{bb.percentile(times, 50):.1f} / {bb.percentile(times, 95):.1f} / "
            f"{max(times, default=float('nan')):.1f} ms")


# --- the run ------------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    sizes = Sizes.of(args.quick)
    result = Result()
    wall0 = time.perf_counter()
    with (tempfile.TemporaryDirectory(prefix="s5bench_") as tmp,
          bb.bench_database(args.database_url, Path(tmp)) as (url, kind)):
        err.print(f"[bold]society5 open-data benchmark[/bold] ({'quick' if args.quick else 'full'}, {kind})")
        csv_path = Path(tmp) / "pedestrians.csv"
        err.print(f"writing {sizes.rows:,} CSV rows …")
        write_csv(csv_path, sizes)
        result.facts.append(("CSV file", f"{sizes.rows:,} rows, {csv_path.stat().st_size / 1e6:.0f} MB"))
        server = Server(url, Path(tmp))
        server.start()
        try:
            with httpx.Client(base_url=server.base, timeout=120) as client:
                orgs = make_organizations(client, sizes)
                rid = create_resource(client, orgs[0])
                err.print("loading the CSV into the datastore …")
                measure_ingest(url, rid, csv_path, sizes.rows, result)
                err.print("datastore_search …")
                measure_datastore_search(client, rid, sizes, result)
                err.print(f"{sizes.datasets:,} datasets through package_create …")
                load_datasets(server.base, sizes, orgs, result)
                err.print("package_search …")
                measure_package_search(client, sizes, result)
        except RuntimeError as exc:
            result.problems.append(str(exc))
        finally:
            server.stop()
        errors, _ = server.log_errors()
        if errors:
            result.problems.append(f"the server logged {len(errors)} error(s); "
                                   f"the last:\n{errors[-1][-2000:]}")
    result.facts.append(("wall time", f"{time.perf_counter() - wall0:.0f} s"))
    result.facts.append(("source", bb.source_version()))
    result.facts.append(("machine", f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}"))
    report(result, kind)
    f = result.figures
    print(f"datastore_p95_ms={f.get('datastore_p95_ms', float('nan')):.2f} "
          f"search_p95_ms={f.get('search_p95_ms', float('nan')):.2f} "
          f"ingest_rows_per_s={f.get('ingest_rows_per_s', float('nan')):.0f}", flush=True)
    return 3 if result.problems else 0


def report(result: Result, kind: str) -> None:
    console = Console(width=130)
    table = Table(title=f"society5 open-data benchmark ({kind})")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("target")
    for name, (op, target) in TARGETS.items():
        value = result.figures.get(name)
        if value is None:
            table.add_row(name, "not measured", f"{op} {target}")
            continue
        met = value <= target if op == "<=" else value >= target
        table.add_row(name, f"{value:.2f}", f"{op} {target} {'met' if met else 'MISSED'}")
    for name in ("ingest_rows_per_s", "ingest_ratio"):
        value = result.figures.get(name)
        table.add_row(name, "not measured" if value is None else f"{value:,.2f}",
                      "÷ raw baseline" if name == "ingest_ratio" else "")
    console.print(table)
    for key, value in result.facts:
        console.print(f"  {key}: {value}")
    for problem in result.problems:
        console.print(f"[red]problem:[/red] {problem}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="society5 open-data benchmark")
    ap.add_argument("--database-url", default=None,
                    help="sqlite:///NEW_FILE or postgresql+psycopg://user@host/db (a fresh s5bench_* "
                         "database is created there and dropped); default: a temporary SQLite file")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test, not a measurement")
    return ap.parse_args(argv)


if __name__ == "__main__":
    sys.exit(run(parse_args()))
