"""Fixtures for the open-data tests (on SQLite and PostgreSQL through the shared ``platform`` fixture).

* ``od_platform``: the platform with auth on and ``opendata_dir`` under ``tmp_path``;
* ``tokens``: API tokens for an admin, operators of 011002 (札幌市) and 012025 (函館市), a reader of 011002;
* ``ckan``: an in-process HTTP client of an app holding only the opendata service (``ckan.ok(...)``);
* ``orgs``: organizations ``sapporo`` (tenant 011002) and ``hakodate`` (012025), made by the admin;
* ``ctx_of(principal)``: an ``ActionContext`` for calling actions in-process (``actions.call``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from society5.core.auth import Principal
from society5.core.platform import Platform
from society5.opendata.actions import ActionContext


@dataclass(frozen=True)
class Tokens:
    admin: str
    sapporo: str  # operator of 011002
    hakodate: str  # operator of 012025
    reader: str  # reader of 011002


class Ckan:
    """``/api/3/action/<name>`` through a TestClient; tokens go as CKAN clients send them (no scheme)."""

    def __init__(self, client: TestClient):
        self.client = client

    def post(self, name: str, token: str | None = None, /, **data: Any) -> Any:
        headers = {"Authorization": token} if token else {}
        return self.client.post(f"/api/3/action/{name}", json=data, headers=headers)

    def get(self, name: str, token: str | None = None, /, **params: Any) -> Any:
        headers = {"Authorization": token} if token else {}
        return self.client.get(f"/api/3/action/{name}", params=params, headers=headers)

    def ok(self, name: str, token: str | None = None, /, **data: Any) -> Any:
        """POST and return ``result``, failing the test on anything but success."""
        response = self.post(name, token, **data)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["success"] is True and body["help"].endswith(f"help_show?name={name}")
        return body["result"]

    def error(self, response: Any, status: int, type_name: str) -> dict[str, Any]:
        """The ``error`` of a failed call, after checking its status and ``__type``."""
        assert response.status_code == status, response.text
        body = response.json()
        assert body["success"] is False and body["error"]["__type"] == type_name, body
        error: dict[str, Any] = body["error"]
        return error


@pytest.fixture
def od_platform(platform: Platform, tmp_path: Path) -> Platform:
    platform.settings = platform.settings.model_copy(
        update={"auth": "on", "opendata_dir": str(tmp_path / "opendata"), "opendata_max_upload_mb": 1})
    return platform


@pytest.fixture
def tokens(od_platform: Platform) -> Tokens:
    keys = od_platform.keys
    return Tokens(
        admin=keys.create("admin").key,
        sapporo=keys.create("operator", tenant="011002").key,
        hakodate=keys.create("operator", tenant="012025").key,
        reader=keys.create("reader", tenant="011002").key,
    )


@pytest.fixture
def ckan(od_platform: Platform) -> Iterator[Ckan]:
    from society5.opendata.service import service as opendata_service
    from society5.web.app import create_app

    app = create_app(od_platform.settings, services=[opendata_service], platform=od_platform)
    with TestClient(app) as client:
        yield Ckan(client)


@pytest.fixture
def orgs(ckan: Ckan, tokens: Tokens) -> dict[str, dict[str, Any]]:
    return {
        "sapporo": ckan.ok("organization_create", tokens.admin, name="sapporo", title="札幌市",
                           tenant="011002"),
        "hakodate": ckan.ok("organization_create", tokens.admin, name="hakodate", title="函館市",
                            tenant="012025"),
    }


@pytest.fixture
def ctx_of(od_platform: Platform) -> Callable[[Principal], ActionContext]:
    import society5.opendata.api  # noqa: F401  (fills the action registry)

    def make(principal: Principal) -> ActionContext:
        return ActionContext(od_platform, principal, base_url="http://portal.test")

    return make
