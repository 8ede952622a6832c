"""HTTP API of alerts and subscriptions at ``/bears``.

Staff manage the tenant's area subscriptions (``/bears/subscriptions``) and read the alert log; residents sign
up without an account (``POST /bears/subscribe`` → a confirmation mail → ``/bears/subscribe/confirm``) and
leave through the link in every alert (``/bears/unsubscribe``). The public reads active alerts (rounded
locations), as JSON or as CAP 1.2
(``/bears/alerts.cap``, one document per alert at ``/bears/alerts/{id}.cap``).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response
from markupsafe import escape
from starlette.concurrency import run_in_threadpool

from society5.core.errors import ApiError, OperationNotSupported
from society5.core.http import platform_of
from society5.core.timeutil import now_iso
from society5.services.bears import access, alerts, cap, geo
from society5.services.bears.sightings import client_key
from society5.services.bears.subscriptions import (
    PublicSubscribeIn,
    SubscriptionIn,
    SubscriptionPatch,
    subscriptions_of,
)

router = APIRouter(tags=["bears"])
PUBLIC_ALERT_FIELDS = ("id", "tenant", "level", "radius_m", "issued_at", "expires_at", "status", "version")


def public_alert(row: dict[str, Any], decimals: int) -> dict[str, Any]:
    info = row["info"]
    out = {k: row[k] for k in PUBLIC_ALERT_FIELDS}
    out.update(
        sighting_id=row["sighting_id"],
        lat=round(row["lat"], decimals),
        lon=round(row["lon"], decimals),
        level_ja=info["level_ja"],
        level_en=info["level_en"],
        headline=info["headline_ja"],
        headline_en=info["headline_en"],
        kind=info["kind"],
        municipality=info.get("municipality"),
        municipality_name=info.get("municipality_name"),
        area_name=info.get("area_name"),
        observed_at=info["observed_at"],
        msg_type=cap.msg_type(row),
    )
    return out


def _tenants(request: Request, municipality: str | None) -> list[str] | None:
    return [access.tenant_name(municipality)] if municipality else None


# -- alerts ------------------------------------------------------------------------------------------------
@router.get("/alerts", summary="Active alerts (public: rounded locations; all municipalities, or one)")
def list_alerts(
    request: Request, municipality: str | None = Query(None, description="only this tenant")
) -> list[dict[str, Any]]:
    platform = platform_of(request)
    rows = alerts.active(platform, _tenants(request, municipality))
    return [public_alert(r, platform.settings.bears_public_decimals) for r in rows]


@router.get("/alerts/log", summary="Every alert of the tenant with its deliveries (staff)")
def alert_log(
    request: Request,
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0, le=2**53),
    tenant: str | None = access.TenantHeader,
) -> list[dict[str, Any]]:
    name = access.tenant_name(tenant)
    access.staff(request, name, write=False)
    return alerts.log_of(platform_of(request), name, limit, offset)


@router.get(
    "/alerts.cap",
    summary="Atom feed of active (and withdrawn) alerts, each a CAP 1.2 document",
    response_class=Response,
)
def cap_feed(request: Request, municipality: str | None = Query(None)) -> Response:
    platform = platform_of(request)
    rows = alerts.active(platform, _tenants(request, municipality), with_cancelled=True)
    body = cap.feed(rows, alerts.site_url(platform.settings), now_iso())
    return Response(body, media_type=cap.ATOM_TYPE)


@router.get("/alerts/{alert_id}.cap", summary="One alert as a CAP 1.2 document", response_class=Response)
def cap_document(request: Request, alert_id: str) -> Response:
    platform = platform_of(request)
    row = alerts.one(platform, alert_id)
    body = cap.document(row, alerts.site_url(platform.settings), platform.settings.bears_public_decimals)
    return Response(body, media_type=cap.CAP_TYPE)


# -- staff: subscriptions ----------------------------------------------------------------------------------
@router.get("/subscriptions", summary="Area subscriptions of the tenant (staff)")
def list_subscriptions(
    request: Request,
    active: bool | None = Query(None),
    limit: int = Query(1000, ge=1, le=10000),
    offset: int = Query(0, ge=0, le=2**53),
    tenant: str | None = access.TenantHeader,
) -> list[dict[str, Any]]:
    name = access.tenant_name(tenant)
    access.staff(request, name, write=False)
    return subscriptions_of(platform_of(request)).list(name, active=active, limit=limit, offset=offset)


@router.post("/subscriptions", status_code=201, summary="Subscribe a person or system to an area (staff)")
def create_subscription(
    request: Request, body: SubscriptionIn, tenant: str | None = access.TenantHeader
) -> dict[str, Any]:
    name = access.tenant_name(tenant)
    access.staff(request, name)
    return subscriptions_of(platform_of(request)).create(name, body)


@router.get("/subscriptions/{sub_id}", summary="One subscription (staff)")
def get_subscription(
    request: Request, sub_id: str, tenant: str | None = access.TenantHeader
) -> dict[str, Any]:
    name = access.tenant_name(tenant)
    access.staff(request, name, write=False)
    return subscriptions_of(platform_of(request)).get(name, sub_id)


@router.patch("/subscriptions/{sub_id}", summary="Change radius, area name, minimum level or active (staff)")
def patch_subscription(
    request: Request, sub_id: str, body: SubscriptionPatch, tenant: str | None = access.TenantHeader
) -> dict[str, Any]:
    name = access.tenant_name(tenant)
    access.staff(request, name)
    return subscriptions_of(platform_of(request)).update(name, sub_id, body)


@router.delete("/subscriptions/{sub_id}", status_code=204, summary="Remove a subscription (staff)")
def delete_subscription(request: Request, sub_id: str, tenant: str | None = access.TenantHeader) -> Response:
    name = access.tenant_name(tenant)
    access.staff(request, name)
    subscriptions_of(platform_of(request)).delete(name, sub_id)
    return Response(status_code=204)


# -- the public: sign up, confirm, leave -------------------------------------------------------------------
def public_tenant(platform: Any, s: PublicSubscribeIn, header: str | None) -> str:
    """The municipality whose alerts a resident wants: the header's, the one named, or the circle's
    nearest."""
    if header:
        code = access.tenant_name(header)
    elif s.municipality:
        code = s.municipality
    else:
        assert s.lat is not None and s.lon is not None
        code = geo.nearest_municipality(s.lat, s.lon).code
    if not platform.tenants.exists(code):
        raise OperationNotSupported(
            f"municipality: {code} does not send bear alerts on this platform "
            "/ この市町村はこの基盤でヒグマ出没情報を配信していません"
        )
    return code


@router.post(
    "/subscribe",
    status_code=202,
    summary="Sign up for alerts by e-mail (no account; a confirmation link is mailed first)",
)
def subscribe(
    request: Request, body: PublicSubscribeIn, tenant: str | None = access.TenantHeader
) -> dict[str, Any]:
    platform = platform_of(request)
    code = public_tenant(platform, body, tenant)
    # Behind a proxy, uvicorn's --proxy-headers makes request.client the real client.
    client = client_key(
        request.client.host if request.client else "unknown", platform.settings.effective_secret()
    )
    made = subscriptions_of(platform).subscribe(
        code, body, client=client, base_url=alerts.site_url(platform.settings)
    )
    return {
        "status": "pending",
        "tenant": code,
        "municipality": made["municipality"],
        "lat": made["lat"],
        "lon": made["lon"],
        "radius_m": made["radius_m"],
        "message": "確認メールを送信しました。メール内のリンクを開くと登録が完了します。 / "
        "A confirmation mail was sent; open its link to complete the sign-up.",
    }


def _page(title: str, lines: list[str], status: int = 200, form: str | None = None) -> HTMLResponse:
    body = "".join(f"<p>{escape(line)}</p>" for line in lines)
    if form:
        body += form
    return HTMLResponse(
        '<!doctype html><html lang="ja"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<title>{escape(title)}</title><link rel="stylesheet" href="/static/web.css"></head>'
        f'<body><main class="container"><h1>{escape(title)}</h1>{body}'
        '<p><a href="/bears/">ヒグマ出没マップ / Bear map</a></p></main></body></html>',
        status_code=status,
    )


def _token_page(request: Request, token: str, action: Any, done: list[str]) -> HTMLResponse:
    try:
        sub = action(token)
    except ApiError as err:
        return _page("ヒグマ出没情報 / Bear alerts", [err.detail], status=err.status)
    area = (
        sub["area_name"]
        or sub["municipality"]
        or f"{sub['lat']:.4f}, {sub['lon']:.4f} ({sub['radius_m']:g} m)"
    )
    return _page("ヒグマ出没情報 / Bear alerts", [*done, f"地域 / Area: {area}"])


@router.get(
    "/subscribe/confirm",
    summary="Confirm an e-mail sign-up (the link in the confirmation mail)",
    response_class=HTMLResponse,
)
def confirm(request: Request, token: str = Query(..., max_length=64)) -> HTMLResponse:
    subs = subscriptions_of(platform_of(request))
    return _token_page(
        request,
        token,
        subs.confirm,
        [
            "登録が完了しました。この地域でヒグマの出没があるとメールでお知らせします。",
            "Your subscription is confirmed: you will get an e-mail when a bear is reported in this area.",
        ],
    )


@router.get(
    "/unsubscribe",
    summary="Leave: a page with a button (mail scanners that open links change nothing)",
    response_class=HTMLResponse,
)
def unsubscribe_page(request: Request, token: str = Query(..., max_length=64)) -> HTMLResponse:
    subs = subscriptions_of(platform_of(request))
    try:
        sub = subs.by_token(token)
    except ApiError as err:
        return _page("配信停止 / Unsubscribe", [err.detail], status=err.status)
    if not sub["active"]:
        return _page("配信停止 / Unsubscribe", ["配信は停止済みです。 / You are already unsubscribed."])
    form = (
        f'<form method="post" action="/bears/unsubscribe?token={escape(token)}">'
        '<button type="submit">配信を停止する / Unsubscribe</button></form>'
    )
    return _page(
        "配信停止 / Unsubscribe",
        ["この地域のヒグマ出没情報の配信を停止しますか？", "Stop bear alerts for this area?"],
        form=form,
    )


@router.post(
    "/unsubscribe", summary="Leave (the button of the unsubscribe page)", response_class=HTMLResponse
)
async def unsubscribe(request: Request, token: str = Query(..., max_length=64)) -> HTMLResponse:
    subs = subscriptions_of(platform_of(request))
    return await run_in_threadpool(
        _token_page,
        request,
        token,
        subs.unsubscribe,
        ["配信を停止しました。", "You are unsubscribed; no more alerts will be sent for this area."],
    )
