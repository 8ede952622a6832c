"""Fuzz the HTTP API from its own OpenAPI schema (schemathesis): no input may cause a 500."""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from society5.broker.service import service as broker_service
from society5.core.platform import Platform
from society5.web.app import create_app
from tests.conftest import make_settings


def _app() -> object:
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="s5fuzz")) / "fuzz.db"
    plat = Platform.open(make_settings(f"sqlite:///{path}"))
    app = create_app(plat.settings, services=[broker_service], platform=plat)
    broker = plat.parts["broker"]
    broker.upsert(
        None,
        [
            {
                "id": "urn:ngsi-ld:Thing:1",
                "type": "Thing",
                "level": 3,
                "location": {"type": "Point", "coordinates": [141.35, 43.06]},
            }
        ],
    )
    return app


schema = schemathesis.openapi.from_asgi("/openapi.json", _app())


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case: schemathesis.Case) -> None:
    response = case.call()
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:500]}"
    )
