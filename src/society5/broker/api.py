"""The NGSI-LD HTTP API (``/ngsi-ld/v1``): entities, attributes, batches, queries, discovery, contexts."""

from __future__ import annotations

import asyncio
import re
import weakref
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Header, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool

from society5.broker import geo as geo_mod
from society5.broker.core import BatchResult, Broker, UpdateResult
from society5.broker.http import (
    GEOJSON,
    JSON,
    JSONLD,
    accepted,
    body_doc,
    bool_param,
    context_source,
    context_url,
    flag_set,
    int_param,
    json_response,
    read_json,
)
from society5.broker.jsonld import ActiveContext, parse_link_header
from society5.broker.model import (
    LOCATION,
    RESERVED,
    Renderer,
    check_attr_name,
    check_uri,
    parse_order_by,
    parse_projection,
)
from society5.broker.query import q as qlang
from society5.broker.query import scope as scopelang
from society5.broker.query.typeexpr import TypeExprError, parse_type_expr
from society5.broker.store import EntityQuery
from society5.core.errors import ApiError, BadRequest, InvalidRequest, NotFound
from society5.core.http import platform_of, principal_of


class CheckedRoute(APIRoute):
    """A route that refuses unknown query parameters before its handler runs: a typo silently ignored would
    return wrong data. Done here rather than as a dependency, which FastAPI would resolve on every request."""

    def get_route_handler(self) -> Any:
        handler = super().get_route_handler()
        allowed = allowed_query_params(self)

        async def checked(request: Request) -> Response:
            if request.scope.get("query_string"):
                unknown = sorted(set(request.query_params) - allowed)
                if unknown:
                    raise InvalidRequest(f"unknown query parameter(s): {', '.join(unknown)}")
            response: Response = await handler(request)
            return response

        return checked


def allowed_query_params(route: APIRoute) -> set[str]:
    """The query parameters a route documents (through ``openapi_extra`` or declared parameters)."""
    documented = (route.openapi_extra or {}).get("parameters", ())
    allowed = {p["name"] for p in documented if p.get("in") == "query"}
    return allowed | {p.alias for p in route.dependant.query_params}


router = APIRouter(prefix="/ngsi-ld/v1", tags=["NGSI-LD"], route_class=CheckedRoute)

TenantHeader = Header(
    default=None, alias="NGSILD-Tenant", description="tenant: the municipality's 団体コード"
)


# Query parameters are read from request.query_params and documented through openapi_extra, not declared
# as function parameters: FastAPI's per-parameter introspection cost ~30 µs each on every request, which
# on an entity retrieval with 16 optional parameters was more than all of the broker's own work.
def _doc(path: list[str], query: list[str], body: bool = False) -> dict[str, Any]:
    params: list[dict[str, Any]] = [
        {"name": n, "in": "path", "required": True, "schema": {"type": "string"}} for n in path
    ]
    params.append(
        {
            "name": "NGSILD-Tenant",
            "in": "header",
            "required": False,
            "schema": {"type": "string"},
            "description": "tenant: the municipality's 団体コード (default tenant when absent)",
        }
    )
    params += [{"name": n, "in": "query", "required": False, "schema": {"type": "string"}} for n in query]
    doc: dict[str, Any] = {"parameters": params}
    if body:
        doc.update(body_doc())
    return doc


_NO_QUERY: Mapping[str, str] = MappingProxyType({})


def _query(request: Request) -> Mapping[str, str]:
    """The query parameters. Most requests have none, and Starlette parses even an empty query string into
    a ``QueryParams`` whose ``get`` raises and catches a KeyError for each absent name."""
    return request.query_params if request.scope.get("query_string") else _NO_QUERY


def _tenant(request: Request) -> str | None:
    return request.headers.get("ngsild-tenant")


def broker_of(request: Request) -> Broker:
    b: Broker = platform_of(request).parts["broker"]
    return b


class _db:
    """``await _db(request).method(...)``: a broker call from an async route. SQLite answers in microseconds
    and serialises writers anyway, so it runs inline, unless another thread is writing (the staged-history
    move, the MQTT bridge): a write would then wait for it and stall every request of the event loop, so the
    call goes to the thread pool, as every call does on PostgreSQL, where a round trip must not stall the
    loop. Single-entity attribute writes go through group commit on both (``_Coalescer``)."""

    def __init__(self, request: Request):
        self.broker = broker_of(request)

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.broker, name)
        inline = self.broker.engine.dialect.name == "sqlite"

        async def call(*args: Any, **kwargs: Any) -> Any:
            if name in GROUP_COMMITTED:  # (tenant, entity id, …)
                return await _coalescer(self.broker).submit(lambda: method(*args, **kwargs),
                                                            key=(args[0], args[1]))
            if inline and not self.broker.db.writing_elsewhere():
                return method(*args, **kwargs)
            if inline:
                return await run_in_threadpool(method, *args, **kwargs)
            if name in GROUPED_READS:  # (tenant, entity id, …)
                return await _coalescer(self.broker, reads=True).submit(lambda: method(*args, **kwargs),
                                                                        key=(args[0], args[1]))
            return await run_in_threadpool(method, *args, **kwargs)

        return call


