"""What a publisher binds a dataset to: entity type, filter, shape, schedule, privacy rounding; validated.

Two shapes are built in:

* ``snapshot``: one row per entity (id, type, the chosen attributes, location as lat/lon rounded to
  ``coordinate_digits``, the latest observedAt in JST and UTC), e.g. public bear sightings;
* ``time_bins``: one row per site, direction and ``bin_minutes`` bin of the ``count_attr`` history, in the
  columns Sapporo publishes its underground-walkway pedestrian counts with (計測地点, 日付,
  時間帯(開始), 方向, 通行量, 推計値フラグ).

Every problem is reported at once, per field, as a CKAN Validation Error; nothing is stored before that.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from society5.opendata.actions import ValidationError

SHAPES = ("snapshot", "time_bins")
AGGREGATES = ("sum", "avg", "max", "min")
MAX_ATTRS = 30
MAX_ENTITIES = 50_000
# \Z, not $: "$" would also accept a trailing newline.
ATTR_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,99}\Z")
TYPE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_\-.:/#]{0,255}\Z")
TENANT_RE = re.compile(r"^[A-Za-z0-9_\-]{1,64}\Z")
FILE_RE = re.compile(r"^[A-Za-z0-9_\-]{1,80}\Z")
RESERVED = {"id", "type", "scope", "location", "observedAt", "createdAt", "modifiedAt"}
# Attributes that name or reach a person: never published, whatever a binding asks (open data carries no
# personal data; a sighting's reporter or a resident's phone number stays in the broker).
PERSONAL = {"email", "telephone", "phone", "mobile", "faxnumber", "givenname", "familyname", "personname",
            "birthdate", "gender", "age", "reporter", "reportedby", "contactpoint", "userid", "refuser",
            "owner", "deviceowner", "homeaddress", "residentname"}


@dataclass(frozen=True)
class PublisherSpec:
    shape: str
    entity_type: str
    tenant: str
    q: str | None = None
    attrs: tuple[str, ...] = ()
    public_only: bool = True
    coordinate_digits: int = 4
    every_minutes: int = 60
    location_attr: str = "location"
    file_name: str = "data"
    # time_bins only
    count_attr: str = ""
    bin_minutes: int = 15
    window_days: int = 7
    aggregate: str = "sum"
    direction_attr: str = "direction"
    site_attr: str = "name"
    fill_gaps: bool = True

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["attrs"] = list(self.attrs)
        return out


class _Problems:
    def __init__(self) -> None:
        self.fields: dict[str, list[str]] = {}

    def add(self, name: str, message: str) -> None:
        self.fields.setdefault(name, []).append(message)


def _bool(data: dict[str, Any], name: str, default: bool, problems: _Problems) -> bool:
    value = data.get(name)
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on", "false", "0", "no", "off"):
        return text in ("true", "1", "yes", "on")
    problems.add(name, "Must be true or false")
    return default


def _int(data: dict[str, Any], name: str, default: int, low: int, high: int, problems: _Problems) -> int:
    value = data.get(name)
    if value is None or value == "":
        return default
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        number = int(value)
    except (TypeError, ValueError):
        problems.add(name, "Invalid integer")
        return default
    if not low <= number <= high:
        problems.add(name, f"Must be between {low} and {high}")
        return default
    return number


def _name(data: dict[str, Any], key: str, default: str, problems: _Problems, required: bool = False) -> str:
    value = data.get(key)
    if value is None or value == "":
        if required:
            problems.add(key, "Missing value")
        return default
    if not isinstance(value, str) or not ATTR_RE.match(value):
        problems.add(key, "Must be an attribute name (letters, digits, _)")
        return default
    if value.lower() in PERSONAL:
        problems.add(key, f"{value} may hold personal data and is never published (個人情報は公開できません)")
    return value


def _attrs(value: Any, problems: _Problems) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        problems.add("attrs", "Must be a list of attribute names (or a comma-separated string)")
        return ()
    if len(value) > MAX_ATTRS:
        problems.add("attrs", f"At most {MAX_ATTRS} attributes")
    for name in value:
        if not ATTR_RE.match(name):
            problems.add("attrs", f"{name!r} is not an attribute name (letters, digits, _)")
        elif name in RESERVED:
            problems.add("attrs", f"{name} is always published in its own columns; leave it out of attrs")
        elif name.lower() in PERSONAL:
            problems.add("attrs", f"{name} may hold personal data and is never published "
                                  "(個人情報は公開できません)")
    return tuple(dict.fromkeys(value))


def parse_spec(data: dict[str, Any], default_tenant: str) -> PublisherSpec:
    """A binding from an action's parameters (or a stored ``spec``), or one Validation Error naming every
    bad field."""
    problems = _Problems()
    shape = data.get("shape") or "snapshot"
    if shape not in SHAPES:
        problems.add("shape", f"Must be one of: {', '.join(SHAPES)}")
    entity_type = data.get("entity_type")
    if entity_type is None or entity_type == "":
        problems.add("entity_type", "Missing value")
    elif not isinstance(entity_type, str) or not TYPE_RE.match(entity_type):
        problems.add("entity_type", "Must be one NGSI-LD entity type, e.g. CrowdFlowObserved")
    tenant = data.get("tenant") or default_tenant
    if not isinstance(tenant, str) or not TENANT_RE.match(tenant):
        problems.add("tenant", "Must be a tenant code such as 011002")
    q = data.get("q") or None
    if q is not None and (not isinstance(q, str) or len(q) > 2000):
        problems.add("q", "Must be an NGSI-LD q expression of at most 2000 characters")
    elif q is not None and "\x00" in q:  # PostgreSQL stores no NUL (the spec is a JSONB document)
        problems.add("q", "Must not contain NUL characters (\\u0000)")
    file_name = data.get("file_name") or (entity_type.lower() if isinstance(entity_type, str)
                                          and FILE_RE.match(entity_type) else "data")
    if not isinstance(file_name, str) or not FILE_RE.match(file_name):
        problems.add("file_name", "Must be 1-80 letters, digits, - or _ (the .csv/.geojson suffix is added)")
    aggregate = data.get("aggregate") or "sum"
    if aggregate not in AGGREGATES:
        problems.add("aggregate", f"Must be one of: {', '.join(AGGREGATES)}")
    bin_minutes = _int(data, "bin_minutes", 15, 1, 1440, problems)
    if 1440 % bin_minutes:
        problems.add("bin_minutes", "Must divide a day evenly (1, 5, 10, 15, 30, 60 …)")
    spec = PublisherSpec(
        shape=str(shape), entity_type=str(entity_type or ""), tenant=str(tenant), q=q,
        attrs=_attrs(data.get("attrs"), problems),
        public_only=_bool(data, "public_only", True, problems),
        coordinate_digits=_int(data, "coordinate_digits", 4, 0, 6, problems),
        every_minutes=_int(data, "every_minutes", 60, 1, 7 * 24 * 60, problems),
        location_attr=_name(data, "location_attr", "location", problems),
        file_name=str(file_name),
        count_attr=_name(data, "count_attr", "", problems, required=shape == "time_bins"),
        bin_minutes=bin_minutes,
        window_days=_int(data, "window_days", 7, 1, 92, problems),
        aggregate=str(aggregate),
        direction_attr=_name(data, "direction_attr", "direction", problems),
        site_attr=_name(data, "site_attr", "name", problems),
        fill_gaps=_bool(data, "fill_gaps", True, problems),
    )
    if problems.fields:
        raise ValidationError(problems.fields)
    return spec


SPEC_KEYS = tuple(PublisherSpec.__dataclass_fields__)
