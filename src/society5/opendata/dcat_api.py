"""DCAT-AP endpoints: ``/catalog.ttl|.jsonld|.rdf|.xml`` and ``/dataset/{id_or_name}.ttl|…``, as ckanext-dcat.

The catalog is paged (``?page=N``, ``PAGE_SIZE`` datasets a page, newest change first) and described with a
``hydra:PagedCollection`` whose next/previous/first/last page URLs a harvester follows; ``modified_since``,
``q`` and ``fq`` narrow it through ``package_search``. Everything is read through the action registry with the
caller's principal, so a private dataset appears only for a token that may read it (404 otherwise), exactly as
on the CKAN API.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request, Response

from society5.core.auth import Principal
from society5.core.errors import BadRequest, Forbidden, NotFound, Unauthorized
from society5.core.http import platform_of
from society5.opendata import actions, ckan_http, dcat, layouts

router = APIRouter(tags=["opendata"])
PAGE_SIZE = 100  # ckanext-dcat's default datasets per page
# newest change first (what incremental harvesters want), the name to keep page boundaries stable on ties
CATALOG_SORT = "metadata_modified desc, name asc"


def site_of(request: Request) -> dcat.Site:
    """The publishing site: ``opendata_site_url`` when set (behind a proxy), else the request's base URL."""
    settings = platform_of(request).settings
    base = (settings.opendata_site_url or str(request.base_url)).rstrip("/")
    title, publisher = settings.opendata_site_title, settings.opendata_publisher
    return dcat.Site(
        base_url=base, title=title, publisher=publisher,
        # settings hold the Japanese title only: the default one has a known English name, others none
        title_en="Hokkaido Open Data" if title == "北海道オープンデータ" else "",
        description=f"{publisher}のオープンデータカタログ（CKAN 互換 API、DCAT-AP 3.0）",
        description_en="Open data catalog (CKAN-compatible API, DCAT-AP 3.0)",
    )


def standard_of(layout_id: str) -> dcat.Standard | None:
    """The standard layout ``layout_id`` (``layouts`` registry) as a ``dct:Standard``; None if unknown."""
    try:
        layout = layouts.get(layout_id)
    except KeyError:
        return None
    return dcat.Standard(layout.id, layout.name_ja, layout.name_en, layout.description_ja)


def _context(request: Request, site: dcat.Site) -> actions.ActionContext:
    """The caller as the CKAN API sees it (``Authorization: <token>``, ``X-CKAN-API-Key``, ``Bearer``)."""
    try:
        principal = ckan_http.request_principal(request)
    except actions.AuthorizationError as err:
        raise Unauthorized(err.message) from None
    return actions.ActionContext(platform_of(request), principal, base_url=site.base_url)


def _rdf(graph: Any, ext: str) -> Response:
    return Response(dcat.serialize(graph, ext), media_type=f"{dcat.FORMATS[ext][1]}; charset=utf-8")


