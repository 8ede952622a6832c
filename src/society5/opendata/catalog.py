"""The catalog store: organizations, groups and datasets as CKAN shapes them, validated and saved in one go.

A dataset is saved as the document ``package_show`` returns, less what can change elsewhere: its
``organization`` and its groups' titles are filled in when it is read (``present``), and an uploaded
resource's ``url`` is stored as the bare file name and made absolute for the site that serves it. Every write
also rewrites the dataset's search rows (``package_terms``, the FTS row, ``search_text``), so search never
reads a stale copy.

Validation collects every problem before anything is written and raises one ``ValidationError`` whose fields
say what to fix, in CKAN's words where CKAN has them (``{"name": ["That URL is already in use."]}``).
Timestamps follow CKAN's format (naive UTC, ``2025-04-01T09:30:00.123456``) since clients compare them as
CKAN writes them.
"""

from __future__ import annotations

import json
import re
import unicodedata
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from society5.core.db import ThreadConnections
from society5.opendata import tables as t
from society5.opendata.actions import ValidationError

# CKAN's license register, with the licences Japanese public bodies use (政府標準利用規約 is CC BY 4.0
# compatible; CC BY 4.0 is the default the national guidelines recommend).
LICENSES: tuple[dict[str, Any], ...] = tuple(
    {
        "id": lid, "title": title, "url": url, "od_conformance": conformance,
        "osd_conformance": "not reviewed", "status": "active", "maintainer": "", "family": "",
        "domain_content": True, "domain_data": True, "domain_software": False,
        "is_generic": generic, "is_okd_compliant": conformance == "approved", "is_osi_compliant": False,
    }
    for lid, title, url, conformance, generic in (
        ("CC-BY-4.0", "クリエイティブ・コモンズ 表示 4.0 国際 (CC BY 4.0)",
         "https://creativecommons.org/licenses/by/4.0/deed.ja", "approved", False),
        ("CC0-1.0", "CC0 1.0 全世界 パブリック・ドメイン提供 (CC0 1.0)",
         "https://creativecommons.org/publicdomain/zero/1.0/deed.ja", "approved", False),
        ("CC-BY-SA-4.0", "クリエイティブ・コモンズ 表示-継承 4.0 国際 (CC BY-SA 4.0)",
         "https://creativecommons.org/licenses/by-sa/4.0/deed.ja", "approved", False),
        ("gsl-2.0", "政府標準利用規約 (第2.0版) Government of Japan Standard Terms of Use 2.0",
         "https://www.kantei.go.jp/jp/singi/it2/densi/kettei/gl2_betten_1.pdf", "approved", False),
        ("odc-odbl", "Open Data Commons Open Database License (ODbL)",
         "https://opendatacommons.org/licenses/odbl/1-0/", "approved", False),
        ("other-open", "その他 (オープン) Other (Open)", "", "approved", True),
        ("other-closed", "その他 (非オープン) Other (Not Open)", "", "not reviewed", True),
        ("notspecified", "ライセンス未指定 License not specified", "", "not reviewed", True),
    )
)
LICENSE_BY_ID = {lic["id"]: lic for lic in LICENSES}
DEFAULT_LICENSE = "CC-BY-4.0"

# Update frequency (更新頻度): the values portals show, each mappable to DCAT's accrualPeriodicity.
FREQUENCIES: dict[str, str] = {
    "continuous": "随時", "hourly": "毎時", "daily": "毎日", "weekly": "毎週", "monthly": "毎月",
    "quarterly": "四半期毎", "semiannual": "半年毎", "annual": "毎年", "irregular": "不定期",
    "never": "更新なし",
}

# Fields whose values are copied into package_terms: usable in fq and as facet.field.
TERM_FIELDS = ("organization", "groups", "tags", "res_format", "license_id", "frequency", "conforms_to",
               "language")

NAME_RE = re.compile(r"^[a-z0-9_-]+\Z")
TAG_RE = re.compile(r"^[\w \-.・]+\Z")
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
LANG_RE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{1,8})*\Z")
EXTRA_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-.:]{0,99}\Z")
TENANT_RE = re.compile(r"^[A-Za-z0-9_\-]{1,64}\Z")
ID_RE = r"^[A-Za-z0-9_-]{1,36}\Z"
# The largest integer a count or offset may be: exact in JSON (IEEE doubles) and in SQL's BIGINT.
INT_MAX = 2**53 - 1
NUL_PROBLEM = "Must not contain NUL characters (\\u0000) (NUL文字は使えません)"
GEOMETRY_TYPES = ("Point", "MultiPoint", "LineString", "MultiLineString", "Polygon", "MultiPolygon",
                  "GeometryCollection")

TEXT_FIELDS = ("title", "notes", "author", "author_email", "maintainer", "maintainer_email", "url", "version",
               "contact_name", "contact_email", "contact_url", "conforms_to")
