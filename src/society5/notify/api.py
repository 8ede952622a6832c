"""HTTP API at ``/notify``: recipients CRUD, the delivery log, templates, and a test message.

The tenant is the ``NGSILD-Tenant`` header, as on the broker (absent: the ``default`` tenant). An operator
of that tenant or an admin may call every operation; ``POST /notify/test`` is for admins only. Errors use the
platform's non-broker shape ``{"error": {"code", "title", "detail", "status"}}`` and name the field to fix.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Header, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from society5.core.auth import DEFAULT_TENANT, Principal, validate_tenant_name
from society5.core.errors import BadRequest, Forbidden, Unauthorized
from society5.core.http import platform_of, principal_of
from society5.notify.notifier import Notifier
from society5.notify.startup import notifier_of
from society5.notify.templates import TEST_TEMPLATE

router = APIRouter(tags=["notify"])
TenantHeader = Header(default=None, alias="NGSILD-Tenant",
                      description="tenant: the municipality's 団体コード (default tenant when absent)")
Channel = Literal["line", "mail", "webhook", "mqtt"]


class QuietHoursIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    start: str = Field(description="local time HH:MM when quiet hours begin", examples=["22:00"])
    end: str = Field(description="local time HH:MM when they end", examples=["07:00"])
    timezone: str = Field(default="Asia/Tokyo", description="IANA time zone of start and end")


class RecipientPatch(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str | None = Field(default=None, description="display name", examples=["北海 太郎"])
    language: Literal["ja", "en"] | None = Field(default=None, description="language of messages")
    channels: dict[str, str] | None = Field(
        default=None, description="address per channel: mail, line (user id), webhook (URL), mqtt (URI)",
        examples=[{"mail": "taro@example.jp", "line": "U" + "0" * 32}])
    order: list[Channel] | None = Field(default=None, description="preferred channels first")
    quiet_hours: QuietHoursIn | None = Field(default=None, description="non-urgent messages wait; null: none")
    webhook_secret: str | None = Field(default=None, description="HMAC-SHA256 key for webhooks (write-only)")
    tags: list[str] | None = Field(default=None, description="labels services select recipients by")
    active: bool | None = Field(default=None, description="inactive recipients are not told anything")


class RecipientIn(RecipientPatch):
    id: str = Field(description="the recipient's id in the tenant", examples=["taro"])
    name: str = Field(description="display name", examples=["北海 太郎"])
    channels: dict[str, str] = Field(
        description="address per channel: mail, line (user id), webhook (URL), mqtt (URI)")


class TestIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    recipient: str = Field(description="id of the recipient to send the test message to")
    channel: Channel | None = Field(default=None, description="only this channel (default: the route)")


def tenant_name(value: str | None) -> str:
    try:
        return validate_tenant_name(value) if value is not None else DEFAULT_TENANT
    except BadRequest as err:
        raise BadRequest(f"NGSILD-Tenant: {err.detail}") from None


def check_access(request: Request, tenant: str, admin_only: bool = False) -> Principal:
    who = principal_of(request)
    if who.anonymous:
        raise Unauthorized("the notify API needs an operator or admin key: "
                           "send 'Authorization: Bearer <key>'")
    if who.is_admin:
        return who
    if admin_only:
        raise Forbidden("only an admin may do this")
    if who.role != "operator":
        raise Forbidden(f"role {who.role!r} may not use the notify API; an operator of the tenant may")
    if who.tenant != tenant:
        raise Forbidden(f"this key belongs to tenant {who.tenant!r}, not {tenant!r}")
    return who


def _notifier(request: Request, tenant: str | None, admin_only: bool = False) -> tuple[Notifier, str]:
    name = tenant_name(tenant)
    check_access(request, name, admin_only)
    return notifier_of(platform_of(request)), name


def _given(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(exclude_unset=True)


@router.get("/recipients", summary="List the tenant's recipients")
def list_recipients(request: Request, tag: str | None = Query(None, description="only those with this tag"),
                    active: bool | None = Query(None, description="only active (true) or inactive (false)"),
                    tenant: str | None = TenantHeader) -> list[dict[str, Any]]:
    notifier, name = _notifier(request, tenant)
    return [r.public() for r in notifier.recipients.list(name, tag=tag, active=active)]


@router.post("/recipients", status_code=201, summary="Create a recipient")
def create_recipient(request: Request, response: Response, body: RecipientIn,
                     tenant: str | None = TenantHeader) -> dict[str, Any]:
    notifier, name = _notifier(request, tenant)
    created = notifier.recipients.create(name, _given(body))
    response.headers["Location"] = f"/notify/recipients/{created.id}"
    return created.public()


@router.get("/recipients/{rid}", summary="Get one recipient")
def get_recipient(request: Request, rid: str, tenant: str | None = TenantHeader) -> dict[str, Any]:
    notifier, name = _notifier(request, tenant)
    return notifier.recipients.get(name, rid).public()


@router.patch("/recipients/{rid}", summary="Change some fields of a recipient")
def update_recipient(request: Request, rid: str, body: RecipientPatch,
                     tenant: str | None = TenantHeader) -> dict[str, Any]:
    notifier, name = _notifier(request, tenant)
    return notifier.recipients.update(name, rid, _given(body)).public()


@router.delete("/recipients/{rid}", status_code=204, summary="Delete a recipient")
def delete_recipient(request: Request, rid: str, tenant: str | None = TenantHeader) -> Response:
    notifier, name = _notifier(request, tenant)
    notifier.recipients.delete(name, rid)
    return Response(status_code=204)


@router.get("/deliveries", summary="The delivery log, newest first")
def list_deliveries(request: Request,
                    status: Literal["queued", "deferred", "failed", "sent", "dead"] | None = Query(
                        None, description="only this status"),
                    recipient: str | None = Query(None, description="only this recipient"),
                    request_id: str | None = Query(None, alias="request", description="only one tell() call"),
                    limit: int = Query(50, ge=1, le=500), offset: int = Query(0, ge=0, le=2**53),
                    tenant: str | None = TenantHeader) -> list[dict[str, Any]]:
    notifier, name = _notifier(request, tenant)
    found = notifier.deliveries.list(name, status=status, recipient=recipient, request=request_id,
                                     limit=limit, offset=offset)
    return [d.public() for d in found]


@router.get("/deliveries/{delivery_id}", summary="One delivery, with the message text")
def get_delivery(request: Request, delivery_id: str, tenant: str | None = TenantHeader) -> dict[str, Any]:
    notifier, name = _notifier(request, tenant)
    found = notifier.deliveries.one(name, delivery_id)
    return {**found.public(), "text": found.body_text}


@router.get("/templates", summary="Names of the registered message templates")
def list_templates(request: Request, tenant: str | None = TenantHeader) -> list[str]:
    notifier, _ = _notifier(request, tenant)
    return notifier.templates.names()


@router.post("/test", status_code=202, summary="Send a test message to a recipient (admin)")
def send_test(request: Request, body: TestIn, tenant: str | None = TenantHeader) -> dict[str, Any]:
    notifier, name = _notifier(request, tenant, admin_only=True)
    person = notifier.recipients.get(name, body.recipient)
    if body.channel is not None and body.channel not in person.channels:
        raise BadRequest(f"channel: recipient {person.id!r} has no {body.channel} address")
    sender = principal_of(request).name or "admin"
    # A test is asked for now, so it ignores quiet hours (rate limits still apply).
    ids = notifier.tell([person.id], TEST_TEMPLATE.name, {"name": person.name, "sender": sender}, tenant=name,
                        urgent=True, channels=[body.channel] if body.channel else None)
    if not ids:
        raise BadRequest(f"recipient: {person.id!r} is inactive or has no channel this server can use")
    return {"deliveries": ids}
