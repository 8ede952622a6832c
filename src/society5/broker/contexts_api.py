"""``/ngsi-ld/v1/jsonldContexts``: the local @context cache, listed, added to (hosted) and pruned."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import Response

from society5.broker.api import broker_of
from society5.broker.http import JSON, body_doc, bool_param, json_response, read_json
from society5.broker.jsonld import CORE_ALIASES, CORE_CONTEXT_URL
from society5.broker.tables import contexts as contexts_table
from society5.core.errors import BadRequest, NotFound, Unauthorized
from society5.core.http import platform_of, principal_of
from society5.core.timeutil import now_iso

router = APIRouter(prefix="/ngsi-ld/v1", tags=["JSON-LD contexts"])


def _hosted_url(request: Request, ident: str) -> str:
    base = platform_of(request).settings.base_url or str(request.base_url).rstrip("/")
    return f"{base}/ngsi-ld/v1/jsonldContexts/{ident}"


@router.get("/jsonldContexts", summary="List cached and hosted @contexts")
def list_contexts(request: Request, details: str | None = None, kind: str | None = None) -> Response:
    store = broker_of(request).contexts
    if kind is not None and kind not in ("Cached", "Hosted", "ImplicitlyCreated"):
        raise BadRequest("kind must be Cached, Hosted or ImplicitlyCreated")
    urls = [u for u in store.urls() if kind is None or store.kind(u) == kind]
    if bool_param(details, "details"):
        body: Any = [{"URL": u, "localId": u.rsplit("/", 1)[-1], "kind": store.kind(u)} for u in urls]
    else:
        body = urls
    return json_response(body, JSON, None)


@router.post("/jsonldContexts", status_code=201, openapi_extra=body_doc(), summary="Host an @context")
async def add_context(request: Request) -> Response:
    principal = principal_of(request)
    if principal.anonymous:
        raise Unauthorized("adding a context needs an API key")
    body, _ = await read_json(request, platform_of(request).settings.max_body_bytes)
    if not isinstance(body, dict) or "@context" not in body:
        raise BadRequest('the body must be a JSON-LD context document: {"@context": {...}}')
    ctx = body["@context"]
    if not isinstance(ctx, dict | list | str):
        raise BadRequest("@context must be an object, a URL or a list of them")
    b = broker_of(request)
    b.context(ctx)  # refuse a context that does not resolve before storing it
    ident = uuid.uuid4().hex
    url = _hosted_url(request, ident)
    b.contexts.add(url, body, kind="Hosted")
    with b.engine.begin() as conn:
        conn.execute(
            contexts_table.insert().values(url=url, kind="Hosted", body=body, created_at=now_iso(), uses=0)
        )
    return Response(status_code=201, headers={"Location": url})


@router.get("/jsonldContexts/{context_id:path}", summary="Serve a cached or hosted @context")
def get_context(request: Request, context_id: str, details: str | None = None) -> Response:
    store = broker_of(request).contexts
    url = _resolve(request, context_id)
    doc = store.get(url)
    if doc is None:
        raise NotFound(f"no @context {context_id} in the cache")
    if bool_param(details, "details"):
        return json_response(
            {"URL": url, "localId": url.rsplit("/", 1)[-1], "kind": store.kind(url)}, JSON, None
        )
    return Response(content=_dumps(doc), media_type="application/ld+json")


@router.delete("/jsonldContexts/{context_id:path}", status_code=204, summary="Remove an @context")
def delete_context(request: Request, context_id: str, reload: str | None = None) -> Response:
    principal = principal_of(request)
    if principal.anonymous:
        raise Unauthorized("removing a context needs an API key")
    b = broker_of(request)
    url = _resolve(request, context_id)
    if url in CORE_ALIASES:
        raise BadRequest("the core @context cannot be deleted")
    if bool_param(reload, "reload"):
        if b.contexts.kind(url) == "Hosted":
            raise BadRequest("a hosted @context cannot be reloaded")
        b.contexts.remove(url)
        b.context(url)
        return Response(status_code=204)
    if not b.contexts.remove(url):
        raise NotFound(f"no @context {context_id} in the cache")
    with b.engine.begin() as conn:
        conn.execute(sa.delete(contexts_table).where(contexts_table.c.url == url))
    return Response(status_code=204)


def _resolve(request: Request, context_id: str) -> str:
    store = broker_of(request).contexts
    if store.get(context_id) is not None:
        return context_id
    hosted = _hosted_url(request, context_id)
    if store.get(hosted) is not None:
        return hosted
    for url in store.urls():
        if url.rsplit("/", 1)[-1] == context_id:
            return url
    if context_id == "core":
        return CORE_CONTEXT_URL
    return context_id


def _dumps(doc: Any) -> bytes:
    import orjson

    return orjson.dumps(doc)
