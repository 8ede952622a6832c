"""The NGSI-LD subscription API (``/ngsi-ld/v1/subscriptions``, ETSI GS CIM 009 v1.8 §5.8, §6.10, §6.11).

Tenancy and rights as for entities: a tenant sees only its own subscriptions; creating, changing and deleting
need write rights in the tenant (a reader may not), reading needs read rights (subscriptions hold endpoints
and their headers, which are not public).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from society5.broker import subscriptions as model
from society5.broker.api import CheckedRoute, _doc, _get_ctx, _max_body, _tenant, broker_of
from society5.broker.http import (
    accepted,
    bool_param,
    context_source,
    flag_set,
    int_param,
    json_response,
    read_json,
)
from society5.broker.model import check_uri
from society5.broker.notifier import Notifier
from society5.broker.subscriptions_store import StoredSubscription
from society5.core.auth import Principal
from society5.core.errors import BadRequest, Forbidden, InvalidRequest, Unauthorized
from society5.core.http import platform_of, principal_of

router = APIRouter(prefix="/ngsi-ld/v1", tags=["NGSI-LD subscriptions"], route_class=CheckedRoute)
BASE = "/ngsi-ld/v1/subscriptions"


def notifier_of(request: Request) -> Notifier:
    notifier: Notifier = platform_of(request).parts["subscriptions"]
    return notifier


async def _call(request: Request, fn: Callable[..., Any], *args: Any) -> Any:
    """Inline on SQLite (microseconds); on PostgreSQL off the event loop, as the entity routes do."""
    if broker_of(request).engine.dialect.name == "sqlite":
        return fn(*args)
    return await run_in_threadpool(fn, *args)


def _check_read(principal: Principal, tenant: str) -> None:
    if principal.can_read_private(tenant):
        return
    if principal.anonymous:
        raise Unauthorized("reading subscriptions needs an API key: send 'Authorization: Bearer <key>'")
    raise Forbidden(f"this key may not read the subscriptions of tenant {tenant!r}")


def _sys_attrs(options: str | None) -> bool:
    opts = flag_set(options)
    if opts - {"sysAttrs"}:
        raise InvalidRequest(f"options: unknown value(s) {', '.join(sorted(opts - {'sysAttrs'}))}; "
                             "subscriptions know sysAttrs")
    return "sysAttrs" in opts


def _render(sub: StoredSubscription, request: Request, sys_attrs: bool) -> dict[str, Any]:
    times = (sub.created_at, sub.modified_at)
    return model.render(sub.doc, sub.counters, _get_ctx(request), sys_attrs, times)


def _subscription_id(value: str) -> str:
    return check_uri(value, "subscription id")


@router.post("/subscriptions", status_code=201, openapi_extra=_doc([], [], body=True),
             summary="Create a subscription (notifications to an http(s) or mqtt(s) endpoint)")
@router.post("/subscriptions/", status_code=201, include_in_schema=False)
async def create_subscription(request: Request) -> Response:
    body, media = await read_json(request, _max_body(request))
    b = broker_of(request)
    principal = principal_of(request)
    tenant = b.tenant_for_write(_tenant(request), principal)
    principal.check_write(tenant)
    doc = model.parse(body, b.context(context_source(request, body, media)), b.contexts)
    await _call(request, notifier_of(request).store.create, tenant, doc)
    headers = {"Location": f"{BASE}/{quote(doc['id'], safe=':')}"}
    if _tenant(request):
        headers["NGSILD-Tenant"] = tenant
    return Response(status_code=201, headers=headers)


_LIST_PARAMS = ["limit", "offset", "count", "options"]


@router.get("/subscriptions", summary="Query subscriptions (paged: limit, offset, count)",
            openapi_extra=_doc([], _LIST_PARAMS))
@router.get("/subscriptions/", include_in_schema=False, openapi_extra=_doc([], _LIST_PARAMS))
async def query_subscriptions(request: Request) -> Response:
    qp = request.query_params
    settings = platform_of(request).settings
    limit = int_param(qp.get("limit"), "limit", settings.default_page_size, 0, settings.max_page_size)
    offset = int_param(qp.get("offset"), "offset", 0, 0, 10**9)
    count = bool_param(qp.get("count"), "count")
    if limit == 0 and not count:
        raise BadRequest("limit=0 is only allowed with count=true")
    sys_attrs = _sys_attrs(qp.get("options"))
    media = accepted(request, allow_geo=False)
    tenant = broker_of(request).tenant_for_read(_tenant(request))
    _check_read(principal_of(request), tenant)
    subs, total = await _call(request, notifier_of(request).store.page, tenant, limit, offset)
    headers = {"NGSILD-Results-Count": str(total)} if count else {}
    resp = json_response([_render(s, request, sys_attrs) for s in subs], media, _get_ctx(request),
                         headers=headers)
    pages = _page_links(limit, offset, total)
    if pages:
        resp.headers["Link"] = ",".join([resp.headers["Link"], pages] if "Link" in resp.headers else [pages])
    return resp


def _page_links(limit: int, offset: int, total: int) -> str:
    links = []
    if offset > 0 and limit > 0:
        links.append((max(0, offset - limit), "prev"))
    if limit > 0 and offset + limit < total:
        links.append((offset + limit, "next"))
    return ",".join(f'<{BASE}?limit={limit}&offset={at}>;rel="{rel}";type="application/ld+json"'
                    for at, rel in links)


@router.get("/subscriptions/{subscription_id}", summary="Retrieve a subscription (with its status members)",
            openapi_extra=_doc(["subscription_id"], ["options"]))
async def retrieve_subscription(request: Request, subscription_id: str) -> Response:
    sid = _subscription_id(subscription_id)
    sys_attrs = _sys_attrs(request.query_params.get("options"))
    media = accepted(request, allow_geo=False)
    tenant = broker_of(request).tenant_for_read(_tenant(request))
    _check_read(principal_of(request), tenant)
    sub = await _call(request, notifier_of(request).store.get, tenant, sid)
    return json_response(_render(sub, request, sys_attrs), media, _get_ctx(request))


@router.patch("/subscriptions/{subscription_id}", status_code=204,
              openapi_extra=_doc(["subscription_id"], [], body=True),
              summary="Update a subscription (the members sent replace the stored ones; null removes)")
async def update_subscription(request: Request, subscription_id: str) -> Response:
    sid = _subscription_id(subscription_id)
    body, media = await read_json(request, _max_body(request))
    b = broker_of(request)
    ctx = b.context(context_source(request, body, media))
    principal = principal_of(request)
    tenant = b.tenant_for_read(_tenant(request))
    principal.check_write(tenant)
    store = notifier_of(request).store
    current = await _call(request, store.get, tenant, sid)
    await _call(request, store.replace, tenant, model.patch(current.doc, body, ctx, b.contexts))
    return Response(status_code=204)


@router.delete("/subscriptions/{subscription_id}", status_code=204, summary="Delete a subscription",
               openapi_extra=_doc(["subscription_id"], []))
async def delete_subscription(request: Request, subscription_id: str) -> Response:
    sid = _subscription_id(subscription_id)
    principal = principal_of(request)
    tenant = broker_of(request).tenant_for_read(_tenant(request))
    principal.check_write(tenant)
    await _call(request, notifier_of(request).store.delete, tenant, sid)
    return Response(status_code=204)
