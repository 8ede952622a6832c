"""The datastore: one real table per tabular resource, created, written and queried as CKAN's datastore does.

Each resource's rows live in a table ``ds_<hex of the resource id>`` with an ``_id`` integer key and one typed
column per field (CKAN's types: text, int4, int8, float8, numeric, bool, date, time, timestamp, json). The
registry table ``opendata_datastore_tables`` (migration 0008) holds each table's fields, primary key, indexes
and row count. Field names are the publisher's (``設置場所名称``…), so every identifier is quoted and checked.

The same code runs on SQLite and PostgreSQL: SQLAlchemy Core for queries, and for bulk loads the fastest
path of each (``COPY`` through psycopg; ``executemany`` in large transactions on SQLite). A CSV load goes into
a new table that replaces the old one in one transaction, so readers never see half a file.

Errors are the action layer's (``ValidationError``, ``NotFoundError``), so actions pass them straight on.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import math
import re
import secrets
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlencode

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Connection, Engine

from society5.core.db import metadata
from society5.core.timeutil import now_iso
from society5.opendata.actions import NotFoundError, ValidationError

FIELD_TYPES = ("text", "int4", "int8", "float8", "numeric", "bool", "date", "time", "timestamp", "json")
TYPE_ALIASES = {"int": "int4", "integer": "int4", "bigint": "int8", "float": "float8", "double": "float8",
                "string": "text", "boolean": "bool", "datetime": "timestamp", "jsonb": "json"}
MAX_NAME_BYTES = 63  # PostgreSQL truncates longer identifiers silently
DEFAULT_LIMIT, MAX_LIMIT = 100, 32_000
INT_RANGES = {"int4": (-(2**31), 2**31 - 1), "int8": (-(2**63), 2**63 - 1)}
ID_MAX = 2**63 - 1  # _id is a BIGINT
NUMERIC_MAX_EXPONENT = 1000

registry = sa.Table(
    "opendata_datastore_tables",
    metadata,
    sa.Column("resource_id", sa.String(100), primary_key=True),
    sa.Column("table_name", sa.String(63), nullable=False, unique=True),
    sa.Column("fields", sa.JSON().with_variant(JSONB(), "postgresql"), nullable=False),
    sa.Column("primary_key", sa.JSON().with_variant(JSONB(), "postgresql"), nullable=False),
    sa.Column("indexes", sa.JSON().with_variant(JSONB(), "postgresql"), nullable=False),
    sa.Column("row_count", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.String(32), nullable=False),
    sa.Column("updated_at", sa.String(32), nullable=False),
)


# --- fields and table specs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    id: str
    type: str
    info: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "type": self.type}
        if self.info:
            out["info"] = self.info
        return out


@dataclass(frozen=True)
class TableSpec:
    """One datastore table as the registry describes it."""

    resource_id: str
    table_name: str
    fields: tuple[Field, ...]
    primary_key: tuple[str, ...] = ()
    indexes: tuple[tuple[str, ...], ...] = ()
    row_count: int = 0

    def field(self, name: str) -> Field | None:
        return next((f for f in self.fields if f.id == name), None)

    @property
    def names(self) -> list[str]:
        return [f.id for f in self.fields]


def table_name(resource_id: str) -> str:
    """``ds_`` + the resource id's 32 hex digits (a UUID's; any other id's SHA-1 prefix)."""
    try:
        return "ds_" + uuid.UUID(resource_id).hex
    except ValueError:
        return "ds_" + hashlib.sha1(resource_id.encode()).hexdigest()[:32]


def normalize_type(value: Any, where: str) -> str:
    name = TYPE_ALIASES.get(str(value).strip().lower(), str(value).strip().lower())
    if name not in FIELD_TYPES:
        raise ValidationError({"fields": [f"{where}: type {value!r} is not one of {', '.join(FIELD_TYPES)}"]})
    return name


def check_field_name(name: Any, where: str = "fields") -> str:
    """A field name that is safe as a quoted identifier on both databases, or a Validation Error."""
    problem = None
    if not isinstance(name, str) or not name.strip():
        problem = "a field needs a non-empty id"
    elif name.startswith("_"):
        problem = f"field {name!r}: names starting with '_' are reserved"
    elif '"' in name or any(ord(c) < 32 for c in name):
        problem = f"field {name!r}: double quotes and control characters are not allowed"
    elif len(name.encode()) > MAX_NAME_BYTES:
        problem = f"field {name!r}: at most {MAX_NAME_BYTES} bytes (UTF-8; about 21 kanji)"
    if problem:
        raise ValidationError({where: [problem]})
    return str(name)


def parse_fields(raw: Any, records: Sequence[dict[str, Any]] = ()) -> list[Field]:
    """CKAN ``fields`` (``[{"id", "type", "info"}]``); a missing type is guessed from the first record."""
    if not isinstance(raw, list):
        raise ValidationError({"fields": ["must be a list of {\"id\": …, \"type\": …}"]})
    out: list[Field] = []
    seen: set[str] = set()
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise ValidationError({"fields": [f"field {i}: must be an object with an id"]})
        name = check_field_name(item.get("id"))
        # SQLite's column names are case-insensitive: "A" and "a" would be one column there.
        if name.casefold() in seen:
            raise ValidationError({"fields": [f"field {name!r} is given twice"]})
        seen.add(name.casefold())
        kind = item.get("type")
        kind = normalize_type(kind, f"field {name!r}") if kind else guess_type(records, name)
        info = item.get("info")
        if info is not None and not isinstance(info, dict):
            raise ValidationError({"fields": [f"field {name!r}: info must be an object"]})
        if has_nul(info):
            raise ValidationError({"fields": [f"field {name!r}: info must not contain NUL characters"]})
        out.append(Field(name, kind, info or None))
    return out


