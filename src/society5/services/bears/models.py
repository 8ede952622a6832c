"""``BearSighting``: one observation of a bear or its signs, as an NGSI-LD entity (Smart-Data-Model style).

The attribute names follow FIWARE's conventions (``dateObserved``, ``location``, ``refDevice``,
``municipalityCode`` …); the type is ours because no data model covers wildlife sightings. ``README.md`` in
this folder documents every attribute. :class:`SightingIn` validates what people and cameras send;
:func:`to_entity` and :func:`from_entity` convert between the flat form the API and pages use and the
normalized entity the broker stores.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from society5.core.timeutil import iso, parse_iso

ENTITY_TYPE = "BearSighting"
KINDS = ("sighting", "trace", "damage", "injury")
KIND_JA = {"sighting": "目撃", "trace": "痕跡", "damage": "被害", "injury": "人身被害"}
TRACES = ("dung", "footprints", "feeding", "claw_marks", "other")
TRACE_JA = {"dung": "糞", "footprints": "足跡", "feeding": "食害跡", "claw_marks": "爪痕", "other": "その他"}
SOURCES = ("camera", "resident", "staff", "police", "drone")
SOURCE_JA = {"camera": "カメラ", "resident": "住民", "staff": "職員", "police": "警察", "drone": "ドローン"}
STATES = ("unverified", "verified", "rejected")
STATE_JA = {"unverified": "未確認", "verified": "確認済", "rejected": "却下"}
BEHAVIOURS = ("passing", "staying", "feeding", "approaching", "fleeing", "aggressive", "unknown")
BEHAVIOUR_JA = {"passing": "通過", "staying": "滞在", "feeding": "採食", "approaching": "接近",
                "fleeing": "逃走", "aggressive": "威嚇・攻撃", "unknown": "不明"}
DIRECTIONS = ("N", "NE", "E", "SE", "S", "SW", "W", "NW", "unknown")
MAX_FUTURE = timedelta(minutes=10)  # clocks of phones and cameras drift a little
MAX_AGE = timedelta(days=366)

Kind = Literal["sighting", "trace", "damage", "injury"]
Trace = Literal["dung", "footprints", "feeding", "claw_marks", "other"]
Source = Literal["camera", "resident", "staff", "police", "drone"]
Behaviour = Literal["passing", "staying", "feeding", "approaching", "fleeing", "aggressive", "unknown"]
Direction = Literal["N", "NE", "E", "SE", "S", "SW", "W", "NW", "unknown"]


def entity_id(tenant: str, key: str) -> str:
    return f"urn:ngsi-ld:{ENTITY_TYPE}:{tenant}-{key}"


class SightingIn(BaseModel):
    """What a report says. Times are ISO 8601; one without an offset is taken as JST, as people write it."""

    model_config = ConfigDict(extra="forbid")

    observed_at: datetime = Field(description="when the bear (or sign) was seen; no offset = JST",
                                  examples=["2026-11-26T05:40:00+09:00"])
    lat: float = Field(ge=-90, le=90, description="latitude (WGS84)", examples=[43.0236])
    lon: float = Field(ge=-180, le=180, description="longitude (WGS84)", examples=[141.3221])
    accuracy_m: float | None = Field(default=None, ge=0, le=50_000, description="location accuracy (m)")
    area_name: str | None = Field(default=None, max_length=200, description="place name: 地区, 目標物")
    kind: Kind = Field(default="sighting",
                       description="sighting 目撃 / trace 痕跡 / damage 被害 / injury 人身被害")
    trace: Trace | None = Field(default=None, description="for kind=trace: what was found")
    count: int = Field(default=1, ge=0, le=50, description="bears seen (0: only signs)")
    cubs: int = Field(default=0, ge=0, le=20, description="of them, cubs (子グマ)")
    behaviour: Behaviour = Field(default="unknown", description="what the bear did")
    direction: Direction = Field(default="unknown", description="where it went")
    distance_homes_m: float | None = Field(default=None, ge=0, le=100_000,
                                           description="to the nearest homes (m)")
    distance_school_m: float | None = Field(default=None, ge=0, le=100_000,
                                            description="to the nearest school (m)")
    description: str | None = Field(default=None, max_length=2000, description="free text")
    source: Source = Field(default="staff", description="who saw it")
    camera_id: str | None = Field(default=None, max_length=200, description="CameraTrap entity id (cameras)")
    confidence: float | None = Field(default=None, ge=0, le=1, description="classifier confidence (cameras)")
    photo: str | None = Field(default=None, max_length=300, description="image id of a stored photo")
    response: str | None = Field(default=None, max_length=2000, description="response taken (対応内容)")

    @field_validator("observed_at")
    @classmethod
    def _plausible_time(cls, value: datetime) -> datetime:
        from society5.core.timeutil import JST

        if value.tzinfo is None:
            value = value.replace(tzinfo=JST)
        now = datetime.now(UTC)
        if value - now > MAX_FUTURE:
            raise ValueError("is in the future / 未来の時刻です")
        if now - value > MAX_AGE:
            raise ValueError("is more than a year ago / 1年以上前の時刻です")
        return value.astimezone(UTC)

    @field_validator("cubs")
    @classmethod
    def _cubs_of_count(cls, value: int, info: Any) -> int:
        count = info.data.get("count")
        if count is not None and value > count:
            raise ValueError("cannot be more than count / 頭数より多くできません")
        return value

    @field_validator("area_name", "description", "response", "camera_id", "photo")
    @classmethod
    def _no_control_chars(cls, value: str | None) -> str | None:
        if value is not None and any(ord(c) < 32 and c not in "\n\t" for c in value):
            raise ValueError("contains control characters / 制御文字が含まれています")
        return value.strip() if value is not None else None


def _prop(value: Any, **extra: Any) -> dict[str, Any]:
    return {"type": "Property", "value": value, **extra}


def to_entity(tenant: str, key: str, s: SightingIn, *, municipality: str, municipality_name: str,
              state: str = "unverified", created_at: str | None = None) -> dict[str, Any]:
    """The normalized NGSI-LD entity of a new sighting."""
    observed = iso(s.observed_at)
    ent: dict[str, Any] = {
        "id": entity_id(tenant, key),
        "type": ENTITY_TYPE,
        "dateObserved": _prop(observed),
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [s.lon, s.lat]}},
        "municipalityCode": _prop(municipality),
        "municipalityName": _prop(municipality_name),
        "sightingKind": _prop(s.kind),
        "bearCount": _prop(s.count),
        "cubCount": _prop(s.cubs),
        "behaviour": _prop(s.behaviour),
        "direction": _prop(s.direction),
        "source": _prop(s.source),
        "verificationStatus": _prop(state),
        "dateCreated": _prop(created_at or iso(datetime.now(UTC))),
    }
    optional = {
        "locationAccuracy": (s.accuracy_m, {"unitCode": "MTR"}),
        "areaName": (s.area_name, {}),
        "traceKind": (s.trace, {}),
        "distanceToHomes": (s.distance_homes_m, {"unitCode": "MTR"}),
        "distanceToSchool": (s.distance_school_m, {"unitCode": "MTR"}),
        "description": (s.description, {}),
        "confidence": (s.confidence, {}),
        "photo": (s.photo, {}),
        "responseTaken": (s.response, {}),
    }
    for name, (value, extra) in optional.items():
        if value not in (None, ""):
            ent[name] = _prop(value, **extra)
    if s.camera_id:
        ent["refDevice"] = {"type": "Relationship", "object": s.camera_id}
    return ent


FLAT = {  # entity attribute → flat field
    "dateObserved": "observed_at", "municipalityCode": "municipality",
    "municipalityName": "municipality_name",
    "sightingKind": "kind", "traceKind": "trace", "bearCount": "count", "cubCount": "cubs",
    "behaviour": "behaviour", "direction": "direction", "source": "source", "verificationStatus": "state",
    "locationAccuracy": "accuracy_m", "areaName": "area_name", "distanceToHomes": "distance_homes_m",
    "distanceToSchool": "distance_school_m", "description": "description", "confidence": "confidence",
    "photo": "photo", "responseTaken": "response", "verifiedBy": "verified_by", "dateVerified": "verified_at",
    "alertLevel": "alert_level", "dateCreated": "created_at", "reportCount": "report_count",
}


def from_entity(ent: dict[str, Any]) -> dict[str, Any]:
    """A flat dict of a BearSighting in key-values or normalized form (what the API and pages show)."""
    def value(v: Any) -> Any:
        if isinstance(v, dict):
            if "value" in v:
                return value(v["value"])
            if "object" in v:
                return v["object"]
            if "@value" in v:
                return v["@value"]
        return v

    out: dict[str, Any] = {"id": ent["id"]}
    for attr, field in FLAT.items():
        if attr in ent:
            out[field] = value(ent[attr])
    loc = value(ent.get("location"))
    if isinstance(loc, dict) and loc.get("type") == "Point":
        out["lon"], out["lat"] = loc["coordinates"][:2]
    for rel, field in (("refDevice", "camera_id"), ("mergedInto", "merged_into")):
        if rel in ent:
            out[field] = value(ent[rel])
    out.setdefault("state", "unverified")
    return out


def observed_time(flat: dict[str, Any]) -> datetime:
    return parse_iso(flat["observed_at"])
