"""HTTP API of camera images, cameras, drone detections and drone dispatch tasks, at ``/bears``.

Cameras post frames with a device key of their tenant (staff may too); staff see every image of their
tenant, the public only images of verified sightings, never an image of people. An image is looked up by its
id (unguessable) so ``<img>`` tags work without a tenant header; the row's tenant decides who may see it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from society5.core.auth import Principal
from society5.core.errors import BadRequest, Forbidden, NotFound, PayloadTooLarge, UnsupportedMediaType
from society5.core.http import platform_of
from society5.services.bears import access, cameras, dispatch, images

router = APIRouter(tags=["bears"])
FORM_OVERHEAD = 64 * 1024
_IMAGE_FORM = {"type": "object", "required": ["file", "camera_id"], "properties": {
    "file": {"type": "string", "format": "binary", "description": "JPEG or PNG"},
    "camera_id": {"type": "string", "description": "the CameraTrap id or its key"},
    "taken_at": {"type": "string", "format": "date-time", "description": "capture time; default: EXIF"},
    "battery_level": {"type": "number", "minimum": 0, "maximum": 1}}}
_DRONE_FORM = {"type": "object", "required": ["file", "lat", "lon"], "properties": {
    "file": {"type": "string", "format": "binary", "description": "the (thermal) frame, JPEG or PNG"},
    "lat": {"type": "number"}, "lon": {"type": "number"},
    "taken_at": {"type": "string", "format": "date-time"},
    "drone": {"type": "string", "description": "the drone's name (1–64 letters, digits, - _)"}}}


def _form_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


async def _read_form(request: Request, max_bytes: int, allowed: set[str]) -> tuple[dict[str, str], bytes]:
    """The text fields and the bytes of ``file`` from a multipart body, refusing what is too large early."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "multipart/form-data":
        raise UnsupportedMediaType("Content-Type: send multipart/form-data with the image in 'file' "
                                   "/ multipart/form-data で file に画像を入れて送ってください")
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > max_bytes + FORM_OVERHEAD:
        raise PayloadTooLarge(f"file: larger than {max_bytes // 2**20} MB / 画像が大きすぎます")
    form = await request.form(max_files=1, max_fields=20)
    try:
        fields: dict[str, str] = {}
        data: bytes | None = None
        for key, value in form.multi_items():
            if key not in allowed and key != "file":
                raise BadRequest(f"{key}: unknown field; send {', '.join(sorted(allowed | {'file'}))} "
                                 "/ 不明な項目です")
            if isinstance(value, UploadFile):
                if key != "file":
                    raise BadRequest(f"{key}: only 'file' may be a file / ファイルは file だけ送れます")
                data = await value.read(max_bytes + 1)
                if len(data) > max_bytes:
                    raise PayloadTooLarge(f"file: larger than {max_bytes // 2**20} MB / 画像が大きすぎます")
            elif key == "file":
                raise BadRequest("file: send the image as a file part / 画像をファイルとして送ってください")
            elif value.strip():
                fields[key] = value.strip()
    finally:
        await form.close()
    if not data:
        raise BadRequest("file: required / 画像ファイルを送ってください")
    return fields, data


def _number(fields: dict[str, str], name: str, lo: float, hi: float) -> float | None:
    if name not in fields:
        return None
    try:
        value = float(fields[name])
    except ValueError:
        raise BadRequest(f"{name}: {fields[name]!r} is not a number / 数値で指定してください") from None
    if not lo <= value <= hi:
        raise BadRequest(f"{name}: must be between {lo:g} and {hi:g} "
                         f"/ {lo:g}〜{hi:g} の範囲で指定してください")
    return value


def _device_may_post(who: Principal, device_id: str) -> None:
    """A device key writes only ids under its prefix: one camera's key cannot post as another camera."""
    if who.role == "device" and who.entity_prefix and not device_id.startswith(who.entity_prefix):
        raise Forbidden(f"camera_id: this device key may post only for ids starting with "
                        f"{who.entity_prefix!r} "
                        "/ この機器キーではこのカメラの画像を送れません")


async def _upload(request: Request, tenant: str | None,
                  allowed: set[str]) -> tuple[str, Any, Any, dict[str, str], bytes]:
    """(tenant, caller, platform, form fields, image bytes) of a frame upload, checked in that order: who
    may post, whether the vision extra is installed, then the form itself (size-limited while it streams)."""
    name = access.tenant_name(tenant)
    who = access.device_or_staff(request, name)
    images.require_vision()
    platform = platform_of(request)
    fields, data = await _read_form(request, platform.settings.bears_max_image_mb * 2**20, allowed)
    return name, who, platform, fields, data


