"""``create_app(settings, services=[...])``: the ASGI app is exactly the services it is given."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from society5 import __version__
from society5.core.errors import ApiError, ConfigError
from society5.core.platform import Platform
from society5.core.service import Service, by_name, discover
from society5.core.settings import Settings

log = logging.getLogger(__name__)
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def check_auth_off(settings: Settings, host: str) -> None:
    """``SOCIETY5_AUTH=off`` is for local experiments only: refuse it on anything but loopback."""
    if settings.auth == "off" and host not in LOOPBACK and not host.startswith("127."):
        raise ConfigError(f"SOCIETY5_AUTH=off is only allowed when the server binds to loopback, not {host}")


def _ordered(services: Sequence[Service]) -> list[Service]:
    # The broker starts first: every other service keeps its data in it.
    return sorted(services, key=lambda s: (s.name != "broker", s.name != "web"))


class Society5App(FastAPI):
    """FastAPI with the services' middleware in front of everything, FastAPI's own layers included.

    ``add_middleware`` would put a service's middleware inside FastAPI's error, telemetry and body-limit
    layers, which every request then crosses (about 17 µs a request here, a sixth of a one-entity GET).
    A front middleware sees the request first; what it passes on goes through the whole normal app. It must
    answer its own errors (the broker's ``HotPaths`` uses the app's exception handlers)."""

    front: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        front = self.front
        if front is None or scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        if self.root_path:  # as FastAPI.__call__ does
            scope["root_path"] = self.root_path
        scope["app"] = self
        await front(scope, receive, send)

    def put_in_front(self, middleware: Any) -> None:
        inner = self.front or (lambda scope, receive, send: FastAPI.__call__(self, scope, receive, send))
        self.front = middleware(inner)


def create_app(
    settings: Settings | None = None,
    services: Sequence[Service] | None = None,
    platform: Platform | None = None,
) -> FastAPI:
    settings = settings or Settings()
    services = _ordered(list(services) if services is not None else discover())
    by_name(services)
    plat = platform or Platform.open(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        runner = None
        jobs = [job for svc in services for job in svc.jobs]
        if jobs:
            from society5.core.jobs import JobRunner

            runner = JobRunner(plat, jobs)
            runner.start()
        # A background hook may find nothing to run (no folder or MQTT configured) and return None.
        started = (svc.background(plat) for svc in services if svc.background is not None)
        running = [worker for worker in started if worker is not None]
        if plat.outbox.handlers:
            running.append(plat.outbox.start())
        try:
            yield
        finally:
            for worker in reversed(running):
                try:
                    worker.stop()
                except Exception:  # one failing stop must not keep the others running
                    log.exception("stopping %r failed", worker)
            if runner is not None:
                runner.stop()
            for svc in services:
                if svc.on_shutdown is not None:
                    svc.on_shutdown(plat)

    app = Society5App(
        title="society5",
        version=__version__,
        description=(
            "北海道 Society 5.0 データ連携基盤 — "
            "Hokkaido Society 5.0 platform (NGSI-LD, open data, services)"
        ),
        lifespan=lifespan,
        default_response_class=_OrjsonResponse,
        docs_url=None,
        redoc_url=None,
    )
    app.state.platform = plat
    app.state.services = services

    @app.get("/healthz", tags=["platform"], summary="Liveness (also the no-op baseline of benchmarks)")
    async def healthz() -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    for svc in services:
        if svc.on_startup is not None:
            svc.on_startup(plat)
    for svc in services:
        if svc.router is not None:
            prefix = f"/{svc.name}" if svc.mount is None else svc.mount
            app.include_router(svc.router, prefix=prefix)
        if svc.pages is not None:
            app.include_router(svc.pages)
    _install_error_handlers(app)
    _install_docs(app)
    for svc in services:
        for middleware in svc.middleware:
            app.put_in_front(middleware)

    return app


def _install_docs(app: FastAPI) -> None:
    """Swagger UI from the swagger-ui-bundle package: the API docs work on a closed municipal network."""
    import swagger_ui_bundle
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles

    app.mount("/docs-assets", StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="swagger-ui")

    @app.get("/docs", include_in_schema=False)
    def docs() -> Response:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="society5 API",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon-32x32.png",
        )


class _OrjsonResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def _wants_problem(request: Request) -> bool:
    return request.url.path.startswith("/ngsi-ld/")


def _error_response(request: Request, err: ApiError) -> Response:
    if _wants_problem(request):
        return Response(orjson.dumps(err.problem()), status_code=err.status, media_type="application/json")
    body = {"error": {"code": err.code, "title": err.title, "detail": err.detail, "status": err.status}}
    return Response(orjson.dumps(body), status_code=err.status, media_type="application/json")


def _install_error_handlers(app: FastAPI) -> None:
    from society5.core.errors import BadRequest, InvalidRequest, NotFound, OperationNotSupported

    @app.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError) -> Response:
        return _error_response(request, err)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, err: RequestValidationError) -> Response:
        parts = []
        for e in err.errors()[:5]:
            loc = ".".join(str(x) for x in e.get("loc", ()) if x not in ("query", "header", "path", "body"))
            parts.append(f"{loc}: {e.get('msg')}")
        return _error_response(request, BadRequest("; ".join(parts) or "invalid request"))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> Response:
        mapped: ApiError
        if err.status_code == 404:
            mapped = NotFound(f"no such resource: {request.url.path}")
        elif err.status_code == 405:
            mapped = OperationNotSupported(f"{request.method} is not supported on {request.url.path}")
            mapped.status = 405
        else:
            mapped = InvalidRequest(str(err.detail))
            mapped.status = err.status_code
        return _error_response(request, mapped)

    @app.exception_handler(ClientDisconnect)
    async def client_gone(request: Request, err: ClientDisconnect) -> Response:
        # The client hung up mid-body: nothing was written and nobody is left to answer.
        log.debug("client disconnected during %s %s", request.method, request.url.path)
        return Response(status_code=400)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, err: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        body = {
            "type": "https://uri.etsi.org/ngsi-ld/errors/InternalError",
            "title": "InternalError",
            "status": 500,
            "detail": "an internal error occurred; it has been logged",
        }
        return Response(orjson.dumps(body), status_code=500, media_type="application/json")