def guess_type(records: Sequence[dict[str, Any]], name: str) -> str:
    value = next((r.get(name) for r in records if isinstance(r, dict) and r.get(name) is not None), None)
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int4" if INT_RANGES["int4"][0] <= value <= INT_RANGES["int4"][1] else "int8"
    if isinstance(value, float):
        return "float8"
    if isinstance(value, dict | list):
        return "json"
    return "text"


def name_list(raw: Any, where: str) -> list[str]:
    """A list of field names from a list or a comma-separated string (CKAN accepts both)."""
    if raw is None or raw == "":
        return []
    if isinstance(raw, str):
        return [p.strip() for p in raw.split(",") if p.strip()]
    if isinstance(raw, list | tuple) and all(isinstance(p, str) for p in raw):
        return list(raw)
    raise ValidationError({where: ["must be a list of field names or a comma-separated string"]})


def parse_indexes(raw: Any) -> list[tuple[str, ...]]:
    """``indexes``: field names (one index each) or lists of names (one composite index each)."""
    if raw is None or raw == "":
        return []
    items = [p.strip() for p in raw.split(",") if p.strip()] if isinstance(raw, str) else raw
    if not isinstance(items, list | tuple):
        raise ValidationError({"indexes": ["must be a list of field names (or of lists of names)"]})
    out: list[tuple[str, ...]] = []
    for item in items:
        cols = (item,) if isinstance(item, str) else tuple(name_list(item, "indexes"))
        if not cols:
            raise ValidationError({"indexes": ["an index needs at least one field"]})
        if cols not in out:
            out.append(cols)
    return out


# --- column types and value conversion ----------------------------------------------------------------------


def _column_type(kind: str) -> sa.types.TypeEngine[Any]:
    types: dict[str, Callable[[], sa.types.TypeEngine[Any]]] = {
        "text": sa.Text,
        "int4": sa.Integer,
        "int8": sa.BigInteger,
        "float8": sa.Double,
        # numeric keeps exact decimals on PostgreSQL; SQLite has no decimal type, so a double there.
        "numeric": lambda: sa.Numeric(asdecimal=False).with_variant(sa.Double(), "sqlite"),
        "bool": sa.Boolean,
        "date": sa.Date,
        "time": sa.Time,
        "timestamp": sa.DateTime,
        "json": lambda: sa.JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql"),
    }
    return types[kind]()


BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_table_cache: dict[tuple[str, tuple[tuple[str, str], ...]], sa.Table] = {}


def sa_table(name: str, fields: Sequence[Field]) -> sa.Table:
    """The SQLAlchemy table of a datastore table (its own MetaData: never part of the migrations')."""
    key = (name, tuple((f.id, f.type) for f in fields))
    table = _table_cache.get(key)
    if table is None:
        if len(_table_cache) > 512:
            _table_cache.clear()
        table = sa.Table(name, sa.MetaData(), sa.Column("_id", BIG_ID, primary_key=True, autoincrement=True),
                         *(sa.Column(f.id, _column_type(f.type), key=f.id) for f in fields))
        _table_cache[key] = table
    return table


_DATE_RE = re.compile(r"^\s*(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})\s*$")
_TIME_RE = re.compile(r"^\s*(\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d{1,6}))?)?\s*$")
_TRUE = {"true", "t", "1", "yes", "y", "on"}
_FALSE = {"false", "f", "0", "no", "n", "off"}


def parse_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        m = _DATE_RE.match(text)  # 2024/1/5: how Japanese spreadsheets write dates
        if not m:
            raise ValueError("not a date (YYYY-MM-DD)") from None
        return date(int(m[1]), int(m[2]), int(m[3]))


def parse_time(text: str) -> time:
    m = _TIME_RE.match(text)
    if not m:
        raise ValueError("not a time (HH:MM[:SS])")
    return time(int(m[1]), int(m[2]), int(m[3] or 0), int((m[4] or "0").ljust(6, "0")))


def parse_timestamp(text: str) -> datetime:
    text = text.strip()
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        parts = re.split(r"[ T]", text, maxsplit=1)
        if len(parts) != 2:
            raise ValueError("not a timestamp (YYYY-MM-DDTHH:MM:SS)") from None
        value = datetime.combine(parse_date(parts[0]), parse_time(parts[1]))
    offset = value.utcoffset()
    if offset is not None:  # stored as UTC without a zone, like CKAN's timestamp columns
        try:
            value = (value - offset).replace(tzinfo=None)
        except OverflowError:  # 0001-01-01T00:00+01:00 is before the first representable instant
            raise ValueError("out of range for a timestamp") from None
    return value


