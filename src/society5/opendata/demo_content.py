"""The open-data portal's demo content, made through the CKAN actions like any publisher would. Idempotent.

* organizations: the 179 municipalities of Hokkaido and the prefecture (named by 団体コード, each editable by
  its own tenant), and two fictitious partner firms, labelled as such;
* groups (categories): 防災, 観光, 子育て・教育, 交通, 環境, 健康・福祉, 行政, 産業;
* the report's own case studies: ``demo_data/initiatives.csv`` (derived from the Hokkaido Society 5.0
  report by ``demo_data/build_initiatives.py``) as a dataset of the prefecture;
* one fictional sample dataset per standard layout (``samples``), titled and marked as fictional;
* broker-fed datasets: Sapporo's underground-walkway pedestrian counts in 15-minute bins (the demo's
  ``CrowdFlowObserved`` sensors, with a day of simulated history) and the demo's public snow-plough
  positions in 岩見沢市.

A second run creates nothing that exists (looked up by name in one list call per kind), so it costs a few
queries; the first run takes a second or two on SQLite.
"""

from __future__ import annotations

import logging
import math
import random
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from society5.core.regions import hokkaido_municipalities
from society5.opendata import (
    api,  # noqa: F401  (fills the action registry)
    layouts,
    publishers,
    samples,
)
from society5.opendata import datastore as ds
from society5.opendata.actions import ActionContext, CkanError, Upload, call
from society5.opendata.publish_shapes import JST

log = logging.getLogger(__name__)

DATA = Path(__file__).with_name("demo_data")
PREFECTURE = ("010006", "北海道", "ホッカイドウ", 43.0642, 141.3469)
DEMO_NOTE = ("society5 デモ用のデータです（実在の統計ではありません） / "
             "society5 demo data, not real statistics.")
PARTNERS = (  # (name, title, tenant that registered it, description)
    ("demo-partner-kita-data", "北のデータ合同会社（架空のデモ企業）", "011002",
     "デモ用の架空の企業です。実在しません。 / A fictitious company for the demo."),
    ("demo-partner-yukihara-mobility", "雪原モビリティ株式会社（架空のデモ企業）", "016390",
     "デモ用の架空の企業です。実在しません。 / A fictitious company for the demo."),
)
GROUPS = (  # (name, title, description)
    ("bousai", "防災", "防災・災害対応・鳥獣被害対策 / Disaster prevention"),
    ("kankou", "観光", "観光・イベント / Tourism and events"),
    ("kosodate", "子育て・教育", "子育て・教育 / Childcare and education"),
    ("koutsu", "交通", "交通・移動・除雪 / Transport, mobility, snow removal"),
    ("kankyou", "環境", "環境・エネルギー / Environment and energy"),
    ("kenkou-fukushi", "健康・福祉", "健康・医療・福祉 / Health and welfare"),
    ("gyousei", "行政", "行政・統計・自治体DX / Government and administration"),
    ("sangyou", "産業", "農林水産業・商工業 / Industry, agriculture, fisheries"),
)
LAYOUT_GROUPS = {"aed": "kenkou-fukushi", "public_facility": "gyousei", "event": "kankou",
                 "tourism": "kankou",
                 "evacuation_site": "bousai", "covid19_patients": "kenkou-fukushi"}
INITIATIVES = "hokkaido-society5-initiatives"
PEDESTRIANS = "sapporo-chikaho-pedestrian-counts"
PLOUGHS = "iwamizawa-snow-ploughs"
CHIKAHO = [f"urn:ngsi-ld:CrowdFlowObserved:sapporo-chikaho-{i:02d}" for i in range(1, 5)]


def _ctx(platform: Any) -> ActionContext:
    return publishers.system_context(platform)


def organizations(ctx: ActionContext) -> int:
    """The prefecture, the 179 municipalities and the partner firms; returns how many were created."""
    have = set(call("organization_list", ctx, {"limit": 1000}))
    wanted: list[dict[str, Any]] = []
    places = [PREFECTURE] + [(m.code, m.name, m.kana, m.lat, m.lon) for m in hokkaido_municipalities()]
    for code, name, kana, lat, lon in places:
        extras = [{"key": "municipality_code", "value": code}, {"key": "name_kana", "value": kana}]
        if lat is not None and lon is not None:
            extras += [{"key": "lat", "value": str(lat)}, {"key": "lon", "value": str(lon)}]
        wanted.append({"name": code, "title": name, "tenant": code, "extras": extras,
                       "description": f"{name}（全国地方公共団体コード {code}）のオープンデータ"})
    for name, title, tenant, description in PARTNERS:
        wanted.append({"name": name, "title": title, "tenant": tenant, "description": description,
                       "extras": [{"key": "fictitious", "value": "true"}]})
    missing = [org for org in wanted if org["name"] not in have]
    if ctx.platform.engine.dialect.name == "postgresql":
        # Each create is its own short transaction: on PostgreSQL they may run side by side (SQLite has one
        # writer at a time, so there they go one after another).
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda org: call("organization_create", ctx, org), missing))
    else:
        for org in missing:
            call("organization_create", ctx, org)
    return len(missing)