# Single-entity attribute writes (what sensors send all day) share one transaction when they arrive together:
# one commit then makes several requests durable, and each is answered only after that commit. If any of
# them fails, the shared transaction is rolled back and each runs again on its own.
GROUP_COMMITTED = frozenset({"update_attrs", "patch_attr", "append_attrs"})
# PostgreSQL: retrievals by id that arrive together also take one thread hop (each still on its own).
GROUPED_READS = frozenset({"retrieve"})

_Outcome = tuple[bool, Any]  # (succeeded, the value or the exception)
_Key = tuple[str | None, str]  # (tenant, entity id) of a write


class _Coalescer:
    """Collects the group-committed writes (or, with ``reads``, the retrievals) of one broker. SQLite: a
    group is the writes that became runnable in one turn of the event loop, run inline. PostgreSQL: one
    group at a time runs in a worker thread and the requests that arrive meanwhile form the next one, so 16
    concurrent sensors cost one thread hop (and, for writes, one commit) per group instead of one each: with
    a thread per request the server spent most of its time handing the GIL between threads (PATCH went
    from 1,040 to 2,345 requests/s, GET from 1,790 to 3,900)."""

    def __init__(self, broker: Broker, reads: bool = False):
        self.broker = broker
        self.reads = reads  # independent reads: no shared transaction, one failure fails only its request
        self.threaded = broker.engine.dialect.name != "sqlite"
        self.pending: list[tuple[Callable[[], Any], asyncio.Future[Any]]] = []
        self.keys: list[_Key] = []  # the entities the pending writes change
        self.draining = False
        self._task: asyncio.Task[None] | None = None

    def submit(self, work: Callable[[], Any], key: _Key | None = None) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self.pending.append((work, future))
        if key is not None:
            self.keys.append(key)
        if not self.draining:
            self.draining = True
            if self.threaded or self.broker.db.writing_elsewhere():  # (see _db)
                self._task = loop.create_task(self._drain_in_thread())  # held: the loop keeps weak refs
            else:
                loop.call_soon(self._drain_inline)  # after the requests already runnable in this turn
        return future

    def _drain_inline(self) -> None:
        self.draining = False
        batch, self.pending, self.keys = self.pending, [], []
        _settle(batch, self._run_group([work for work, _future in batch], []))

    async def _drain_in_thread(self) -> None:
        try:
            while self.pending:
                batch, keys, self.pending, self.keys = self.pending, self.keys, [], []
                try:
                    works = [work for work, _future in batch]
                    outcomes = await run_in_threadpool(self._run_group, works, keys)
                except asyncio.CancelledError:  # shutdown while the group ran: no request is left waiting
                    for _work, future in batch:
                        future.cancel()
                    raise
                except Exception as err:  # the group runner itself failed: every request of it hears so
                    outcomes = [(False, err)] * len(batch)
                _settle(batch, outcomes)
        finally:
            self.draining = False

    def _run_group(self, works: list[Callable[[], Any]], keys: list[_Key]) -> list[_Outcome]:
        """``keys``: on PostgreSQL the entities the writes change (or the reads retrieve), read in one
        statement first (a round trip per request saved); SQLite reads each in microseconds."""
        if self.reads:
            with self.broker.read_ahead(keys):
                return _each(works)
        try:
            with self.broker.db.shared() as conn, self.broker.prefetched(conn, keys):
                values = [work() for work in works]  # an error ends the shared transaction: rolled back
            return [(True, value) for value in values]
        except Exception:
            # One request failed (or the commit did): nothing of the group was kept. Each request now runs in
            # a transaction of its own, so a failing one gets its error and the others are not affected.
            return _each(works)


def _each(works: list[Callable[[], Any]]) -> list[_Outcome]:
    outcomes: list[_Outcome] = []
    for work in works:
        try:
            outcomes.append((True, work()))
        except Exception as err:
            outcomes.append((False, err))
    return outcomes


def _settle(batch: list[tuple[Callable[[], Any], asyncio.Future[Any]]], outcomes: list[_Outcome]) -> None:
    for (_work, future), (ok, value) in zip(batch, outcomes, strict=True):
        if future.done():  # the client went away
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


_coalescers: weakref.WeakKeyDictionary[Broker, _Coalescer] = weakref.WeakKeyDictionary()
_readers: weakref.WeakKeyDictionary[Broker, _Coalescer] = weakref.WeakKeyDictionary()


def _coalescer(broker: Broker, reads: bool = False) -> _Coalescer:
    kept = _readers if reads else _coalescers
    found = kept.get(broker)
    if found is None:
        found = kept[broker] = _Coalescer(broker, reads=reads)
    return found


def _max_body(request: Request) -> int:
    return platform_of(request).settings.max_body_bytes


async def _body(request: Request) -> tuple[Any, ActiveContext]:
    body, media = await read_json(request, _max_body(request))
    source = context_source(request, body, media)
    return body, broker_of(request).context(source)


def _get_ctx(request: Request) -> ActiveContext:
    return broker_of(request).context(parse_link_header(request.headers.get("link")))


