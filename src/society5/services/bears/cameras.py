"""``CameraTrap``: a trail camera of a municipality, as an NGSI-LD entity in the style of FIWARE ``Device``.

Staff register a camera (where it stands, a short ``key`` that names it in the watched folder and in MQTT
topics); the image pipeline keeps its state current: ``dateLastValueReported``, ``lastLabel``,
``imageCount``, ``batteryLevel`` (0–1, as in ``Device``) and ``status`` (``installed`` until the first image,
then ``active``; staff may set ``inactive`` or ``maintenance``). The flat form (:func:`flat`) is what the API
and the staff console show; ``silent`` marks an active camera that has sent nothing for SILENT_AFTER.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from society5.core.errors import AlreadyExists, BadRequest, NotFound
from society5.core.timeutil import iso, now_iso, parse_iso
from society5.services.bears import geo
from society5.services.bears.sightings import validation_message

ENTITY_TYPE = "CameraTrap"
KEY_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
STATUSES = ("installed", "active", "inactive", "maintenance")
STATUS_JA = {"installed": "設置済", "active": "稼働中", "inactive": "停止", "maintenance": "点検中"}
SILENT_AFTER = timedelta(hours=48)  # trail cameras send at least a daily test shot when they work

Status = Literal["active", "inactive", "maintenance"]


def _no_control(value: str | None) -> str | None:
    if value is not None and any(ord(c) < 32 for c in value):
        raise ValueError("contains control characters / 制御文字が含まれています")
    return value.strip() if value is not None else None


class CameraIn(BaseModel):
    """A camera as staff register it."""

    model_config = ConfigDict(extra="forbid")
    key: str = Field(description="short name of the camera: lower-case letters, digits, - and _ (the folder "
                                 "and MQTT topic level it sends under)", examples=["minami-01"])
    name: str = Field(min_length=1, max_length=200, description="名称", examples=["南区 藻岩山麓 1号機"])
    lat: float = Field(ge=-90, le=90, description="latitude (WGS84)")
    lon: float = Field(ge=-180, le=180, description="longitude (WGS84)")
    area_name: str | None = Field(default=None, max_length=200, description="地区名")
    distance_homes_m: float | None = Field(default=None, ge=0, le=100_000, description="to the nearest homes")
    description: str | None = Field(default=None, max_length=2000)

    @field_validator("key")
    @classmethod
    def _key(cls, value: str) -> str:
        if not KEY_RE.match(value):
            raise ValueError("use 1–64 lower-case letters, digits, '-' or '_', starting with a letter or "
                             "digit / 英小文字・数字・-・_ で指定してください")
        return value

    _clean = field_validator("name", "area_name", "description")(_no_control)


class CameraPatch(BaseModel):
    """What staff may change later (the key is fixed: it names the camera's folder and topic)."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, min_length=1, max_length=200)
    lat: float | None = Field(default=None, ge=-90, le=90)
    lon: float | None = Field(default=None, ge=-180, le=180)
    area_name: str | None = Field(default=None, max_length=200)
    distance_homes_m: float | None = Field(default=None, ge=0, le=100_000)
    description: str | None = Field(default=None, max_length=2000)
    status: Status | None = None
    battery_level: float | None = Field(default=None, ge=0, le=1)

    _clean = field_validator("name", "area_name", "description")(_no_control)


def entity_id(tenant: str, key: str) -> str:
    return f"urn:ngsi-ld:{ENTITY_TYPE}:{tenant}-{key}"


def _prop(value: Any, **extra: Any) -> dict[str, Any]:
    return {"type": "Property", "value": value, **extra}


def _check_place(lat: float, lon: float) -> None:
    try:
        geo.check_location(lat, lon)
    except geo.OutsideHokkaido as err:
        raise BadRequest(f"lat/lon: {err}") from None


FLAT = {"cameraKey": "key", "name": "name", "areaName": "area_name", "distanceToHomes": "distance_homes_m",
        "description": "description", "status": "status", "dateLastValueReported": "last_seen",
        "lastLabel": "last_label", "batteryLevel": "battery_level", "imageCount": "image_count",
        "dateCreated": "created_at", "municipalityCode": "municipality"}


def flat(ent: dict[str, Any], now: datetime | None = None) -> dict[str, Any]:
    """The key-values entity as the API shows it."""
    out: dict[str, Any] = {"id": ent["id"]}
    for attr, name in FLAT.items():
        if attr in ent:
            out[name] = ent[attr]
    loc = ent.get("location")
    if isinstance(loc, dict) and loc.get("type") == "Point":
        out["lon"], out["lat"] = loc["coordinates"][:2]
    out.setdefault("image_count", 0)
    out["status_ja"] = STATUS_JA.get(out.get("status", ""), out.get("status", ""))
    last = out.get("last_seen")
    out["silent"] = bool(out.get("status") == "active" and last
                         and (now or datetime.now(UTC)) - parse_iso(last) > SILENT_AFTER)
    return out


def _broker(platform: Any) -> Any:
    broker = platform.parts.get("broker")
    if broker is None:
        raise RuntimeError("the bears service needs the broker service started on the platform")
    return broker


def create(platform: Any, tenant: str, data: CameraIn | dict[str, Any]) -> dict[str, Any]:
    try:
        cam = data if isinstance(data, CameraIn) else CameraIn.model_validate(data)
    except ValidationError as err:
        raise BadRequest(validation_message(err)) from None
    _check_place(cam.lat, cam.lon)
    ent: dict[str, Any] = {
        "id": entity_id(tenant, cam.key), "type": ENTITY_TYPE,
        "cameraKey": _prop(cam.key), "name": _prop(cam.name),
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [cam.lon, cam.lat]}},
        "municipalityCode": _prop(geo.nearest_municipality(cam.lat, cam.lon).code),
        "status": _prop("installed"), "imageCount": _prop(0), "dateCreated": _prop(now_iso()),
    }
    for attr, value, extra in (("areaName", cam.area_name, {}), ("description", cam.description, {}),
                               ("distanceToHomes", cam.distance_homes_m, {"unitCode": "MTR"})):
        if value not in (None, ""):
            ent[attr] = _prop(value, **extra)
    try:
        _broker(platform).create_entity(tenant, ent)
    except AlreadyExists:
        raise AlreadyExists(f"key: camera {cam.key!r} already exists "
                            "/ このキーのカメラは登録済みです") from None
    return get(platform, tenant, ent["id"])


