"""Acknowledged writes survive a SIGKILL of the server, on SQLite and on PostgreSQL."""

from __future__ import annotations

import threading

import httpx
import pytest

from tests.server import Server, wait_until

H = {"Content-Type": "application/json"}


@pytest.mark.slow
def test_acknowledged_writes_survive_kill9(db_url: str, platform: object) -> None:
    # `platform` migrated (and for PostgreSQL emptied) the database; the server process reuses it.
    server = Server(db_url).start()
    acked_creates: list[str] = []
    acked_levels: dict[str, int] = {}
    stop = threading.Event()

    def writer() -> None:
        with httpx.Client(base_url=server.url, timeout=5) as http:
            i = 0
            while not stop.is_set():
                eid = f"urn:ngsi-ld:Tank:{i}"
                try:
                    r = http.post(
                        "/ngsi-ld/v1/entities",
                        headers=H,
                        json={"id": eid, "type": "Tank", "level": {"type": "Property", "value": 0}},
                    )
                    if r.status_code == 201:
                        acked_creates.append(eid)
                    r = http.patch(
                        f"/ngsi-ld/v1/entities/{eid}/attrs",
                        headers=H,
                        json={"level": {"type": "Property", "value": i + 1}},
                    )
                    if r.status_code == 204:
                        acked_levels[eid] = i + 1
                except httpx.HTTPError:
                    return  # the server died under us: whatever was not acknowledged may be lost
                i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    wait_until(lambda: len(acked_creates) > 50, 60)  # mid-stream
    server.kill9()
    stop.set()
    thread.join(10)
    assert len(acked_creates) > 20, "the writer barely ran; the test would prove nothing"

    restarted = Server(db_url).start()
    try:
        with httpx.Client(base_url=restarted.url, timeout=10) as http:
            got: dict[str, int] = {}
            offset = 0
            while True:
                page = http.get(
                    "/ngsi-ld/v1/entities",
                    params={"type": "Tank", "limit": 1000, "offset": offset, "options": "keyValues"},
                )
                assert page.status_code == 200
                rows = page.json()
                got.update({e["id"]: e["level"] for e in rows})
                if len(rows) < 1000:
                    break
                offset += 1000
        missing = [e for e in acked_creates if e not in got]
        assert not missing, f"{len(missing)} acknowledged creates lost, e.g. {missing[:3]}"
        stale = {e: v for e, v in acked_levels.items() if got.get(e) != v}
        assert not stale, f"acknowledged updates lost: {list(stale.items())[:3]}"
    finally:
        restarted.stop()
