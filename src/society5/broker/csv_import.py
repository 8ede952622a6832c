"""Loading sensor CSV files into temporal history (backfills: a logger's memory card, a vendor's export).

One row is one observation time of one entity: a time column, an entity id column (or one fixed entity), and
value columns that become Properties with ``observedAt`` = the row's time. The whole file is checked before
anything is written, so a file with a bad row writes nothing and the report names every bad cell.

Japanese files come as UTF-8 with or without a BOM or as Shift_JIS (CP932); all three are read. Times without
an offset are local times in ``timezone`` (Asia/Tokyo by default), stored in UTC.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from society5.broker.jsonld import ActiveContext
from society5.broker.model import check_uri, parse_types
from society5.broker.temporal import parse_temporal_attrs
from society5.core.errors import ApiError
from society5.core.timeutil import now_iso

ENCODINGS = ("utf-8-sig", "cp932")
MAX_ERRORS = 50


class CsvImportError(ValueError):
    """The file cannot be imported; ``problems`` lists each bad row and column (1-based lines)."""

    def __init__(self, problems: list[str]):
        shown = problems[:MAX_ERRORS]
        more = f"\n… and {len(problems) - MAX_ERRORS} more" if len(problems) > MAX_ERRORS else ""
        super().__init__("\n".join(shown) + more)
        self.problems = problems


@dataclass(frozen=True)
class CsvLayout:
    entity_type: str
    time_column: str
    id_column: str | None = None  # a column holding the entity id (or its suffix, see id_prefix)
    entity_id: str | None = None  # one entity for the whole file instead
    id_prefix: str = ""  # prepended to the id column's values ("urn:ngsi-ld:PowerMeter:" + "m-001")
    columns: tuple[str, ...] = ()  # value columns (default: every other column)
    rename: dict[str, str] = field(default_factory=dict)  # column → attribute name
    units: dict[str, str] = field(default_factory=dict)  # attribute → UN/CEFACT unitCode
    timezone: str = "Asia/Tokyo"

    def __post_init__(self) -> None:
        if (self.id_column is None) == (self.entity_id is None):
            raise ValueError("give either an id column or one entity id, not both or neither")
        if self.entity_id is not None:
            check_uri(self.entity_id, "entity id")
        try:
            ZoneInfo(self.timezone)
        except Exception as err:
            raise ValueError(f"unknown time zone {self.timezone!r}") from err


@dataclass
class Observation:
    entity_id: str
    observed_at: str  # ISO 8601 UTC with Z
    values: dict[str, Any]  # attribute name → number or text


def decode(data: bytes) -> str:
    """The file's text: UTF-8 (with or without BOM) first, then Shift_JIS/CP932."""
    for encoding in ENCODINGS:
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise CsvImportError(["the file is neither UTF-8 nor Shift_JIS (CP932) text"])


