"""The shortcuts of the batch ingest path give the same results as the general code they stand in for."""

from __future__ import annotations

import gc
import random
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from society5.broker import temporal as T
from society5.broker.core import Broker, gc_paused
from society5.broker.jsonld import ContextStore, is_absolute_iri
from society5.broker.model import EntityParser, parse_types
from society5.broker.store import geo_boxes, is_public
from society5.core.errors import BadRequest

NOW = "2024-05-01T10:00:00Z"


def test_instance_ids_are_random_version_4_uuids() -> None:
    ids = T._uuid4s(2000) + T._uuid4s(1) + T._uuid4s(31) + T._uuid4s(32)
    assert len(set(ids)) == len(ids) == 2064
    for iid in ids:
        assert iid.startswith(T.INSTANCE_PREFIX)
        text = iid.removeprefix(T.INSTANCE_PREFIX)
        parsed = uuid.UUID(text)
        assert str(parsed) == text and parsed.version == 4 and parsed.variant == uuid.RFC_4122
    assert T._uuid4s(0) == []
    assert {i[len(T.INSTANCE_PREFIX) + 19] for i in ids} == set("89ab")


INSTANCES: list[dict[str, Any]] = [
    {"type": "Property", "value": 21.5, "createdAt": NOW, "modifiedAt": NOW},
    {"type": "Property", "value": 3, "createdAt": "2024-01-01T00:00:00Z", "modifiedAt": NOW,
     "observedAt": "2024-04-30T23:59:59.5Z", "unitCode": "CEL"},
    {"type": "Property", "value": True, "createdAt": NOW},
    {"type": "Property", "value": "ok"},
    {"type": "Property", "value": float("inf")},
    {"value": 7},
    {"type": "Property", "value": {"@type": "DateTime", "@value": NOW}},
    {"type": "Relationship", "object": "urn:ngsi-ld:X:1", "datasetId": "urn:ds:1"},
    {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [141.3, 43.0]}},
    {"type": "Property", "value": T.NGSI_NULL, "deletedAt": NOW, "createdAt": "2024-01-01T00:00:00Z"},
    {"type": "Property", "value": 1.0, "https://x/accuracy": {"type": "Property", "value": 0.5}},
]


@pytest.mark.parametrize("inst", INSTANCES)
def test_row_params_match_row_values(inst: dict[str, Any]) -> None:
    now_ts = T._epoch(NOW)
    fast = T._row_params(9, inst, NOW, now_ts, "urn:x")
    *head, stored = T._row_values(9, inst, NOW, now_ts)
    assert fast == (9, "urn:x", *head[2:], orjson.dumps(stored).decode())
    assert T._row_params(9, inst, NOW, now_ts)[1].startswith(T.INSTANCE_PREFIX)


def _reference_same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    sys_keys = ("createdAt", "modifiedAt")
    if any(k not in sys_keys and (k not in b or b[k] != v) for k, v in a.items()):
        return False
    return all(k in a or k in sys_keys for k in b)


def _reference_diff(old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[tuple[str, Any]]:
    out = []
    old_attrs, new_attrs = (old or {}).get("attrs", {}), (new or {}).get("attrs", {})
    for iri in dict.fromkeys([*old_attrs, *new_attrs]):
        before = {i.get("datasetId"): i for i in old_attrs.get(iri, ())}
        after = {i.get("datasetId"): i for i in new_attrs.get(iri, ())}
        out += [(iri, i) for ds, i in after.items() if ds not in before or not _reference_same(before[ds], i)]
        out += [(iri, T.deletion_record(p, NOW)) for ds, p in before.items() if ds not in after]
    return out


def test_diff_matches_the_general_definition() -> None:
    rng = random.Random(7)
    keys = ["type", "value", "createdAt", "modifiedAt", "observedAt", "datasetId"]

    def inst() -> dict[str, Any]:
        return {k: rng.choice([1, 2, "a", None]) for k in rng.sample(keys, rng.randint(0, len(keys)))}

    def doc() -> dict[str, Any] | None:
        if rng.random() < 0.1:
            return None
        names = rng.sample(range(5), rng.randint(0, 5))
        return {"attrs": {f"a{n}": [inst() for _ in range(rng.randint(0, 2))] for n in names}}

    for _ in range(5000):
        a, b = inst(), inst()
        assert T._same_content(a, b) == _reference_same(a, b)
        old, new = doc(), doc()
        assert [(p.attr, p.inst) for p in T.diff_instances(old, new, NOW)] == _reference_diff(old, new)


def test_parser_shortcuts_give_the_general_result() -> None:
    ctx = ContextStore().core
    payload = {"id": "urn:ngsi-ld:Device:1", "type": "Device", "t": {"type": "Property", "value": 1.5},
               "s": {"type": "Property", "value": "ok"}, "n": {"type": "Property", "value": T.NGSI_NULL},
               "u": {"type": "Property", "value": 2, "unitCode": "CEL"}}
    parser = EntityParser(ctx, NOW)
    fast = parser.attributes({k: v for k, v in payload.items() if k != "n"})
    general = {ctx.expand(k): parser.attribute(k, v) for k, v in payload.items() if k in ("t", "s", "u")}
    assert fast == general
    with pytest.raises(BadRequest):
        parser.attributes(payload)  # NGSI-LD Null outside an update still refused
    assert parser.attributes(payload, allow_null=True)[ctx.expand("n")] == parser.attribute(
        "n", payload["n"], allow_null=True)
    types = parse_types("Device", ctx)
    types.append("https://mutated")  # the remembered answer is not shared with callers
    assert parse_types("Device", ctx) == [ctx.expand("Device")]
    with pytest.raises(BadRequest):
        parse_types("id", ctx)
    with pytest.raises(BadRequest):
        parse_types("id", ctx)  # refused again: failures are not remembered
    assert is_absolute_iri("urn:x") and is_absolute_iri("urn:y")
    assert not is_absolute_iri("1urn:x") and not is_absolute_iri("no-colon") and not is_absolute_iri(":x")


def test_store_shortcuts() -> None:
    assert not is_public({}) and not is_public({"scope": []})
    assert is_public({"scope": ["/public/x"]}) and not is_public({"scope": ["/publicx"]})
    point = {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [1.0, 2.0]}}
    assert geo_boxes({"attrs": {"a": [{"type": "Property", "value": 1}]}}) == []
    assert geo_boxes({"attrs": {"a": [{"type": "Property", "value": 1}], "l": [point]}}) == [
        ("l", (1.0, 2.0, 1.0, 2.0))]


