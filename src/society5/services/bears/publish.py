"""Open data: each municipality's VERIFIED sightings as a CSV and a GeoJSON file in the open-data catalog.

One dataset per tenant (``bear-sightings-<団体コード>``, 「<市町村名> ヒグマ出没情報」) in the organization of
that tenant, with two resources whose files are replaced on every run under the same resource ids, so the
download URLs stay stable; the CSV is loaded into the datastore too (``datastore_search`` works on it).

Nothing personal is published: only the public view of a sighting (``access.public_view``: no reporter,
contact, photo, camera or free text), locations rounded to ``BEARS_PUBLIC_DECIMALS``, unverified, rejected
and merged-away reports left out. Columns follow the Japanese standard open-data style (全国地方公共団体コード
first, Japanese labels for codes).

The job runs hourly but publishes a tenant only once per JST day (the day of the last run is kept in the
dataset's ``bears_published_at`` extra, so a restart does not publish again and several server processes
at worst publish the same content twice). Apps without the opendata service skip it with one log line.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from society5.core.errors import NotFound
from society5.core.service import Job
from society5.core.timeutil import JST, parse_iso
from society5.services.bears import access, models
from society5.services.bears.sightings import sightings_of

log = logging.getLogger(__name__)

DATASET_PREFIX = "bear-sightings-"
CSV_NAME = "ヒグマ出没情報 CSV"
GEOJSON_NAME = "ヒグマ出没情報 GeoJSON"
FILE_NAME = "bear-sightings"
PUBLISHED_AT = "bears_published_at"  # dataset extra: when this module last replaced the files (UTC)
MAX_ROWS = 50_000
DIRECTION_JA = {"N": "北", "NE": "北東", "E": "東", "SE": "南東", "S": "南", "SW": "南西", "W": "西",
                "NW": "北西", "unknown": "不明"}
# (column, datastore type): the standard-dataset style, 全国地方公共団体コード first.
COLUMNS = (
    ("全国地方公共団体コード", "text"), ("ID", "text"), ("市区町村名", "text"), ("地区名", "text"),
    ("出没日時", "text"), ("緯度", "float8"), ("経度", "float8"), ("種別", "text"), ("痕跡の種類", "text"),
    ("頭数", "int4"), ("子グマ頭数", "int4"), ("行動", "text"), ("移動方向", "text"), ("情報源", "text"),
    ("確認状況", "text"), ("警戒レベル", "int4"), ("通報件数", "int4"),
)
HEADER = [name for name, _ in COLUMNS]
_STATE = "bears.publish"


@dataclass
class Table:
    rows: list[list[str]] = field(default_factory=list)
    features: list[dict[str, Any]] = field(default_factory=list)


def _jst(text: str | None) -> str:
    if not text:
        return ""
    return parse_iso(text).astimezone(JST).strftime("%Y-%m-%dT%H:%M:%S+09:00")


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


def _typed(text: str, kind: str) -> Any:
    """A CSV cell as a JSON value of its column's type (GeoJSON properties are typed)."""
    if text == "":
        return None
    return int(text) if kind == "int4" else float(text) if kind == "float8" else text


def row_of(view: dict[str, Any], decimals: int) -> list[str]:
    """A CSV row of a sighting's public view (codes as Japanese labels, coordinates to ``decimals``)."""
    return [_cell(v) for v in (
        view.get("municipality"), view["id"], view.get("municipality_name"), view.get("area_name"),
        _jst(view.get("observed_at")), f"{view['lat']:.{decimals}f}", f"{view['lon']:.{decimals}f}",
        models.KIND_JA.get(view.get("kind", ""), view.get("kind")),
        models.TRACE_JA.get(view.get("trace") or "", view.get("trace")),
        view.get("count"), view.get("cubs"),
        models.BEHAVIOUR_JA.get(view.get("behaviour", ""), view.get("behaviour")),
        DIRECTION_JA.get(view.get("direction", ""), view.get("direction")),
        models.SOURCE_JA.get(view.get("source", ""), view.get("source")),
        models.STATE_JA.get(view.get("state", ""), view.get("state")),
        view.get("alert_level"), view.get("report_count") or 1,
    )]