def _parse_int(kind: str) -> Callable[[str], int]:
    low, high = INT_RANGES[kind]

    def parse(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise ValueError(f"out of range for {kind}")
        return value

    return parse


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("not a finite number")
    return value


def _parse_numeric(text: str) -> Decimal:
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise ValueError("not a number") from None
    if not value.is_finite():
        raise ValueError("not a finite number")
    # PostgreSQL's numeric holds at most 131072 digits before the point and 16383 after; far beyond any
    # open data, so a generous bound that both databases take.
    if value and not -NUMERIC_MAX_EXPONENT <= value.adjusted() <= NUMERIC_MAX_EXPONENT:
        raise ValueError(f"out of range (at most {NUMERIC_MAX_EXPONENT} digits)")
    if len(value.as_tuple().digits) > NUMERIC_MAX_EXPONENT:
        raise ValueError(f"too precise (at most {NUMERIC_MAX_EXPONENT} digits)")
    return value


def has_nul(value: Any, depth: int = 0) -> bool:
    """Whether a NUL character hides in a JSON value (keys too): PostgreSQL stores none, in text or JSONB."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(has_nul(k) or has_nul(v, depth + 1) for k, v in value.items())
    if isinstance(value, list):
        return any(has_nul(v, depth + 1) for v in value)
    return False


def _parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError("not a boolean (true/false)")


def _parse_json_text(text: str) -> str:
    return json.dumps(json.loads(text), ensure_ascii=False)


TEXT_PARSERS: dict[str, Callable[[str], Any]] = {
    "int4": _parse_int("int4"), "int8": _parse_int("int8"), "float8": _parse_float,
    "numeric": _parse_numeric, "bool": _parse_bool, "date": parse_date, "time": parse_time,
    "timestamp": parse_timestamp, "json": json.loads,
}


def from_json(kind: str, value: Any) -> Any:
    """A JSON value (a record's or a filter's) as the column's Python value; ValueError if it does not fit."""
    if value is None:
        return None
    if has_nul(value):
        raise ValueError("NUL characters (\\u0000) cannot be stored")
    if kind == "json":
        return value
    if kind == "text":
        if isinstance(value, dict | list):
            raise ValueError("expected text, got an object or list")
        return value if isinstance(value, str) else json.dumps(value)
    if isinstance(value, bool):
        if kind == "bool":
            return value
        raise ValueError(f"expected {kind}, got a boolean")
    if isinstance(value, int | float) and kind in ("int4", "int8", "float8", "numeric"):
        if kind in INT_RANGES:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(f"expected an integer, got {value}")
            return TEXT_PARSERS[kind](str(int(value)))
        return TEXT_PARSERS[kind](repr(value))
    if isinstance(value, str):
        if value == "":
            return None
        return TEXT_PARSERS[kind](value)
    raise ValueError(f"expected {kind}, got {type(value).__name__}")


def to_json(value: Any) -> Any:
    """A stored value as JSON (dates and times ISO 8601, as CKAN returns them)."""
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    return value


# --- the registry -------------------------------------------------------------------------------------------


def get_spec(conn: Connection, resource_id: str) -> TableSpec | None:
    row = conn.execute(sa.select(registry).where(registry.c.resource_id == resource_id)).mappings().first()
    if row is None:
        return None
    return TableSpec(
        resource_id=row["resource_id"], table_name=row["table_name"],
        fields=tuple(Field(f["id"], f["type"], f.get("info")) for f in row["fields"]),
        primary_key=tuple(row["primary_key"]), indexes=tuple(tuple(i) for i in row["indexes"]),
        row_count=int(row["row_count"]),
    )


def require_spec(conn: Connection, resource_id: str) -> TableSpec:
    spec = get_spec(conn, resource_id)
    if spec is None:
        raise NotFoundError(f"resource {resource_id!r} has no datastore table "
                            f"(データストアにテーブルがありません)")
    return spec


def _save_spec(conn: Connection, spec: TableSpec, *, new: bool) -> None:
    values = {"table_name": spec.table_name, "fields": [f.as_dict() for f in spec.fields],
              "primary_key": list(spec.primary_key), "indexes": [list(i) for i in spec.indexes],
              "row_count": spec.row_count, "updated_at": now_iso()}
    if new:
        conn.execute(registry.insert().values(resource_id=spec.resource_id, created_at=values["updated_at"],
                                              **values))
    else:
        conn.execute(registry.update().where(registry.c.resource_id == spec.resource_id).values(**values))


def _add_rows(conn: Connection, resource_id: str, delta: int) -> None:
    if delta:
        conn.execute(registry.update().where(registry.c.resource_id == resource_id)
                     .values(row_count=registry.c.row_count + delta, updated_at=now_iso()))


@contextlib.contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """One transaction; on SQLite taken with ``BEGIN IMMEDIATE``, so DDL and data change atomically (the
    sqlite3 module would otherwise run CREATE/ALTER outside any transaction) and writers never deadlock."""
    with engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            driver: Any = conn.connection.driver_connection
            if not driver.in_transaction:
                driver.execute("BEGIN IMMEDIATE")
        yield conn


# --- creating and altering tables ---------------------------------------------------------------------------


def _index_name(table: str, cols: Sequence[str], unique: bool = False) -> str:
    if unique:
        return f"{table}_pk"
    return f"{table}_ix_{hashlib.sha1(json.dumps(list(cols)).encode()).hexdigest()[:8]}"


def _check_names(names: Iterable[str], known: set[str], where: str) -> None:
    missing = [n for n in names if n not in known]
    if missing:
        raise ValidationError({where: [f"field {n!r} does not exist" for n in missing]})


def _create_index(conn: Connection, table: sa.Table, name: str, cols: Sequence[str], unique: bool) -> None:
    index = sa.Index(name, *(table.c[c] for c in cols), unique=unique)
    try:
        with conn.begin_nested():
            index.create(conn)
    except sa.exc.IntegrityError:
        raise ValidationError({"primary_key": [f"the rows already stored repeat values of {', '.join(cols)}: "
                                               "a primary key must be unique"]}) from None


def _drop_index(conn: Connection, name: str) -> None:
    conn.execute(sa.text(f"DROP INDEX IF EXISTS {quote(name)}"))


def quote(name: str) -> str:
    """A quoted identifier; names were checked (no double quotes), doubling is belt and braces."""
    return '"' + name.replace('"', '""') + '"'


def create_table(conn: Connection, resource_id: str, fields: Sequence[Field],
                 primary_key: Sequence[str] | None = None,
                 indexes: Sequence[Sequence[str]] | None = None) -> TableSpec:
    """Create the resource's table, or extend it: new fields become new columns; ``primary_key`` and
    ``indexes`` (when given) replace the table's. Run inside ``write_transaction``."""
    old = get_spec(conn, resource_id)
    merged = list(old.fields) if old else []
    for f in fields:
        existing = next((m for m in merged if m.id == f.id), None)
        if existing is None:
            if any(m.id.casefold() == f.id.casefold() for m in merged):
                raise ValidationError({"fields": [f"field {f.id!r} differs only in case from a field"]})
            merged.append(f)
        elif existing.type != f.type:
            raise ValidationError({"fields": [f"field {f.id!r} exists with type {existing.type}; "
                                              f"its type cannot change to {f.type}"]})
        elif f.info is not None:
            merged[merged.index(existing)] = Field(f.id, f.type, f.info)
    if not merged:
        raise ValidationError({"fields": ["a datastore table needs at least one field"]})
    known = {f.id for f in merged}
    pkey = tuple(name_list(primary_key, "primary_key")) if primary_key is not None else (
        old.primary_key if old else ())
    idx = parse_indexes(indexes) if indexes is not None else list(old.indexes if old else ())
    _check_names(pkey, known, "primary_key")
    for cols in idx:
        _check_names(cols, known, "indexes")
    name = old.table_name if old else table_name(resource_id)
    table = sa_table(name, merged)
    if old is None:
        table.create(conn)
    else:
        for f in merged[len(old.fields):]:
            col_type = table.c[f.id].type.compile(conn.dialect)
            conn.execute(sa.text(f"ALTER TABLE {quote(name)} ADD COLUMN {quote(f.id)} {col_type}"))
    _apply_keys(conn, table, old, pkey, idx)
    spec = TableSpec(resource_id, name, tuple(merged), pkey, tuple(idx), old.row_count if old else 0)
    _save_spec(conn, spec, new=old is None)
    return spec


def _apply_keys(conn: Connection, table: sa.Table, old: TableSpec | None, pkey: tuple[str, ...],
                idx: list[tuple[str, ...]]) -> None:
    name = table.name
    if old is not None and old.primary_key and old.primary_key != pkey:
        _drop_index(conn, _index_name(name, old.primary_key, unique=True))
    if pkey and (old is None or old.primary_key != pkey):
        _create_index(conn, table, _index_name(name, pkey, unique=True), pkey, unique=True)
    for cols in old.indexes if old else ():
        if cols not in idx:
            _drop_index(conn, _index_name(name, cols))
    for cols in idx:
        if old is None or cols not in old.indexes:
            _create_index(conn, table, _index_name(name, cols), cols, unique=False)


def drop_table(conn: Connection, spec: TableSpec) -> None:
    conn.execute(sa.text(f"DROP TABLE IF EXISTS {quote(spec.table_name)}"))
    conn.execute(registry.delete().where(registry.c.resource_id == spec.resource_id))


def forget_resource(conn: Connection, resource_id: str) -> bool:
    """Drop a deleted resource's table, if it has one (for ``resource_delete``/``package_delete``, in
    their transaction). Returns whether there was one."""
    spec = get_spec(conn, resource_id)
    if spec is not None:
        drop_table(conn, spec)
    return spec is not None


# --- writing records ----------------------------------------------------------------------------------------


def convert_records(spec: TableSpec | Sequence[Field], records: Any, *, allow_id: bool = False
                    ) -> list[dict[str, Any]]:
    """Records (JSON objects) as column values; every problem names the record's index and the field.
    All records are checked before anything is written."""
    fields = spec.fields if isinstance(spec, TableSpec) else tuple(spec)
    if not isinstance(records, list):
        raise ValidationError({"records": ["must be a list of objects"]})
    types = {f.id: f.type for f in fields}
    out: list[dict[str, Any]] = []
    problems: list[str] = []
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            problems.append(f"record {i}: must be an object")
            continue
        row: dict[str, Any] = {}
        for key, value in record.items():
            if key == "_id" and allow_id:
                if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= ID_MAX:
                    problems.append(f"record {i}: _id must be an integer from 1 to {ID_MAX}")
                row["_id"] = value
                continue
            kind = types.get(key)
            if kind is None:
                problems.append(f"record {i}: field {key!r} does not exist")
                continue
            try:
                row[key] = from_json(kind, value)
            except (ValueError, TypeError, OverflowError) as err:
                problems.append(f"record {i}: field {key!r}: {value!r} is not a valid {kind} ({err})")
        out.append(row)
        if len(problems) >= 50:
            break
    if problems:
        raise ValidationError({"records": problems})
    return out


def _key_of(row: dict[str, Any], pkey: Sequence[str]) -> tuple[Any, ...]:
    return tuple(row.get(k) for k in pkey)


def _existing_keys(conn: Connection, table: sa.Table, pkey: Sequence[str],
                   keys: list[tuple[Any, ...]]) -> set[tuple[Any, ...]]:
    found: set[tuple[Any, ...]] = set()
    cols = [table.c[k] for k in pkey]
    for start in range(0, len(keys), 500):
        chunk = keys[start:start + 500]
        cond: sa.ColumnElement[bool]
        if len(cols) == 1:
            cond = cols[0].in_([k[0] for k in chunk])
        else:
            cond = sa.or_(*(sa.and_(*(c == v for c, v in zip(cols, k, strict=True))) for k in chunk))
        found.update(tuple(r) for r in conn.execute(sa.select(*cols).where(cond)))
    return found


def write_records(conn: Connection, spec: TableSpec, rows: list[dict[str, Any]], method: str) -> int:
    """Insert, update or upsert converted rows (all or nothing: the caller's transaction). Rows are matched
    by ``_id`` when they carry one, else by the primary key. Returns how many rows were written."""
    table = sa_table(spec.table_name, spec.fields)
    pkey = spec.primary_key
    problems: list[str] = []
    inserts: list[dict[str, Any]] = []
    updates: list[tuple[int, dict[str, Any]]] = []
    by_id = [r["_id"] for r in rows if "_id" in r]
    known_ids: set[int] = set()
    if by_id:
        if method == "insert":
            raise ValidationError({"records": ["_id may only be given with method update or upsert"]})
        for start in range(0, len(by_id), 500):
            known_ids.update(conn.scalars(sa.select(table.c._id).where(
                table.c._id.in_(by_id[start:start + 500]))))
    keyed = [_key_of(r, pkey) for r in rows if "_id" not in r] if pkey else []
    for i, row in enumerate(rows):
        if "_id" not in row and pkey and any(row.get(k) is None for k in pkey):
            problems.append(f"record {i}: the primary key ({', '.join(pkey)}) needs a value")
    if problems:
        raise ValidationError({"records": problems[:50]})
    existing = _existing_keys(conn, table, pkey, keyed) if keyed else set()
    for i, row in enumerate(rows):
        if "_id" in row:
            if row["_id"] not in known_ids:
                problems.append(f"record {i}: _id {row['_id']} does not exist")
            updates.append((i, row))
            continue
        if not pkey:
            if method == "insert":
                inserts.append(row)
            else:
                problems.append(f"record {i}: {method} needs the table's primary_key fields or _id")
            continue
        key = _key_of(row, pkey)
        if key in existing:
            if method == "insert":
                problems.append(f"record {i}: a row with key {_show_key(pkey, key)} already exists")
            updates.append((i, row))
        elif method == "update":
            problems.append(f"record {i}: no row has key {_show_key(pkey, key)}")
        else:
            inserts.append(row)
            existing.add(key)  # a later record with the same key updates this one
    if problems:
        raise ValidationError({"records": problems[:50]})
    _insert(conn, table, inserts)
    for _i, row in updates:
        values = {k: v for k, v in row.items() if k != "_id"}
        if not values:
            continue
        cond = (table.c._id == row["_id"]) if "_id" in row else sa.and_(
            *(table.c[k] == row[k] for k in pkey))
        conn.execute(table.update().where(cond).values(**values))
    _add_rows(conn, spec.resource_id, len(inserts))
    return len(inserts) + len(updates)


def _show_key(pkey: Sequence[str], key: tuple[Any, ...]) -> str:
    return "(" + ", ".join(f"{k}={to_json(v)!r}" for k, v in zip(pkey, key, strict=True)) + ")"


def _insert(conn: Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    # executemany needs one column set per statement: group rows by the fields they carry.
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row), []).append(row)
    for cols, group in groups.items():
        if cols:
            conn.execute(table.insert(), group)
        else:
            for _ in group:
                conn.execute(table.insert().values())


