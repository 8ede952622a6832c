"""The fast path for hot entity calls answers exactly like the routed app; group commit batches writes."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from society5.broker.hot_paths import HotPaths
from society5.broker.service import service as broker_service
from society5.core.platform import Platform
from society5.web.app import create_app

E = "/ngsi-ld/v1/entities"
H = {"Content-Type": "application/json"}
TANK = {"id": "urn:ngsi-ld:Tank:1", "type": "Tank", "level": {"type": "Property", "value": 40},
        "scope": "/public"}

CALLS: list[tuple[str, str, dict[str, Any]]] = [
    ("GET", f"{E}/urn:ngsi-ld:Tank:1", {}),
    ("GET", f"{E}/urn:ngsi-ld:Tank:1?options=keyValues&attrs=level", {}),
    ("GET", f"{E}/urn:ngsi-ld:Tank:missing", {}),
    ("GET", f"{E}/not%20a%20uri", {}),
    ("GET", f"{E}/urn:ngsi-ld:Tank:1?colour=red", {}),
    ("PATCH", f"{E}/urn:ngsi-ld:Tank:1/attrs", {"json": {"level": {"type": "Property", "value": 41}}}),
    ("PATCH", f"{E}/urn:ngsi-ld:Tank:1/attrs", {"content": b"{not json"}),
    ("PATCH", f"{E}/urn:ngsi-ld:Tank:1/attrs", {"json": {"nothere": {"type": "Property", "value": 1}}}),
    ("PATCH", f"{E}/urn:ngsi-ld:Tank:missing/attrs", {"json": {"level": {"value": 1}}}),
    ("PATCH", f"{E}/urn:ngsi-ld:Tank:1/attrs/level", {"json": {"value": 42}}),
    ("PATCH", f"{E}/urn:ngsi-ld:Tank:1/attrs/level?x=1", {"json": {"value": 42}}),
    ("PATCH", f"{E}/urn:ngsi-ld:Tank:1/attrs/bad%20name", {"json": {"value": 42}}),
    ("GET", f"{E}/urn:ngsi-ld:Tank:1", {}),
]


def _answers(platform: Platform, fast: bool) -> list[tuple[int, Any]]:
    svc = broker_service if fast else dataclasses.replace(broker_service, middleware=())
    app = create_app(platform.settings, services=[svc], platform=platform)
    out = []
    with TestClient(app) as client:
        client.delete(f"{E}/{TANK['id']}")
        assert client.post(E, json=TANK, headers=H).status_code == 201
        for method, url, kw in CALLS:
            r = client.request(method, url, headers=H if method == "PATCH" else {}, **kw)
            body = r.json() if r.content else None
            out.append((r.status_code, body))
    return out


def test_fast_path_answers_like_the_router(platform: Platform) -> None:
    fast, routed = _answers(platform, True), _answers(platform, False)
    assert fast == routed
    assert [status for status, _ in fast] == [200, 200, 404, 400, 400, 204, 400, 207, 404, 204, 400, 400, 200]


@pytest.mark.parametrize("method,path,hot", [
    ("GET", "/ngsi-ld/v1/entities/urn:a:1", True),
    ("PATCH", "/ngsi-ld/v1/entities/urn:a:1/attrs", True),
    ("PATCH", "/ngsi-ld/v1/entities/urn:a:1/attrs/level", True),
    ("GET", "/ngsi-ld/v1/entities", False),
    ("GET", "/ngsi-ld/v1/entities/", False),
    ("DELETE", "/ngsi-ld/v1/entities/urn:a:1", False),
    ("PATCH", "/ngsi-ld/v1/entities/urn:a:1/other", False),
    ("PATCH", "/ngsi-ld/v1/entities/urn:a:1/attrs/level/extra", False),
    ("GET", "/ngsi-ld/v1/entities/urn:a:1/attrs", False),
    ("GET", "/healthz", False),
])
def test_only_the_hot_operations_take_the_fast_path(method: str, path: str, hot: bool) -> None:
    assert (HotPaths(app=None)._match({"method": method, "path": path}) is not None) == hot  # type: ignore[arg-type]


def test_concurrent_attribute_writes_share_commits(sqlite_platform: Platform) -> None:
    """Group commit: 30 simultaneous PATCHes take far fewer commits; one bad request spoils nothing."""
    app = create_app(sqlite_platform.settings, services=[broker_service], platform=sqlite_platform)
    commits: list[int] = []
    sa.event.listen(sqlite_platform.engine, "commit", lambda conn: commits.append(1))

    async def run() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://s5") as client:
            ents = [{"id": f"urn:ngsi-ld:Tank:{i}", "type": "Tank", "level": {"type": "Property", "value": 0}}
                    for i in range(30)]
            r = await client.post("/ngsi-ld/v1/entityOperations/create", json=ents, headers=H)
            assert r.status_code == 201
            commits.clear()

            async def patch(i: int) -> int:
                body: Any = {"level": {"type": "Property", "value": i + 1}}
                if i == 7:
                    body = {"level": {"type": "Property"}}  # no value: this one request is refused
                resp = await client.patch(f"{E}/urn:ngsi-ld:Tank:{i}/attrs", json=body, headers=H)
                return resp.status_code

            return await asyncio.gather(*(patch(i) for i in range(30)))

    statuses = asyncio.run(run())
    assert statuses == [400 if i == 7 else 204 for i in range(30)]
    assert len(commits) < 10, f"{len(commits)} commits for 30 concurrent writes: nothing was grouped"
    broker = sqlite_platform.parts["broker"]
    levels = {i: broker.get(None, f"urn:ngsi-ld:Tank:{i}")["level"]["value"] for i in range(30)}
    assert levels == {i: 0 if i == 7 else i + 1 for i in range(30)}
    temporal_rows = sqlite_platform.engine.connect().execute(
        sa.text("SELECT count(*) FROM broker_temporal_instances")).scalar()
    assert temporal_rows == 30 + 29  # the creates, then every accepted update: history kept per request