def _renderer(
    ctx: ActiveContext,
    options: str | None,
    fmt: str | None,
    attrs: set[str] | None = None,
    pick: str | None = None,
    omit: str | None = None,
    lang: str | None = None,
    dataset_id: str | None = None,
    join: str | None = None,
    join_level: str | None = None,
    loader: Any = None,
) -> Renderer:
    opts = flag_set(options)
    unknown = opts - {
        "keyValues",
        "simplified",
        "concise",
        "normalized",
        "sysAttrs",
        "noOverwrite",
        "replace",
        "update",
        "temporalValues",
    }
    if unknown:
        raise InvalidRequest(f"options: unknown value(s) {', '.join(sorted(unknown))}")
    form = "normalized"
    if fmt:
        if fmt not in ("keyValues", "simplified", "concise", "normalized"):
            raise InvalidRequest(f"format must be normalized, concise or keyValues, not {fmt!r}")
        form = fmt
    elif "keyValues" in opts or "simplified" in opts:
        form = "keyValues"
    elif "concise" in opts:
        form = "concise"
    if form == "simplified":
        form = "keyValues"
    if pick is not None and omit is not None:
        raise BadRequest("pick and omit cannot be used together")
    if attrs is not None and (pick is not None or omit is not None):
        raise BadRequest("attrs cannot be combined with pick or omit (use pick alone)")
    if join is not None and join not in ("inline", "flat", "@none"):
        raise BadRequest(f"join must be inline, flat or @none, not {join!r}")
    return Renderer(
        ctx,
        fmt=form,
        sys_attrs="sysAttrs" in opts,
        attrs=attrs,
        pick=parse_projection(pick, "pick") if pick is not None else None,
        omit=parse_projection(omit, "omit") if omit is not None else None,
        lang=lang,
        datasets=flag_set(dataset_id) or None if dataset_id else None,
        join=join,
        join_level=int_param(join_level, "joinLevel", 1, 1, 10),
        loader=loader,
    )


def _loader(request: Request, tenant: str | None) -> Any:
    b = broker_of(request)
    principal = principal_of(request)
    return lambda ids: b.load_visible(tenant, ids, principal)


def _attrs_param(value: str | None, ctx: ActiveContext) -> set[str] | None:
    if value is None:
        return None
    names = flag_set(value)
    if not names:
        raise BadRequest("attrs must list at least one attribute name")
    for name in names:
        check_attr_name(name)
        if name in RESERVED:
            raise BadRequest(f"attrs: {name} is not an attribute (use pick to choose id, type or scope)")
    return {ctx.expand(n) for n in names}


def _feature(ent: dict[str, Any], geo_prop: str) -> dict[str, Any]:
    geom = ent.get(geo_prop)
    if isinstance(geom, dict) and "value" in geom and isinstance(geom["value"], dict):
        geom = geom["value"]
    return {
        "id": ent.get("id"),
        "type": "Feature",
        "geometry": geom if isinstance(geom, dict) else None,
        "properties": {k: v for k, v in ent.items() if k != "id"},
    }


def _geojson_response(
    entities: Any,
    geo_prop: str | None,
    ctx: ActiveContext,
    single: bool,
    headers: dict[str, str] | None = None,
) -> Response:
    prop = geo_prop or "location"
    if single:
        body: dict[str, Any] = _feature(entities, prop)
    else:
        body = {"type": "FeatureCollection", "features": [_feature(e, prop) for e in entities]}
    body["@context"] = context_url(ctx)
    return json_response(body, GEOJSON, None, headers=headers)


def _batch_response(result: BatchResult, created_status: bool, request: Request) -> Response:
    if result.errors:
        body = {
            "success": result.success,
            "errors": [{"entityId": eid, "error": err.problem()} for eid, err in result.errors],
        }
        return json_response(body, JSON, None, status=207)
    if created_status and result.created:
        return json_response(result.created, JSON, None, status=201)
    return Response(status_code=204)


def _update_response(result: UpdateResult) -> Response:
    if result.not_updated:
        return json_response({"updated": result.updated, "notUpdated": result.not_updated}, JSON, None, 207)
    return Response(status_code=204)


def _order_by(value: str | None, ctx: ActiveContext) -> list[tuple[list[str], bool]] | None:
    if value is None:
        return None
    order = []
    for names, descending in parse_order_by(value):
        head = names[0] if names[0] in ("id", "type", "createdAt", "modifiedAt") else ctx.expand(names[0])
        order.append(([head, *names[1:]], descending))
    return order


# --- entities -----------------------------------------------------------------------------------------------


@router.post("/entities", status_code=201, openapi_extra=_doc([], [], body=True), summary="Create an entity")
async def create_entity(request: Request) -> Response:
    tenant = _tenant(request)
    body, media = await read_json(request, _max_body(request))
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be one entity (a JSON object)")
    b = broker_of(request)
    ctx = b.context(context_source(request, body, media))
    eid = await _db(request).create_entity(tenant, body, ctx, principal_of(request))
    headers = {"Location": f"/ngsi-ld/v1/entities/{quote(eid, safe=':')}"}
    if tenant:
        headers["NGSILD-Tenant"] = tenant
    return Response(status_code=201, headers=headers)


@router.api_route("/entities", methods=["PUT", "PATCH"], include_in_schema=False)
@router.api_route(
    "/entities//attrs{rest:path}", methods=["POST", "PATCH", "PUT", "DELETE"], include_in_schema=False
)
def missing_entity_id(request: Request) -> Response:
    raise BadRequest("the entity id is missing from the URL: /ngsi-ld/v1/entities/{entityId}/...")