def test_gc_pause_restores_the_collector() -> None:
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
        with gc_paused():  # nested: the outer holder re-enables
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), gc_paused():
        raise RuntimeError("boom")
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()  # switched off by someone else: left off
    finally:
        gc.enable()


def test_gc_pause_lasts_one_holder_only() -> None:
    entered, release = threading.Event(), threading.Event()

    def first() -> None:
        with gc_paused():
            entered.set()
            release.wait(5)

    thread = threading.Thread(target=first)
    thread.start()
    entered.wait(5)
    with gc_paused():  # a second, overlapping holder
        release.set()
        thread.join(5)
        assert gc.isenabled()  # the first holder ended the pause
    assert gc.isenabled()


def test_batches_run_without_the_collector_and_restore_it(sqlite_platform: Any) -> None:
    from society5.broker.service import start

    broker: Broker = start(sqlite_platform)
    seen: list[bool] = []
    broker.listeners.append(lambda *_: seen.append(gc.isenabled()))
    broker.batch_upsert(None, [{"id": "urn:ngsi-ld:D:1", "type": "D", "v": {"type": "Property", "value": 1}}])
    assert seen == [False] and gc.isenabled()
    with pytest.raises(BadRequest):
        broker.batch_upsert(None, "not a list")
    assert gc.isenabled()


def test_plain_history_insert_stores_what_the_general_insert_stores() -> None:
    """The literal-time statement (4 binds a row) writes exactly the row the general one (11 binds) writes,
    floats included, for every instance it accepts; the others it declines."""
    import sqlite3

    import sqlalchemy as sa

    engine = sa.create_engine("sqlite://")
    T.instances.create(engine)
    rng = random.Random(7)
    nows = [NOW, "2026-11-26T17:18:44.123456Z"] + [
        datetime.fromtimestamp(rng.uniform(1.6e9, 1.9e9), UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        for _ in range(300)]
    general = "INSERT INTO broker_temporal_instances ({}) VALUES ({})".format(
        ", ".join(T.ROW_COLUMNS), ", ".join("?" * len(T.ROW_COLUMNS)))
    with engine.connect() as conn:
        db: sqlite3.Connection = conn.connection.driver_connection  # type: ignore[assignment]
        accepted = 0
        for now in nows:
            now_ts = T._epoch(now)
            sql = T._plain_insert_sql("broker_temporal_instances", now, now_ts)
            assert sql is not None
            for inst in [*INSTANCES, {"type": "Property", "value": rng.uniform(-1e6, 1e6),
                                      "createdAt": now, "modifiedAt": now}]:
                row = T._plain_row(5, inst, now, "urn:x")
                if row is None:
                    kept_apart = "observedAt" in inst or "deletedAt" in inst
                    assert kept_apart or inst.get("createdAt") not in (None, now)
                    continue
                accepted += 1
                db.execute("DELETE FROM broker_temporal_instances")
                db.execute(sql, row)
                db.execute(general, T._row_params(5, inst, now, now_ts, "urn:x"))
                columns = ", ".join(T.ROW_COLUMNS)
                a, b = db.execute(f"SELECT {columns} FROM broker_temporal_instances").fetchall()
                assert a == b
                assert type(a[3]) is float and a[3] == now_ts
        assert accepted > len(nows) * 5
    table = "broker_temporal_instances"
    assert T._plain_insert_sql(table, "2024-05-01T10:00:00Z'; DROP TABLE x; --", 0.0) is None
    assert T._plain_insert_sql(table, "2024-05-01T10:00:00+09:00", 0.0) is None
