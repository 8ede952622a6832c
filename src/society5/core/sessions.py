"""Signed, expiring session cookies for staff logged in to the web pages (no server-side session table)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import orjson

from society5.core.auth import Principal


def make_session(principal: Principal, secret: str, hours: int) -> str:
    payload = orjson.dumps(
        {
            "r": principal.role,
            "t": principal.tenant,
            "n": principal.name,
            "e": int(time.time()) + hours * 3600,
        }
    )
    body = base64.urlsafe_b64encode(payload).decode().rstrip("=")
    sig = hmac.new(secret.encode(), body.encode(), hashlib.sha256).hexdigest()
    return f"{body}.{sig}"


def read_session(cookie: str, secret: str) -> Principal | None:
    body, _, sig = cookie.partition(".")
    want = hmac.new(secret.encode(), body.encode(), hashlib.sha256).hexdigest()
    if not sig or not hmac.compare_digest(sig, want):
        return None
    try:
        data = orjson.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (ValueError, orjson.JSONDecodeError):
        return None
    if not isinstance(data, dict) or data.get("e", 0) < time.time():
        return None
    return Principal(role=data.get("r", "reader"), tenant=data.get("t"), name=data.get("n", ""))