PACKAGE_FIELDS = frozenset((
    "id", "name", "title", "notes", "type", "state", "private", "owner_org", "license_id", "license_title",
    "license_url", "isopen", "author", "author_email", "maintainer", "maintainer_email", "url", "version",
    "frequency", "contact_name", "contact_email", "contact_url", "spatial", "temporal_start",
    "temporal_end", "language", "conforms_to", "tags", "groups", "extras", "resources", "num_resources",
    "num_tags", "metadata_created", "metadata_modified", "creator_user_id", "organization",
    "relationships_as_object", "relationships_as_subject", "tag_string",
))
RESOURCE_FIELDS = ("id", "package_id", "name", "description", "format", "url", "url_type", "mimetype",
                   "mimetype_inner", "size", "hash", "created", "last_modified", "metadata_modified",
                   "position", "state", "resource_type", "datastore_active", "cache_url",
                   "cache_last_updated")

# Formats CKAN shows, by file extension (an upload or a link without an explicit format).
FORMATS = {
    "csv": "CSV", "tsv": "TSV", "geojson": "GeoJSON", "json": "JSON", "jsonld": "JSON-LD", "xlsx": "XLSX",
    "xls": "XLS", "ods": "ODS", "pdf": "PDF", "zip": "ZIP", "xml": "XML", "rdf": "RDF", "ttl": "TTL",
    "kml": "KML", "kmz": "KMZ", "shp": "SHP", "gpkg": "GPKG", "txt": "TXT", "html": "HTML", "htm": "HTML",
    "docx": "DOCX", "doc": "DOC", "pptx": "PPTX", "png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "gif": "GIF",
    "tif": "TIFF", "tiff": "TIFF", "parquet": "Parquet", "gtfs": "GTFS",
}


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")


def normalize(text: str) -> str:
    """Search form of a text: NFKC (full-width letters and digits, half-width kana) and case-folded."""
    return unicodedata.normalize("NFKC", text).casefold()


def db(platform: Any) -> ThreadConnections:
    """The platform's catalog connections (SQLite writers take the write lock first: no upgrade deadlocks)."""
    found = platform.parts.get("opendata.db")
    if found is None:
        found = platform.parts["opendata.db"] = ThreadConnections(platform.engine)
    return found


def format_for(filename: str) -> str:
    ext = filename.rsplit("/", 1)[-1].rsplit("?", 1)[0].rsplit(".", 1)
    return FORMATS.get(ext[1].lower(), ext[1].upper()[:10]) if len(ext) == 2 and ext[1] else ""


def tag_dict(name: str) -> dict[str, Any]:
    return {"id": str(uuid.uuid5(uuid.NAMESPACE_URL, "tag:" + name)), "name": name, "display_name": name,
            "state": "active", "vocabulary_id": None}


# ---------------------------------------------------------------- small field checks (None: fine)


class Problems:
    """Per-field messages gathered while validating; ``raise_if_any`` ends an all-or-nothing check."""

    def __init__(self) -> None:
        self.fields: dict[str, list[Any]] = {}

    def add(self, field: str, message: Any) -> None:
        self.fields.setdefault(field, []).append(message)

    def raise_if_any(self) -> None:
        if self.fields:
            raise ValidationError(self.fields, message="; ".join(
                f"{field}: {', '.join(map(str, messages))}" for field, messages in self.fields.items()))


def _text(value: Any, problems: Problems, field: str, limit: int = 10_000) -> str | None:
    if value is None:
        return None
    if isinstance(value, (bool, list, dict)):
        problems.add(field, "Must be a string")
        return None
    text = str(value)
    if len(text) > limit:
        problems.add(field, f"Must be at most {limit} characters long")
    if "\x00" in text:
        problems.add(field, NUL_PROBLEM)
    return text


def has_nul(value: Any, depth: int = 0) -> bool:
    """Whether a NUL character hides anywhere in a JSON value (keys too): PostgreSQL stores none, in text
    or in JSONB, so it must be refused as bad input rather than fail the INSERT."""
    if isinstance(value, str):
        return "\x00" in value
    if depth > 64:  # deeper than any document this catalog keeps; refused by the checks that read it
        return False
    if isinstance(value, dict):
        return any(has_nul(k) or has_nul(v, depth + 1) for k, v in value.items())
    if isinstance(value, list):
        return any(has_nul(v, depth + 1) for v in value)
    return False


def check_no_nul(data: Mapping[str, Any], problems: Problems) -> None:
    for key, value in data.items():
        if has_nul(key) or has_nul(value):
            problems.add(str(key).replace("\x00", ""), NUL_PROBLEM)


def as_bool(value: Any, problems: Problems, field: str, default: bool = False) -> bool:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    problems.add(field, "Value must be one of: true, false")
    return default


