"""History retention per entity type: old instances go, recent ones and unruled types stay (both DBs)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from society5.broker import retention
from society5.broker.service import start
from society5.broker.temporal_tables import instances, recent
from society5.core.platform import Platform
from society5.core.settings import Settings
from tests.conftest import make_settings


def _iso(days_ago: float) -> str:
    return (datetime.now(UTC) - timedelta(days=days_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _history(platform: Platform, eid: str, etype: str, ages: list[float]) -> None:
    power = [{"type": "Property", "value": i, "observedAt": _iso(age)} for i, age in enumerate(ages)]
    payload = {"id": eid, "type": etype, "power": power}
    platform.parts["temporal"].upsert(None, payload, platform.parts["broker"].context(None))


def _ages(platform: Platform) -> list[int]:
    platform.parts["temporal"].staging.settle()
    with platform.engine.connect() as conn:
        times = conn.execute(sa.select(instances.c.ts)).scalars()
        return sorted(round((time.time() - ts) / 86_400) for ts in times)


def test_rules_per_type_and_default(platform: Platform) -> None:
    broker = start(platform)
    ages = [400, 45, 10, 1]
    _history(platform, "urn:ngsi-ld:PowerSample:1", "PowerSample", ages)
    _history(platform, "urn:ngsi-ld:PowerDaily:1", "PowerDaily", ages)
    typed, default = retention.resolve_rules({"PowerSample": 30, "*": 365}, broker.context(None))
    assert retention.enforce(platform.engine, typed, default) == 3  # 400 and 45 (samples) + 400 (daily)
    assert _ages(platform) == [1, 1, 10, 10, 45]
    assert retention.enforce(platform.engine, typed, default) == 0  # idempotent


def test_large_clean_ups_go_in_chunks(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    broker = start(platform)
    monkeypatch.setattr(retention, "CHUNK", 3)
    _history(platform, "urn:ngsi-ld:PowerSample:2", "PowerSample", [100 + i for i in range(10)] + [0.2])
    typed, default = retention.resolve_rules({"PowerSample": 7}, broker.context(None))
    assert retention.enforce(platform.engine, typed, default) == 10
    assert _ages(platform) == [0]


def test_job_reads_the_settings(tmp_path: object, db_url: str) -> None:
    plat = Platform.open(make_settings(db_url, temporal_retention_days={"*": 2}))
    try:
        start(plat)
        with plat.engine.begin() as conn:
            conn.execute(instances.delete())
            conn.execute(recent.delete())
        _history(plat, "urn:ngsi-ld:Any:1", "Any", [5, 1])
        assert retention.job(plat) == 1
    finally:
        plat.close()


def test_settings_refuse_non_positive_days() -> None:
    with pytest.raises(ValueError, match="positive"):
        Settings(temporal_retention_days={"PowerSample": 0})