def delete_rows(conn: Connection, spec: TableSpec, filters: dict[str, Any]) -> int:
    table = sa_table(spec.table_name, spec.fields)
    result = conn.execute(table.delete().where(*_filter_conditions(table, spec, filters)))
    _add_rows(conn, spec.resource_id, -int(result.rowcount or 0))
    return int(result.rowcount or 0)


# --- searching ----------------------------------------------------------------------------------------------


@dataclass
class SearchQuery:
    filters: dict[str, Any] = field(default_factory=dict)
    q: str | dict[str, str] | None = None
    distinct: bool = False
    limit: int = DEFAULT_LIMIT
    offset: int = 0
    fields: list[str] | str | None = None  # a list or a comma-separated string
    sort: str | None = None
    include_total: bool = True
    total_estimation_threshold: int | None = None
    records_format: str = "objects"


def _filter_conditions(table: sa.Table, spec: TableSpec, filters: dict[str, Any]) -> list[Any]:
    if not isinstance(filters, dict):
        raise ValidationError({"filters": ["must be an object {field: value or [values]}"]})
    _check_names([k for k in filters if k != "_id"], set(spec.names), "filters")
    conds = []
    problems = []
    for name, raw in filters.items():
        kind = "int8" if name == "_id" else spec.field(name).type  # type: ignore[union-attr]
        if kind == "json":
            problems.append(f"field {name!r}: json fields cannot be filtered")
            continue
        values = raw if isinstance(raw, list) else [raw]
        try:
            converted = [from_json(kind, v) for v in values]
        except (ValueError, TypeError, OverflowError) as err:
            problems.append(f"field {name!r}: {raw!r} is not a valid {kind} ({err})")
            continue
        col = table.c[name]
        present = [v for v in converted if v is not None]
        parts = []
        if present:
            parts.append(col == present[0] if len(present) == 1 else col.in_(present))
        if len(present) < len(converted):
            parts.append(col.is_(None))
        conds.append(sa.or_(*parts) if len(parts) > 1 else parts[0] if parts else sa.false())
    if problems:
        raise ValidationError({"filters": problems})
    return conds


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _q_conditions(table: sa.Table, spec: TableSpec, q: str | dict[str, str] | None) -> list[Any]:
    """``q``: every word must occur in some text field; a dict: in the named field (case-insensitive)."""
    if q is None or q == "":
        return []
    if isinstance(q, dict):
        _check_names(list(q), set(spec.names), "q")
        conds = []
        for name, text in q.items():
            if not isinstance(text, str) or "\x00" in text:
                raise ValidationError({"q": [f"field {name!r}: the text to look for must be a string "
                                             "without NUL characters"]})
            col = sa.cast(table.c[name], sa.Text) if spec.field(name).type != "text" else table.c[name]  # type: ignore[union-attr]
            conds += [col.ilike(_like(w), escape="\\") for w in text.split()]
        return conds
    if not isinstance(q, str):
        raise ValidationError({"q": ["must be a string or an object {field: text}"]})
    if "\x00" in q:
        raise ValidationError({"q": ["must not contain NUL characters (\\u0000)"]})
    text_cols = [table.c[f.id] for f in spec.fields if f.type == "text"]
    if not text_cols:
        return [sa.false()]
    return [sa.or_(*(c.ilike(_like(w), escape="\\") for c in text_cols)) for w in q.split()]


