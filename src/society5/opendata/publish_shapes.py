"""The tables a publisher publishes, built from what the broker returned (pure functions, no I/O).

A :class:`Table` is the CSV's header and rows (text cells, raw: the CSV writer escapes formulas on export,
the datastore stores the values themselves), the datastore type of each column, and the GeoJSON features.
Coordinates are rounded to the binding's ``coordinate_digits`` before they reach either file.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from society5.opendata.publish_spec import PublisherSpec

JST = timezone(timedelta(hours=9), "JST")
SNAPSHOT_HEAD = ["ID", "種別"]
SNAPSHOT_TAIL = ["緯度", "経度", "観測日時(JST)", "観測日時(UTC)"]
BIN_COLUMNS = ["計測地点ID", "計測地点", "日付", "時間帯(開始)", "方向", "通行量", "推計値フラグ"]
BIN_TYPES = ["text", "text", "date", "text", "text", "int8", "int4"]
# Direction values as the FIWARE models spell them, shown as Sapporo's tables do; others pass unchanged.
DIRECTIONS = {"inbound": "入方向", "outbound": "出方向", "northbound": "北向き", "southbound": "南向き",
              "eastbound": "東向き", "westbound": "西向き", "north": "北", "south": "南", "east": "東",
              "west": "西", "forward": "順方向", "backward": "逆方向"}


@dataclass
class Table:
    header: list[str]
    types: list[str]  # datastore field types, one per column
    rows: list[list[str]] = field(default_factory=list)
    features: list[dict[str, Any]] = field(default_factory=list)

    def geojson(self) -> dict[str, Any]:
        return {"type": "FeatureCollection", "features": self.features}


# --- helpers ------------------------------------------------------------------------------------------------


def _instance(value: Any) -> dict[str, Any] | None:
    """The default instance of a normalized attribute (the first one when all carry a datasetId)."""
    if isinstance(value, list):
        plain = [v for v in value if isinstance(v, dict) and "datasetId" not in v]
        value = plain[0] if plain else (value[0] if value else None)
    return value if isinstance(value, dict) else None


def _plain(inst: dict[str, Any] | None) -> Any:
    if inst is None:
        return None
    for member in ("value", "object", "languageMap", "vocab", "json", "valueList", "objectList"):
        if member in inst:
            return inst[member]
    return None


def cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return str(value)


def _positions(coords: Any) -> Iterable[tuple[float, float]]:
    if isinstance(coords, list) and len(coords) >= 2 and all(isinstance(c, int | float) for c in coords[:2]):
        yield float(coords[0]), float(coords[1])
    elif isinstance(coords, list):
        for part in coords:
            yield from _positions(part)


def round_geometry(geometry: dict[str, Any], digits: int) -> dict[str, Any]:
    """The geometry with every position rounded (a privacy measure, not only a size one)."""
    def walk(coords: Any) -> Any:
        if isinstance(coords, list) and coords and all(isinstance(c, int | float) for c in coords):
            return [round(float(c), digits) for c in coords]
        return [walk(c) for c in coords] if isinstance(coords, list) else coords

    if geometry.get("type") == "GeometryCollection":
        return {"type": "GeometryCollection",
                "geometries": [round_geometry(g, digits) for g in geometry.get("geometries", [])]}
    return {"type": geometry.get("type"), "coordinates": walk(geometry.get("coordinates"))}


def lat_lon(geometry: Any, digits: int) -> tuple[float | None, float | None]:
    """A point's latitude and longitude, or the mean of a line's or polygon's positions, rounded."""
    if not isinstance(geometry, dict):
        return None, None
    points = list(_positions(geometry.get("coordinates")))
    if not points:
        return None, None
    lon = sum(p[0] for p in points) / len(points)
    lat = sum(p[1] for p in points) / len(points)
    return round(lat, digits), round(lon, digits)


def parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def jst_text(moment: datetime | None) -> str:
    return moment.astimezone(JST).strftime("%Y-%m-%dT%H:%M:%S+09:00") if moment else ""