def build(platform: Any, tenant: str) -> Table:
    """The published table of ``tenant``: its verified sightings, newest first, public fields only."""
    decimals = platform.settings.bears_public_decimals
    try:
        found = sightings_of(platform).list(tenant, states=["verified"], limit=MAX_ROWS)
    except NotFound:  # the tenant holds no entities at all yet
        found = []
    table = Table()
    for sighting in found:
        view = access.public_view(sighting, decimals)
        if view is None or "lat" not in view:
            continue
        view.pop("photo", None)  # a photo may show people or property: never in open data
        row = row_of(view, decimals)
        table.rows.append(row)
        props = {name: _typed(value, kind) for (name, kind), value in zip(COLUMNS, row, strict=True)
                 if name not in ("緯度", "経度")}
        table.features.append({"type": "Feature", "id": view["id"],
                               "geometry": {"type": "Point", "coordinates": [view["lon"], view["lat"]]},
                               "properties": props})
    return table


# --- the catalog ------------------------------------------------------------------------------------------


def catalog_present(platform: Any) -> bool:
    """Whether this app runs the opendata service (its start-up registers the datastore loader)."""
    from society5.opendata.ingest import LOAD_KIND

    return LOAD_KIND in platform.outbox.handlers


def _context(platform: Any) -> Any:
    from society5.opendata import api  # noqa: F401  (fills the action registry)
    from society5.opendata.publishers import system_context

    return system_context(platform)


def _tenant_name(platform: Any, tenant: str) -> str:
    for t in platform.tenants.list():
        if t["code"] == tenant:
            return str(t.get("name") or tenant)
    return tenant


def _ensure_dataset(ctx: Any, tenant: str) -> dict[str, Any]:
    from society5.opendata.actions import NotFoundError, call

    name = DATASET_PREFIX + tenant
    try:
        package: dict[str, Any] = call("package_show", ctx, {"id": name})
        return package
    except NotFoundError:
        pass
    town = _tenant_name(ctx.platform, tenant)
    try:
        call("organization_show", ctx, {"id": tenant})
    except NotFoundError:
        call("organization_create", ctx, {"name": tenant, "title": town, "tenant": tenant,
                                          "description": f"{town}（全国地方公共団体コード {tenant}）"})
    groups = [{"name": "bousai"}] if "bousai" in call("group_list", ctx, {"limit": 1000}) else []
    decimals = ctx.platform.settings.bears_public_decimals
    created: dict[str, Any] = call("package_create", ctx, {
        "name": name, "title": f"{town} ヒグマ出没情報", "owner_org": tenant,
        "notes": (f"{town}で確認されたヒグマの出没情報（目撃・痕跡・被害）です。職員が確認したものだけを"
                  f"毎日更新します。位置は小数点以下{decimals}桁に丸めています。通報者・写真など個人に関わる"
                  "情報は含みません。\n\n"
                  f"Verified brown-bear sightings in {town}, updated daily; locations rounded to {decimals} "
                  "decimals; nothing about the people who reported them."),
        "license_id": "CC-BY-4.0", "frequency": "daily", "language": "ja", "groups": groups,
        "tags": [{"name": t} for t in ("ヒグマ", "鳥獣被害", "防災", "出没情報")],
        "contact_name": f"{town} ヒグマ対策担当"})
    return created


def _write_files(platform: Any, table: Table) -> tuple[Any, Any, list[str]]:
    from society5.opendata import csvio
    from society5.opendata.actions import Upload

    spool = Path(platform.settings.opendata_dir) / "tmp"
    spool.mkdir(parents=True, exist_ok=True)
    paths: list[str] = []

    def temp() -> str:
        handle, path = tempfile.mkstemp(prefix="bears-", dir=spool)
        os.close(handle)
        paths.append(path)
        return path

    csv_path, geo_path = temp(), temp()
    csvio.write_csv(csv_path, HEADER, table.rows, encoding="utf-8-sig")
    Path(geo_path).write_bytes(orjson.dumps({"type": "FeatureCollection", "features": table.features}))
    return (Upload(f"{FILE_NAME}.csv", csv_path, os.path.getsize(csv_path)),
            Upload(f"{FILE_NAME}.geojson", geo_path, os.path.getsize(geo_path)), paths)


def _put(ctx: Any, package: dict[str, Any], name: str, fmt: str, upload: Any, description: str) -> str:
    """Create the resource called ``name``, or replace its file; returns its id."""
    from society5.opendata.actions import call

    existing = next((r for r in package.get("resources", []) if r.get("name") == name), None)
    ctx.uploads = {"upload": upload}
    try:
        if existing is None:
            res = call("resource_create", ctx, {"package_id": package["id"], "name": name, "format": fmt,
                                                "description": description, "datastore_auto": False})
        else:
            res = call("resource_patch", ctx, {"id": existing["id"]})
    finally:
        ctx.uploads = {}
    return str(res["id"])


