"""Fuzz the bears HTTP API from its OpenAPI schema (schemathesis): no input may cause a 500."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from society5.core.platform import Platform
from society5.web.app import create_app
from tests.conftest import make_settings


def _app() -> object:
    from society5.broker.service import service as broker_service
    from society5.notify.service import service as notify_service
    from society5.services.bears.service import service as bears_service
    from society5.services.bears.sightings import sightings_of

    path = Path(tempfile.mkdtemp(prefix="s5bearsfuzz"))
    plat = Platform.open(make_settings(f"sqlite:///{path / 'fuzz.db'}", bears_dir=str(path / "bears")))
    app = create_app(plat.settings, services=[broker_service, notify_service, bears_service], platform=plat)
    plat.tenants.ensure("011002", name="札幌市")
    when = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    sightings_of(plat).create("default", {"observed_at": when, "lat": 43.0236, "lon": 141.3221})
    return app


schema = schemathesis.openapi.from_asgi("/openapi.json", _app()).include(path_regex="^/bears")


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case: schemathesis.Case) -> None:
    response = case.call()
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:500]}"
    )