_SORT_RE = re.compile(r'^\s*(?:"((?:[^"]|"")+)"|([^\s"]+))\s*(?:\s(asc|desc))?\s*$', re.I)


def parse_sort(text: str, known: set[str]) -> list[tuple[str, bool]]:
    """``"a asc, b desc"`` (names may be double-quoted) as ``[(name, descending)]``."""
    out = []
    for part in text.split(","):
        if not part.strip():
            continue
        m = _SORT_RE.match(part)
        if not m:
            raise ValidationError({"sort": [f"{part.strip()!r} is not 'field [asc|desc]'"]})
        name = m[1].replace('""', '"') if m[1] is not None else m[2]
        if name not in known:
            raise ValidationError({"sort": [f"field {name!r} does not exist"]})
        out.append((name, (m[3] or "asc").lower() == "desc"))
    return out


def search(conn: Connection, spec: TableSpec, query: SearchQuery, link_params: dict[str, Any] | None = None
           ) -> dict[str, Any]:
    """CKAN's ``datastore_search`` result for ``query`` over ``spec``'s table."""
    table = sa_table(spec.table_name, spec.fields)
    known = {"_id", *spec.names}
    chosen = name_list(query.fields, "fields") or ["_id", *spec.names]
    _check_names(chosen, known, "fields")
    where = _filter_conditions(table, spec, query.filters) + _q_conditions(table, spec, query.q)
    order = parse_sort(query.sort, known) if query.sort else ([] if query.distinct else [("_id", False)])
    if query.distinct:
        stray = [n for n, _ in order if n not in chosen]
        if stray:
            raise ValidationError({"sort": ["with distinct, sort fields must be among the fields returned: "
                                            + ", ".join(stray)]})
    cols = [table.c[n] for n in chosen]
    stmt = sa.select(*cols).where(*where)
    if query.distinct:
        stmt = stmt.distinct()
    stmt = stmt.order_by(*(table.c[n].desc() if desc else table.c[n].asc() for n, desc in order))
    rows = conn.execute(stmt.limit(query.limit).offset(query.offset)).all() if query.limit else []
    types = {"_id": "int", **{f.id: f.type for f in spec.fields}}
    result: dict[str, Any] = {
        "resource_id": spec.resource_id,
        "fields": [({"id": "_id", "type": "int"} if n == "_id" else spec.field(n).as_dict())  # type: ignore[union-attr]
                   for n in chosen],
        "records": _format_records(rows, chosen, types, query.records_format),
        "limit": query.limit,
        "offset": query.offset,
    }
    if query.sort:
        result["sort"] = query.sort
    if query.filters:
        result["filters"] = query.filters
    if query.q:
        result["q"] = query.q
    if query.include_total:
        total, estimated = _total(conn, table, spec, stmt, where, query)
        result["total"] = total
        result["total_was_estimated"] = estimated
    result["_links"] = _links(spec.resource_id, query, link_params or {})
    return result


