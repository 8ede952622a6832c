"""Admin API of the MQTT bridge: the dead letters (messages it could not store) and its state."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from society5.broker.mqtt_store import DeadLetters
from society5.core.auth import Principal
from society5.core.errors import Forbidden, Unauthorized
from society5.core.http import platform_of, principal_of

router = APIRouter(prefix="/admin/mqtt", tags=["MQTT"])


def require_admin(principal: Principal) -> None:
    if principal.anonymous:
        raise Unauthorized("this needs an admin API key: send 'Authorization: Bearer <key>'")
    if not principal.is_admin:
        raise Forbidden("only an admin may see the MQTT bridge's dead letters")


def bridge_state(platform: Any) -> dict[str, Any]:
    """Whether the bridge runs, is connected, and what it has done since the process started."""
    bridge = platform.parts.get("mqtt_bridge")
    if bridge is None:
        return {"running": False, "configured": bool(platform.settings.mqtt_url)}
    return {"running": True, "configured": True, "broker": bridge.config.where,
            "clientId": bridge.config.client_id, "connected": bridge.connected.is_set(),
            "subscribed": bridge.subscribed.is_set(), **bridge.stats}


def dead_letter_page(platform: Any, tenant: str | None, limit: int, offset: int) -> dict[str, Any]:
    items, total = DeadLetters(platform.engine).list(tenant, limit, offset)
    return {"total": total, "limit": limit, "offset": offset, "bridge": bridge_state(platform),
            "deadLetters": [
                {"id": r["id"], "receivedAt": r["received_at"], "tenant": r["tenant"], "topic": r["topic"],
                 "payload": r["payload"], "error": r["error"]}
                for r in items
            ]}


@router.get(
    "/dead-letters",
    summary="MQTT messages the bridge could not store, newest first (admins only)",
    description="Each dead letter holds the topic, the payload (cut to SOCIETY5_MQTT_DEAD_LETTER_PAYLOAD_MAX "
    "characters) and the reason. `bridge` tells whether the bridge runs in this process and is connected.",
)
async def list_dead_letters(
    request: Request,
    tenant: str | None = Query(None, description="only this tenant's dead letters"),
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0, le=2**53, description="items to skip (at most 2^53)"),
) -> dict[str, Any]:
    require_admin(principal_of(request))
    return await run_in_threadpool(dead_letter_page, platform_of(request), tenant, limit, offset)
