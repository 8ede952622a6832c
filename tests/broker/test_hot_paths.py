"""The fast path for hot entity calls answers exactly like the routed app; group commit batches writes."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from society5.broker.hot_paths import HotPaths
from society5.broker.service import service as broker_service
from society5.core.db import write_gate
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


def _answers(platform: Platform, fast: bool) -> list[tuple[int, Any, dict[str, str]]]:
    svc = broker_service if fast else dataclasses.replace(broker_service, middleware=())
    app = create_app(platform.settings, services=[svc], platform=platform)
    out = []
    with TestClient(app) as client:
        client.delete(f"{E}/{TANK['id']}")
        assert client.post(E, json=TANK, headers=H).status_code == 201
        for method, url, kw in CALLS:
            r = client.request(method, url, headers=H if method == "PATCH" else {}, **kw)
            body = r.json() if r.content else None
            headers = {k: v for k, v in r.headers.items() if k in ("content-type", "content-length", "link")}
            out.append((r.status_code, body, headers))
    return out


def test_fast_path_answers_like_the_router(platform: Platform) -> None:
    fast, routed = _answers(platform, True), _answers(platform, False)
    assert fast == routed
    assert [answer[0] for answer in fast] == [200, 200, 404, 400, 400, 204, 400, 207, 404, 204, 400, 400, 200]
    assert fast[0][2]["content-type"] == "application/json" and "rel=" in fast[0][2]["link"]


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


def _patch_all(app: Any, bodies: dict[int, Any]) -> list[int]:
    async def run() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://s5") as client:
            async def patch(i: int) -> int:
                resp = await client.patch(f"{E}/urn:ngsi-ld:Tank:{i}/attrs", json=bodies[i], headers=H)
                return resp.status_code

            return await asyncio.gather(*(patch(i) for i in sorted(bodies)))

    return asyncio.run(run())


def _tanks(platform: Platform, n: int) -> Any:
    app = create_app(platform.settings, services=[broker_service], platform=platform)
    broker = platform.parts["broker"]
    broker.batch_create(None, [{"id": f"urn:ngsi-ld:Tank:{i}", "type": "Tank",
                                "level": {"type": "Property", "value": 0}} for i in range(n)])
    return app, broker


def _level(i: int) -> dict[str, Any]:
    return {"level": {"type": "Property", "value": i + 1}}


def test_concurrent_attribute_writes_share_commits(platform: Platform) -> None:
    """Group commit: 30 simultaneous PATCHes take far fewer commits than requests (on PostgreSQL, where a
    group runs in a worker thread, as on SQLite)."""
    app, broker = _tanks(platform, 30)
    commits: list[int] = []
    sa.event.listen(platform.engine, "commit", lambda conn: commits.append(1))
    assert _patch_all(app, {i: _level(i) for i in range(30)}) == [204] * 30
    assert len(commits) < 10, f"{len(commits)} commits for 30 concurrent writes: nothing was grouped"
    assert {i: broker.get(None, f"urn:ngsi-ld:Tank:{i}")["level"]["value"] for i in range(30)} == \
        {i: i + 1 for i in range(30)}
    platform.parts["temporal"].staging.settle()
    with platform.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT count(*) FROM broker_temporal_instances")).scalar()
    assert rows == 30 + 30  # the creates, then every update: history kept per request


def test_a_failing_request_spoils_nothing_of_its_group(platform: Platform) -> None:
    """A refused request and one whose listener fails after writing: only those two go unwritten."""
    app, broker = _tanks(platform, 20)

    def fail_on_tank_9(conn: Any, tenant: str, old: Any, new: Any) -> None:
        if new and new["id"] == "urn:ngsi-ld:Tank:9" and new["attrs"]:
            raise RuntimeError("a listener failed after the entity was written")

    broker.listeners.append(fail_on_tank_9)
    bodies = {i: _level(i) for i in range(20)}
    bodies[7] = {"level": {"type": "Property"}}  # no value: refused before any write
    statuses = _patch_all(app, bodies)
    assert statuses == [400 if i == 7 else 500 if i == 9 else 204 for i in range(20)]
    broker.listeners.remove(fail_on_tank_9)
    levels = {i: broker.get(None, f"urn:ngsi-ld:Tank:{i}")["level"]["value"] for i in range(20)}
    assert levels == {i: 0 if i in (7, 9) else i + 1 for i in range(20)}
    platform.parts["temporal"].staging.settle()
    with platform.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT count(*) FROM broker_temporal_instances")).scalar()
    assert rows == 20 + 18  # no history for the two requests that failed


def test_concurrent_reads_each_get_their_own_answer(
        platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    """On PostgreSQL simultaneous GETs by id share thread hops and one read of their entities (grouped), on
    SQLite they run inline; either way each request gets its own entity, and a missing one (or one of a
    tenant that does not exist) fails alone."""
    from society5.broker import api

    app, _broker = _tanks(platform, 20)
    groups: list[int] = []
    run_group = api._Coalescer._run_group

    def counted(self: Any, works: list[Any], keys: list[Any]) -> Any:
        if self.reads:
            groups.append(len(works))
        return run_group(self, works, keys)

    monkeypatch.setattr(api._Coalescer, "_run_group", counted)
    reads: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "broker_entities" in statement:
            reads.append(statement)

    async def run() -> list[tuple[int, Any]]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://s5") as client:
            async def get(i: int) -> tuple[int, Any]:
                # the last one asks a tenant that does not exist: it fails alone
                headers = {"NGSILD-Tenant": "nosuch"} if i == 25 else {}
                resp = await client.get(f"{E}/urn:ngsi-ld:Tank:{i % 25 if i < 25 else 3}",
                                        params={"options": "keyValues"}, headers=headers)
                return resp.status_code, resp.json()

            return await asyncio.gather(*(get(i) for i in range(26)), get(3))

    sa.event.listen(platform.engine, "before_cursor_execute", count)
    answers = asyncio.run(run())
    sa.event.remove(platform.engine, "before_cursor_execute", count)
    for i, (status, body) in enumerate(answers):
        if i < 20 or i == 26:  # 26: Tank 3 a second time in the same group
            assert (status, body["id"], body["level"]) == (200, f"urn:ngsi-ld:Tank:{3 if i == 26 else i}", 0)
        elif i < 25:
            assert status == 404 and body["type"].endswith("ResourceNotFound")
        else:
            assert status == 404 and body["title"] == "NonexistentTenant", body
    if platform.engine.dialect.name == "postgresql":
        # a group reads its entities in one statement (Tank 3's second retrieval reads on its own)
        assert sum(groups) == 27 and len(groups) < 27, groups
        assert len(reads) <= len(groups) + 1, (len(reads), groups)
    else:
        assert groups == []


def test_a_group_reads_its_entities_in_one_statement(platform: Platform) -> None:
    """On PostgreSQL the entities of a group of writes are read (and locked) together and written back
    together; two writes of one entity in a group both land (the second reads what the first wrote)."""
    app, broker = _tanks(platform, 30)
    reads: list[int] = []

    updates: list[int] = []

    def count(_conn: Any, _cursor: Any, statement: str, params: Any, *_rest: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "broker_entities" in statement \
                and "FOR UPDATE" in statement.upper():
            reads.append(1)
        if statement.lstrip().upper().startswith("UPDATE broker_entities".upper()):
            updates.append(len(params) if isinstance(params, list) else 1)

    sa.event.listen(platform.engine, "before_cursor_execute", count)
    bodies = {i: _level(i) for i in range(30)}
    assert _patch_all(app, bodies) == [204] * 30
    sa.event.remove(platform.engine, "before_cursor_execute", count)
    assert {i: broker.get(None, f"urn:ngsi-ld:Tank:{i}")["level"]["value"] for i in range(30)} == \
        {i: i + 1 for i in range(30)}
    if platform.engine.dialect.name == "postgresql":
        assert 0 < len(reads) < 10, f"{len(reads)} locking reads for 30 writes"
        # the documents go out together at the end of each group, not one statement per write
        assert sum(updates) >= 30 and len(updates) < 10, updates

    async def two_attrs() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://s5") as client:
            url = f"{E}/urn:ngsi-ld:Tank:3/attrs"
            calls = [client.post(url, json={"note": {"type": "Property", "value": "a"}}, headers=H),
                     client.patch(url, json={"level": {"type": "Property", "value": 99}}, headers=H)]
            return [r.status_code for r in await asyncio.gather(*calls)]

    assert asyncio.run(two_attrs()) == [204, 204]
    tank = broker.get(None, "urn:ngsi-ld:Tank:3")
    assert tank["level"]["value"] == 99 and tank["note"]["value"] == "a"


def test_reads_go_on_while_another_thread_writes(sqlite_platform: Platform) -> None:
    """SQLite: while another thread holds the write gate (the staged-history move, the MQTT bridge), writes
    wait for it in the thread pool instead of stalling the event loop, so reads are still answered."""
    app = create_app(sqlite_platform.settings, services=[broker_service], platform=sqlite_platform)
    with TestClient(app) as client:
        assert client.post(E, json=TANK, headers=H).status_code == 201
        gate: Any = write_gate(sqlite_platform.engine)
        answers: dict[str, int] = {}

        def call(name: str, method: str, url: str, **kw: Any) -> threading.Thread:
            def run() -> None:
                answers[name] = client.request(method, url, headers=H, **kw).status_code
            thread = threading.Thread(target=run, daemon=True)
            thread.start()
            return thread

        gate.acquire()
        try:
            writes = [
                call("patch", "PATCH", f"{E}/urn:ngsi-ld:Tank:1/attrs",
                     json={"level": {"type": "Property", "value": 77}}),
                call("upsert", "POST", "/ngsi-ld/v1/entityOperations/upsert",
                     json=[{"id": "urn:ngsi-ld:Tank:2", "type": "Tank",
                            "level": {"type": "Property", "value": 5}}]),
            ]
            time.sleep(0.2)  # both writes are waiting for the gate by now
            read = call("get", "GET", f"{E}/urn:ngsi-ld:Tank:1")
            read.join(10)
            assert answers.get("get") == 200, "a read waited for another thread's write"
            assert "patch" not in answers and "upsert" not in answers  # still waiting
        finally:
            gate.release()
        for thread in writes:
            thread.join(10)
        assert answers == {"get": 200, "patch": 204, "upsert": 201}
        assert client.get(f"{E}/urn:ngsi-ld:Tank:1?options=keyValues").json()["level"] == 77