def _total(conn: Connection, table: sa.Table, spec: TableSpec, stmt: Any, where: list[Any],
           query: SearchQuery) -> tuple[int, bool]:
    threshold = query.total_estimation_threshold
    if threshold is not None and not query.distinct:
        if not where and spec.row_count >= threshold:
            return spec.row_count, True
        if where and conn.dialect.name == "postgresql":
            estimate = _planner_rows(conn, sa.select(sa.literal(1)).select_from(table).where(*where))
            if estimate is not None and estimate >= threshold:
                return estimate, True
    if query.distinct:
        count = sa.select(sa.func.count()).select_from(stmt.order_by(None).subquery())
    else:
        count = sa.select(sa.func.count()).select_from(table).where(*where)
    return int(conn.execute(count).scalar_one()), False


def _planner_rows(conn: Connection, stmt: Any) -> int | None:
    """PostgreSQL's estimate of how many rows ``stmt`` returns (CKAN's total_estimation_threshold)."""
    compiled = stmt.compile(dialect=conn.dialect)
    try:
        with conn.begin_nested():
            plan = conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + str(compiled), compiled.params).scalar()
    except sa.exc.DBAPIError:
        return None
    doc: Any = json.loads(plan) if isinstance(plan, str) else plan
    return int(doc[0]["Plan"]["Plan Rows"])


def _format_records(rows: Sequence[Any], names: list[str], types: dict[str, str], fmt: str) -> Any:
    if fmt == "objects":
        return [{n: to_json(v) for n, v in zip(names, row, strict=True)} for row in rows]
    if fmt == "lists":
        return [[to_json(v) for v in row] for row in rows]
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter="\t" if fmt == "tsv" else ",", lineterminator="\n")
    for row in rows:
        writer.writerow([_cell(v, types[n]) for n, v in zip(names, row, strict=True)])
    return buf.getvalue()


def _cell(value: Any, kind: str) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if kind == "json":
        return json.dumps(value, ensure_ascii=False)
    return str(to_json(value))


def _links(resource_id: str, query: SearchQuery, params: dict[str, Any]) -> dict[str, str]:
    base = {"resource_id": resource_id,
            **{k: v for k, v in params.items() if k not in ("offset", "resource_id") and v is not None}}
    encoded = {k: (json.dumps(v, ensure_ascii=False) if isinstance(v, dict | list) else v)
               for k, v in base.items()}
    start = "/api/3/action/datastore_search?" + urlencode(encoded)
    nxt = "/api/3/action/datastore_search?" + urlencode({**encoded, "offset": query.offset + query.limit})
    return {"start": start, "next": nxt}


