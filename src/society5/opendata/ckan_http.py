"""CKAN's Action API over HTTP: ``/api/3/action/{name}`` (and ``/api/action/{name}``), and file downloads.

GET reads the query string (values that are JSON lists or objects, such as ``facet.field=["tags"]``, are
decoded); POST takes a JSON object, a urlencoded form, or a multipart form whose ``upload`` file is streamed
to disk under the size limit. Answers are CKAN's envelope ``{"help", "success", "result"}``, errors
``{"help", "success": false, "error": {"__type", "message", <field>: [...]}}`` with CKAN's status codes.

Tokens arrive as CKAN clients send them: ``Authorization: <token>`` (no scheme), ``X-CKAN-API-Key``, or
``Authorization: Bearer <token>``; without one, a staff session cookie or anonymous.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from society5.core.auth import Principal
from society5.core.errors import ApiError
from society5.core.http import platform_of, principal_of
from society5.opendata import catalog_actions, files
from society5.opendata.actions import (
    ACTIONS,
    ActionContext,
    ActionNotFound,
    AuthorizationError,
    CkanError,
    call,
)

log = logging.getLogger(__name__)
router = APIRouter(tags=["opendata"])

# A JSON body is read into memory whole: generous for datastore records, bounded against abuse.
JSON_BODY_MAX = 64 * 1024 * 1024


class BadRequestError(CkanError):
    """A request CKAN cannot even hand to an action (bad JSON, a write over GET)."""

    type_name = "Bad request"
    status = 400


def request_principal(request: Request) -> Principal:
    """The caller by CKAN's conventions (see module docstring); an unknown token is an Authorization Error."""
    plat = platform_of(request)
    if plat.settings.auth == "off":
        return principal_of(request)
    token = (request.headers.get("x-ckan-api-key") or request.headers.get("authorization") or "").strip()
    if token[:7].lower() == "bearer ":
        token = token[7:].strip()
    if not token:
        return principal_of(request)
    try:
        return plat.keys.verify(token)
    except ApiError as err:
        raise AuthorizationError("API token is not valid (APIトークンが無効です)") from err


def site_base(request: Request) -> str:
    return platform_of(request).settings.opendata_site_url or str(request.base_url).rstrip("/")


def _envelope(request: Request, name: str, body: dict[str, Any], status: int = 200) -> Response:
    out = {"help": f"{site_base(request)}/api/3/action/help_show?name={name}", **body}
    return Response(orjson.dumps(out, default=str), status_code=status, media_type="application/json")


def _query_data(request: Request) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for key, value in request.query_params.multi_items():
        if value[:1] in ("[", "{"):
            try:
                decoded: Any = json.loads(value)
            except ValueError:
                decoded = value
        else:
            decoded = value
        if key in data:
            data[key] = (data[key] if isinstance(data[key], list) else [data[key]]) + [decoded]
        else:
            data[key] = decoded
    return data


async def _json_data(request: Request) -> dict[str, Any]:
    raw = bytearray()
    async for chunk in request.stream():
        raw.extend(chunk)
        if len(raw) > JSON_BODY_MAX:
            raise BadRequestError(f"Bad request - JSON Error: body larger than {JSON_BODY_MAX // 2**20} MB")
    if not raw.strip():
        return {}
    try:
        data = orjson.loads(bytes(raw))
    except orjson.JSONDecodeError as err:
        raise BadRequestError(f"Bad request - JSON Error: could not read the body as JSON ({err})") from err
    if not isinstance(data, dict):
        raise BadRequestError("Bad request - JSON Error: the body must be a JSON object (a dictionary)")
    return data


async def call_action(name: str, request: Request) -> Response:
    body: files.MultipartBody | None = None
    try:
        found = ACTIONS.get(name)
        if found is None:
            raise ActionNotFound(f"Bad request - Action name not known: {name}")
        principal = request_principal(request)
        if request.method == "GET":
            if found.write:
                raise BadRequestError(f"Bad request - {name} changes data: call it with POST")
            data = _query_data(request)
        else:
            kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if kind == "multipart/form-data":
                body = await files.MultipartBody(platform_of(request).settings).read(request)
                data = dict(body.fields)
            elif kind == "application/x-www-form-urlencoded":
                data = dict((await request.form()).items())
            else:
                data = await _json_data(request)
        ctx = ActionContext(platform_of(request), principal, site_base(request),
                            dict(body.uploads) if body else {})
        result = await run_in_threadpool(call, name, ctx, data)
        return _envelope(request, name, {"success": True, "result": result})
    except CkanError as err:
        return _envelope(request, name, {"success": False, "error": err.error()}, err.status)
    except ApiError as err:  # a core error (e.g. an unreadable session): CKAN's shape, its status
        error = {"__type": err.title, "message": err.detail}
        return _envelope(request, name, {"success": False, "error": error}, err.status)
    except Exception:  # a bug: logged, and still answered in the envelope CKAN clients can read
        log.exception("CKAN action %s failed", name)
        error = {"__type": "Internal Server Error",
                 "message": "an internal error occurred; it has been logged"}
        return _envelope(request, name, {"success": False, "error": error}, 500)
    finally:
        if body is not None:
            body.discard()


@router.get("/api/3", include_in_schema=False)
@router.get("/api/3/", include_in_schema=False)
async def api_version() -> dict[str, int]:
    return {"version": 3}


# One route per method: with both on one route the two operations shared an operationId in the OpenAPI schema.
@router.get("/api/3/action/{name}", summary="CKAN Action API (read actions)", operation_id="ckan_action_get")
@router.post("/api/3/action/{name}", summary="CKAN Action API", operation_id="ckan_action_post")
async def action_v3(name: str, request: Request) -> Response:
    return await call_action(name, request)


@router.api_route("/api/action/{name}", methods=["GET", "POST"], include_in_schema=False)
async def action_plain(name: str, request: Request) -> Response:
    return await call_action(name, request)


@router.get("/dataset/{package_id}/resource/{resource_id}/download/{filename}",
            summary="Download an uploaded resource file")
def download(package_id: str, resource_id: str, filename: str, request: Request) -> Response:
    """The file of an uploaded resource; a private dataset's only with a token that may read it."""
    try:
        ctx = ActionContext(platform_of(request), request_principal(request), site_base(request))
        resource, _ = catalog_actions.resource_file(ctx, package_id, resource_id)
        return files.download_response(ctx.platform.settings, resource)
    except CkanError as err:
        return _envelope(request, "resource_show", {"success": False, "error": err.error()}, err.status)