def _entity_query(
    request: Request,
    ctx: ActiveContext,
    id: str | None,
    type: str | None,
    idPattern: str | None,
    attrs: str | None,
    q: str | None,
    georel: str | None,
    geometry: str | None,
    coordinates: str | None,
    geoproperty: str | None,
    scopeQ: str | None,
    local: str | None,
    limit: str | None = None,
    offset: str | None = None,
    count: str | None = None,
    orderBy: str | None = None,
) -> EntityQuery:
    settings = platform_of(request).settings
    if not any((type, idPattern, attrs, q, georel, scopeQ)) and not bool_param(local, "local"):
        raise BadRequest("give at least one of type, idPattern, attrs, q, georel or scopeQ (or local=true)")
    query = EntityQuery(
        ids=_ids_param(id),
        id_pattern=_pattern(idPattern),
        types=_types(type, ctx),
        attrs=_attrs_param(attrs, ctx),
        q=_q(q, ctx),
        geo=_geo(georel, geometry, coordinates, geoproperty, ctx),
        scope=_scope(scopeQ),
        limit=int_param(limit, "limit", settings.default_page_size, 0, settings.max_page_size),
        offset=int_param(offset, "offset", 0, 0, 10**9),
        count=bool_param(count, "count"),
        order=_order_by(orderBy, ctx),
    )
    if query.limit == 0 and not query.count:
        raise BadRequest("limit=0 is only allowed with count=true")
    return query


@router.get(
    "/entities",
    summary="Query entities",
    openapi_extra=_doc(
        [],
        [
            "id",
            "type",
            "idPattern",
            "attrs",
            "pick",
            "omit",
            "q",
            "georel",
            "geometry",
            "coordinates",
            "geoproperty",
            "geometryProperty",
            "scopeQ",
            "lang",
            "limit",
            "offset",
            "count",
            "options",
            "format",
            "datasetId",
            "local",
            "orderBy",
            "join",
            "joinLevel",
            "csf",
            "containedBy",
            "entityMap",
        ],
        body=False,
    ),
)
async def query_entities(
    request: Request,
) -> Response:
    tenant = _tenant(request)
    qp = _query(request)
    id = qp.get("id")
    type = qp.get("type")
    idPattern = qp.get("idPattern")
    attrs = qp.get("attrs")
    pick = qp.get("pick")
    omit = qp.get("omit")
    q = qp.get("q")
    georel = qp.get("georel")
    geometry = qp.get("geometry")
    coordinates = qp.get("coordinates")
    geoproperty = qp.get("geoproperty")
    geometryProperty = qp.get("geometryProperty")
    scopeQ = qp.get("scopeQ")
    lang = qp.get("lang")
    limit = qp.get("limit")
    offset = qp.get("offset")
    count = qp.get("count")
    options = qp.get("options")
    format = qp.get("format")
    datasetId = qp.get("datasetId")
    local = qp.get("local")
    orderBy = qp.get("orderBy")
    join = qp.get("join")
    joinLevel = qp.get("joinLevel")
    media = accepted(request)
    ctx = _get_ctx(request)
    query = _entity_query(
        request,
        ctx,
        id,
        type,
        idPattern,
        attrs,
        q,
        georel,
        geometry,
        coordinates,
        geoproperty,
        scopeQ,
        local,
        limit,
        offset,
        count,
        orderBy,
    )
    renderer = _renderer(
        ctx,
        options,
        format,
        query.attrs,
        pick,
        omit,
        lang,
        datasetId,
        join,
        joinLevel,
        _loader(request, tenant),
    )
    result = await _db(request).query(tenant, query, principal_of(request))
    headers = {"NGSILD-Results-Count": str(result.count)} if result.count is not None else {}
    entities = _render_all(renderer, result.docs)
    if media == GEOJSON:
        return _geojson_response(entities, geometryProperty, ctx, single=False, headers=headers)
    return json_response(entities, media, ctx, headers=headers)


