"""PostgreSQL statistics follow bulk loads: the broker runs ANALYZE once the new entities are a fifth of what
the table held at the last one (SQLite needs none)."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from society5.broker import store as store_mod
from society5.broker.service import start
from society5.core.platform import Platform


def _create(broker: Any, first: int, count: int) -> None:
    broker.batch_create(None, [{"id": f"urn:ngsi-ld:Device:{i}", "type": "Device",
                                "level": {"type": "Property", "value": i}}
                               for i in range(first, first + count)])


def _planner_rows(platform: Platform) -> float:
    with platform.engine.connect() as conn:
        return float(conn.exec_driver_sql(
            "SELECT reltuples FROM pg_class WHERE oid = 'broker_entities'::regclass").scalar_one())


def test_statistics_are_refreshed_as_the_entity_table_grows(platform: Platform,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_mod, "ANALYZE_MIN_ROWS", 100)
    broker = start(platform)
    if platform.engine.dialect.name == "sqlite":
        _create(broker, 0, 50)
        assert broker.store._rows_at_analyze is None  # never asked: SQLite plans without statistics
        return
    with platform.engine.begin() as conn:  # only the broker's ANALYZE may change the figures below
        conn.exec_driver_sql("ALTER TABLE broker_entities SET (autovacuum_enabled = false)")
        conn.exec_driver_sql("ANALYZE broker_entities")
    try:
        assert _planner_rows(platform) == 0
        _create(broker, 0, 99)
        assert _planner_rows(platform) == 0  # fewer than the minimum: not yet
        _create(broker, 1_000, 501)
        assert _planner_rows(platform) == 600
        _create(broker, 2_000, 110)  # fewer than a fifth of 600
        assert _planner_rows(platform) == 600
        _create(broker, 3_000, 10)  # 120 since: a fifth
        assert _planner_rows(platform) == 720
    finally:
        with platform.engine.begin() as conn:
            conn.execute(sa.text("ALTER TABLE broker_entities RESET (autovacuum_enabled)"))
