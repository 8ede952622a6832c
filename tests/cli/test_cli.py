"""The ``society5`` command: key management prints the key alone on its last line; schema upgrade."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx

from society5.core.db import script_heads
from tests.server import Server

SOCIETY5 = str(Path(sys.executable).with_name("society5"))


def run(args: list[str], db: str) -> subprocess.CompletedProcess[str]:
    env = {"SOCIETY5_DATABASE_URL": db, "PATH": "/usr/bin:/bin"}
    return subprocess.run([SOCIETY5, *args], capture_output=True, text=True, env=env, timeout=120)


def test_keys_create_list_revoke_and_use(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    assert f"revision {', '.join(script_heads())}" in run(["db", "upgrade"], db).stdout
    made = run(["keys", "create", "--role", "operator", "--tenant", "011002", "--label", "札幌"], db)
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip().splitlines()[-1]
    assert key.startswith("s5_")
    listing = run(["keys", "list"], db)
    key_id = key.split("_")[1]
    assert key_id in listing.stdout and key not in listing.stdout
    bad = run(["keys", "create", "--role", "wizard"], db)
    assert bad.returncode == 2 and "role" in bad.stderr

    server = Server(db, auth="on").start()
    try:
        headers = {"Authorization": f"Bearer {key}", "NGSILD-Tenant": "011002"}
        admin = run(["keys", "create", "--role", "admin"], db).stdout.strip().splitlines()[-1]
        r = httpx.post(
            f"{server.url}/ngsi-ld/v1/entities",
            headers={"Authorization": f"Bearer {admin}", "NGSILD-Tenant": "011002"},
            json={"id": "urn:x:1", "type": "T"},
        )
        assert r.status_code == 201, r.text
        assert httpx.get(f"{server.url}/ngsi-ld/v1/entities/urn:x:1", headers=headers).status_code == 200
        assert run(["keys", "revoke", key_id], db).returncode == 0
        import time

        time.sleep(5.5)  # keys are cached for 5 s per process
        assert httpx.get(f"{server.url}/ngsi-ld/v1/entities/urn:x:1", headers=headers).status_code == 401
    finally:
        server.stop()
    assert run(["keys", "revoke", key_id], db).returncode == 1


def test_the_server_factory_learns_the_address_it_listens_on(monkeypatch, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Links written without a request (alert messages, the CAP feed) need the bind address when no
    SOCIETY5_BASE_URL is set: ``serve --port`` passes it to the factory's fresh settings."""
    import uvicorn

    from society5.cli import main
    from society5.core.settings import Settings

    seen: dict[str, object] = {}
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: seen.update(kw, settings=Settings()))
    monkeypatch.setenv("SOCIETY5_DATABASE_URL", f"sqlite:///{tmp_path / 'x.db'}")
    monkeypatch.setenv("SOCIETY5_SECRET_KEY", "a-test-secret-of-some-length")
    for name, value in (("SOCIETY5_HOST", "0.0.0.0"), ("SOCIETY5_PORT", "8000")):  # restored afterwards
        monkeypatch.setenv(name, value)
    main._run_server(Settings(), "127.0.0.1", 8799)
    assert seen["port"] == 8799
    built = seen["settings"]
    assert isinstance(built, Settings) and (built.host, built.port) == ("127.0.0.1", 8799)
