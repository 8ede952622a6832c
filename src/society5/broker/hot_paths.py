"""A direct way in for the broker's most frequent calls: read one entity, update its attributes.

Sensors PATCH their entity every few seconds and dashboards GET single entities; for those requests
FastAPI's router (matching every route in turn) and its per-request dependency machinery cost more than the
broker's own work. This ASGI middleware recognises the three hot operations by path and method and calls the
very same endpoint functions of ``api.py`` with the same checks and error handlers, skipping only the
routing. Anything it does not recognise goes on to the normal app, so routes, OpenAPI documentation and
behaviour stay defined in one place.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from society5.broker import api
from society5.core.errors import InvalidRequest

PREFIX = "/ngsi-ld/v1/entities/"
Endpoint = Callable[..., Awaitable[Response]]


def _allowed(endpoint: Endpoint) -> frozenset[str]:
    for route in api.router.routes:
        if isinstance(route, APIRoute) and route.endpoint is endpoint:
            return frozenset(api.allowed_query_params(route))
    raise LookupError(f"{endpoint.__name__} is not a route of the broker API")


class HotPaths:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.targets: dict[tuple[str, int], tuple[Endpoint, frozenset[str]]] = {
            ("GET", 1): (api.retrieve_entity, _allowed(api.retrieve_entity)),
            ("PATCH", 2): (api.update_attrs, _allowed(api.update_attrs)),
            ("PATCH", 3): (api.patch_attr, _allowed(api.patch_attr)),
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        target = self._match(scope) if scope["type"] == "http" else None
        if target is None:
            await self.app(scope, receive, send)
            return
        (endpoint, allowed), args = target
        request = Request(scope, receive)
        try:
            if scope.get("query_string"):
                unknown = sorted(set(request.query_params) - allowed)
                if unknown:
                    raise InvalidRequest(f"unknown query parameter(s): {', '.join(unknown)}")
            response = await endpoint(request, *args)
        except Exception as exc:
            response = await _handled(scope["app"], request, exc)
        await response(scope, receive, send)

    def _match(self, scope: Scope) -> tuple[tuple[Endpoint, frozenset[str]], list[str]] | None:
        path: str = scope["path"]
        if not path.startswith(PREFIX):
            return None
        parts = path[len(PREFIX):].split("/")
        if not all(parts) or (len(parts) > 1 and parts[1] != "attrs"):
            return None
        target = self.targets.get((scope["method"], len(parts)))
        if target is None:
            return None
        return target, [parts[0], *parts[2:]]


async def _handled(app: Any, request: Request, exc: Exception) -> Response:
    """The app's own exception handler for ``exc`` (the same answer the routed path would give)."""
    handlers = app.exception_handlers
    for cls in type(exc).__mro__:
        handler = handlers.get(cls)
        if handler is not None:
            response: Response = await handler(request, exc)
            return response
    raise exc