def _modified_since(value: str | None) -> str | None:
    """``modified_since`` as a UTC timestamp in CKAN's form, or a 400 naming the parameter."""
    if value is None or not value.strip():
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise BadRequest(f"modified_since: expected an ISO 8601 date or date-time such as "
                         f"2024-04-01T00:00:00Z, got {value!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).replace(tzinfo=None).isoformat()


def _search(ctx: actions.ActionContext, data: dict[str, Any]) -> dict[str, Any]:
    try:
        result: dict[str, Any] = actions.call("package_search", ctx, data)
    except (actions.SearchError, actions.ValidationError) as err:
        raise BadRequest(f"q/fq: {err.message}") from None
    except actions.AuthorizationError as err:
        raise Forbidden(err.message) from None
    except actions.CkanError as err:  # any other refusal is still the request's fault, never a 500
        raise BadRequest(err.message) from None
    return result


def _readable(principal: Principal, package: dict[str, Any]) -> bool:
    # package_search and package_show already hide what the caller may not read; checked again here because
    # an export that leaked a private dataset would be worse than one that leaves one out.
    org = package.get("organization") or {}
    tenant = str(org.get("tenant") or "")
    return package.get("state", "active") == "active" and actions.can_read(
        principal, tenant, bool(package.get("private")))


def _page_url(site: dcat.Site, ext: str, params: dict[str, str], page: int) -> str:
    return f"{site.base_url}/catalog.{ext}?" + urlencode({**params, "page": str(page)})


def _catalog(request: Request, ext: str, page: int, modified_since: str | None, q: str | None,
             fq: str | None) -> Response:
    site = site_of(request)
    ctx = _context(request, site)
    since = _modified_since(modified_since)
    data: dict[str, Any] = {"rows": PAGE_SIZE, "start": (page - 1) * PAGE_SIZE, "sort": CATALOG_SORT,
                            "include_private": not ctx.principal.anonymous}
    if q and q.strip():
        data["q"] = q
    if fq and fq.strip():
        data["fq"] = fq
    if since:  # as ckanext-dcat filters it; fq_list terms are ANDed with fq
        data["fq_list"] = [f"metadata_modified:[{since} TO *]"]
    found = _search(ctx, data)
    total = int(found.get("count") or 0)
    last = max(1, math.ceil(total / PAGE_SIZE))
    if page > last:
        raise NotFound(f"page: {page} is past the last page of this catalog ({last})")
    packages = [p for p in found.get("results") or [] if _readable(ctx.principal, p)]
    newest = None
    if page > 1:  # the catalog's dct:modified is its newest change, which page 1 holds first
        top = _search(ctx, {**data, "rows": 1, "start": 0})
        newest = next((p.get("metadata_modified") for p in top.get("results") or []), None)
    params = {k: v for k, v in (("q", q), ("fq", fq), ("modified_since", modified_since)) if v}
    paging = dcat.Page(
        current=_page_url(site, ext, params, page), first=_page_url(site, ext, params, 1),
        last=_page_url(site, ext, params, last), total=total, per_page=PAGE_SIZE,
        next=_page_url(site, ext, params, page + 1) if page < last else None,
        previous=_page_url(site, ext, params, page - 1) if page > 1 else None,
    )
    graph = dcat.catalog_graph(packages, site, page=paging, modified=newest, standards=standard_of)
    return _rdf(graph, ext)


def _dataset(request: Request, ext: str, ref: str) -> Response:
    site = site_of(request)
    ctx = _context(request, site)
    try:
        package: dict[str, Any] = actions.call("package_show", ctx, {"id": ref})
    except (actions.NotFoundError, actions.AuthorizationError, actions.ValidationError):
        package = {}
    if not package or not _readable(ctx.principal, package):
        # the same answer for "no such dataset" and "not yours to read": private datasets stay invisible
        raise NotFound(f"dataset {ref!r} not found")
    return _rdf(dcat.dataset_graph(package, site, standards=standard_of), ext)


def _register(ext: str) -> None:
    label = "RDF/XML" if ext in ("rdf", "xml") else dcat.FORMATS[ext][1]

    @router.get(f"/catalog.{ext}", summary=f"DCAT-AP catalog ({label})", response_class=Response)
    def catalog(
        request: Request,
        page: int = Query(1, ge=1, le=100_000, description=f"page number ({PAGE_SIZE} datasets a page)"),
        modified_since: str | None = Query(None, description="only datasets changed since (ISO 8601)"),
        q: str | None = Query(None, description="package_search text query"),
        fq: str | None = Query(None, description="package_search filter query (Solr subset)"),
    ) -> Response:
        return _catalog(request, ext, page, modified_since, q, fq)

    @router.get(f"/dataset/{{ref}}.{ext}", summary=f"One dataset as DCAT-AP ({label})",
                response_class=Response)
    def dataset(request: Request, ref: str) -> Response:
        return _dataset(request, ext, ref)


for _ext in dcat.FORMATS:
    _register(_ext)