def info(conn: Connection, spec: TableSpec) -> dict[str, Any]:
    """CKAN 2.10's ``datastore_info``: ``meta`` (row count, table type) and ``fields`` with schema facts."""
    table = sa_table(spec.table_name, spec.fields)
    count = int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())
    indexed = {c for cols in spec.indexes for c in cols[:1]} | set(spec.primary_key[:1])
    return {
        "meta": {"count": count, "table_type": "BASE TABLE", "aliases": [], "id": spec.resource_id},
        "fields": [{**f.as_dict(), "schema": {
            "native_type": str(table.c[f.id].type.compile(conn.dialect)).lower(), "notnull": False,
            "is_index": f.id in indexed, "uniquekey": spec.primary_key == (f.id,)}} for f in spec.fields],
        "primary_key": list(spec.primary_key),
        "indexes": [list(i) for i in spec.indexes],
    }


# --- bulk loading (CSV) -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CellError:
    row: int  # the data row's number as the caller counts it (first_row for the first row)
    column: str | None  # the field, or None when the row itself is wrong (too few/many values)
    value: str
    message: str

    def __str__(self) -> str:
        where = f"row {self.row}" + (f", column {self.column!r}" if self.column else "")
        return f"{where}: {self.message}"


class LoadError(ValidationError):
    """A bulk load that published nothing: ``errors`` lists each bad row/column (at most ``max_errors``)."""

    def __init__(self, errors: list[CellError], rows_read: int, truncated: bool):
        self.errors = errors
        self.rows_read = rows_read
        self.truncated = truncated
        shown = [str(e) for e in errors[:20]]
        if truncated or len(errors) > 20:
            shown.append("… more errors not shown")
        more = "+" if truncated else ""
        super().__init__({"records": shown}, f"{len(errors)}{more} bad values in {rows_read} rows; nothing "
                                             "was loaded (不正な値があるため読み込みませんでした)")


@dataclass(frozen=True)
class LoadResult:
    resource_id: str
    rows: int
    fields: tuple[Field, ...]


def _text_converter(kind: str, dialect: sa.engine.Dialect) -> Callable[[str], Any]:
    """text → the value the driver stores: Python objects for COPY, SQLAlchemy's storage form on SQLite."""
    if kind == "text":
        return str
    parse = _parse_json_text if kind == "json" else TEXT_PARSERS[kind]
    processor = None
    if dialect.name == "sqlite" and kind in ("date", "time", "timestamp", "bool"):
        processor = _column_type(kind).dialect_impl(dialect).bind_processor(dialect)
    elif kind == "numeric" and dialect.name == "sqlite":
        parse = _parse_float
    if processor is None:
        return lambda v: None if v == "" else parse(v)
    return lambda v: None if v == "" else processor(parse(v))


def _convert_stream(rows: Iterable[Sequence[str]], fields: Sequence[Field], dialect: sa.engine.Dialect,
                    errors: list[CellError], first_row: int, max_errors: int) -> Iterator[list[Any]]:
    """Converted rows; bad ones are recorded in ``errors`` (and not yielded) until ``max_errors``."""
    convs = [_text_converter(f.type, dialect) for f in fields]
    width = len(fields)
    for n, row in enumerate(rows, start=first_row):
        if len(row) != width:
            errors.append(CellError(n, None, "", f"expected {width} values, got {len(row)}"))
        else:
            try:
                yield [c(v) for c, v in zip(convs, row, strict=True)]
                continue
            except (ValueError, TypeError, ArithmeticError):
                for f, c, v in zip(fields, convs, row, strict=True):  # find which cells are bad
                    try:
                        c(v)
                    except (ValueError, TypeError, ArithmeticError) as err:
                        errors.append(CellError(n, f.id, v, f"{v!r} is not a valid {f.type} ({err})"))
        if len(errors) >= max_errors:
            return


def load_rows(engine: Engine, resource_id: str, fields: Sequence[Field] | None, rows: Iterable[Sequence[str]],
              *, primary_key: Sequence[str] | None = None, indexes: Sequence[Sequence[str]] | None = None,
              replace: bool = True, first_row: int = 1, chunk_rows: int = 20_000, max_errors: int = 100
              ) -> LoadResult:
    """Load text rows (a CSV file's, without its header) into the resource's datastore table.

    ``fields`` gives the columns in the rows' order (None: the table's current fields). With ``replace``
    the rows go into a new table that takes the old one's place in one transaction (readers see the old
    rows or the new, never half); otherwise they are appended in one transaction. Either way a bad value
    publishes nothing: ``LoadError`` lists every bad row and column (up to ``max_errors``).
    ``primary_key``/``indexes`` None keep the table's own.
    """
    with engine.connect() as conn:
        old = get_spec(conn, resource_id)
    if fields is None:
        if old is None:
            raise ValidationError({"fields": ["the resource has no datastore table yet: give its fields"]})
        fields = old.fields
    fields = tuple(fields)
    parse_fields([f.as_dict() for f in fields])  # the same name and type checks as datastore_create
    known = {f.id for f in fields}
    pkey = tuple(name_list(primary_key, "primary_key")) if primary_key is not None else tuple(
        old.primary_key if old and set(old.primary_key) <= known else ())
    idx = parse_indexes(indexes) if indexes is not None else [
        i for i in (old.indexes if old else ()) if set(i) <= known]
    _check_names(pkey, known, "primary_key")
    for cols in idx:
        _check_names(cols, known, "indexes")
    if not replace:
        return _append(engine, resource_id, fields, rows, first_row, chunk_rows, max_errors)
    final = old.table_name if old else table_name(resource_id)
    staging = f"{final}_ld_{secrets.token_hex(4)}"
    _drop_leftovers(engine, final)
    table = sa_table(staging, fields)
    with write_transaction(engine) as conn:
        table.create(conn)
    errors: list[CellError] = []
    try:
        count = _bulk_write(engine, table, fields, rows, errors, first_row, chunk_rows, max_errors)
        if errors:
            raise LoadError(errors, count, len(errors) >= max_errors)
        spec = TableSpec(resource_id, final, fields, pkey, tuple(idx), count)
        _swap(engine, table, spec, old)
    except BaseException:
        with write_transaction(engine) as conn:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {quote(staging)}"))
        raise
    return LoadResult(resource_id, count, fields)