def as_int(value: Any, problems: Problems, field: str, minimum: int = 0) -> int | None:
    if value is None or value == "":
        return None
    try:
        number = int(str(value).strip()) if not isinstance(value, int) or isinstance(value, bool) else value
    except ValueError:
        problems.add(field, "Invalid integer")
        return None
    if isinstance(value, bool):
        problems.add(field, "Invalid integer")
        return None
    if number < minimum:
        problems.add(field, "Must be a natural number" if minimum == 0 else f"Must be at least {minimum}")
    elif number > INT_MAX:
        problems.add(field, f"Must be at most {INT_MAX}")
        return None
    return number


def check_name(value: Any, problems: Problems, field: str = "name") -> str:
    if value is None or value == "":
        problems.add(field, "Missing value")
        return ""
    name = str(value)
    if len(name) < 2:
        problems.add(field, "Must be at least 2 characters long")
    elif len(name) > 100:
        problems.add(field, "Name must be a maximum of 100 characters long")
    if not NAME_RE.match(name):
        problems.add(field, "Must be purely lowercase alphanumeric (ascii) characters and these symbols: -_")
    return name


def _json_value(value: Any) -> Any:
    """Multipart forms carry everything as text: lists and objects arrive as JSON strings."""
    if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def check_extras(value: Any, problems: Problems, reserved: Iterable[str] = ()) -> list[dict[str, str]]:
    value = _json_value(value)
    if value is None or value == "":
        return []
    if isinstance(value, dict):
        value = [{"key": k, "value": v} for k, v in value.items()]
    if not isinstance(value, list):
        problems.add("extras", "Must be a list of {key, value} objects")
        return []
    out: list[dict[str, str]] = []
    seen: set[str] = set()
    taken = set(reserved)
    for item in value:
        if not isinstance(item, dict) or "key" not in item:
            problems.add("extras", "Each extra needs a key and a value: {\"key\": …, \"value\": …}")
            continue
        key = str(item["key"])
        if not EXTRA_KEY_RE.match(key):
            problems.add("extras", f"Extra key {key!r} is not valid (letters, digits, _-.:, at most 100)")
        elif key in seen:
            problems.add("extras", f"Duplicate key {key!r}")
        elif key in taken:
            problems.add("extras", f"There is a schema field with the same name: {key!r}")
        seen.add(key)
        raw = item.get("value")
        text = raw if isinstance(raw, str) else json.dumps(raw, ensure_ascii=False) if raw is not None else ""
        out.append({"key": key, "value": text})
    return out


def check_spatial(value: Any, problems: Problems) -> dict[str, Any] | None:
    """A GeoJSON geometry (object or JSON text), or a bbox ``[minx, miny, maxx, maxy]`` (kept as its
    polygon)."""
    value = _json_value(value)
    if value is None or value == "":
        return None
    if isinstance(value, str):
        parts = value.split(",")
        try:
            value = [float(p) for p in parts]
        except ValueError:
            problems.add("spatial", "Must be a GeoJSON geometry or a bbox 'minx,miny,maxx,maxy'")
            return None
    if isinstance(value, list):
        if len(value) != 4 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            problems.add("spatial", "A bbox is four numbers: [minx, miny, maxx, maxy] (WGS84 degrees)")
            return None
        x1, y1, x2, y2 = (float(v) for v in value)
        if not (-180 <= x1 <= x2 <= 180 and -90 <= y1 <= y2 <= 90):
            problems.add("spatial", "bbox out of range: need -180 <= minx <= maxx <= 180, "
                                    "-90 <= miny <= maxy <= 90")
            return None
        return {"type": "Polygon", "coordinates": [[[x1, y1], [x2, y1], [x2, y2], [x1, y2], [x1, y1]]]}
    if not isinstance(value, dict) or value.get("type") not in GEOMETRY_TYPES:
        problems.add("spatial",
                     f"Must be a GeoJSON geometry (type one of {', '.join(GEOMETRY_TYPES)}) or a bbox")
        return None
    if not _geometry_ok(value):
        problems.add("spatial", "GeoJSON coordinates must be [longitude, latitude] in WGS84 ranges")
        return None
    return value


def _geometry_ok(geom: dict[str, Any], depth: int = 0) -> bool:
    if geom.get("type") == "GeometryCollection":
        parts = geom.get("geometries")
        return isinstance(parts, list) and depth < 4 and all(
            isinstance(p, dict) and p.get("type") in GEOMETRY_TYPES and _geometry_ok(p, depth + 1)
            for p in parts
        )
    return _positions_ok(geom.get("coordinates"), 0)


def _positions_ok(coords: Any, depth: int) -> bool:
    if not isinstance(coords, list) or not coords or depth > 4:
        return False
    if all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in coords):
        return 2 <= len(coords) <= 3 and -180 <= coords[0] <= 180 and -90 <= coords[1] <= 90
    return all(_positions_ok(c, depth + 1) for c in coords)


def check_temporal(value: Any, problems: Problems, field: str) -> str | None:
    if value is None or value == "":
        return None
    text = str(value)
    try:
        if not re.match(r"^\d{4}-\d{2}-\d{2}", text):
            raise ValueError(text)
        if len(text) == 10:
            date.fromisoformat(text)
        else:
            datetime.fromisoformat(text)
    except ValueError:
        problems.add(field, "Must be an ISO 8601 date (YYYY-MM-DD) or date-time")
        return None
    return text


