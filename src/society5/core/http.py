"""HTTP glue shared by every API: the platform of a request, who is calling, error bodies."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from society5.core.auth import ANONYMOUS, Principal
from society5.core.errors import Unauthorized
from society5.core.platform import Platform

SESSION_COOKIE = "s5_session"
_AUTH_OFF = Principal(role="admin", name="auth-off")


def platform_of(request: Request) -> Platform:
    # Looked up several times per request; the scope keeps it (app.state goes through __getattr__).
    scope = request.scope
    plat: Platform | None = scope.get("s5.platform")
    if plat is None:
        plat = scope["s5.platform"] = request.app.state.platform
    return plat


def principal_of(request: Request) -> Principal:
    """The caller: an API key (``Authorization: Bearer``), a staff session cookie, or anonymous."""
    cached = request.scope.get("s5.principal")
    if cached is not None:
        return cached
    plat = platform_of(request)
    principal = _resolve(request, plat)
    request.scope["s5.principal"] = principal
    return principal


def _resolve(request: Request, plat: Platform) -> Principal:
    if plat.settings.auth == "off":
        return _AUTH_OFF
    header = request.headers.get("authorization")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("Authorization header: expected 'Bearer <API key>'")
        return plat.keys.verify(token.strip())
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        from society5.core.sessions import read_session

        principal = read_session(cookie, plat.settings.effective_secret())
        if principal is not None:
            return principal
    return ANONYMOUS


def error_body(code: str, title: str, detail: str, status: int) -> dict[str, Any]:
    return {"error": {"code": code, "title": title, "detail": detail, "status": status}}
