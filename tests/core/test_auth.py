"""API keys, roles, staff passwords and tenant isolation through the NGSI-LD API with auth on."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from society5.core.auth import KeyStore, check_password, hash_password
from society5.core.errors import BadRequest, Unauthorized
from society5.core.platform import Platform
from tests.conftest import make_settings

H = {"Content-Type": "application/json"}


@pytest.fixture
def secured(db_url: str) -> Iterator[tuple[TestClient, Platform]]:
    from society5.broker.service import service as broker_service
    from society5.web.app import create_app

    plat = Platform.open(make_settings(db_url, auth="on"))
    if plat.engine.dialect.name == "postgresql":
        from tests.conftest import _truncate_pg

        _truncate_pg(plat)
        plat.tenants._known = {"default"}
    plat.tenants.ensure("011002", name="札幌市")
    plat.tenants.ensure("012106", name="岩見沢市")
    app = create_app(plat.settings, services=[broker_service], platform=plat)
    with TestClient(app) as c:
        yield c, plat
    plat.close()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def ent(eid: str, public: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"id": eid, "type": "Device", "level": {"type": "Property", "value": 1}}
    if public:
        body["scope"] = "/public"
    return body


def test_keys_are_stored_hashed_and_revocable(sqlite_platform: Platform) -> None:
    keys = KeyStore(sqlite_platform.engine)
    new = keys.create("operator", tenant="011002", label="札幌")
    listed = keys.list()
    assert listed[0]["key_id"] == new.key_id and "secret_hash" not in listed[0]
    with sqlite_platform.engine.connect() as conn:
        stored = conn.exec_driver_sql("SELECT secret_hash FROM core_api_keys").scalar_one()
    assert new.key.split("_", 2)[2] not in stored
    assert keys.verify(new.key).tenant == "011002"
    keys.revoke(new.key_id)
    with pytest.raises(Unauthorized):
        keys.verify(new.key)
    with pytest.raises(BadRequest):
        keys.create("device", tenant="011002")  # a device key needs its entity prefix
    with pytest.raises(Unauthorized):
        keys.verify(new.key[:-2] + "xx")


def test_password_hash_roundtrip() -> None:
    stored = hash_password("correct horse")
    assert check_password("correct horse", stored)
    assert not check_password("wrong horse", stored)
    assert not check_password("x", "garbage")


def test_anonymous_reads_public_only_and_cannot_write(secured: tuple[TestClient, Platform]) -> None:
    client, plat = secured
    admin = plat.keys.create("admin").key
    r = client.post(
        "/ngsi-ld/v1/entityOperations/create",
        json=[ent("urn:a:1", public=True), ent("urn:a:2")],
        headers=H | bearer(admin),
    )
    assert r.status_code == 201, r.text
    got = client.get("/ngsi-ld/v1/entities?type=Device").json()
    assert [e["id"] for e in got] == ["urn:a:1"]
    assert client.get("/ngsi-ld/v1/entities/urn:a:2").status_code == 404
    r = client.post("/ngsi-ld/v1/entities", json=ent("urn:a:3"), headers=H)
    assert r.status_code == 401
    assert client.get("/ngsi-ld/v1/entities?type=Device", headers=bearer("s5_nope_nope")).status_code == 401


def test_operator_is_confined_to_its_tenant(secured: tuple[TestClient, Platform]) -> None:
    client, plat = secured
    sapporo = plat.keys.create("operator", tenant="011002").key
    iwamizawa = plat.keys.create("operator", tenant="012106").key
    t_sap = {"NGSILD-Tenant": "011002"}
    t_iwa = {"NGSILD-Tenant": "012106"}
    assert (
        client.post(
            "/ngsi-ld/v1/entities", json=ent("urn:s:1"), headers=H | t_sap | bearer(sapporo)
        ).status_code
        == 201
    )
    r = client.post("/ngsi-ld/v1/entities", json=ent("urn:s:2"), headers=H | t_sap | bearer(iwamizawa))
    assert r.status_code == 403
    assert client.get("/ngsi-ld/v1/entities/urn:s:1", headers=t_sap | bearer(iwamizawa)).status_code == 404
    assert client.get("/ngsi-ld/v1/entities/urn:s:1", headers=t_sap | bearer(sapporo)).status_code == 200
    got = client.get("/ngsi-ld/v1/entities?type=Device", headers=t_iwa | bearer(iwamizawa)).json()
    assert got == []
    # an operator may not create new tenants
    r = client.post(
        "/ngsi-ld/v1/entities", json=ent("urn:s:3"), headers=H | {"NGSILD-Tenant": "019999"} | bearer(sapporo)
    )
    assert r.status_code == 404


def test_device_writes_only_its_own_entities(secured: tuple[TestClient, Platform]) -> None:
    client, plat = secured
    admin = plat.keys.create("admin").key
    t = {"NGSILD-Tenant": "011002"}
    client.post(
        "/ngsi-ld/v1/entityOperations/create",
        json=[ent("urn:ngsi-ld:Device:tank-1"), ent("urn:ngsi-ld:Device:tank-2")],
        headers=H | t | bearer(admin),
    )
    dev = plat.keys.create("device", tenant="011002", entity_prefix="urn:ngsi-ld:Device:tank-1").key
    patch = {"level": {"type": "Property", "value": 7}}
    r = client.patch(
        "/ngsi-ld/v1/entities/urn:ngsi-ld:Device:tank-1/attrs", json=patch, headers=H | t | bearer(dev)
    )
    assert r.status_code == 204
    r = client.patch(
        "/ngsi-ld/v1/entities/urn:ngsi-ld:Device:tank-2/attrs", json=patch, headers=H | t | bearer(dev)
    )
    assert r.status_code == 403
    r = client.post(
        "/ngsi-ld/v1/entityOperations/upsert",
        json=[ent("urn:ngsi-ld:Device:tank-2")],
        headers=H | t | bearer(dev),
    )
    assert r.status_code == 207 and r.json()["errors"][0]["error"]["status"] == 403
    assert (
        client.get("/ngsi-ld/v1/entities/urn:ngsi-ld:Device:tank-2", headers=t | bearer(dev)).status_code
        == 404
    )


def test_reader_cannot_write(secured: tuple[TestClient, Platform]) -> None:
    client, plat = secured
    reader = plat.keys.create("reader", tenant="011002").key
    r = client.post(
        "/ngsi-ld/v1/entities", json=ent("urn:r:1"), headers=H | {"NGSILD-Tenant": "011002"} | bearer(reader)
    )
    assert r.status_code == 403
