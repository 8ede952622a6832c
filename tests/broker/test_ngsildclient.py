"""End to end with the real third-party client ``ngsildclient`` (PyPI) against ``society5 serve``.

ngsildclient pins old httpx/rich, so it lives in its own virtual environment (made by ``tasks.py test``,
path in ``SOCIETY5_NGSILDCLIENT_PYTHON``); this test runs a script there against a live server.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.server import Server

SCRIPT = r"""
import json, sys
from ngsildclient import Client, Entity
port = int(sys.argv[1])
client = Client(hostname="127.0.0.1", port=port, port_temporal=port, secure=False, ignore_errors=False)
e = Entity("AirQualityObserved", "Sapporo-Odori-01")
e.loc(43.0607, 141.3545)
e.prop("NO2", 22, unitcode="GP", observedat="2026-11-26T05:00:00Z")
e.prop("PM25", 11)
e.rel("refPointOfInterest", "PointOfInterest:Odori")
client.create(e)
back = client.get(e.id)
e2 = Entity("AirQualityObserved", "Sapporo-Susukino-02")
e2.loc(43.0555, 141.3531)
e2.prop("NO2", 40)
client.upsert([e2])
found = client.query(type="AirQualityObserved", q="NO2>30")
patch = {"id": e.id, "type": "AirQualityObserved", "PM25": {"type": "Property", "value": 13}}
client.update(Entity.from_dict(patch))
after = client.get(e.id)
client.delete(e2)
exists = client.exists(e2.id)
print(json.dumps({"back": back.to_dict(), "found": [f.id for f in found], "after": after.to_dict(),
                  "exists": exists}))
"""


def _client_python() -> str:
    py = os.environ.get("SOCIETY5_NGSILDCLIENT_PYTHON") or str(
        Path(__file__).resolve().parents[2] / ".venv-ngsildclient" / "bin" / "python"
    )
    if not Path(py).exists():
        pytest.fail(f"ngsildclient environment missing at {py}: run `python3 tasks.py test` to create it")
    return py


def test_ngsildclient_end_to_end(tmp_path: Path) -> None:
    server = Server(f"sqlite:///{tmp_path / 'ngsildclient.db'}").start()
    try:
        run = subprocess.run(
            [_client_python(), "-c", SCRIPT, str(server.port)], capture_output=True, text=True, timeout=120
        )
        assert run.returncode == 0, run.stderr[-3000:]
        out = json.loads(run.stdout.strip().splitlines()[-1])
        assert out["back"]["id"] == "urn:ngsi-ld:AirQualityObserved:Sapporo-Odori-01"
        assert out["back"]["NO2"]["value"] == 22 and out["back"]["NO2"]["unitCode"] == "GP"
        assert out["found"] == ["urn:ngsi-ld:AirQualityObserved:Sapporo-Susukino-02"]
        assert out["after"]["PM25"]["value"] == 13
        assert out["exists"] is False
        # and what the client wrote is what any HTTP client reads back
        ent = httpx.get(
            f"{server.url}/ngsi-ld/v1/entities/urn:ngsi-ld:AirQualityObserved:Sapporo-Odori-01"
        ).json()
        assert ent["PM25"] == {"type": "Property", "value": 13}
        assert out["back"]["refPointOfInterest"]["object"] == "urn:ngsi-ld:PointOfInterest:Odori"
    finally:
        server.stop()