# -- images ------------------------------------------------------------------------------------------------
@router.post("/images", status_code=201, summary="A camera-trap frame (device key of the tenant, or staff)",
             openapi_extra=_form_body(_IMAGE_FORM))
async def post_image(request: Request, response: Response,
                     tenant: str | None = access.TenantHeader) -> dict[str, Any]:
    name, who, platform, fields, data = await _upload(request, tenant,
                                                      {"camera_id", "taken_at", "battery_level"})
    if "camera_id" not in fields:
        raise BadRequest("camera_id: required / カメラを指定してください")
    try:
        _device_may_post(who, cameras.resolve_id(name, fields["camera_id"]))
    except NotFound as err:
        raise BadRequest(err.detail) from None
    taken_at = images.parse_time(fields.get("taken_at"))
    battery = _number(fields, "battery_level", 0, 1)
    out = await run_in_threadpool(lambda: images.ingest(platform, name, data, camera_id=fields["camera_id"],
                                                        source="upload", taken_at=taken_at,
                                                        battery_level=battery))
    if out.get("duplicate"):  # the same file again: the stored frame, not a new one
        response.status_code = 200
    return out


@router.post("/drone-detections", status_code=201, summary="A drone's (thermal) frame at its position",
             openapi_extra=_form_body(_DRONE_FORM))
async def post_drone_detection(request: Request, response: Response,
                               tenant: str | None = access.TenantHeader) -> dict[str, Any]:
    name, who, platform, fields, data = await _upload(request, tenant, {"lat", "lon", "taken_at", "drone"})
    lat, lon = _number(fields, "lat", -90, 90), _number(fields, "lon", -180, 180)
    if lat is None or lon is None:
        raise BadRequest("lat/lon: required (the drone's position) / ドローンの位置を指定してください")
    drone = fields.get("drone", "drone")
    if not cameras.KEY_RE.match(drone):
        raise BadRequest("drone: use 1–64 lower-case letters, digits, '-' or '_' "
                         "/ 英小文字・数字で指定してください")
    taken_at = images.parse_time(fields.get("taken_at"))
    device = images.drone_device_id(name, drone)
    _device_may_post(who, device)
    out = await run_in_threadpool(lambda: images.ingest(platform, name, data, camera_id=device,
                                                        source="drone", taken_at=taken_at, lat=lat, lon=lon))
    if out.get("duplicate"):  # the same file again: the stored frame, not a new one
        response.status_code = 200
    return out


@router.get("/images", summary="Images of the tenant, newest first (staff)")
def list_images(request: Request, camera: str | None = Query(None, description="CameraTrap id or key"),
                label: Literal["bear", "other_animal", "person", "vehicle", "empty"] | None = Query(None),
                since: str | None = Query(None, description="taken at or after (ISO 8601; no offset = JST)"),
                days: float | None = Query(None, gt=0, le=366, description="… or this many days back"),
                event: str | None = Query(None, max_length=36, description="one burst (event_id)"),
                limit: int = Query(200, ge=1, le=1000),
                tenant: str | None = access.TenantHeader) -> list[dict[str, Any]]:
    name = access.tenant_name(tenant)
    access.staff(request, name, write=False)
    start = images.parse_time(since, "since")
    if start is None and days is not None:
        start = datetime.now(UTC) - timedelta(days=days)
    camera_id = None
    if camera:
        try:
            camera_id = cameras.resolve_id(name, camera)
        except NotFound:
            camera_id = camera  # drones are named by their device id
    return images.list_images(platform_of(request), name, camera_id=camera_id, label=label, since=start,
                              event_id=event, limit=limit)


def _visible_row(request: Request, image_id: str) -> dict[str, Any]:
    """The image's row if the caller may see it: staff of its tenant, or anyone once it is public."""
    if len(image_id) > 36:
        raise NotFound(f"no image {image_id!r} / 該当する画像がありません")
    row = images.get_row(platform_of(request), image_id)
    if access.is_staff_of(request, row["tenant"]):
        return row
    if row["public"] and row["label"] != "person" and row.get("path"):
        return row
    raise NotFound(f"no image {image_id!r} / 該当する画像がありません")


def _file(request: Request, image_id: str, thumb: bool) -> FileResponse:
    row = _visible_row(request, image_id)
    path = images.file_path(platform_of(request), row, thumb=thumb)
    if path is None or not path.is_file():
        raise NotFound(f"image {image_id!r} has been deleted / 画像は削除済みです")
    cache = "public, max-age=300" if row["public"] else "private, max-age=300"
    return FileResponse(path, media_type="image/jpeg",
                        headers={"Cache-Control": cache, "X-Content-Type-Options": "nosniff"})


