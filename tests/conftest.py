"""Shared fixtures: a migrated database on SQLite and on PostgreSQL, and an in-process app client."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import hypothesis
import pytest
import sqlalchemy as sa

from society5.core.platform import Platform
from society5.core.settings import Settings

# No per-example deadline anywhere: on a loaded machine one slow example failed a property that held.
hypothesis.settings.register_profile("society5", deadline=None)
hypothesis.settings.load_profile("society5")

PG_ADMIN_URL = os.environ.get("SOCIETY5_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
SHARED = Path(__file__).resolve().parents[2] / "shared"
CONTEXTS = SHARED / "ngsi-ld-contexts"


def _pg_available() -> bool:
    try:
        eng = sa.create_engine(PG_ADMIN_URL)
        with eng.connect():
            pass
        eng.dispose()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped at the end."""
    if not _pg_available():
        pytest.fail("PostgreSQL is not reachable on 127.0.0.1:5432 (.ci/run starts it)")
    name = f"s5test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    yield url
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _truncate_pg(platform: Platform) -> None:
    with platform.engine.begin() as conn:
        names = [t for t in sa.inspect(conn).get_table_names() if t != "alembic_version"]
        if names:
            conn.execute(
                sa.text("TRUNCATE " + ", ".join(f'"{n}"' for n in names) + " RESTART IDENTITY CASCADE")
            )


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL, once for SQLite and once for PostgreSQL (storage tests run on both)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'test.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


def make_settings(db_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {"database_url": db_url, "auth": "off", "secret_key": "test-secret"}
    if CONTEXTS.exists():
        values["preload_contexts"] = CONTEXTS
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def platform(db_url: str) -> Iterator[Platform]:
    plat = Platform.open(make_settings(db_url))
    if plat.engine.dialect.name == "postgresql":
        _truncate_pg(plat)
        plat.tenants._known = {"default"}
    yield plat
    plat.close()


@pytest.fixture
def sqlite_platform(tmp_path: Path) -> Iterator[Platform]:
    plat = Platform.open(make_settings(f"sqlite:///{tmp_path / 'one.db'}"))
    yield plat
    plat.close()


@pytest.fixture
def client(platform: Platform) -> Iterator[object]:
    """An in-process HTTP client of an app holding just the broker."""
    from fastapi.testclient import TestClient

    from society5.broker.service import service as broker_service
    from society5.web.app import create_app

    app = create_app(platform.settings, services=[broker_service], platform=platform)
    with TestClient(app) as c:
        yield c
