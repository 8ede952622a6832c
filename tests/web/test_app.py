"""The app factory: explicit service lists, offline API docs, error shapes outside the NGSI-LD API."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from society5.core.platform import Platform
from society5.core.service import Service
from society5.web.app import check_auth_off, create_app


def test_app_holds_exactly_the_services_given(sqlite_platform: Platform) -> None:
    app = create_app(sqlite_platform.settings, services=[], platform=sqlite_platform)
    with TestClient(app) as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        assert c.get("/ngsi-ld/v1/entities?type=X").status_code == 404


def test_docs_are_served_without_a_cdn(client: Any) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    assert "/docs-assets/swagger-ui-bundle.js" in page.text
    assert "cdn" not in page.text.lower()
    assert client.get("/docs-assets/swagger-ui-bundle.js").status_code == 200
    spec = client.get("/openapi.json").json()
    assert "/ngsi-ld/v1/entities" in spec["paths"]


def test_other_apis_use_the_plain_error_shape(sqlite_platform: Platform) -> None:
    from fastapi import APIRouter

    from society5.core.errors import BadRequest

    router = APIRouter()

    @router.get("/boom")
    def boom() -> None:
        raise BadRequest("level: must be a number")

    svc = Service(name="sample", title="見本", router=router)
    with TestClient(create_app(sqlite_platform.settings, services=[svc], platform=sqlite_platform)) as c:
        r = c.get("/sample/boom")
        assert r.status_code == 400
        assert r.json()["error"]["detail"] == "level: must be a number"


def test_auth_off_is_refused_off_loopback(sqlite_platform: Platform) -> None:
    import pytest

    from society5.core.errors import ConfigError

    settings = sqlite_platform.settings.model_copy(update={"auth": "off"})
    check_auth_off(settings, "127.0.0.1")
    with pytest.raises(ConfigError):
        check_auth_off(settings, "0.0.0.0")


def test_service_middleware_sees_requests_before_fastapi(sqlite_platform: Platform) -> None:
    """A service's middleware is put in front of the whole app, FastAPI's own layers included: it gets each
    HTTP request first, with the app and its root path in the scope, in the order the services are listed;
    what it passes on is routed as usual; the lifespan does not go through it."""
    from starlette.responses import PlainTextResponse

    seen: list[tuple[str, str, bool]] = []

    def recorder(tag: str) -> Any:
        def make(inner: Any) -> Any:
            async def middleware(scope: Any, receive: Any, send: Any) -> None:
                seen.append((tag, scope["path"], scope.get("app") is app and scope["root_path"] == "/s5"))
                if scope["path"] == f"/answered-by-{tag}":
                    await PlainTextResponse(tag)(scope, receive, send)
                    return
                await inner(scope, receive, send)

            return middleware

        return make

    services = [Service(name="first", title="一", middleware=(recorder("a"),)),
                Service(name="second", title="二", middleware=(recorder("b"),))]
    app = create_app(sqlite_platform.settings, services=services, platform=sqlite_platform)
    app.root_path = "/s5"  # behind a proxy that strips a prefix: the front sees it as FastAPI would
    with TestClient(app) as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        assert c.get("/answered-by-a").text == "a"
        assert c.get("/answered-by-b").text == "b"
    # b is in front of a: each middleware wraps what was built before it, as add_middleware would
    assert seen == [("b", "/healthz", True), ("a", "/healthz", True),
                    ("b", "/answered-by-a", True), ("a", "/answered-by-a", True),
                    ("b", "/answered-by-b", True)]