def publish_tenant(platform: Any, tenant: str, ctx: Any = None) -> int:
    """Publish ``tenant``'s verified sightings now (dataset created when missing); returns the rows."""
    from society5.opendata import datastore as ds
    from society5.opendata.actions import call

    ctx = ctx or _context(platform)
    table = build(platform, tenant)
    package = _ensure_dataset(ctx, tenant)
    csv_upload, geo_upload, paths = _write_files(platform, table)
    try:
        csv_id = _put(ctx, package, CSV_NAME, "CSV", csv_upload,
                      "確認済みのヒグマ出没情報（UTF-8 BOM付き） / verified sightings, UTF-8 with BOM")
        _put(ctx, package, GEOJSON_NAME, "GeoJSON", geo_upload,
             "同じ内容の GeoJSON（WGS84） / the same as GeoJSON (WGS84)")
    finally:
        for path in paths:
            Path(path).unlink(missing_ok=True)
    ds.load_rows(platform.engine, csv_id, [ds.Field(n, t) for n, t in COLUMNS], table.rows, replace=True)
    if not call("resource_show", ctx, {"id": csv_id}).get("datastore_active"):
        call("resource_patch", ctx, {"id": csv_id, "datastore_active": True})
    extras = [e for e in call("package_show", ctx, {"id": package["id"]}).get("extras", [])
              if e.get("key") != PUBLISHED_AT]
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    extras.append({"key": PUBLISHED_AT, "value": stamp})
    call("package_patch", ctx, {"id": package["id"], "extras": extras})
    log.info("bears open data: %d verified sightings of %s published", len(table.rows), tenant)
    return len(table.rows)


def _tenants(platform: Any) -> list[str]:
    return [str(t["code"]) for t in platform.tenants.list()]


def _has_verified(platform: Any, tenant: str) -> bool:
    try:
        return bool(sightings_of(platform).list(tenant, states=["verified"], limit=1))
    except NotFound:
        return False


def publish_now(platform: Any, tenants: list[str] | None = None) -> dict[str, int]:
    """Publish now, whatever the day: the given tenants, or every tenant that has verified sightings or
    already has the dataset. Returns the rows published per tenant; a tenant that fails is logged and left
    out, the others go on."""
    from society5.opendata.actions import CkanError, call

    ctx = _context(platform)
    have = {n.removeprefix(DATASET_PREFIX) for n in call("package_list", ctx, {"limit": 1000})
            if n.startswith(DATASET_PREFIX)}
    chosen = tenants if tenants is not None else [
        t for t in _tenants(platform) if t in have or _has_verified(platform, t)]
    done: dict[str, int] = {}
    for tenant in chosen:
        try:
            done[tenant] = publish_tenant(platform, tenant, ctx)
        except (CkanError, OSError) as err:
            log.warning("bears open data of %s not published: %s", tenant, err)
    return done


def _published_on(ctx: Any, tenant: str) -> str:
    """The JST day the tenant's dataset was last published ("" when never)."""
    from society5.opendata.actions import NotFoundError, call

    try:
        package = call("package_show", ctx, {"id": DATASET_PREFIX + tenant})
    except NotFoundError:
        return ""
    stamp = next((e["value"] for e in package.get("extras", []) if e.get("key") == PUBLISHED_AT), "")
    return parse_iso(stamp).astimezone(JST).date().isoformat() if stamp else ""


def run_daily(platform: Any, now: datetime | None = None) -> dict[str, int]:
    """Job: once per JST day, publish every tenant not yet published today."""
    state = platform.parts.setdefault(_STATE, {})
    if not catalog_present(platform):
        if not state.get("told"):
            log.info("bears open data: the opendata service is not installed in this app; not publishing")
            state["told"] = True
        return {}
    today = (now or datetime.now(UTC)).astimezone(JST).date().isoformat()
    if state.get("day") == today:
        return {}
    ctx = _context(platform)
    due = []
    for tenant in _tenants(platform):
        last = _published_on(ctx, tenant)
        if last != today and (last or _has_verified(platform, tenant)):
            due.append(tenant)
    done = publish_now(platform, due) if due else {}
    if len(done) == len(due):  # a tenant that failed is tried again at the next hourly run
        state["day"] = today
    return done


JOBS: tuple[Job, ...] = (Job("bears_open_data", every=timedelta(hours=1), run=run_daily),)
