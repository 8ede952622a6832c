"""``society5 demo`` (the README's first command, after setup) starts, loads Hokkaido and serves the pages."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.server import free_port

SOCIETY5 = str(Path(sys.executable).with_name("society5"))


def test_demo_serves_pages_and_data(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOCIETY5_")}
    proc = subprocess.Popen(
        [SOCIETY5, "demo", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        top = httpx.get(base + "/", timeout=10)
        assert top.status_code == 200 and "データ連携基盤" in top.text
        r = httpx.get(
            base + "/ngsi-ld/v1/entities",
            params={"type": "CrowdFlowObserved", "options": "keyValues"},
            headers={"NGSILD-Tenant": "011002"},
            timeout=10,
        )
        assert r.status_code == 200 and len(r.json()) == 4
        assert (tmp_path / "var" / "demo.db").exists()  # embedded SQLite under ./var
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    assert f"http://127.0.0.1:{port}/" in out
