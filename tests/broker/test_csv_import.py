"""Sensor CSV import into temporal history: encodings, time zones, whole-file checks, idempotent re-runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from society5.broker.csv_import import CsvImportError, CsvLayout, decode, load, parse
from society5.broker.temporal import TemporalRequest
from society5.core.errors import NotFound
from society5.core.platform import Platform

METERS = "計測日時,メーター,電力,状態\n2026-01-10 09:00,m-001,1.25,正常\n2026-01-10 09:01,m-001,1.5,\n" \
         "2026-01-10T00:00:00Z,m-002,3,異常\n"
LAYOUT = CsvLayout(entity_type="PowerMeter", time_column="計測日時", id_column="メーター",
                   id_prefix="urn:ngsi-ld:PowerMeter:", rename={"電力": "power", "状態": "state"},
                   units={"power": "KWT"})


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "cp932"])
def test_japanese_files_in_each_encoding_read_the_same(encoding: str) -> None:
    obs = parse(decode(METERS.encode(encoding)), LAYOUT)
    assert [(o.entity_id, o.observed_at, o.values) for o in obs] == [
        ("urn:ngsi-ld:PowerMeter:m-001", "2026-01-10T00:00:00Z", {"power": 1.25, "state": "正常"}),
        ("urn:ngsi-ld:PowerMeter:m-001", "2026-01-10T00:01:00Z", {"power": 1.5}),  # empty cell: no value
        ("urn:ngsi-ld:PowerMeter:m-002", "2026-01-10T00:00:00Z", {"power": 3, "state": "異常"}),
    ]


def test_every_bad_cell_is_reported_with_line_and_column() -> None:
    text = "time,id,v\nyesterday,a,1\n2026-01-01T00:00:00Z,has space,2\n2026-01-01T00:00:00Z,b\n"
    layout = CsvLayout(entity_type="T", time_column="time", id_column="id", id_prefix="urn:x:")
    with pytest.raises(CsvImportError) as err:
        parse(text, layout)
    assert err.value.problems == [
        "line 2, column 'time': 'yesterday' is not a date and time (ISO 8601)",
        "line 3, column 'id': 'urn:x:has space' is not a URI (use an id prefix such as urn:ngsi-ld:Type:)",
        "line 4: 2 cells where the header has 3",
    ]


@pytest.mark.parametrize("text,problem", [
    ("", "empty"),
    ("time,v\n", "no data rows"),
    ("when,v\n2026-01-01,1\n", "no column 'time'"),
    ("time,v,v\n2026-01-01,1,2\n", "repeat: v"),
    ('time,v\n2026-01-01,"unterminated\n', "line"),
])
def test_broken_files_are_refused(text: str, problem: str) -> None:
    with pytest.raises(CsvImportError, match=problem):
        parse(text, CsvLayout(entity_type="T", time_column="time", entity_id="urn:x:1"))


def test_layout_needs_exactly_one_way_to_name_entities() -> None:
    with pytest.raises(ValueError, match="either"):
        CsvLayout(entity_type="T", time_column="t")
    with pytest.raises(ValueError, match="time zone"):
        CsvLayout(entity_type="T", time_column="t", entity_id="urn:x:1", timezone="Hokkaido/Nowhere")


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from('time,v\n"\r 0123-:TZab'), max_size=120))
def test_parser_fails_only_with_its_report(text: str) -> None:
    try:
        parse(text, CsvLayout(entity_type="T", time_column="time", entity_id="urn:x:1"))
    except CsvImportError as err:
        assert err.problems


def _history(platform: Platform, eid: str) -> dict[str, Any]:
    temporal = platform.parts["temporal"]
    ctx = platform.parts["broker"].context(None)
    result = temporal.retrieve(None, eid, TemporalRequest())
    from society5.broker.temporal import TemporalRenderer

    return TemporalRenderer(ctx).entity(result.entities[0])


def test_load_writes_history_once_even_when_run_twice(platform: Platform) -> None:
    from society5.broker.service import start

    broker = start(platform)
    obs = parse(METERS, LAYOUT)
    ctx = broker.context(None)
    assert load(platform.parts["temporal"], None, obs, LAYOUT, ctx) == 5
    assert load(platform.parts["temporal"], None, obs, LAYOUT, ctx) == 5
    meter = _history(platform, "urn:ngsi-ld:PowerMeter:m-001")
    assert [(i["value"], i["observedAt"], i["unitCode"]) for i in meter["power"]] == [
        (1.25, "2026-01-10T00:00:00Z", "KWT"), (1.5, "2026-01-10T00:01:00Z", "KWT")]
    current = broker.get(None, "urn:ngsi-ld:PowerMeter:m-001")
    assert current["power"]["value"] == 1.5  # the entity's current state is the newest observation


def test_an_invalid_attribute_name_writes_nothing(platform: Platform) -> None:
    from society5.broker.service import start

    broker = start(platform)
    text = "t,good,bad name\n2026-01-01T00:00:00Z,1,2\n"
    layout = CsvLayout(entity_type="T", time_column="t", entity_id="urn:ngsi-ld:T:1")
    with pytest.raises(CsvImportError, match="bad name"):
        load(platform.parts["temporal"], None, parse(text, layout), layout, broker.context(None))
    with pytest.raises(NotFound):
        broker.get(None, "urn:ngsi-ld:T:1")


def test_cli_imports_with_progress_and_refuses_bad_files(tmp_path: Path) -> None:
    society5 = str(Path(sys.executable).with_name("society5"))
    env = {"SOCIETY5_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}", "PATH": "/usr/bin:/bin"}
    good = tmp_path / "meters.csv"
    good.write_bytes(METERS.encode("cp932"))
    args = [society5, "import", "csv", str(good), "--type", "PowerMeter", "--time-column", "計測日時",
            "--id-column", "メーター", "--id-prefix", "urn:ngsi-ld:PowerMeter:", "--rename", "電力=power",
            "--rename", "状態=state", "--unit", "power=KWT", "--tenant", "011002"]
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "3 rows, 2 entities, 5 attribute instances" in done.stderr
    bad = tmp_path / "bad.csv"
    bad.write_text("計測日時,メーター,電力\nきのう,m-1,1\n", encoding="utf-8")
    refused = subprocess.run([*args[:3], str(bad), *args[4:]], capture_output=True, text=True, env=env,
                             timeout=120)
    assert refused.returncode == 2
    assert "line 2, column '計測日時'" in refused.stderr
