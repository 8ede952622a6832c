"""The NGSI-LD temporal API (``/ngsi-ld/v1/temporal/...``, ETSI GS CIM 009 v1.8 §6.18–6.24).

Parameters are parsed and validated here (every problem is a 400 ProblemDetails saying what to fix); storage,
selection, pagination and aggregation live in :mod:`society5.broker.temporal`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from society5.broker.api import (
    CheckedRoute,
    TenantHeader,
    _attrs_param,
    _body,
    _geo,
    _get_ctx,
    _ids_param,
    _pattern,
    _q,
    _scope,
    _types,
    entity_selectors,
)
from society5.broker.http import accepted, body_doc, bool_param, flag_set, int_param, json_response
from society5.broker.jsonld import ActiveContext
from society5.broker.model import check_attr_name, check_uri
from society5.broker.store import EntityQuery
from society5.broker.temporal import (
    TemporalRenderer,
    TemporalRequest,
    TemporalResult,
    TemporalStore,
    parse_aggregation,
    parse_temporal_query,
)
from society5.core.errors import BadRequest, InvalidRequest, NotFound
from society5.core.http import platform_of, principal_of

# Unknown query parameters are 400 InvalidRequest, as in the rest of the API (a typo must not pass silently).
router = APIRouter(prefix="/ngsi-ld/v1", tags=["NGSI-LD temporal"], route_class=CheckedRoute)

_OPTIONS = {"temporalValues", "aggregatedValues", "sysAttrs", "normalized", "simplified"}
_FORMATS = {"temporalValues", "aggregatedValues", "normalized", "simplified"}


def temporal_of(request: Request) -> TemporalStore:
    store: TemporalStore = platform_of(request).parts["temporal"]
    return store


# --- parameters ---------------------------------------------------------------------------------------------


def _form(options: str | None, fmt: str | None) -> tuple[str, bool]:
    """(representation, sysAttrs); ``format`` wins over ``options`` (§6.3.12)."""
    opts = flag_set(options)
    unknown = opts - _OPTIONS
    if unknown:
        raise InvalidRequest(f"options: unknown value(s) {', '.join(sorted(unknown))} "
                             f"(use {', '.join(sorted(_OPTIONS))})")
    if fmt is not None and fmt not in _FORMATS:
        raise InvalidRequest(f"format must be normalized, temporalValues or aggregatedValues, not {fmt!r}")
    form = fmt
    if form is None:
        if "aggregatedValues" in opts:
            form = "aggregatedValues"
        elif "temporalValues" in opts or "simplified" in opts:
            form = "temporalValues"
        else:
            form = "normalized"
    return ("temporalValues" if form == "simplified" else form), "sysAttrs" in opts


def _pick_omit(pick: str | None, omit: str | None,
               attrs: str | None) -> tuple[set[str] | None, set[str] | None]:
    if pick is not None and omit is not None:
        raise BadRequest("pick and omit cannot be used together")
    if attrs is not None and (pick is not None or omit is not None):
        raise BadRequest("attrs cannot be combined with pick or omit (pick does what attrs does)")
    return (flag_set(pick) if pick is not None else None), (flag_set(omit) if omit is not None else None)


def _request(ctx: ActiveContext, *, attrs: set[str] | None, options: str | None, fmt: str | None,
             timerel: Any, time_at: Any, end_time_at: Any, timeproperty: Any, last_n: Any,
             aggr_methods: Any, aggr_period: Any, dataset_id: str | None) -> TemporalRequest:
    form, sys_attrs = _form(options, fmt)
    request = TemporalRequest(
        temporal=parse_temporal_query(timerel, time_at, end_time_at, timeproperty, last_n),
        fmt=form, attrs=attrs, sys_attrs=sys_attrs,
        datasets=flag_set(dataset_id) or None if dataset_id else None,
    )
    if form == "aggregatedValues":
        request.aggregation = parse_aggregation(aggr_methods, aggr_period)
    return request


def _answer(request: Request, result: TemporalResult, body: Any, ctx: ActiveContext) -> Response:
    headers: dict[str, str] = {}
    if result.count is not None:
        headers["NGSILD-Results-Count"] = str(result.count)
    status = 200
    if result.content_range is not None:
        headers["Content-Range"] = result.content_range
        status = 206
    return json_response(body, accepted(request, allow_geo=False), ctx, status=status, headers=headers)


# --- temporal entities --------------------------------------------------------------------------------------


@router.post("/temporal/entities", status_code=201, openapi_extra=body_doc(),
             summary="Create or update the temporal representation of an entity")
@router.post("/temporal/entities/", status_code=201, include_in_schema=False)
async def create_temporal(request: Request, tenant: str | None = TenantHeader) -> Response:
    body, ctx = await _body(request)
    created = temporal_of(request).upsert(tenant, body, ctx, principal_of(request))
    if not created:
        return Response(status_code=204)
    eid = body["id"] if "id" in body else body["@id"]
    headers = {"Location": f"/ngsi-ld/v1/temporal/entities/{quote(eid, safe=':')}"}
    if tenant:
        headers["NGSILD-Tenant"] = tenant
    return Response(status_code=201, headers=headers)


@router.get("/temporal/entities", summary="Query the temporal evolution of entities")
def query_temporal(
    request: Request,
    tenant: str | None = TenantHeader,
    id: str | None = Query(default=None, description="comma-separated entity ids"),
    type: str | None = Query(default=None, description="type selector: A,B or (A;B)|C"),
    idPattern: str | None = None,
    attrs: str | None = None,
    q: str | None = None,
    georel: str | None = None,
    geometry: str | None = None,
    coordinates: str | None = None,
    geoproperty: str | None = None,
    scopeQ: str | None = None,
    timerel: str | None = Query(default=None, description="before, after or between"),
    timeAt: str | None = None,
    endTimeAt: str | None = None,
    timeproperty: str | None = Query(default=None, description="observedAt (default), createdAt, "
                                                               "modifiedAt or deletedAt"),
    lastN: str | None = None,
    options: str | None = None,
    format: str | None = None,
    aggrMethods: str | None = Query(default=None, description="totalCount, distinctCount, sum, avg, min, "
                                                              "max, stddev, sumsq"),
    aggrPeriodDuration: str | None = Query(default=None, description="ISO 8601 duration, e.g. PT1H"),
    datasetId: str | None = None,
    lang: str | None = None,
    pick: str | None = None,
    omit: str | None = None,
    orderBy: str | None = None,
    limit: str | None = None,
    offset: str | None = None,
    count: str | None = None,
    local: str | None = None,
) -> Response:
    accepted(request, allow_geo=False)
    ctx = _get_ctx(request)
    settings = platform_of(request).settings
    if not any((type, attrs, q, georel, scopeQ)) and not bool_param(local, "local"):
        raise BadRequest("give at least one of type, attrs, q, georel or scopeQ (or local=true)")
    picked, omitted = _pick_omit(pick, omit, attrs)
    attr_set = _attrs_param(attrs, ctx)
    query = EntityQuery(
        ids=_ids_param(id), id_pattern=_pattern(idPattern), types=_types(type, ctx), attrs=attr_set,
        q=_q(q, ctx), geo=_geo(georel, geometry, coordinates, geoproperty, ctx), scope=_scope(scopeQ),
        limit=int_param(limit, "limit", settings.default_page_size, 0, settings.max_page_size),
        offset=int_param(offset, "offset", 0, 0, 10**9),
        count=bool_param(count, "count"),
    )
    if query.limit == 0 and not query.count:
        raise BadRequest("limit=0 is only allowed with count=true")
    treq = _request(ctx, attrs=attr_set, options=options, fmt=format, timerel=timerel, time_at=timeAt,
                    end_time_at=endTimeAt, timeproperty=timeproperty, last_n=lastN, aggr_methods=aggrMethods,
                    aggr_period=aggrPeriodDuration, dataset_id=datasetId)
    result = temporal_of(request).query(tenant, query, treq, principal_of(request), order_by=orderBy, ctx=ctx)
    renderer = TemporalRenderer(ctx, fmt=treq.fmt, sys_attrs=treq.sys_attrs, lang=lang, pick=picked,
                                omit=omitted)
    return _answer(request, result, [renderer.entity(e) for e in result.entities], ctx)


@router.get("/temporal/entities/{entity_id}", summary="Retrieve the temporal evolution of an entity")
def retrieve_temporal(
    request: Request,
    entity_id: str,
    tenant: str | None = TenantHeader,
    attrs: str | None = None,
    type: str | None = Query(default=None, description="answer 404 unless the entity has one of these types"),
    timerel: str | None = None,
    timeAt: str | None = None,
    endTimeAt: str | None = None,
    timeproperty: str | None = None,
    lastN: str | None = None,
    options: str | None = None,
    format: str | None = None,
    aggrMethods: str | None = None,
    aggrPeriodDuration: str | None = None,
    datasetId: str | None = None,
    lang: str | None = None,
    pick: str | None = None,
    omit: str | None = None,
) -> Response:
    accepted(request, allow_geo=False)
    ctx = _get_ctx(request)
    check_uri(entity_id, "entity id")
    picked, omitted = _pick_omit(pick, omit, attrs)
    attr_set = _attrs_param(attrs, ctx)
    treq = _request(ctx, attrs=attr_set, options=options, fmt=format, timerel=timerel, time_at=timeAt,
                    end_time_at=endTimeAt, timeproperty=timeproperty, last_n=lastN, aggr_methods=aggrMethods,
                    aggr_period=aggrPeriodDuration, dataset_id=datasetId)
    result = temporal_of(request).retrieve(tenant, entity_id, treq, principal_of(request))
    if type is not None:
        wanted = {t for alt in _types(type, ctx) or [] for t in alt}
        if not wanted & set(result.entities[0].doc["type"]):
            raise NotFound(f"entity {entity_id} has none of the types {type}")
    renderer = TemporalRenderer(ctx, fmt=treq.fmt, sys_attrs=treq.sys_attrs, lang=lang, pick=picked,
                                omit=omitted)
    body = renderer.entity(result.entities[0])
    if not body:
        raise NotFound(f"nothing of entity {entity_id} is left after pick/omit")
    return _answer(request, result, body, ctx)


@router.delete("/temporal/entities/{entity_id}", status_code=204,
               summary="Delete the temporal representation of an entity")
def delete_temporal(request: Request, entity_id: str, tenant: str | None = TenantHeader) -> Response:
    temporal_of(request).delete_entity(tenant, entity_id, principal_of(request))
    return Response(status_code=204)


# --- temporal attributes ------------------------------------------------------------------------------------
# entity_id is a "path" parameter so that an empty id (".../entities//attrs") reaches the handler and gets a
# 400 that says so, rather than a bare 404 from the router.


@router.post("/temporal/entities/{entity_id:path}/attrs", status_code=204, openapi_extra=body_doc(),
             summary="Add attribute instances to a temporal entity")
async def append_temporal_attrs(request: Request, entity_id: str,
                                tenant: str | None = TenantHeader) -> Response:
    check_uri(entity_id, "entity id")
    body, ctx = await _body(request)
    temporal_of(request).append(tenant, entity_id, body, ctx, principal_of(request))
    return Response(status_code=204)


@router.delete("/temporal/entities/{entity_id:path}/attrs//{instance_id}", include_in_schema=False)
def delete_unnamed_attr_instance(entity_id: str, instance_id: str) -> Response:
    raise BadRequest("the attribute name is missing in the URL (.../attrs/{attrId}/{instanceId})")


@router.delete("/temporal/entities/{entity_id:path}/attrs/{attr}", status_code=204,
               summary="Delete the history of an attribute")
def delete_temporal_attr(request: Request, entity_id: str, attr: str, tenant: str | None = TenantHeader,
                         datasetId: str | None = None, deleteAll: str | None = None) -> Response:
    check_uri(entity_id, "entity id")
    check_attr_name(attr)
    if datasetId is not None:
        check_uri(datasetId, "datasetId")
    ctx = _get_ctx(request)
    temporal_of(request).delete_attr(tenant, entity_id, ctx.expand(attr), datasetId,
                                     bool_param(deleteAll, "deleteAll"), principal_of(request))
    return Response(status_code=204)


@router.patch("/temporal/entities/{entity_id:path}/attrs/{attr}/{instance_id}", status_code=204,
              openapi_extra=body_doc(), summary="Modify one attribute instance")
async def patch_temporal_instance(request: Request, entity_id: str, attr: str, instance_id: str,
                                  tenant: str | None = TenantHeader) -> Response:
    check_uri(entity_id, "entity id")
    check_attr_name(attr)
    check_uri(instance_id, "instanceId")
    body, ctx = await _body(request)
    temporal_of(request).modify_instance(tenant, entity_id, ctx.expand(attr), instance_id, body, ctx,
                                         principal_of(request))
    return Response(status_code=204)


@router.delete("/temporal/entities/{entity_id:path}/attrs/{attr}/{instance_id}", status_code=204,
               summary="Delete one attribute instance")
def delete_temporal_instance(request: Request, entity_id: str, attr: str, instance_id: str,
                             tenant: str | None = TenantHeader) -> Response:
    check_uri(entity_id, "entity id")
    check_attr_name(attr)
    check_uri(instance_id, "instanceId")
    ctx = _get_ctx(request)
    temporal_of(request).delete_instance(tenant, entity_id, ctx.expand(attr), instance_id,
                                         principal_of(request))
    return Response(status_code=204)


# --- query by POST ------------------------------------------------------------------------------------------


@router.post("/temporal/entityOperations/query", openapi_extra=body_doc(),
             summary="Query the temporal evolution of entities (POST)")
async def post_temporal_query(request: Request, tenant: str | None = TenantHeader, limit: str | None = None,
                              offset: str | None = None, count: str | None = None, options: str | None = None,
                              format: str | None = None, aggrMethods: str | None = None,
                              aggrPeriodDuration: str | None = None, lastN: str | None = None) -> Response:
    accepted(request, allow_geo=False)
    body, ctx = await _body(request)
    if not isinstance(body, dict) or body.get("type") != "Query":
        raise BadRequest('the body must be a Query object: {"type": "Query", ...}')
    settings = platform_of(request).settings
    ids, pattern, types = entity_selectors(body.get("entities"), ctx)
    attrs = body.get("attrs")
    if attrs is not None and (not isinstance(attrs, list) or not all(isinstance(a, str) for a in attrs)):
        raise BadRequest("attrs must be an array of attribute names")
    for name in attrs or ():
        check_attr_name(name)
    attr_set = {ctx.expand(a) for a in attrs} if attrs else None
    geoq = body.get("geoQ")
    if geoq is not None and not isinstance(geoq, dict):
        raise BadRequest("geoQ must be an object with georel, geometry and coordinates")
    tq = body.get("temporalQ") or {}
    if not isinstance(tq, dict):
        raise BadRequest("temporalQ must be an object with timerel, timeAt, endTimeAt, timeproperty, lastN")
    query = EntityQuery(
        ids=ids, id_pattern=pattern, types=types, attrs=attr_set, q=_q(body.get("q"), ctx),
        geo=_geo(geoq.get("georel"), geoq.get("geometry"), geoq.get("coordinates"), geoq.get("geoproperty"),
                 ctx) if geoq else None,
        scope=_scope(body.get("scopeQ")),
        limit=int_param(limit, "limit", settings.default_page_size, 0, settings.max_page_size),
        offset=int_param(offset, "offset", 0, 0, 10**9),
        count=bool_param(count, "count"),
    )
    treq = _request(ctx, attrs=attr_set, options=options, fmt=format, timerel=tq.get("timerel"),
                    time_at=tq.get("timeAt"), end_time_at=tq.get("endTimeAt"),
                    timeproperty=tq.get("timeproperty"), last_n=tq.get("lastN", lastN),
                    aggr_methods=body.get("aggrMethods", aggrMethods),
                    aggr_period=body.get("aggrPeriodDuration", aggrPeriodDuration),
                    dataset_id=",".join(body["datasetId"]) if isinstance(body.get("datasetId"), list)
                    else body.get("datasetId"))
    result = temporal_of(request).query(tenant, query, treq, principal_of(request),
                                        order_by=body.get("orderBy"), ctx=ctx)
    lang = body.get("lang") if isinstance(body.get("lang"), str) else None
    renderer = TemporalRenderer(ctx, fmt=treq.fmt, sys_attrs=treq.sys_attrs, lang=lang)
    return _answer(request, result, [renderer.entity(e) for e in result.entities], ctx)
