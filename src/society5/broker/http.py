"""Content negotiation, request bodies and responses of the NGSI-LD HTTP API."""

from __future__ import annotations

import functools
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import Response

from society5.broker.core import gc_paused
from society5.broker.jsonld import CORE_CONTEXT_URL, ActiveContext, link_header, parse_link_header
from society5.core.errors import (
    ApiError,
    BadRequest,
    InvalidRequest,
    NotAcceptable,
    PayloadTooLarge,
    UnsupportedMediaType,
)

JSON = "application/json"
JSONLD = "application/ld+json"
GEOJSON = "application/geo+json"
MERGE_PATCH = "application/merge-patch+json"
BODY_CONTENT = {
    JSON: {"schema": {"type": ["object", "array"]}},
    JSONLD: {"schema": {"type": ["object", "array"]}},
}


def body_doc(required: bool = True) -> dict[str, Any]:
    """OpenAPI for a JSON body we parse ourselves (FastAPI would otherwise not describe it)."""
    return {"requestBody": {"required": required, "content": BODY_CONTENT}}


async def read_json(request: Request, max_bytes: int) -> tuple[Any, str]:
    """The parsed body and its media type; 4xx for a missing, oversize, wrongly typed or broken body."""
    ctype = request.headers.get("content-type", "")
    media = ctype.split(";")[0].strip().lower()
    if media not in (JSON, JSONLD, MERGE_PATCH):
        raise UnsupportedMediaType(
            f"Content-Type {media or '(none)'} is not supported: send application/json or application/ld+json"
        )
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > max_bytes:
        raise PayloadTooLarge(f"the body has {length} bytes; the limit is {max_bytes}")
    raw = bytearray()
    async for chunk in request.stream():
        raw.extend(chunk)
        if len(raw) > max_bytes:
            raise PayloadTooLarge(f"the body is larger than the limit of {max_bytes} bytes")
    if not raw:
        raise InvalidRequest("the request body is empty; a JSON document is expected")
    try:
        if len(raw) < 65_536:
            body = orjson.loads(bytes(raw))
        else:  # a batch: tens of thousands of objects at once would set off full collections (gc_paused)
            with gc_paused():
                body = orjson.loads(bytes(raw))
    except orjson.JSONDecodeError as err:
        raise InvalidRequest(f"the body is not valid JSON: {err}") from err
    return body, media


def context_source(request: Request, body: Any = None, media: str = JSON) -> Any:
    """What the client named as @context: the body's (ld+json) or the Link header's (json), else None."""
    if media == JSONLD:
        if request.headers.get("link") and parse_link_header(request.headers.get("link")):
            raise BadRequest("a JSON-LD Link header is not allowed with Content-Type application/ld+json")
        items = body if isinstance(body, list) else [body]
        contexts = [i.get("@context") for i in items if isinstance(i, dict)]
        if any(c is None for c in contexts) or not contexts:
            raise BadRequest("Content-Type application/ld+json needs an @context in the body (each entity)")
        return contexts[0]
    if isinstance(body, dict) and "@context" in body:
        raise BadRequest(
            "an @context in the body needs Content-Type application/ld+json; "
            "with application/json send the context in a Link header"
        )
    if isinstance(body, list) and any(isinstance(i, dict) and "@context" in i for i in body):
        raise BadRequest("an @context in the body needs Content-Type application/ld+json")
    return parse_link_header(request.headers.get("link"))


def accepted(request: Request, allow_geo: bool = True) -> str:
    header = request.headers.get("accept", "")
    if not header:
        return JSON
    best: tuple[float, str] | None = None
    for part in header.split(","):
        media, _, params = part.strip().partition(";")
        media = media.strip().lower()
        weight = 1.0
        for param in params.split(";"):
            key, _, val = param.strip().partition("=")
            if key == "q":
                try:
                    weight = float(val)
                except ValueError:
                    weight = 0.0
        choice = {
            "application/json": JSON,
            "application/*": JSON,
            "*/*": JSON,
            JSONLD: JSONLD,
            GEOJSON: GEOJSON if allow_geo else None,
        }.get(media)
        if choice and weight > 0 and (best is None or weight > best[0]):
            best = (weight, choice)
    if best is None:
        raise NotAcceptable(
            f"Accept {header!r}: this API answers application/json, application/ld+json"
            + (" or application/geo+json" if allow_geo else "")
        )
    return best[1]


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


def context_url(ctx: ActiveContext) -> Any:
    return ctx.source if ctx.source is not None else CORE_CONTEXT_URL


def json_response(
    payload: Any,
    media: str,
    ctx: ActiveContext | None,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    """A body in the negotiated representation: Link header for JSON, @context in the body for JSON-LD."""
    link = None
    if ctx is not None:
        source = context_url(ctx)
        if media == JSONLD:
            if isinstance(payload, dict):
                payload = {**payload, "@context": source}
            elif isinstance(payload, list):
                payload = [{**p, "@context": source} if isinstance(p, dict) else p for p in payload]
        else:
            link = _link_bytes(source if isinstance(source, str) else CORE_CONTEXT_URL)
    return JsonBody(orjson.dumps(payload), status, media, link, headers)


class JsonBody(Response):
    """A ready JSON body. Starlette's constructor lower-cases, checks and encodes every header of every
    response; a one-entity GET spends about as long there as in SQLite, so the headers are put together
    here directly, in the same form (``raw_headers``) Starlette sends."""

    def __init__(self, body: bytes, status: int, media: str, link: bytes | None = None,
                 headers: dict[str, str] | None = None) -> None:
        self.status_code = status
        self.body = body
        self.background = None
        raw = [(b"content-length", b"%d" % len(body)), (b"content-type", media.encode("latin-1"))]
        if link is not None:
            raw.append((b"link", link))
        if headers:
            raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        self.raw_headers = raw


@functools.lru_cache(maxsize=256)
def _link_bytes(url: str) -> bytes:
    return link_header(url).encode("latin-1")


def problem_response(err: ApiError) -> Response:
    return Response(orjson.dumps(err.problem()), status_code=err.status, media_type="application/json")


def flag_set(value: str | None) -> set[str]:
    return {v.strip() for v in value.split(",") if v.strip()} if value else set()


def bool_param(value: str | None, name: str) -> bool:
    if value is None:
        return False
    low = value.lower()
    if low in ("true", "1", "yes"):
        return True
    if low in ("false", "0", "no", ""):
        return False
    raise BadRequest(f"{name} must be true or false, not {value!r}")


def int_param(value: str | None, name: str, default: int, lo: int, hi: int) -> int:
    if value is None:
        return default
    try:
        num = int(value)
    except ValueError as err:
        raise BadRequest(f"{name} must be an integer, not {value!r}") from err
    if num < lo or num > hi:
        raise BadRequest(f"{name} must be between {lo} and {hi}, not {num}")
    return num