def check_tags(data: Mapping[str, Any], problems: Problems) -> list[str]:
    raw = _json_value(data.get("tags"))
    if raw is None and data.get("tag_string") is not None:
        raw = [p.strip() for p in str(data["tag_string"]).split(",") if p.strip()]
    if raw is None or raw == "":
        return []
    if not isinstance(raw, list):
        problems.add("tags", "Must be a list of tags: [{\"name\": \"…\"}]")
        return []
    names: list[str] = []
    for item in raw:
        name = item.get("name") if isinstance(item, dict) else item
        if not isinstance(name, str) or not name.strip():
            problems.add("tags", "Each tag needs a name")
            continue
        name = name.strip()
        if len(name) > 100:
            problems.add("tags", f'Tag "{name[:20]}…" length is more than maximum 100')
        elif not TAG_RE.match(name):
            problems.add("tags", f'Tag "{name}" must be alphanumeric characters or symbols: -_.・')
        elif name not in names:
            names.append(name)
    return names


# ---------------------------------------------------------------- organizations and groups


def find_group(conn: Connection, ref: Any, is_organization: bool | None = None,
               active_only: bool = True) -> dict[str, Any] | None:
    """An organization or group by id or name (``is_organization`` None: either kind)."""
    if not isinstance(ref, str) or not ref or "\x00" in ref:
        return None
    query = sa.select(t.groups).where(sa.or_(t.groups.c.id == ref, t.groups.c.name == ref))
    if is_organization is not None:
        query = query.where(t.groups.c.is_organization == is_organization)
    if active_only:
        query = query.where(t.groups.c.state == "active")
    row = conn.execute(query).mappings().first()
    return dict(row) if row else None


