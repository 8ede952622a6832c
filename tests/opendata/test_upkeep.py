"""Catalog upkeep: PostgreSQL's planner statistics are refreshed after bulk changes."""

from __future__ import annotations

import time
from typing import Any

import pytest
import sqlalchemy as sa

from society5.core.platform import Platform
from society5.opendata import upkeep

from .conftest import Ckan, Tokens


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_bulk_changes_are_analyzed(ckan: Ckan, tokens: Tokens, orgs: dict[str, Any],
                                   od_platform: Platform) -> None:
    for i in range(12):
        ckan.ok("package_create", tokens.sapporo, name=f"bulk-{i}", owner_org="sapporo")
    deadline = time.monotonic() + 10  # PostgreSQL publishes the change counts within about a second
    analyzed: list[str] = []
    while "opendata_packages" not in analyzed and time.monotonic() < deadline:
        analyzed += upkeep.analyze_changed(od_platform, changed_rows=10)
        time.sleep(0.2)
    assert "opendata_packages" in analyzed
    with od_platform.engine.connect() as conn:
        last = conn.execute(sa.text("SELECT last_analyze FROM pg_stat_user_tables "
                                    "WHERE relname = 'opendata_packages'")).scalar()
    assert last is not None
    assert "opendata_packages" not in upkeep.analyze_changed(od_platform, changed_rows=10)  # nothing new


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_sqlite_needs_no_statistics(od_platform: Platform) -> None:
    assert upkeep.analyze_changed(od_platform, changed_rows=0) == []