def _drop_leftovers(engine: Engine, final: str) -> None:
    """Staging tables of loads that died with their process (never visible to readers)."""
    names = [n for n in sa.inspect(engine).get_table_names() if n.startswith(f"{final}_ld_")]
    if names:
        with write_transaction(engine) as conn:
            for name in names:
                conn.execute(sa.text(f"DROP TABLE IF EXISTS {quote(name)}"))


def _bulk_write(engine: Engine, table: sa.Table, fields: Sequence[Field], rows: Iterable[Sequence[str]],
                errors: list[CellError], first_row: int, chunk_rows: int, max_errors: int) -> int:
    """Write converted rows into the (staging) table; returns how many rows were read."""
    converted = _convert_stream(rows, fields, engine.dialect, errors, first_row, max_errors)
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            return _copy_rows(conn, table.name, fields, converted, errors)

    def commit_chunk(chunk: list[list[Any]]) -> None:
        # Each chunk commits: the staging table is invisible to readers, and other writers get a turn.
        with write_transaction(engine) as conn:
            _driver(conn).executemany(_insert_sql(table.name, fields), chunk)

    return _sqlite_rows(converted, errors, chunk_rows, commit_chunk)


def _driver(conn: Connection) -> Any:
    return conn.connection.driver_connection


def _insert_sql(name: str, fields: Sequence[Field]) -> str:
    return (f"INSERT INTO {quote(name)} ({', '.join(quote(f.id) for f in fields)}) "
            f"VALUES ({', '.join('?' * len(fields))})")


def _copy_rows(conn: Connection, name: str, fields: Sequence[Field], converted: Iterable[list[Any]],
               errors: list[CellError]) -> int:
    columns = ", ".join(quote(f.id) for f in fields)
    count = 0
    with _driver(conn).cursor() as cur, cur.copy(f"COPY {quote(name)} ({columns}) FROM STDIN") as copy:
        for row in converted:
            if not errors:  # after the first error only look for more: nothing will be kept
                copy.write_row(row)
            count += 1
    return count


def _sqlite_rows(converted: Iterable[list[Any]], errors: list[CellError], chunk_rows: int,
                 write: Callable[[list[list[Any]]], None]) -> int:
    count = 0
    chunk: list[list[Any]] = []
    for row in converted:
        count += 1
        if errors:
            continue
        chunk.append(row)
        if len(chunk) >= chunk_rows:
            write(chunk)
            chunk = []
    if chunk and not errors:
        write(chunk)
    return count


def _swap(engine: Engine, staging: sa.Table, spec: TableSpec, old: TableSpec | None) -> None:
    """The staging table becomes the resource's table, with its keys and indexes, in one transaction."""
    final_table = sa_table(spec.table_name, spec.fields)
    postgres = engine.dialect.name == "postgresql"
    built: list[tuple[str, str]] = []
    if postgres:  # build indexes before the swap: readers of the old table are not kept waiting
        with engine.begin() as conn:
            for cols, unique in [(spec.primary_key, True)] * bool(spec.primary_key) + [
                    (i, False) for i in spec.indexes]:
                name = _index_name(staging.name, cols, unique)
                _create_index(conn, staging, name, cols, unique)
                built.append((name, _index_name(spec.table_name, cols, unique)))
            conn.execute(sa.text(f"ANALYZE {quote(staging.name)}"))
    with write_transaction(engine) as conn:
        if old is not None:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {quote(old.table_name)}"))
        conn.execute(sa.text(f"ALTER TABLE {quote(staging.name)} RENAME TO {quote(spec.table_name)}"))
        if postgres:
            for temp, final in built:
                conn.execute(sa.text(f"ALTER INDEX {quote(temp)} RENAME TO {quote(final)}"))
        else:
            if spec.primary_key:
                _create_index(conn, final_table, _index_name(spec.table_name, spec.primary_key, True),
                              spec.primary_key, True)
            for cols in spec.indexes:
                _create_index(conn, final_table, _index_name(spec.table_name, cols), cols, False)
            conn.execute(sa.text("PRAGMA analysis_limit=1000"))
            conn.execute(sa.text(f"ANALYZE {quote(spec.table_name)}"))
        _save_spec(conn, spec, new=old is None)


def _append(engine: Engine, resource_id: str, fields: tuple[Field, ...], rows: Iterable[Sequence[str]],
            first_row: int, chunk_rows: int, max_errors: int) -> LoadResult:
    """Rows added to the table in one transaction (new fields become new columns)."""
    errors: list[CellError] = []
    with write_transaction(engine) as conn:
        spec = create_table(conn, resource_id, fields)
        converted = _convert_stream(rows, fields, engine.dialect, errors, first_row, max_errors)
        if engine.dialect.name == "postgresql":
            count = _copy_rows(conn, spec.table_name, fields, converted, errors)
        else:
            sql = _insert_sql(spec.table_name, fields)
            count = _sqlite_rows(converted, errors, chunk_rows,
                                 lambda chunk: _driver(conn).executemany(sql, chunk))
        if errors:
            raise LoadError(errors, count, len(errors) >= max_errors)
        _add_rows(conn, resource_id, count)
    return LoadResult(resource_id, count, fields)
