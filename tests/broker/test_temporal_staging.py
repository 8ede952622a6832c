"""Staged history (SQLite): a write logs its history in one row of broker_temporal_log; the log is expanded
into broker_temporal_recent and moved into the indexed table in bulk; every read and change of history sees
them all, in the order they were written (both DBs)."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command

from society5.broker import temporal_staging
from society5.broker.service import start
from society5.broker.temporal_tables import change_log, instances, recent, series
from society5.core import db as core_db
from society5.core.platform import Platform
from society5.core.settings import Settings
from tests.conftest import make_settings


@contextmanager
def _opened(settings: Settings) -> Iterator[Platform]:
    plat = Platform.open(settings)
    try:
        yield plat
    finally:
        plat.close()


def _count(platform: Platform, table: sa.Table) -> int:
    with platform.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def _counts(platform: Platform) -> tuple[int, int, int]:
    """Rows in the change log, the staging table and the indexed history."""
    return _count(platform, change_log), _count(platform, recent), _count(platform, instances)


def _write_rounds(broker: Any, rounds: int, entities: int = 3, first: int = 0) -> None:
    for r in range(first, first + rounds):
        broker.batch_upsert(None, [{"id": f"urn:ngsi-ld:Meter:{i}", "type": "Meter",
                                    "power": {"type": "Property", "value": r * 10 + i}}
                                   for i in range(entities)])


def _expand(platform: Platform) -> None:
    """Expand the log into the staging table without moving it on (what the first step of a move does)."""
    staging = platform.parts["temporal"].staging
    with platform.parts["temporal"].broker.db.begin() as tx:
        staging._expand(tx, None)


def _values_in_id_order(platform: Platform, entity_id: str) -> list[float]:
    with platform.engine.connect() as conn:
        sids = sa.select(series.c.sid).where(series.c.entity_id == entity_id)
        stmt = sa.select(instances.c.value_num).where(instances.c.sid.in_(sids)).order_by(instances.c.id)
        return [float(v) for v in conn.execute(stmt).scalars()]


def test_new_history_is_staged_on_sqlite_and_written_straight_on_postgresql(platform: Platform) -> None:
    broker = start(platform)
    staging = platform.parts["temporal"].staging
    _write_rounds(broker, 4)
    if platform.engine.dialect.name == "sqlite":
        # one log row per write transaction, no history row yet
        assert _counts(platform) == (4, 0, 0)
        assert staging.waiting() == 12
        _expand(platform)
        assert _counts(platform) == (0, 12, 0)
    else:
        assert _counts(platform) == (0, 0, 12)
        assert staging.waiting() == 0
    assert staging.settle() == (12 if staging.enabled else 0)
    assert _counts(platform) == (0, 0, 12)
    assert _values_in_id_order(platform, "urn:ngsi-ld:Meter:1") == [1.0, 11.0, 21.0, 31.0]


def test_reads_and_changes_of_history_see_staged_rows(client: Any, platform: Platform) -> None:
    """The temporal API reads, modifies and deletes instances that were still staged when asked."""
    temporal = platform.parts["temporal"]
    t = "/ngsi-ld/v1/temporal/entities"
    e = "/ngsi-ld/v1/entities"
    g = {"Accept": "application/json"}
    assert client.post(e, json={"id": "urn:ngsi-ld:Meter:9", "type": "Meter",
                                "power": {"type": "Property", "value": 1}}).status_code == 201
    for v in (2, 3, 4):
        assert client.patch(f"{e}/urn:ngsi-ld:Meter:9/attrs",
                            json={"power": {"type": "Property", "value": v}}).status_code == 204
    assert temporal.staging.waiting() == (4 if temporal.staging.enabled else 0)
    got = client.get(f"{t}/urn:ngsi-ld:Meter:9", headers=g).json()
    assert [i["value"] for i in got["power"]] == [1, 2, 3, 4]
    assert temporal.staging.waiting() == 0
    # written after the read: logged and staged again, then changed and deleted through the API
    assert client.patch(f"{e}/urn:ngsi-ld:Meter:9/attrs",
                        json={"power": {"type": "Property", "value": 5}}).status_code == 204
    _expand(platform)  # an instance has an id once its log entry is expanded
    with platform.engine.connect() as conn:
        staged_id = conn.execute(sa.select(recent.c.instance_id)).scalar() if temporal.staging.enabled else \
            conn.execute(sa.select(instances.c.instance_id).order_by(instances.c.id.desc())).scalar()
    url = f"{t}/urn:ngsi-ld:Meter:9/attrs/power/{staged_id}"
    assert client.patch(url, json={"type": "Property", "value": 50}).status_code == 204
    got = client.get(f"{t}/urn:ngsi-ld:Meter:9", headers=g).json()
    assert [i["value"] for i in got["power"]] == [1, 2, 3, 4, 50]
    assert client.patch(f"{e}/urn:ngsi-ld:Meter:9/attrs",
                        json={"power": {"type": "Property", "value": 6}}).status_code == 204
    _expand(platform)
    with platform.engine.connect() as conn:
        last = conn.execute(sa.select(recent.c.instance_id)).scalar() if temporal.staging.enabled else \
            conn.execute(sa.select(instances.c.instance_id).order_by(instances.c.id.desc())).scalar()
    assert client.delete(f"{t}/urn:ngsi-ld:Meter:9/attrs/power/{last}").status_code == 204
    got = client.get(f"{t}/urn:ngsi-ld:Meter:9", headers=g).json()
    assert [i["value"] for i in got["power"]] == [1, 2, 3, 4, 50]
    # deleting the temporal entity removes staged rows too
    assert client.patch(f"{e}/urn:ngsi-ld:Meter:9/attrs",
                        json={"power": {"type": "Property", "value": 7}}).status_code == 204
    assert client.delete(f"{t}/urn:ngsi-ld:Meter:9").status_code == 204
    assert _counts(platform) == (0, 0, 0)


def test_the_job_moves_when_enough_rows_wait_or_they_waited_long_enough(
        sqlite_platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    broker = start(sqlite_platform)
    clock = [1000.0]
    monkeypatch.setattr(temporal_staging.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(temporal_staging, "MOVE_ROWS", 10)
    monkeypatch.setattr(temporal_staging, "MOVE_QUIET_S", 0.0)  # (the quiet moment: the next test)
    _write_rounds(broker, 2)  # 6 rows: fewer than MOVE_ROWS
    assert temporal_staging.job(sqlite_platform) == 0
    clock[0] += temporal_staging.MOVE_AGE_S - 0.5
    assert temporal_staging.job(sqlite_platform) == 0
    clock[0] += 1.0  # the first rows have now waited MOVE_AGE_S
    assert temporal_staging.job(sqlite_platform) == 6
    assert temporal_staging.job(sqlite_platform) == 0  # nothing waits
    _write_rounds(broker, 4)  # 12 rows: enough to move at once
    assert temporal_staging.job(sqlite_platform) == 12
    assert _count(sqlite_platform, recent) == 0 and _count(sqlite_platform, instances) == 18


def test_the_job_waits_for_a_quiet_moment_up_to_the_bounds(
        sqlite_platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    """A due move waits until this process has written nothing for MOVE_QUIET_S, unless the staged rows
    pass MOVE_ROWS_MAX or have waited MOVE_AGE_MAX_S."""
    broker = start(sqlite_platform)
    gate = broker.db.write_gate
    assert gate is not None
    clock = [1000.0]
    monkeypatch.setattr(temporal_staging.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(core_db.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(temporal_staging, "MOVE_ROWS", 6)
    monkeypatch.setattr(temporal_staging, "MOVE_ROWS_MAX", 12)
    _write_rounds(broker, 2)  # 6 rows: due, but the last write ended just now
    assert gate.quiet_for() == 0.0
    assert temporal_staging.job(sqlite_platform) == 0
    clock[0] += temporal_staging.MOVE_QUIET_S
    assert temporal_staging.job(sqlite_platform) == 6
    # writes back to back: no quiet moment, until MOVE_ROWS_MAX rows wait
    _write_rounds(broker, 3)
    assert temporal_staging.job(sqlite_platform) == 0
    _write_rounds(broker, 1, first=3)
    assert temporal_staging.job(sqlite_platform) == 12
    # or until the first rows have waited MOVE_AGE_MAX_S
    _write_rounds(broker, 1, first=4)
    assert temporal_staging.job(sqlite_platform) == 0
    clock[0] += temporal_staging.MOVE_AGE_MAX_S
    _write_rounds(broker, 1, first=5)
    assert temporal_staging.job(sqlite_platform) == 6
    # a write running in another thread is never quiet
    clock[0] += 100.0
    with gate:
        assert gate.quiet_for() > 0  # this thread holds it
        seen: list[float] = []
        other = threading.Thread(target=lambda: seen.append(gate.quiet_for()))
        other.start()
        other.join(30)
    assert seen == [0.0]


def test_the_job_stops_between_chunks_when_writes_come_back_unless_over_the_bounds(
        sqlite_platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    broker = start(sqlite_platform)
    staging = sqlite_platform.parts["temporal"].staging
    monkeypatch.setattr(temporal_staging, "MOVE_CHUNK", 3)  # one log entry (3 rows) per chunk
    monkeypatch.setattr(temporal_staging, "MOVE_ROWS", 6)
    monkeypatch.setattr(temporal_staging, "MOVE_QUIET_S", 0.0)
    _write_rounds(broker, 4)
    assert temporal_staging.job(sqlite_platform) == 12  # nobody else writes: chunk after chunk
    rounds = iter(range(100, 103))  # a client writes during the pauses between chunks, three times

    def write_in_the_pause(_seconds: float) -> None:
        for r in rounds:
            _write_rounds(broker, 1, first=r)
            return

    monkeypatch.setattr(temporal_staging.time, "sleep", write_in_the_pause)
    _write_rounds(broker, 4, first=4)
    assert temporal_staging.job(sqlite_platform) == 3  # one chunk, then a write came: the rest waits
    assert staging.waiting() == 12
    monkeypatch.setattr(temporal_staging, "MOVE_ROWS_MAX", 9)
    # over the bound: chunk after chunk despite the writes, but no more than what waited when it began
    # (the rows written meanwhile are the next tick's)
    assert temporal_staging.job(sqlite_platform) == 12
    assert staging.waiting() == 6
    assert temporal_staging.job(sqlite_platform) == 6
    assert staging.waiting() == 0


def test_moves_go_in_chunks_and_keep_the_write_order(sqlite_platform: Platform,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    broker = start(sqlite_platform)
    staging = sqlite_platform.parts["temporal"].staging
    monkeypatch.setattr(temporal_staging, "MOVE_CHUNK", 4)
    commits: list[int] = []
    _write_rounds(broker, 5)  # 15 rows
    sa.event.listen(sqlite_platform.engine, "commit", lambda conn: commits.append(1))
    assert staging.settle() == 15
    # a chunk expands log entries (3 rows each) until 4 rows are staged, then moves them all: 6 + 6 + 3, and
    # writers can go on between the transactions
    assert len(commits) == 3
    for i in range(3):
        expected = [r * 10 + i for r in range(5)]
        assert _values_in_id_order(sqlite_platform, f"urn:ngsi-ld:Meter:{i}") == expected
    assert staging.moved == 15


def test_staged_rows_survive_a_crash(tmp_path: Path) -> None:
    """Staged rows are committed with the entity write: a killed process loses none of them."""
    url = f"sqlite:///{tmp_path / 'crash.db'}"
    code = (
        "import os\n"
        "from society5.broker.service import start\n"
        "from society5.core.platform import Platform\n"
        "from tests.conftest import make_settings\n"
        f"plat = Platform.open(make_settings({url!r}))\n"
        "broker = start(plat)\n"
        "for r in range(3):\n"
        "    broker.batch_upsert(None, [{'id': 'urn:ngsi-ld:Meter:1', 'type': 'Meter',\n"
        "                                'power': {'type': 'Property', 'value': r}}])\n"
        "os.kill(os.getpid(), 9)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[2], timeout=120)
    assert proc.returncode == -9
    with _opened(make_settings(url)) as plat:
        start(plat)
        assert (_count(plat, change_log), plat.parts["temporal"].staging.waiting()) == (3, 3)
        assert plat.parts["temporal"].staging.settle() == 3
        assert _values_in_id_order(plat, "urn:ngsi-ld:Meter:1") == [0.0, 1.0, 2.0]


def test_downgrading_the_migrations_keeps_staged_rows_and_refuses_to_drop_the_log(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'down.db'}"
    with _opened(make_settings(url)) as plat:
        _write_rounds(start(plat), 2)
        cfg = core_db.alembic_config()
        with pytest.raises(RuntimeError, match="unexpanded history"), plat.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0013@-2")
        assert _count(plat, change_log) == 2
        _expand(plat)
        assert _count(plat, recent) == 6
        with plat.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0013@-2")  # this branch only (0013, 0012): the other tables stay
        with plat.engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM broker_temporal_instances")).scalar() == 6
            names = sa.inspect(conn).get_table_names()
        assert "broker_temporal_recent" not in names and "broker_temporal_log" not in names
        assert "broker_entities" in names
        assert "0012" not in (core_db.current_revision(plat.engine) or "")


def test_staging_turned_off_writes_straight_and_still_moves_what_was_staged(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'off.db'}"
    with _opened(make_settings(url)) as plat:
        broker = start(plat)
        _write_rounds(broker, 1)
        _expand(plat)
        _write_rounds(broker, 1, first=1)  # staged (3 rows), then logged (3 more)
        assert (_count(plat, change_log), _count(plat, recent)) == (1, 3)
    with _opened(make_settings(url, temporal_staging=False)) as plat:
        broker = start(plat)  # moves what was staged, then expands the log: rows keep their write order
        assert _counts(plat) == (0, 0, 6)
        _write_rounds(broker, 1, first=2)
        assert _counts(plat) == (0, 0, 9)
        assert _values_in_id_order(plat, "urn:ngsi-ld:Meter:2") == [2.0, 12.0, 22.0]


def test_history_written_after_an_attribute_history_was_deleted_is_kept(client: Any) -> None:
    """Deleting an attribute's history deletes its series; a later write of that attribute makes a new one
    (a cached id of the deleted series would send its rows where no read finds them)."""
    t = "/ngsi-ld/v1/temporal/entities"
    e = "/ngsi-ld/v1/entities"
    g = {"Accept": "application/json"}
    assert client.post(e, json={"id": "urn:ngsi-ld:Meter:7", "type": "Meter",
                                "power": {"type": "Property", "value": 1}}).status_code == 201
    assert client.patch(f"{e}/urn:ngsi-ld:Meter:7/attrs",
                        json={"power": {"type": "Property", "value": 2}}).status_code == 204
    assert client.delete(f"{t}/urn:ngsi-ld:Meter:7/attrs/power").status_code == 204
    assert "power" not in client.get(f"{t}/urn:ngsi-ld:Meter:7", headers=g).json()
    for v in (3, 4):
        assert client.patch(f"{e}/urn:ngsi-ld:Meter:7/attrs",
                            json={"power": {"type": "Property", "value": v}}).status_code == 204
    got = client.get(f"{t}/urn:ngsi-ld:Meter:7", headers=g).json()
    assert [i["value"] for i in got["power"]] == [3, 4]


def test_a_batch_larger_than_the_history_buffer_keeps_every_row_in_order(
        platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write's history is buffered and written (logged on SQLite) every _BUFFER_MAX entities and at the
    commit; nothing is lost or reordered at those seams."""
    from society5.broker import temporal

    monkeypatch.setattr(temporal, "_BUFFER_MAX", 3)
    broker = start(platform)
    _write_rounds(broker, 3, entities=8)  # 8 entities a batch: flushed after 3 and 6, and at the commit
    if platform.engine.dialect.name == "sqlite":
        assert _count(platform, change_log) == 3 * 3
    platform.parts["temporal"].staging.settle()
    for i in range(8):
        expected = [float(r * 10 + i) for r in range(3)]
        assert _values_in_id_order(platform, f"urn:ngsi-ld:Meter:{i}") == expected
    assert _count(platform, instances) == 24