@router.get("/images/{image_id}", summary="The stored image (EXIF-free JPEG)", response_class=FileResponse)
def get_image(request: Request, image_id: str) -> FileResponse:
    return _file(request, image_id, thumb=False)


@router.get("/images/{image_id}/thumb", summary="Its thumbnail (JPEG, 320 px)", response_class=FileResponse)
def get_thumb(request: Request, image_id: str) -> FileResponse:
    return _file(request, image_id, thumb=True)


@router.get("/images/{image_id}/info", summary="What is known of an image (staff)")
def get_image_info(request: Request, image_id: str) -> dict[str, Any]:
    row = _visible_row(request, image_id)
    if not access.is_staff_of(request, row["tenant"]):
        raise NotFound(f"no image {image_id!r} / 該当する画像がありません")
    return images.view(row)


# -- cameras -----------------------------------------------------------------------------------------------
@router.get("/cameras", summary="The tenant's camera traps and their state (staff)")
def list_cameras(request: Request, tenant: str | None = access.TenantHeader) -> list[dict[str, Any]]:
    name = access.tenant_name(tenant)
    access.staff(request, name, write=False)
    return cameras.list_cameras(platform_of(request), name)


@router.post("/cameras", status_code=201, summary="Register a camera trap (staff)")
def create_camera(request: Request, body: cameras.CameraIn,
                  tenant: str | None = access.TenantHeader) -> dict[str, Any]:
    name = access.tenant_name(tenant)
    access.staff(request, name)
    return cameras.create(platform_of(request), name, body)


@router.get("/cameras/{camera_id}", summary="One camera trap and its latest images (staff)")
def get_camera(request: Request, camera_id: str, recent: int = Query(12, ge=0, le=100),
               tenant: str | None = access.TenantHeader) -> dict[str, Any]:
    name = access.tenant_name(tenant)
    access.staff(request, name, write=False)
    platform = platform_of(request)
    cam = cameras.get(platform, name, camera_id)
    cam["recent"] = images.list_images(platform, name, camera_id=cam["id"], limit=recent) if recent else []
    return cam


@router.patch("/cameras/{camera_id}", summary="Change a camera trap: place, name, status (staff)")
def patch_camera(request: Request, camera_id: str, body: cameras.CameraPatch,
                 tenant: str | None = access.TenantHeader) -> dict[str, Any]:
    name = access.tenant_name(tenant)
    access.staff(request, name)
    return cameras.update(platform_of(request), name, camera_id, body)


# -- drone dispatch tasks ----------------------------------------------------------------------------------
@router.post("/dispatches", status_code=201, summary="Ask a drone team to fly to a sighting or image (staff)")
def create_dispatch(request: Request, body: dispatch.DispatchIn,
                    tenant: str | None = access.TenantHeader) -> dict[str, Any]:
    name = access.tenant_name(tenant)
    who = access.staff(request, name)
    return dispatch.create(platform_of(request), name, body, who=who.name or who.role)


@router.get("/dispatches", summary="Drone dispatch tasks of the tenant, newest first (staff)")
def list_dispatches(request: Request,
                    status: str | None = Query(None, description="only these (open, assigned, done, "
                                                                 "cancelled), comma-separated"),
                    sighting_id: str | None = Query(None, max_length=200),
                    tenant: str | None = access.TenantHeader) -> list[dict[str, Any]]:
    name = access.tenant_name(tenant)
    access.staff(request, name, write=False)
    statuses = [s.strip() for s in (status or "").split(",") if s.strip()]
    bad = [s for s in statuses if s not in dispatch.STATUSES]
    if bad:
        raise BadRequest(f"status: unknown {bad[0]!r}; one of {', '.join(dispatch.STATUSES)}")
    return dispatch.list_dispatches(platform_of(request), name, statuses=statuses or None,
                                    sighting_id=sighting_id)


@router.get("/dispatches/{dispatch_id}", summary="One dispatch task (staff)")
def get_dispatch(request: Request, dispatch_id: str,
                 tenant: str | None = access.TenantHeader) -> dict[str, Any]:
    name = access.tenant_name(tenant)
    access.staff(request, name, write=False)
    return dispatch.get(platform_of(request), name, dispatch_id)


@router.patch("/dispatches/{dispatch_id}", summary="Assign, finish or cancel a dispatch task (staff)")
def patch_dispatch(request: Request, dispatch_id: str, body: dispatch.DispatchPatch,
                   tenant: str | None = access.TenantHeader) -> dict[str, Any]:
    name = access.tenant_name(tenant)
    access.staff(request, name)
    return dispatch.update(platform_of(request), name, dispatch_id, body)