def resolve_id(tenant: str, ref: str) -> str:
    """A camera's entity id from its id or its key (cameras and folders name it by key)."""
    if ref.startswith(f"urn:ngsi-ld:{ENTITY_TYPE}:"):
        return ref
    if not KEY_RE.match(ref):
        raise NotFound(f"camera_id: no camera {ref!r} / 該当するカメラがありません")
    return entity_id(tenant, ref)


def get(platform: Any, tenant: str, ref: str) -> dict[str, Any]:
    cid = resolve_id(tenant, ref)
    try:
        return flat(_broker(platform).get(tenant, cid, fmt="keyValues"))
    except NotFound:
        raise NotFound(f"camera_id: no camera {ref!r} / 該当するカメラがありません") from None


def list_cameras(platform: Any, tenant: str, limit: int = 1000) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    found = _broker(platform).find(tenant, type=ENTITY_TYPE, fmt="keyValues", limit=limit)
    out = [flat(e, now) for e in found]
    out.sort(key=lambda c: c.get("key", ""))
    return out


def update(platform: Any, tenant: str, ref: str, patch: CameraPatch | dict[str, Any]) -> dict[str, Any]:
    try:
        p = patch if isinstance(patch, CameraPatch) else CameraPatch.model_validate(patch)
    except ValidationError as err:
        raise BadRequest(validation_message(err)) from None
    current = get(platform, tenant, ref)
    changes = p.model_dump(exclude_unset=True, exclude_none=True)
    if not changes:
        return current
    upd: dict[str, Any] = {"id": current["id"], "type": ENTITY_TYPE}
    if "lat" in changes or "lon" in changes:
        lat, lon = changes.pop("lat", current["lat"]), changes.pop("lon", current["lon"])
        _check_place(lat, lon)
        upd["location"] = {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [lon, lat]}}
    names = {v: k for k, v in FLAT.items()}
    for name, value in changes.items():
        upd[names[name]] = _prop(value, **({"unitCode": "MTR"} if name == "distance_homes_m" else {}))
    _broker(platform).upsert(tenant, [upd], mode="update")
    return get(platform, tenant, current["id"])


def record_image(platform: Any, tenant: str, camera: dict[str, Any], *, taken_at: datetime,
                 label: str | None, battery_level: float | None = None) -> None:
    """The pipeline's note of a new frame. Callers hold the camera's lock (the count is read, then
    written)."""
    upd: dict[str, Any] = {"id": camera["id"], "type": ENTITY_TYPE,
                           "imageCount": _prop(int(camera.get("image_count") or 0) + 1)}
    stamp = iso(taken_at)
    if not camera.get("last_seen") or stamp >= camera["last_seen"]:  # folders deliver out of order
        upd["dateLastValueReported"] = _prop(stamp)
        if label:
            upd["lastLabel"] = _prop(label)
    if camera.get("status") == "installed":
        upd["status"] = _prop("active")
    if battery_level is not None:
        upd["batteryLevel"] = _prop(battery_level)
    _broker(platform).upsert(tenant, [upd], mode="update")