def parse(text: str, layout: CsvLayout) -> list[Observation]:
    """Every observation in the file, or ``CsvImportError`` naming each bad cell."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise CsvImportError(["the file is empty: a header row is needed"]) from None
    except csv.Error as err:
        raise CsvImportError([f"line 1: {err}"]) from None
    index = {name: i for i, name in enumerate(header)}
    problems = _check_header(header, index, layout)
    if problems:
        raise CsvImportError(problems)
    value_cols = list(layout.columns) or [
        h for h in header if h not in (layout.time_column, layout.id_column) and h
    ]
    zone = ZoneInfo(layout.timezone)
    observations: list[Observation] = []
    rows: Iterator[list[str]] = reader
    line = 1
    while True:
        try:
            row = next(rows)
        except StopIteration:
            break
        except csv.Error as err:
            problems.append(f"line {reader.line_num}: {err}")
            break
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            problems.append(f"line {line}: {len(row)} cells where the header has {len(header)}")
            continue
        obs = _observation(row, index, value_cols, layout, zone, line, problems)
        if obs is not None:
            observations.append(obs)
    if problems:
        raise CsvImportError(problems)
    if not observations:
        raise CsvImportError(["the file has a header but no data rows"])
    return observations


def _check_header(header: list[str], index: dict[str, int], layout: CsvLayout) -> list[str]:
    problems = []
    if len(index) != len(header):
        dup = sorted({h for h in header if header.count(h) > 1})
        problems.append(f"line 1: column names repeat: {', '.join(dup)}")
    wanted = [layout.time_column, *([layout.id_column] if layout.id_column else []), *layout.columns]
    for name in wanted:
        if name not in index:
            problems.append(f"line 1: no column {name!r} (the header has: {', '.join(header)})")
    return problems


def _observation(row: list[str], index: dict[str, int], value_cols: Sequence[str], layout: CsvLayout,
                 zone: ZoneInfo, line: int, problems: list[str]) -> Observation | None:
    before = len(problems)
    when = _time(row[index[layout.time_column]], zone)
    if when is None:
        problems.append(f"line {line}, column {layout.time_column!r}: "
                        f"{row[index[layout.time_column]]!r} is not a date and time (ISO 8601)")
    if layout.id_column is not None:
        raw = row[index[layout.id_column]].strip()
        eid = layout.id_prefix + raw
        try:
            check_uri(eid, "entity id")
        except Exception:
            problems.append(f"line {line}, column {layout.id_column!r}: {eid!r} is not a URI "
                            "(use an id prefix such as urn:ngsi-ld:Type:)")
    else:
        eid = layout.entity_id or ""
    values: dict[str, Any] = {}
    for col in value_cols:
        cell = row[index[col]].strip()
        if cell == "":
            continue  # a sensor that missed one reading: no instance rather than a fake value
        values[layout.rename.get(col, col)] = _value(cell)
    if len(problems) > before or when is None:
        return None
    return Observation(eid, when, values) if values else None


def _time(cell: str, zone: ZoneInfo) -> str | None:
    text = cell.strip().replace("/", "-")
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    utc = moment.astimezone(ZoneInfo("UTC"))
    millis = f".{utc.microsecond // 1000:03d}" if utc.microsecond else ""
    return utc.strftime("%Y-%m-%dT%H:%M:%S") + millis + "Z"


def _value(cell: str) -> Any:
    try:
        number = float(cell.replace(",", "")) if cell[0] in "+-.0123456789" else None
    except ValueError:
        number = None
    if number is None or not math.isfinite(number):
        return cell
    return int(number) if number.is_integer() and "." not in cell and "e" not in cell.lower() else number


def temporal_payloads(observations: Sequence[Observation], layout: CsvLayout,
                      chunk: int = 500) -> Iterator[tuple[dict[str, Any], int]]:
    """Temporal-API entity fragments of at most ``chunk`` rows each, with the row count they carry."""
    by_entity: dict[str, list[Observation]] = {}
    for obs in observations:
        by_entity.setdefault(obs.entity_id, []).append(obs)
    for eid, rows in by_entity.items():
        rows.sort(key=lambda o: o.observed_at)
        for start in range(0, len(rows), chunk):
            part = rows[start : start + chunk]
            payload: dict[str, Any] = {"id": eid, "type": layout.entity_type}
            for obs in part:
                for name, value in obs.values.items():
                    inst: dict[str, Any] = {"type": "Property", "value": value, "observedAt": obs.observed_at}
                    if name in layout.units:
                        inst["unitCode"] = layout.units[name]
                    payload.setdefault(name, []).append(inst)
            yield payload, len(part)


def check(observations: Sequence[Observation], layout: CsvLayout, ctx: ActiveContext) -> None:
    """Validate every fragment as the temporal API would, before anything is written."""
    problems: list[str] = []
    try:
        parse_types(layout.entity_type, ctx)
    except ApiError as err:
        problems.append(f"entity type {layout.entity_type!r}: {err}")
    now = now_iso()
    seen: set[str] = set()
    for payload, _rows in temporal_payloads(observations, layout):
        try:
            parse_temporal_attrs(payload, ctx, now)
        except ApiError as err:
            message = f"entity {payload['id']}: {err}"
            if message not in seen:
                seen.add(message)
                problems.append(message)
    if problems:
        raise CsvImportError(problems)


def load(store: Any, tenant: str | None, observations: Sequence[Observation], layout: CsvLayout,
         ctx: ActiveContext, progress: Callable[[int], object] = lambda n: None) -> int:
    """Write the observations into history through the temporal store; returns the number of instances.

    Each fragment commits on its own; loading the same file again replaces rather than duplicates (an
    instance with the same attribute and observedAt is overwritten), so an interrupted import is re-run."""
    check(observations, layout, ctx)
    written = 0
    for payload, rows in temporal_payloads(observations, layout):
        store.upsert(tenant, payload, ctx)
        written += sum(len(v) for k, v in payload.items() if k not in ("id", "type"))
        progress(rows)
    return written