def _render_all(renderer: Renderer, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for doc in docs:
        rendered = renderer.render(doc)
        for ent in rendered if isinstance(rendered, list) else [rendered]:
            if not ent:
                continue  # nothing of it survived pick/omit
            key = ent.get("id")
            if renderer.join == "flat" and isinstance(key, str):
                if key in seen:
                    continue
                seen.add(key)
            out.append(ent)
    return out


@router.get(
    "/entities/{entity_id}",
    summary="Retrieve an entity",
    openapi_extra=_doc(
        ["entity_id"],
        [
            "attrs",
            "pick",
            "omit",
            "type",
            "options",
            "format",
            "lang",
            "geometryProperty",
            "datasetId",
            "join",
            "joinLevel",
            "local",
            "containedBy",
            "entityMap",
        ],
        body=False,
    ),
)
async def retrieve_entity(
    request: Request,
    entity_id: str,
) -> Response:
    tenant = _tenant(request)
    qp = _query(request)
    attrs = qp.get("attrs")
    pick = qp.get("pick")
    omit = qp.get("omit")
    type = qp.get("type")
    options = qp.get("options")
    format = qp.get("format")
    lang = qp.get("lang")
    geometryProperty = qp.get("geometryProperty")
    datasetId = qp.get("datasetId")
    join = qp.get("join")
    joinLevel = qp.get("joinLevel")
    media = accepted(request)
    ctx = _get_ctx(request)
    check_uri(entity_id, "entity id")
    attr_set = _attrs_param(attrs, ctx)
    renderer = _renderer(
        ctx, options, format, attr_set, pick, omit, lang, datasetId, join, joinLevel, _loader(request, tenant)
    )
    doc = await _db(request).retrieve(tenant, entity_id, principal_of(request))
    if type is not None:
        wanted = {t for alt in _types(type, ctx) or [] for t in alt}
        if not wanted & set(doc["type"]):
            raise NotFound(f"entity {entity_id} has none of the types {type}")
    if attr_set is not None and not attr_set & set(doc["attrs"]):
        raise NotFound(f"entity {entity_id} has none of the attributes {attrs}")
    entity = renderer.render(doc)
    if not entity:
        raise NotFound(f"nothing of entity {entity_id} is left after pick/omit")
    if media == GEOJSON:
        return _geojson_response(entity, geometryProperty, ctx, single=not isinstance(entity, list))
    return json_response(entity, media, ctx)


@router.delete(
    "/entities",
    status_code=204,
    summary="Purge entities (delete all that match)",
    openapi_extra=_doc([], ["id", "type", "idPattern", "q", "scopeQ", "local", "drop", "keep"], body=False),
)
def purge_entities(
    request: Request,
) -> Response:
    tenant = _tenant(request)
    qp = _query(request)
    id = qp.get("id")
    type = qp.get("type")
    idPattern = qp.get("idPattern")
    q = qp.get("q")
    scopeQ = qp.get("scopeQ")
    local = qp.get("local")
    drop = qp.get("drop")
    keep = qp.get("keep")
    ctx = _get_ctx(request)
    if drop is not None and keep is not None:
        raise BadRequest("drop and keep cannot be used together")
    if not any((id, type, idPattern, q, scopeQ)) and not bool_param(local, "local"):
        raise BadRequest("purging needs a selector: type, id, idPattern, q or scopeQ (or local=true)")
    query = EntityQuery(
        ids=_ids_param(id),
        id_pattern=_pattern(idPattern),
        types=_types(type, ctx),
        q=_q(q, ctx),
        scope=_scope(scopeQ),
    )
    broker_of(request).purge(
        tenant, query, principal_of(request), drop=_attrs_param(drop, ctx), keep=_attrs_param(keep, ctx)
    )
    return Response(status_code=204)


@router.put(
    "/entities/{entity_id}",
    status_code=204,
    openapi_extra=_doc(["entity_id"], [], body=True),
    summary="Replace an entity",
)
async def replace_entity(request: Request, entity_id: str) -> Response:
    tenant = _tenant(request)
    body, ctx = await _body(request)
    await _db(request).replace_entity(tenant, entity_id, body, ctx, principal_of(request))
    return Response(status_code=204)


@router.patch(
    "/entities/{entity_id}",
    status_code=204,
    openapi_extra=_doc(["entity_id"], [], body=True),
    summary="Merge an entity",
)
async def merge_entity(request: Request, entity_id: str) -> Response:
    tenant = _tenant(request)
    body, ctx = await _body(request)
    await _db(request).merge_entity(tenant, entity_id, body, ctx, principal_of(request))
    return Response(status_code=204)


@router.delete(
    "/entities/{entity_id}",
    status_code=204,
    summary="Delete an entity",
    openapi_extra=_doc(["entity_id"], ["type"], body=False),
)
async def delete_entity(request: Request, entity_id: str) -> Response:
    tenant = _tenant(request)
    check_uri(entity_id, "entity id")
    await _db(request).delete_entity(tenant, entity_id, principal_of(request))
    return Response(status_code=204)


@router.post(
    "/entities/{entity_id}/attrs",
    status_code=204,
    openapi_extra=_doc(["entity_id"], ["options", "type"], body=True),
    summary="Append attributes",
)
async def append_attrs(
    request: Request,
    entity_id: str,
) -> Response:
    tenant = _tenant(request)
    qp = _query(request)
    options = qp.get("options")
    body, ctx = await _body(request)
    opts = flag_set(options)
    result = await _db(request).append_attrs(
        tenant, entity_id, body, ctx, principal_of(request), no_overwrite="noOverwrite" in opts
    )
    return _update_response(result)


@router.patch(
    "/entities/{entity_id}/attrs",
    status_code=204,
    openapi_extra=_doc(["entity_id"], [], body=True),
    summary="Update attributes",
)
async def update_attrs(request: Request, entity_id: str) -> Response:
    tenant = _tenant(request)
    body, ctx = await _body(request)
    result = await _db(request).update_attrs(tenant, entity_id, body, ctx, principal_of(request))
    return _update_response(result)


@router.patch(
    "/entities/{entity_id}/attrs/{attr}",
    status_code=204,
    openapi_extra=_doc(["entity_id", "attr"], [], body=True),
    summary="Partial attribute update",
)
async def patch_attr(request: Request, entity_id: str, attr: str) -> Response:
    tenant = _tenant(request)
    body, ctx = await _body(request)
    check_attr_name(attr)
    await _db(request).patch_attr(tenant, entity_id, attr, body, ctx, principal_of(request))
    return Response(status_code=204)


@router.put(
    "/entities/{entity_id}/attrs/{attr}",
    status_code=204,
    openapi_extra=_doc(["entity_id", "attr"], [], body=True),
    summary="Replace an attribute",
)
async def replace_attr(request: Request, entity_id: str, attr: str) -> Response:
    tenant = _tenant(request)
    body, ctx = await _body(request)
    check_attr_name(attr)
    await _db(request).replace_attr(tenant, entity_id, attr, body, ctx, principal_of(request))
    return Response(status_code=204)


@router.delete(
    "/entities/{entity_id}/attrs/{attr}",
    status_code=204,
    summary="Delete an attribute",
    openapi_extra=_doc(["entity_id", "attr"], ["datasetId", "deleteAll"], body=False),
)
async def delete_attr(
    request: Request,
    entity_id: str,
    attr: str,
) -> Response:
    tenant = _tenant(request)
    qp = _query(request)
    datasetId = qp.get("datasetId")
    deleteAll = qp.get("deleteAll")
    check_uri(entity_id, "entity id")
    check_attr_name(attr)
    if datasetId is not None:
        check_uri(datasetId, "datasetId")
    await _db(request).delete_attr(
        tenant,
        entity_id,
        attr,
        _get_ctx(request),
        principal_of(request),
        dataset_id=datasetId,
        delete_all=bool_param(deleteAll, "deleteAll"),
    )
    return Response(status_code=204)


# --- batch operations ---------------------------------------------------------------------------------------


async def _batch_body(request: Request) -> tuple[Any, ActiveContext, list[ActiveContext | ApiError]]:
    """The entities of a batch and each one's @context; a context problem fails that entity, not the batch."""
    body, media = await read_json(request, _max_body(request))
    if not isinstance(body, list):
        raise BadRequest("a batch operation takes a JSON array")
    if not body:
        raise BadRequest("the batch is empty: send at least one entity")
    limit = platform_of(request).settings.max_batch_entities
    if len(body) > limit:
        raise BadRequest(f"a batch may hold at most {limit} entities, this one has {len(body)}")
    b = broker_of(request)
    link = parse_link_header(request.headers.get("link"))
    if media == JSONLD and link:
        raise BadRequest("a JSON-LD Link header is not allowed with Content-Type application/ld+json")
    shared = b.context(link) if media != JSONLD else b.context()
    contexts: list[ActiveContext | ApiError] = []
    for ent in body:
        has_ctx = isinstance(ent, dict) and "@context" in ent
        if media == JSONLD and not has_ctx:
            contexts.append(BadRequest("with Content-Type application/ld+json each entity needs an @context"))
        elif media != JSONLD and has_ctx:
            contexts.append(BadRequest("an @context in the body needs Content-Type application/ld+json"))
        elif has_ctx:
            try:
                contexts.append(b.context(ent["@context"]))
            except ApiError as err:
                contexts.append(err)
        else:
            contexts.append(shared)
    return body, shared, contexts


@router.post("/entityOperations/create", openapi_extra=_doc([], [], body=True), summary="Batch create")
async def batch_create(request: Request) -> Response:
    tenant = _tenant(request)
    body, ctx, contexts = await _batch_body(request)
    result = await _db(request).batch_create(tenant, body, ctx, principal_of(request), contexts=contexts)
    if result.errors:
        return _batch_response(result, True, request)
    return json_response(result.success, JSON, None, status=201)


@router.post(
    "/entityOperations/upsert", openapi_extra=_doc([], ["options"], body=True), summary="Batch upsert"
)
async def batch_upsert(request: Request) -> Response:
    tenant = _tenant(request)
    qp = _query(request)
    options = qp.get("options")
    body, ctx, contexts = await _batch_body(request)
    opts = flag_set(options)
    if opts - {"replace", "update"}:
        raise BadRequest("options for upsert: replace or update")
    mode = "update" if "update" in opts else "replace"
    result = await _db(request).batch_upsert(
        tenant, body, ctx, principal_of(request), mode=mode, contexts=contexts
    )
    return _batch_response(result, True, request)


@router.post(
    "/entityOperations/update", openapi_extra=_doc([], ["options"], body=True), summary="Batch update"
)
async def batch_update(request: Request) -> Response:
    tenant = _tenant(request)
    qp = _query(request)
    options = qp.get("options")
    body, ctx, contexts = await _batch_body(request)
    result = await _db(request).batch_update(
        tenant,
        body,
        ctx,
        principal_of(request),
        no_overwrite="noOverwrite" in flag_set(options),
        contexts=contexts,
    )
    return _batch_response(result, False, request)


@router.post("/entityOperations/merge", openapi_extra=_doc([], [], body=True), summary="Batch merge")
async def batch_merge(request: Request) -> Response:
    tenant = _tenant(request)
    body, ctx, contexts = await _batch_body(request)
    result = await _db(request).batch_update(
        tenant, body, ctx, principal_of(request), merge=True, contexts=contexts
    )
    return _batch_response(result, False, request)


@router.post("/entityOperations/delete", openapi_extra=_doc([], [], body=True), summary="Batch delete")
async def batch_delete(request: Request) -> Response:
    tenant = _tenant(request)
    body, _media = await read_json(request, _max_body(request))
    result = await _db(request).batch_delete(tenant, body, principal_of(request))
    return _batch_response(result, False, request)


@router.post(
    "/entityOperations/query",
    openapi_extra=_doc([], ["limit", "offset", "count", "options", "format"], body=True),
    summary="Query entities (POST)",
)
async def post_query(
    request: Request,
) -> Response:
    tenant = _tenant(request)
    qp = _query(request)
    limit = qp.get("limit")
    offset = qp.get("offset")
    count = qp.get("count")
    options = qp.get("options")
    format = qp.get("format")
    media = accepted(request)
    body, ctx = await _body(request)
    if not isinstance(body, dict) or body.get("type") != "Query":
        raise BadRequest('the body must be a Query object: {"type": "Query", ...}')
    settings = platform_of(request).settings
    ids, pattern, types = entity_selectors(body.get("entities"), ctx)
    attrs = body.get("attrs")
    if attrs is not None and (not isinstance(attrs, list) or not all(isinstance(a, str) for a in attrs)):
        raise BadRequest("attrs must be an array of attribute names")
    geoq = body.get("geoQ")
    if geoq is not None and not isinstance(geoq, dict):
        raise BadRequest("geoQ must be an object with georel, geometry and coordinates")
    query = EntityQuery(
        ids=ids,
        id_pattern=pattern,
        types=types,
        attrs={ctx.expand(a) for a in attrs} if attrs else None,
        q=_q(body.get("q"), ctx),
        geo=_geo(
            geoq.get("georel"), geoq.get("geometry"), geoq.get("coordinates"), geoq.get("geoproperty"), ctx
        )
        if geoq
        else None,
        scope=_scope(body.get("scopeQ")),
        limit=int_param(limit, "limit", settings.default_page_size, 0, settings.max_page_size),
        offset=int_param(offset, "offset", 0, 0, 10**9),
        count=bool_param(count, "count"),
        order=_order_by(body.get("orderBy") if isinstance(body.get("orderBy"), str) else None, ctx),
    )
    pick, omit = body.get("pick"), body.get("omit")
    renderer = _renderer(
        ctx,
        options,
        format,
        query.attrs,
        pick=",".join(pick) if isinstance(pick, list) else pick,
        omit=",".join(omit) if isinstance(omit, list) else omit,
        lang=body.get("lang"),
        join=body.get("join"),
        join_level=str(body["joinLevel"]) if body.get("joinLevel") is not None else None,
        loader=_loader(request, tenant),
    )
    result = await _db(request).query(tenant, query, principal_of(request))
    headers = {"NGSILD-Results-Count": str(result.count)} if result.count is not None else {}
    entities = _render_all(renderer, result.docs)
    if media == GEOJSON:
        return _geojson_response(entities, body.get("geometryProperty"), ctx, single=False, headers=headers)
    return json_response(entities, media, ctx, headers=headers)


# --- discovery ----------------------------------------------------------------------------------------------


@router.get("/types", summary="Available entity types", openapi_extra=_doc([], ["details"], body=False))
def list_types(request: Request) -> Response:
    tenant = _tenant(request)
    qp = _query(request)
    details = qp.get("details")
    media = accepted(request, allow_geo=False)
    ctx = _get_ctx(request)
    b = broker_of(request)
    principal = principal_of(request)
    if bool_param(details, "details"):
        info = b.type_details(tenant, None, principal)
        body: Any = [
            {
                "id": t,
                "type": "EntityType",
                "typeName": ctx.compact(t),
                "attributeNames": sorted(ctx.compact(a) for a in attrs if a),
            }
            for t, attrs in sorted(info.items())
        ]
    else:
        counts = b.type_counts(tenant, principal)
        body = {
            "id": f"urn:ngsi-ld:EntityTypeList:{abs(hash(tuple(sorted(counts)))) % 10**12}",
            "type": "EntityTypeList",
            "typeList": sorted(ctx.compact(t) for t in counts),
        }
    return json_response(body, media, ctx)


@router.get(
    "/types/{type_name:path}",
    summary="Details of an entity type",
    openapi_extra=_doc(["type_name"], ["details"], body=False),
)
def type_info(request: Request, type_name: str) -> Response:
    tenant = _tenant(request)
    if not type_name:  # "/types/" is the list
        return list_types(request)
    media = accepted(request, allow_geo=False)
    ctx = _get_ctx(request)
    iri = ctx.expand(type_name)
    info = broker_of(request).type_details(tenant, [iri], principal_of(request)).get(iri)
    if not info:
        raise NotFound(f"no entity has type {type_name}")
    body = {
        "id": iri,
        "type": "EntityTypeInfo",
        "typeName": ctx.compact(iri),
        "entityCount": info[""]["count"],
        "attributeDetails": [
            {
                "id": a,
                "type": "Attribute",
                "attributeName": ctx.compact(a),
                "attributeTypes": sorted(v["types"]),
            }
            for a, v in sorted(info.items())
            if a
        ],
    }
    return json_response(body, media, ctx)


def _attribute_index(request: Request, tenant: str | None) -> dict[str, dict[str, Any]]:
    info = broker_of(request).type_details(tenant, None, principal_of(request))
    attrs: dict[str, dict[str, Any]] = {}
    for etype, per_attr in info.items():
        for a, v in per_attr.items():
            if not a:
                continue
            slot = attrs.setdefault(a, {"types": set(), "count": 0, "entity_types": set()})
            slot["types"] |= v["types"]
            slot["count"] += v["count"]
            slot["entity_types"].add(etype)
    return attrs


@router.get("/attributes", summary="Available attributes", openapi_extra=_doc([], ["details"], body=False))
def list_attributes(request: Request) -> Response:
    tenant = _tenant(request)
    qp = _query(request)
    details = qp.get("details")
    media = accepted(request, allow_geo=False)
    ctx = _get_ctx(request)
    attrs = _attribute_index(request, tenant)
    if bool_param(details, "details"):
        body: Any = [
            {
                "id": a,
                "type": "Attribute",
                "attributeName": ctx.compact(a),
                "typeNames": sorted(ctx.compact(t) for t in v["entity_types"]),
            }
            for a, v in sorted(attrs.items())
        ]
    else:
        body = {
            "id": f"urn:ngsi-ld:AttributeList:{abs(hash(tuple(sorted(attrs)))) % 10**12}",
            "type": "AttributeList",
            "attributeList": sorted(ctx.compact(a) for a in attrs),
        }
    return json_response(body, media, ctx)


@router.get(
    "/attributes/{attr:path}",
    summary="Details of an attribute",
    openapi_extra=_doc(["attr"], ["details"], body=False),
)
def attribute_info(request: Request, attr: str) -> Response:
    tenant = _tenant(request)
    if not attr:  # "/attributes/" is the list
        return list_attributes(request)
    media = accepted(request, allow_geo=False)
    ctx = _get_ctx(request)
    iri = ctx.expand(attr)
    info = _attribute_index(request, tenant).get(iri)
    if info is None:
        raise NotFound(f"no entity has attribute {attr}")
    body = {
        "id": iri,
        "type": "Attribute",
        "attributeName": ctx.compact(iri),
        "attributeCount": info["count"],
        "attributeTypes": sorted(info["types"]),
        "typeNames": sorted(ctx.compact(t) for t in info["entity_types"]),
    }
    return json_response(body, media, ctx)


# --- parameter parsing --------------------------------------------------------------------------------------


def entity_selectors(
    ents: Any, ctx: ActiveContext
) -> tuple[list[str] | None, str | None, list[frozenset[str]] | None]:
    """The ``entities`` member of a Query body: ids, an idPattern and type selectors."""
    ids: list[str] | None = None
    types: list[frozenset[str]] | None = None
    pattern = None
    if ents is None:
        return ids, pattern, types
    if not isinstance(ents, list):
        raise BadRequest("entities must be an array of {id, idPattern, type}")
    for sel in ents:
        if not isinstance(sel, dict):
            raise BadRequest("each entities member must be an object")
        if "id" in sel:
            ids = (ids or []) + [check_uri(sel["id"], "entities[].id")]
        if "idPattern" in sel:
            pattern = _pattern(sel["idPattern"])
        if "type" in sel:
            types = (types or []) + (_types(sel["type"], ctx) or [])
    return ids, pattern, types


def _ids_param(value: str | None) -> list[str] | None:
    if value is None:
        return None
    ids = [v for v in flag_set(value)]
    for eid in ids:
        check_uri(eid, "id")
    return ids


def _pattern(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest("idPattern must be a string")
    try:
        re.compile(value)
    except re.error as err:
        raise BadRequest(f"idPattern is not a valid regular expression: {err}") from err
    return value


def _types(value: Any, ctx: ActiveContext) -> list[frozenset[str]] | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest("type must be a string")
    try:
        return parse_type_expr(value, ctx.expand)
    except TypeExprError as err:
        raise BadRequest(str(err)) from err


def _q(value: Any, ctx: ActiveContext) -> qlang.Node | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest("q must be a string")
    try:
        return qlang.expand_names(qlang.parse_q(value), ctx.expand)
    except qlang.QSyntaxError as err:
        raise BadRequest(f"q: {err}") from err


def _scope(value: Any) -> Any:
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest("scopeQ must be a string")
    try:
        return scopelang.parse_scope_q(value)
    except qlang.QSyntaxError as err:
        raise BadRequest(f"scopeQ: {err}") from err


def _geo(georel: Any, geometry: Any, coordinates: Any, geoproperty: Any, ctx: ActiveContext) -> Any:
    if georel is None and geometry is None and coordinates is None:
        return None
    try:
        gq = geo_mod.parse_geo_query(georel, geometry, coordinates, geoproperty)
    except ValueError as err:
        raise BadRequest(str(err)) from err
    prop = ctx.expand(geoproperty) if geoproperty else LOCATION
    if gq.geoproperty != prop:
        import dataclasses

        gq = dataclasses.replace(gq, geoproperty=prop)
    return gq


def _hot_routes_first() -> None:
    """Route matching is a linear scan, and this FastAPI spends several µs per route tried: the calls that
    sensors and dashboards make thousands of times a second are tried first. Their paths cannot match each
    other's requests, so the order changes nothing else."""
    hot = {("GET", "/ngsi-ld/v1/entities/{entity_id}"), ("PATCH", "/ngsi-ld/v1/entities/{entity_id}/attrs"),
           ("PATCH", "/ngsi-ld/v1/entities/{entity_id}/attrs/{attr}"), ("GET", "/ngsi-ld/v1/entities")}

    def is_hot(route: Any) -> bool:
        return any((m, getattr(route, "path", "")) in hot for m in getattr(route, "methods", ()) or ())

    router.routes.sort(key=lambda r: not is_hot(r))


_hot_routes_first()
