"""``POST /bears/reports``: a resident reports a bear, no account needed (JSON, or a form with a photo).

The report goes to the municipality nearest the point (a first guess staff can correct) and is shown as
未確認 until staff verify it. Everything is checked before anything is written: the fields, the place
(Hokkaido, on land, a municipality that uses this platform) and the reporter's hourly limit; only then is
the photo stored (EXIF-free, not public until verified) and the sighting created, so a refused report
leaves nothing behind.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from society5.core.errors import BadRequest, OperationNotSupported, PayloadTooLarge, UnsupportedMediaType
from society5.core.http import platform_of
from society5.services.bears import access, geo, images, models
from society5.services.bears.sightings import client_key, sightings_of, validation_message

router = APIRouter(tags=["bears"])
FORM_OVERHEAD = 256 * 1024  # room for the text fields and multipart boundaries beside the photo
RECEIPT_JA = ("通報を受け付けました。職員が確認するまで「未確認」として地図に表示されます。"
              "危険が迫っている場合はすぐに110番へ通報してください。")
RECEIPT_EN = ("Thank you: your report is on the map as unverified until staff check it. "
              "If you are in danger, call 110 now.")


class ReportIn(BaseModel):
    """What a resident may say about a bear; the rest of a sighting (source, state, photo id) is set here."""

    model_config = ConfigDict(extra="forbid")

    observed_at: datetime | None = Field(default=None, description="when it was seen; no offset = JST; "
                                         "empty = now")
    lat: float = Field(ge=-90, le=90, description="latitude (WGS84)", examples=[43.0236])
    lon: float = Field(ge=-180, le=180, description="longitude (WGS84)", examples=[141.3221])
    accuracy_m: float | None = Field(default=None, ge=0, le=50_000, description="GPS accuracy (m)")
    kind: models.Kind = Field(default="sighting", description="sighting 目撃 / trace 痕跡 / damage 被害 / "
                              "injury 人身被害")
    trace: models.Trace | None = Field(default=None, description="for kind=trace: what was found")
    count: int = Field(default=1, ge=0, le=50, description="bears seen")
    cubs: int = Field(default=0, ge=0, le=20, description="of them, cubs (子グマ)")
    behaviour: models.Behaviour = Field(default="unknown")
    direction: models.Direction = Field(default="unknown")
    area_name: str | None = Field(default=None, max_length=200, description="place: 地区, 目標物")
    description: str | None = Field(default=None, max_length=2000)
    contact: str | None = Field(default=None, max_length=200,
                                description="phone or mail for staff questions (never published)")

    @field_validator("contact")
    @classmethod
    def _clean_contact(cls, value: str | None) -> str | None:
        if value is not None and any(ord(c) < 32 for c in value):
            raise ValueError("contains control characters / 制御文字が含まれています")
        return value.strip() or None if value is not None else None

    def sighting(self, photo: str | None) -> dict[str, Any]:
        """The sighting this report makes (checked by ``Sightings.parse``/``create``)."""
        data = self.model_dump(exclude={"contact"}, exclude_none=True)
        data.setdefault("observed_at", datetime.now(UTC))
        return {**data, "source": "resident", "photo": photo}


def parse_report(data: dict[str, Any]) -> ReportIn:
    try:
        return ReportIn.model_validate(data)
    except ValidationError as err:
        raise BadRequest(validation_message(err)) from None


def tenant_for(platform: Any, lat: float, lon: float) -> str:
    """The tenant a report belongs to: the nearest municipality, if it uses this platform."""
    try:
        geo.check_location(lat, lon)
    except geo.OutsideHokkaido as err:
        raise BadRequest(f"lat/lon: {err}") from None
    muni = geo.nearest_municipality(lat, lon)
    if not platform.tenants.exists(muni.code):
        raise OperationNotSupported(
            f"lat/lon: {muni.name} ({muni.code}) does not take reports on this platform; please call the "
            f"municipality or 110 / この地点の市町村（{muni.name}）はこの通報窓口に参加していません。"
            "役場または110番へ電話してください")
    return muni.code


async def _read_body(request: Request, max_bytes: int) -> tuple[dict[str, Any], bytes | None]:
    """The report's fields and the photo's bytes (if any) from a JSON or form body."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > max_bytes + FORM_OVERHEAD:
        raise PayloadTooLarge(f"photo: larger than {max_bytes // 2**20} MB / 写真が大きすぎます")
    if ctype == "application/json":
        try:
            data = json.loads(await request.body())
        except ValueError:
            raise BadRequest("body: not valid JSON / JSON として読めません") from None
        if not isinstance(data, dict):
            raise BadRequest("body: expected a JSON object / JSON オブジェクトを送ってください")
        return data, None
    if ctype not in ("multipart/form-data", "application/x-www-form-urlencoded"):
        raise UnsupportedMediaType("Content-Type: send application/json or multipart/form-data "
                                   "/ JSON またはフォーム形式で送ってください")
    form = await request.form(max_files=1, max_fields=40)
    fields: dict[str, Any] = {}
    photo: bytes | None = None
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            if key != "photo":
                raise BadRequest(f"{key}: only 'photo' may be a file / ファイルは photo だけ送れます")
            photo = await value.read(max_bytes + 1)
            if len(photo) > max_bytes:
                raise PayloadTooLarge(f"photo: larger than {max_bytes // 2**20} MB / 写真が大きすぎます")
            photo = photo or None  # an empty file input sends a part with no bytes
        elif value != "":  # a form's blank fields mean "not given"
            fields[key] = value
    await form.close()
    return fields, photo


_FORM_SCHEMA = {"type": "object", "required": ["lat", "lon"], "properties": {
    **ReportIn.model_json_schema()["properties"], "photo": {"type": "string", "format": "binary"}}}


@router.post("/reports", status_code=201,
             summary="Report a bear (residents, no account; JSON, or a form with a photo)",
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/json": {"schema": ReportIn.model_json_schema()},
                 "multipart/form-data": {"schema": _FORM_SCHEMA}}}})
async def post_report(request: Request) -> dict[str, Any]:
    platform = platform_of(request)
    fields, photo = await _read_body(request, platform.settings.bears_max_image_mb * 2**20)
    address = request.client.host if request.client else "unknown"
    return await run_in_threadpool(file_report, platform, fields, photo, address)


def file_report(platform: Any, fields: dict[str, Any], photo: bytes | None, address: str) -> dict[str, Any]:
    """Check, then store a resident's report; the public view of the new sighting and a receipt."""
    settings = platform.settings
    report = parse_report(fields)
    tenant = tenant_for(platform, report.lat, report.lon)
    # A sighting with a placeholder photo id validates everything the real one will (time, cubs ≤ count …).
    sightings = sightings_of(platform)
    sightings.parse(report.sighting("pending" if photo else None))
    # The client's address counts reports; behind a proxy, uvicorn's --proxy-headers makes it the real one.
    client = client_key(address, settings.effective_secret())
    sightings.check_rate(client)  # before the photo is stored: a refused report must leave nothing behind
    photo_id = None
    if photo is not None:
        stored = images.store_photo(platform, tenant, photo, source="resident")
        photo_id = str(stored["id"])
    made = sightings.create(tenant, report.sighting(photo_id), client=client, contact=report.contact)
    view = access.public_view(made, settings.bears_public_decimals) or {}
    return {**view, "message": RECEIPT_JA, "message_en": RECEIPT_EN}