def groups(ctx: ActionContext) -> int:
    have = set(call("group_list", ctx, {"limit": 1000}))
    made = 0
    for name, title, description in GROUPS:
        if name not in have:
            call("group_create", ctx, {"name": name, "title": title, "description": description})
            made += 1
    return made


def _upload_table(ctx: ActionContext, package_id: str, path: Path, name: str, fields: list[ds.Field],
                  rows: list[list[str]]) -> None:
    ctx.uploads = {"upload": Upload(filename=path.name, path=str(path), size=path.stat().st_size)}
    try:
        res = call("resource_create", ctx, {"package_id": package_id, "name": name, "format": "CSV"})
    finally:
        ctx.uploads = {}
    try:
        ds.load_rows(ctx.platform.engine, res["id"], fields, rows, replace=True)
    except CkanError:  # typed columns that a value does not fit: keep the table, as text
        ds.load_rows(ctx.platform.engine, res["id"], [ds.Field(f.id, "text") for f in fields], rows)
    call("resource_patch", ctx, {"id": res["id"], "datastore_active": True})


def _read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    import csv

    with path.open(encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def initiatives(ctx: ActionContext, existing: set[str]) -> bool:
    if INITIATIVES in existing:
        return False
    package = call("package_create", ctx, {
        "name": INITIATIVES, "title": "北海道Society5.0 取組事例一覧",
        "notes": ("「北海道Society5.0」の取組事例（国の機関・市町村・企業・団体・道）を、"
                  "実施主体・分野・取組名・内容・技術の一覧にしたものです。"
                  "道の資料から `build_initiatives.py` で抽出し、分野と技術はキーワードで"
                  "分類しています。\n\nCase studies of Hokkaido's Society 5.0 report, one row per initiative "
                  "(field and technology assigned by keyword rules)."),
        "owner_org": PREFECTURE[0], "license_id": "CC-BY-4.0", "frequency": "annual",
        "groups": [{"name": "gyousei"}, {"name": "sangyou"}],
        "tags": [{"name": t} for t in ("Society5.0", "DX", "事例集", "スマート農業", "ドローン")],
        "contact_name": "北海道 デモ担当", "language": "ja"})
    path = DATA / "initiatives.csv"
    header, rows = _read_csv(path)
    fields = [ds.Field(h, "int4" if h == "No" else "text") for h in header]
    _upload_table(ctx, package["id"], path, "取組事例一覧 CSV", fields, rows)
    return True


def sample_datasets(ctx: ActionContext, existing: set[str]) -> int:
    made = 0
    spool = Path(ctx.platform.settings.opendata_dir) / "tmp"
    spool.mkdir(parents=True, exist_ok=True)
    for layout in layouts.all():
        name = f"sample-{layout.id.replace('_', '-')}"
        if name in existing:
            continue
        package = call("package_create", ctx, {
            "name": name, "title": samples.sample_title(layout.id),
            "notes": (f"{layout.name_ja}（{layout.name_en}）の様式に沿った **架空の** サンプルデータです。"
                      "実在の施設・人物・"
                      f"事象とは関係ありません。\n\nFictional sample data in the {layout.name_en} layout "
                      f"({samples.SAMPLE_LABEL_EN})."),
            "owner_org": PREFECTURE[0], "license_id": "CC-BY-4.0", "conforms_to": layout.id,
            "groups": [{"name": LAYOUT_GROUPS.get(layout.id, "gyousei")}],
            "tags": [{"name": "サンプル"}, {"name": "推奨データセット"}]})
        with tempfile.TemporaryDirectory(dir=spool) as folder:
            path = Path(folder) / f"{layout.id}.csv"
            samples.write_sample_csv(path, layout.id, n=30, seed=1)
            _, rows = _read_csv(path)
            fields = ds.parse_fields(layouts.datastore_fields(layout))
            _upload_table(ctx, package["id"], path, f"{layout.name_ja} CSV（架空）", fields, rows)
        made += 1
    return made


def _profile(hour: float) -> float:
    """Weekday pedestrian traffic through the day: morning and evening peaks, quiet at night."""
    peaks = 0.9 * math.exp(-((hour - 8.5) ** 2) / 1.5) + math.exp(-((hour - 18) ** 2) / 3.0)
    base = 0.35 if 7 <= hour <= 22 else 0.05
    return base + peaks


def seed_pedestrian_history(platform: Any, now: datetime | None = None) -> int:
    """One simulated observation per 15 minutes from yesterday 00:00 (JST) until now for each Chi-Ka-Ho
    sensor, so the 15-minute table has a day and more at once (the live simulation goes on from there)."""
    temporal = platform.parts.get("temporal")
    broker = platform.parts.get("broker")
    if temporal is None or broker is None:
        return 0
    end = (now or datetime.now(UTC)).astimezone(JST)
    start = (end - timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    bins = int((end - start).total_seconds() // 900)
    written = 0
    for n, eid in enumerate(CHIKAHO):
        rng = random.Random(f"{eid}:{start.date()}")
        instances = []
        for k in range(bins):
            moment = start + timedelta(minutes=15 * k)
            scale = (1.4, 1.1, 0.8, 1.0)[n % 4]
            hour = moment.hour + moment.minute / 60
            value = round(60 * 475 * scale * _profile(hour) * rng.uniform(0.9, 1.1))
            instances.append({"type": "Property", "value": value,
                              "observedAt": moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")})
        try:
            temporal.append("011002", eid, {"peopleCount": instances}, broker.context())
        except Exception:  # the demo's sensors are not there (a partial demo): nothing to seed
            log.warning("could not seed the history of %s", eid)
            continue
        written += len(instances)
    return written


def broker_datasets(ctx: ActionContext, existing: set[str]) -> int:
    """The datasets publishers keep up to date (only when the broker runs on this platform)."""
    if ctx.platform.parts.get("broker") is None:
        return 0
    made = 0
    if PEDESTRIANS not in existing:
        package = call("package_create", ctx, {
            "name": PEDESTRIANS, "title": "札幌市 地下歩行空間 歩行者通行量（15分毎・デモ）",
            "notes": ("札幌駅前通地下歩行空間（チ・カ・ホ）などの歩行者通行量を、"
                      "計測地点・方向ごとに15分単位で集計した表です。"
                      "データ連携基盤の CrowdFlowObserved センサー（デモのシミュレーション）から"
                      "自動生成され、"
                      "推計値フラグ 1 は欠測を前後の値から推計した時間帯です。\n\n" + DEMO_NOTE),
            "owner_org": "011002", "license_id": "CC-BY-4.0", "frequency": "continuous",
            "groups": [{"name": "koutsu"}], "tags": [{"name": "通行量"}, {"name": "人流"}, {"name": "デモ"}]})
        call("publisher_create", ctx, {
            "package_id": package["id"], "shape": "time_bins", "entity_type": "CrowdFlowObserved",
            "tenant": "011002", "count_attr": "peopleCount", "bin_minutes": 15, "window_days": 2,
            "every_minutes": 15, "file_name": "chikaho-pedestrians-15min"})
        made += 1
    if PLOUGHS not in existing:
        package = call("package_create", ctx, {
            "name": PLOUGHS, "title": "岩見沢市 除雪車の現在位置（デモ）",
            "notes": "除雪車の位置と速度（公開エンティティのみ、座標は約100 mに丸め）。\n\n" + DEMO_NOTE,
            "owner_org": "012106", "license_id": "CC-BY-4.0", "frequency": "continuous",
            "groups": [{"name": "koutsu"}], "tags": [{"name": "除雪"}, {"name": "デモ"}]})
        call("publisher_create", ctx, {
            "package_id": package["id"], "shape": "snapshot", "entity_type": "Vehicle", "tenant": "012106",
            "attrs": ["name", "vehicleType", "speed"], "coordinate_digits": 3, "every_minutes": 5,
            "file_name": "iwamizawa-vehicles"})
        made += 1
    return made


def load(platform: Any) -> dict[str, int]:
    """Create whatever of the demo content is missing; returns how many of each kind were made."""
    ctx = _ctx(platform)
    made = {"organizations": organizations(ctx), "groups": groups(ctx)}
    existing = set(call("package_list", ctx, {"limit": 1000}))
    made["datasets"] = int(initiatives(ctx, existing)) + sample_datasets(ctx, existing)
    if PEDESTRIANS not in existing:
        seed_pedestrian_history(platform)
    made["publishers"] = broker_datasets(ctx, existing)
    return made