def utc_text(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if moment else ""


def _column_type(values: list[Any]) -> str:
    present = [v for v in values if v is not None and v != ""]
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return "int8"
    if present and all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        return "float8"
    return "text"


# --- snapshot -----------------------------------------------------------------------------------------------


def snapshot(entities: list[dict[str, Any]], spec: PublisherSpec) -> Table:
    """One row per entity (normalized NGSI-LD, compacted), ordered by id."""
    digits = spec.coordinate_digits
    values: list[list[Any]] = []
    features: list[dict[str, Any]] = []
    for ent in sorted(entities, key=lambda e: str(e.get("id"))):
        insts = {name: _instance(ent.get(name)) for name in spec.attrs}
        attr_values = [_plain(i) for i in insts.values()]
        where = _instance(ent.get(spec.location_attr))
        geometry = _plain(where)
        lat, lon = lat_lon(geometry, digits)
        times = [parse_time(i.get("observedAt")) for i in [*insts.values(), where] if i]
        observed = max((t for t in times if t is not None), default=None)
        etype = ent.get("type")
        row = [ent.get("id"), ",".join(etype) if isinstance(etype, list) else etype, *attr_values, lat, lon,
               jst_text(observed), utc_text(observed)]
        values.append(row)
        if isinstance(geometry, dict) and geometry.get("type"):
            props = dict(zip(SNAPSHOT_HEAD + list(spec.attrs), row[: 2 + len(spec.attrs)], strict=True))
            props.update({"観測日時(JST)": row[-2], "観測日時(UTC)": row[-1]})
            features.append({"type": "Feature", "id": ent.get("id"),
                             "geometry": round_geometry(geometry, digits), "properties": props})
    header = SNAPSHOT_HEAD + list(spec.attrs) + SNAPSHOT_TAIL
    types = ["text", "text"] + [_column_type([r[2 + i] for r in values]) for i in range(len(spec.attrs))]
    types += ["float8", "float8", "text", "text"]
    return Table(header, types, [[cell(v) for v in r] for r in values], features)


# --- time bins ----------------------------------------------------------------------------------------------


@dataclass
class SiteSeries:
    """The binned history of one site and direction: bin start (epoch seconds, UTC) → aggregated value."""

    site_id: str
    site_name: str
    direction: str
    lat: float | None
    lon: float | None
    values: dict[float, float] = field(default_factory=dict)


def bin_window(now: datetime, spec: PublisherSpec) -> tuple[datetime, datetime]:
    """[start, end): whole bins only, the open bin left out (its count is not final), start at a JST day."""
    step = spec.bin_minutes * 60
    end_epoch = math.floor(now.timestamp() / step) * step
    end = datetime.fromtimestamp(end_epoch, UTC)
    first_day = (end.astimezone(JST) - timedelta(days=spec.window_days)).replace(hour=0, minute=0, second=0,
                                                                                  microsecond=0)
    return first_day.astimezone(UTC), end


def direction_label(value: Any) -> str:
    text = "" if value is None else str(value)
    return DIRECTIONS.get(text, text)


def filled(values: dict[float, float], step: float, fill_gaps: bool) -> list[tuple[float, float, bool]]:
    """(bin start, value, estimated) for every bin from the first observed to the last; a bin without
    observations between two observed ones gets the straight-line estimate between them (推計値)."""
    known = sorted(values)
    out: list[tuple[float, float, bool]] = []
    for a, b in zip(known, [*known[1:], None], strict=True):
        out.append((a, values[a], False))
        if b is None or not fill_gaps:
            continue
        gap = round((b - a) / step)
        for k in range(1, gap):
            share = k / gap
            out.append((a + k * step, values[a] + (values[b] - values[a]) * share, True))
    return out


def time_bins(series: list[SiteSeries], spec: PublisherSpec) -> Table:
    step = spec.bin_minutes * 60
    rows: list[tuple[str, str, str, str, str, int, int]] = []
    features: list[dict[str, Any]] = []
    for s in sorted(series, key=lambda x: (x.site_id, x.direction)):
        latest: tuple[float, float, bool] | None = None
        for start, value, estimated in filled(s.values, step, spec.fill_gaps):
            local = datetime.fromtimestamp(start, UTC).astimezone(JST)
            rows.append((local.strftime("%Y-%m-%d"), local.strftime("%H:%M"), s.site_id, s.site_name,
                         s.direction, round(value), int(estimated)))
            latest = (start, value, estimated)
        if latest is not None and s.lat is not None and s.lon is not None:
            features.append({
                "type": "Feature", "id": f"{s.site_id}#{s.direction}",
                "geometry": {"type": "Point", "coordinates": [s.lon, s.lat]},
                "properties": {"計測地点ID": s.site_id, "計測地点": s.site_name, "方向": s.direction,
                               "時間帯(開始)": jst_text(datetime.fromtimestamp(latest[0], UTC)),
                               "通行量": round(latest[1]), "推計値フラグ": int(latest[2])}})
    rows.sort()
    table_rows = [[sid, name, day, hhmm, direction, str(count), str(flag)]
                  for day, hhmm, sid, name, direction, count, flag in rows]
    return Table(list(BIN_COLUMNS), list(BIN_TYPES), table_rows, features)