def validate_group(conn: Connection, data: Mapping[str, Any], is_organization: bool,
                   existing: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The row values of an organization or group to create (``existing`` None) or replace."""
    problems = Problems()
    check_no_nul(data, problems)
    name = check_name(data.get("name", existing["name"] if existing else None), problems)
    if name and not problems.fields.get("name"):
        clash = conn.execute(sa.select(t.groups.c.id).where(t.groups.c.name == name)).first()
        if clash is not None and (existing is None or clash[0] != existing["id"]):
            problems.add("name", "Group name already exists in database")
    values: dict[str, Any] = {"name": name}
    if existing is None:
        gid = data.get("id")
        if gid is not None and (not isinstance(gid, str) or not re.match(ID_RE, gid)):
            problems.add("id", "Must be at most 36 letters, digits, - or _")
        elif gid is not None and conn.execute(sa.select(t.groups.c.id).where(t.groups.c.id == gid)).first():
            problems.add("id", "That id is already in use")
        values.update(id=gid or str(uuid.uuid4()), is_organization=is_organization, state="active",
                      created=now())
    values["title"] = _text(data.get("title"), problems, "title", 500) or ""
    values["description"] = _text(data.get("description"), problems, "description", 50_000) or ""
    image = _text(data.get("image_url"), problems, "image_url", 2000) or ""
    if image and not re.match(r"^(https?://|/)", image):
        problems.add("image_url", "Must be an http(s) URL or a path on this site")
    values["image_url"] = image
    tenant = data.get("tenant") or (existing["tenant"] if existing else "default")
    if not isinstance(tenant, str) or not TENANT_RE.match(tenant):
        problems.add("tenant", "Must be a tenant code such as 011002 (letters, digits, -, _; at most 64)")
    values["tenant"] = tenant
    values["extras"] = check_extras(data.get("extras"), problems)
    problems.raise_if_any()
    return values


def group_dict(row: Mapping[str, Any], package_count: int | None = None) -> dict[str, Any]:
    """``organization_show``/``group_show`` without its lists (datasets, users)."""
    is_org = bool(row["is_organization"])
    out: dict[str, Any] = {
        "id": row["id"], "name": row["name"], "title": row["title"],
        "display_name": row["title"] or row["name"], "description": row["description"],
        "image_url": row["image_url"], "image_display_url": row["image_url"], "created": row["created"],
        "is_organization": is_org, "type": "organization" if is_org else "group",
        "approval_status": "approved", "state": row["state"], "tenant": row["tenant"],
        "extras": list(row["extras"] or []), "num_followers": 0,
    }
    if package_count is not None:
        out["package_count"] = package_count
    return out


def group_ref(row: Mapping[str, Any]) -> dict[str, Any]:
    """A group as a dataset lists it (``package_show``'s ``groups``)."""
    return {"id": row["id"], "name": row["name"], "title": row["title"],
            "display_name": row["title"] or row["name"], "description": row["description"],
            "image_display_url": row["image_url"]}


def org_ref(row: Mapping[str, Any]) -> dict[str, Any]:
    """The organization as a dataset shows it (``package_show``'s ``organization``), tenant included."""
    return {"id": row["id"], "name": row["name"], "title": row["title"], "type": "organization",
            "description": row["description"], "image_url": row["image_url"], "created": row["created"],
            "is_organization": True, "approval_status": "approved", "state": row["state"],
            "tenant": row["tenant"]}


# ---------------------------------------------------------------- datasets


def find_package(conn: Connection, ref: Any, for_update: bool = False) -> dict[str, Any] | None:
    """A dataset's row (seq, id, name, tenant, private, state, doc) by id or name, deleted ones included.

    ``for_update``: the caller will write the dataset back in this transaction, so PostgreSQL locks its rows
    (two writers, e.g. a datastore load noting progress and an officer publishing, would otherwise each
    write back what they read and lose the other's change); SQLite's writers already hold the write lock."""
    if not isinstance(ref, str) or not ref or "\x00" in ref:
        return None
    p = t.packages
    stmt = (
        sa.select(p.c.seq, p.c.id, p.c.name, p.c.tenant, p.c.private, p.c.state, p.c.owner_org,
                  t.package_docs.c.doc)
        .join(t.package_docs, t.package_docs.c.package_seq == p.c.seq)
        .where(sa.or_(p.c.id == ref, p.c.name == ref))
    )
    if for_update:
        stmt = stmt.with_for_update()
    row = conn.execute(stmt).mappings().first()
    return dict(row) if row else None


def validate_package(conn: Connection, data: Mapping[str, Any], existing: Mapping[str, Any] | None,
                     ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The stored document of a dataset to create or replace, and its organization's row.

    ``existing`` (a stored document) keeps its id, creation time and, when the caller leaves them out,
    its tags, groups and resources (as CKAN 2.10's ``package_update`` does)."""
    problems = Problems()
    check_no_nul(data, problems)
    name = check_name(data.get("name", existing["name"] if existing else None), problems)
    if name and "name" not in problems.fields:
        clash = conn.execute(sa.select(t.packages.c.id).where(t.packages.c.name == name)).first()
        if clash is not None and (existing is None or clash[0] != existing["id"]):
            problems.add("name", "That URL is already in use.")
    pid = existing["id"] if existing else data.get("id")
    if existing is None and pid is not None:
        if not isinstance(pid, str) or not re.match(ID_RE, pid):
            problems.add("id", "Must be at most 36 letters, digits, - or _")
        elif conn.execute(sa.select(t.packages.c.id).where(t.packages.c.id == pid)).first():
            problems.add("id", "Dataset id already exists")
    org = find_group(conn, data.get("owner_org"), is_organization=True)
    if not data.get("owner_org"):
        problems.add("owner_org", "Missing value")
    elif org is None:
        problems.add("owner_org", "Organization does not exist")
    doc: dict[str, Any] = {"id": pid or str(uuid.uuid4()), "name": name, "type": "dataset"}
    for field in TEXT_FIELDS:
        doc[field] = _text(data.get(field), problems, field, 100_000 if field == "notes" else 1000)
    doc["title"] = doc["title"] or name
    for field in ("author_email", "maintainer_email", "contact_email"):
        if doc[field] and not EMAIL_RE.match(doc[field]):
            problems.add(field, f"Email {doc[field]} is not a valid format")
    if doc["contact_url"] and not re.match(r"^https?://\S+$", doc["contact_url"]):
        problems.add("contact_url", "Must be an http:// or https:// URL")
    if doc["conforms_to"] is not None and (not doc["conforms_to"] or re.search(r"\s", doc["conforms_to"])):
        problems.add("conforms_to", "Must be a layout id or URL without spaces")
    state = data.get("state") or "active"
    if state not in ("active", "draft") and not (existing and existing.get("state") == state == "deleted"):
        problems.add("state", "Must be active or draft (delete with package_delete)")
    doc["state"] = state
    doc["private"] = as_bool(data.get("private"), problems, "private")
    doc["owner_org"] = org["id"] if org else None
    license_id = data.get("license_id") or DEFAULT_LICENSE
    lic = LICENSE_BY_ID.get(license_id) if isinstance(license_id, str) else None
    if lic is None:
        problems.add("license_id", f"License not found; use one of: {', '.join(LICENSE_BY_ID)}")
        lic = LICENSE_BY_ID[DEFAULT_LICENSE]
    doc.update(license_id=lic["id"], license_title=lic["title"], license_url=lic["url"],
               isopen=lic["od_conformance"] == "approved")
    frequency = data.get("frequency") or None
    if frequency is not None and (not isinstance(frequency, str) or frequency not in FREQUENCIES):
        problems.add("frequency", f"Must be one of: {', '.join(FREQUENCIES)}")
    doc["frequency"] = frequency
    doc["spatial"] = check_spatial(data.get("spatial"), problems)
    doc["temporal_start"] = check_temporal(data.get("temporal_start"), problems, "temporal_start")
    doc["temporal_end"] = check_temporal(data.get("temporal_end"), problems, "temporal_end")
    start, end = doc["temporal_start"], doc["temporal_end"]
    if start and end and end[:10] < start[:10]:
        problems.add("temporal_end", "Must not be before temporal_start")
    language = data.get("language") or "ja"
    if not isinstance(language, str) or not LANG_RE.match(language):
        problems.add("language", "Must be a language code such as ja or en")
    doc["language"] = language
    keep = existing or {}
    doc["tags"] = (check_tags(data, problems) if "tags" in data or "tag_string" in data
                   else [tg["name"] for tg in keep.get("tags", [])])
    doc["groups"] = (_check_groups(conn, data.get("groups"), problems) if "groups" in data
                     else list(keep.get("groups", [])))
    doc["extras"] = check_extras(data.get("extras"), problems, PACKAGE_FIELDS)
    kept = list(keep.get("resources", []))
    doc["resources"] = (_check_resources(data.get("resources"), kept, doc["id"], problems)
                        if "resources" in data else kept)
    problems.raise_if_any()
    assert org is not None
    stamp = now()
    doc["tags"] = [tag_dict(n) for n in doc["tags"]]
    doc.update(num_tags=len(doc["tags"]), num_resources=len(doc["resources"]),
               metadata_created=keep.get("metadata_created", stamp), metadata_modified=stamp,
               creator_user_id=keep.get("creator_user_id"), relationships_as_object=[],
               relationships_as_subject=[])
    return doc, org


def _check_groups(conn: Connection, value: Any, problems: Problems) -> list[str]:
    value = _json_value(value)
    if value is None or value == "":
        return []
    if not isinstance(value, list):
        problems.add("groups", "Must be a list of groups: [{\"name\": \"…\"}]")
        return []
    ids: list[str] = []
    for item in value:
        ref = (item.get("id") or item.get("name")) if isinstance(item, dict) else item
        row = find_group(conn, ref, is_organization=False)
        if row is None:
            problems.add("groups", f'Group "{ref}" does not exist')
        elif row["id"] not in ids:
            ids.append(row["id"])
    return ids


def _check_resources(value: Any, kept: list[dict[str, Any]], package_id: str,
                     problems: Problems) -> list[dict[str, Any]]:
    """A dataset's whole resource list (package_create/update); known ids keep their stored file."""
    value = _json_value(value)
    if value is None or value == "":
        return []
    if not isinstance(value, list):
        problems.add("resources", "Must be a list of resources")
        return []
    by_id = {r["id"]: r for r in kept}
    out: list[dict[str, Any]] = []
    errors: list[dict[str, list[str]]] = []
    for item in value:
        sub = Problems()
        if not isinstance(item, dict):
            sub.add("resource", "Must be an object")
            errors.append(sub.fields)
            continue
        rid = item.get("id")
        old = by_id.get(rid) if isinstance(rid, str) else None  # a junk id is validate_resource's to report
        out.append(validate_resource(item, old, package_id, sub))
        errors.append(sub.fields)
    if any(errors):
        problems.fields["resources"] = errors
    return out


def validate_resource(data: Mapping[str, Any], existing: Mapping[str, Any] | None, package_id: str,
                      problems: Problems, upload_name: str | None = None) -> dict[str, Any]:
    """One resource's stored form. ``upload_name``: a file arrives with it (the url becomes that name);
    an existing upload keeps its file unless a new url is given."""
    old = dict(existing or {})
    check_no_nul(data, problems)
    res: dict[str, Any] = {"id": old.get("id") or str(uuid.uuid4()), "package_id": package_id}
    if not old and data.get("id"):
        rid = data["id"]
        if not isinstance(rid, str) or not re.match(ID_RE, rid):
            problems.add("id", "Must be at most 36 letters, digits, - or _")
        else:
            res["id"] = rid
    url = _text(data.get("url"), problems, "url", 2000)
    if upload_name is not None:
        res.update(url=upload_name, url_type="upload")
    elif old.get("url_type") == "upload" and (not url or url == old.get("url") or url.endswith("/" + quote(
            str(old.get("url"))))):
        res.update(url=old["url"], url_type="upload")
    else:
        if not url:
            problems.add("url", "Missing value: give a URL or upload a file")
        elif not re.match(r"^(https?|ftp)://\S+$", url):
            problems.add("url", "Must be an http://, https:// or ftp:// URL")
        res.update(url=url or "", url_type=None)
    res["name"] = _text(data.get("name"), problems, "name", 1000) or old.get("name") or (
        res["url"].rstrip("/").rsplit("/", 1)[-1] if res["url"] else "")
    res["description"] = _text(data.get("description"), problems, "description", 100_000) or ""
    fmt = _text(data.get("format"), problems, "format", 100)
    if not fmt:
        same_target = bool(old) and res["url"] == old.get("url")
        fmt = (old.get("format") if same_target else None) or format_for(res["url"])
    res["format"] = fmt
    for field in ("mimetype", "mimetype_inner", "hash", "resource_type", "last_modified", "cache_url"):
        res[field] = _text(data.get(field), problems, field, 2000) if data.get(field) else old.get(field)
    res["size"] = as_int(data.get("size"), problems, "size") if data.get("size") not in (None, "") \
        else old.get("size")
    res["datastore_active"] = as_bool(data.get("datastore_active"), problems, "datastore_active",
                                      default=bool(old.get("datastore_active", False)))
    stamp = now()
    res.update(created=old.get("created", stamp), metadata_modified=stamp, state="active",
               cache_last_updated=old.get("cache_last_updated"))
    # Keys CKAN does not know are kept as they are (resource extras): validation reports, layout ids …
    for key, value in {**old, **data}.items():
        if key in res or key in RESOURCE_FIELDS or key in ("upload", "clear_upload"):
            continue
        if not EXTRA_KEY_RE.match(str(key)):
            problems.add(str(key), "Not a valid resource field name")
        else:
            res[key] = value
    return res


def search_text(doc: Mapping[str, Any], org: Mapping[str, Any], groups: Iterable[Mapping[str, Any]]) -> str:
    parts = [doc["name"], doc.get("title") or "", doc.get("notes") or "", org["title"], org["name"]]
    parts += [tg["name"] for tg in doc.get("tags", [])]
    parts += [g["title"] or g["name"] for g in groups]
    parts += [r.get("name") or "" for r in doc.get("resources", [])]
    return normalize("\n".join(p for p in parts if p))


def terms_of(doc: Mapping[str, Any], org: Mapping[str, Any], groups: Iterable[Mapping[str, Any]],
             ) -> set[tuple[str, str]]:
    terms = {("organization", org["name"]), ("license_id", doc["license_id"])}
    terms |= {("groups", g["name"]) for g in groups}
    terms |= {("tags", tg["name"]) for tg in doc.get("tags", [])}
    terms |= {("res_format", r["format"]) for r in doc.get("resources", []) if r.get("format")}
    for field in ("frequency", "conforms_to", "language"):
        if doc.get(field):
            terms.add((field, str(doc[field])[:200]))
    return terms


def save_package(conn: Connection, doc: dict[str, Any], org: Mapping[str, Any],
                 seq: int | None = None) -> int:
    """Insert (``seq`` None) or replace a dataset with every search row it has. Returns its seq.

    A resource id given by the client that another dataset's resource (or a sibling) already has is a
    Validation Error here, before anything is written, rather than a failed INSERT."""
    check_resource_ids(conn, doc, seq)
    groups = _groups_by_id(conn, doc.get("groups", []))
    group_rows = [groups[g] for g in doc.get("groups", []) if g in groups]
    values = dict(
        id=doc["id"], name=doc["name"], owner_org=org["id"], tenant=org["tenant"], private=doc["private"],
        state=doc["state"], title_sort=normalize(doc.get("title") or doc["name"]),
        title_text=normalize(doc.get("title") or ""), search_text=search_text(doc, org, group_rows),
        metadata_created=doc["metadata_created"], metadata_modified=doc["metadata_modified"],
    )
    new = seq is None
    if seq is None:
        key = conn.execute(t.packages.insert().values(**values)).inserted_primary_key
        assert key is not None
        seq = int(key[0])
        conn.execute(t.package_docs.insert().values(package_seq=seq, doc=doc))
    else:
        conn.execute(t.package_docs.update().where(t.package_docs.c.package_seq == seq).values(doc=doc))
        conn.execute(t.packages.update().where(t.packages.c.seq == seq).values(**values))
        conn.execute(t.package_terms.delete().where(t.package_terms.c.package_seq == seq))
        conn.execute(t.resources.delete().where(t.resources.c.package_seq == seq))
    terms = terms_of(doc, org, group_rows)
    if terms:
        conn.execute(t.package_terms.insert(),
                     [{"package_seq": seq, "field": f, "value": v} for f, v in sorted(terms)])
    if doc.get("resources"):
        conn.execute(t.resources.insert(), [{"id": r["id"], "package_seq": seq} for r in doc["resources"]])
    if conn.dialect.name == "sqlite":
        if not new:
            _drop_text_rows(conn, seq)
        conn.execute(sa.text("INSERT INTO opendata_package_fts(rowid, text) VALUES (:seq, :text)"),
                     {"seq": seq, "text": values["search_text"]})
        conn.execute(sa.text("INSERT INTO opendata_package_bigrams(rowid, text) VALUES (:seq, :text)"),
                     {"seq": seq, "text": " ".join(bigram_list(values["search_text"]))})
    elif conn.dialect.name == "postgresql":
        conn.execute(sa.text("UPDATE opendata_packages SET search_bigrams = "
                             "array_to_tsvector(CAST(:pairs AS text[])) WHERE seq = :seq"),
                     {"seq": seq, "pairs": bigram_list(values["search_text"])})
    return seq


def bigram_list(text: str) -> list[str]:
    """A text's overlapping character pairs (within each whitespace-separated run), once each: what the
    bigram index holds (migration 0010), so a two-character word is found without scanning every dataset."""
    pairs: dict[str, None] = {}
    for run in text.split():
        for i in range(len(run) - 1):
            pairs[run[i : i + 2]] = None
    return list(pairs)


def _drop_text_rows(conn: Connection, seq: int) -> None:
    for table in ("opendata_package_fts", "opendata_package_bigrams"):
        conn.execute(sa.text(f"DELETE FROM {table} WHERE rowid = :seq"), {"seq": seq})


def check_resource_ids(conn: Connection, doc: Mapping[str, Any], seq: int | None) -> None:
    ids = [str(r["id"]) for r in doc.get("resources", [])]
    twice = sorted({rid for rid in ids if ids.count(rid) > 1})
    if twice:
        raise ValidationError({"id": [f"Resource id {', '.join(twice)} appears more than once"]})
    if not ids:
        return
    query = sa.select(t.resources.c.id).where(t.resources.c.id.in_(ids))
    if seq is not None:
        query = query.where(t.resources.c.package_seq != seq)
    taken = sorted(conn.execute(query).scalars())
    if taken:
        raise ValidationError({"id": [f"Resource id {', '.join(taken)} is already in use"]})


def purge_package(conn: Connection, seq: int) -> None:
    conn.execute(t.package_terms.delete().where(t.package_terms.c.package_seq == seq))
    conn.execute(t.resources.delete().where(t.resources.c.package_seq == seq))
    conn.execute(t.package_docs.delete().where(t.package_docs.c.package_seq == seq))
    if conn.dialect.name == "sqlite":
        _drop_text_rows(conn, seq)
    conn.execute(t.packages.delete().where(t.packages.c.seq == seq))


def reindex_owner(conn: Connection, group_id: str, old_name: str) -> None:
    """Rewrite the search rows of every dataset of an organization or group whose name, title or tenant
    changed (they are copied into each dataset's rows; ``old_name`` is what those rows still hold)."""
    member = sa.select(t.package_terms.c.package_seq).where(
        t.package_terms.c.field.in_(("groups", "organization")), t.package_terms.c.value == old_name)
    rows = conn.execute(sa.select(t.packages.c.seq, t.packages.c.owner_org, t.package_docs.c.doc)
                        .join(t.package_docs, t.package_docs.c.package_seq == t.packages.c.seq).where(
        sa.or_(t.packages.c.owner_org == group_id, t.packages.c.seq.in_(member)))).all()
    orgs: dict[str, dict[str, Any]] = {}
    for seq, owner, doc in rows:
        if owner not in orgs:
            orgs[owner] = find_group(conn, owner, is_organization=True, active_only=False) or {}
        save_package(conn, doc, orgs[owner], seq)


def _groups_by_id(conn: Connection, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    rows = conn.execute(sa.select(t.groups).where(t.groups.c.id.in_(wanted))).mappings()
    return {r["id"]: dict(r) for r in rows}


def resource_url(base_url: str, package_id: str, resource: Mapping[str, Any]) -> str:
    """Where an uploaded file is downloaded (CKAN's path, so clients that build it themselves agree)."""
    name = quote(str(resource.get("url") or "file"), safe="")
    return f"{base_url.rstrip('/')}/dataset/{package_id}/resource/{resource['id']}/download/{name}"


def present_resource(res: Mapping[str, Any], position: int, base_url: str) -> dict[str, Any]:
    out = dict(res)
    out["position"] = position
    if res.get("url_type") == "upload":
        out["url"] = resource_url(base_url, res["package_id"], res)
    return out


def present(conn: Connection, docs: list[dict[str, Any]], base_url: str) -> list[dict[str, Any]]:
    """Stored documents as ``package_show`` returns them: organization and groups filled in, upload URLs
    absolute. Two queries for any number of datasets."""
    wanted = [g for d in docs for g in d.get("groups", [])] + [d["owner_org"] for d in docs]
    groups = _groups_by_id(conn, wanted)
    out = []
    for doc in docs:
        shown = dict(doc)
        org = groups.get(doc["owner_org"])
        shown["organization"] = org_ref(org) if org else None
        shown["groups"] = [group_ref(groups[g]) for g in doc.get("groups", [])
                           if g in groups and groups[g]["state"] == "active"]
        shown["resources"] = [present_resource(r, i, base_url)
                              for i, r in enumerate(doc.get("resources", []))]
        out.append(shown)
    return out


def stored_file_name(filename: str) -> str:
    """The name an upload is shown and downloaded under: its base name, without path or control characters."""
    base = filename.replace("\\", "/").rsplit("/", 1)[-1]
    clean = "".join(ch if (ch.isalnum() or ch in "._-()") else "_" for ch in base).strip("._") or "file"
    return clean[-200:]
