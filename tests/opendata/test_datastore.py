"""The datastore store: typed tables per resource, records, search, bulk loads (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from society5.core.platform import Platform
from society5.opendata import datastore as ds
from society5.opendata.actions import NotFoundError, ValidationError
from tests.conftest import make_settings

F = ds.Field
PEDESTRIAN = [F("point", "text"), F("observed", "timestamp"), F("day", "date"), F("direction", "text"),
              F("count", "int4"), F("estimated", "bool")]


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def platform(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """One database per module and kind: every test makes its own resource ids, so tests cannot meet."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('ds') / 'ds.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    plat = Platform.open(make_settings(url))
    yield plat
    plat.close()


def rid() -> str:
    return str(uuid.uuid4())


def create(platform: Platform, resource_id: str, fields: list[ds.Field], **kw: Any) -> ds.TableSpec:
    with ds.write_transaction(platform.engine) as conn:
        return ds.create_table(conn, resource_id, fields, **kw)


def write(platform: Platform, resource_id: str, records: list[dict[str, Any]], method: str = "insert") -> int:
    with ds.write_transaction(platform.engine) as conn:
        spec = ds.require_spec(conn, resource_id)
        return ds.write_records(conn, spec, ds.convert_records(spec, records, allow_id=True), method)


def search(platform: Platform, resource_id: str, **kw: Any) -> dict[str, Any]:
    with platform.engine.connect() as conn:
        return ds.search(conn, ds.require_spec(conn, resource_id), ds.SearchQuery(**kw))


def test_table_name_is_ds_and_the_resource_ids_hex() -> None:
    assert ds.table_name("0b3d9c2e-52c6-4b0e-9d0c-3f0e1c2b7a11") == "ds_0b3d9c2e52c64b0e9d0c3f0e1c2b7a11"
    assert ds.table_name("not-a-uuid").startswith("ds_") and len(ds.table_name("not-a-uuid")) == 35


def test_japanese_names_and_every_type_round_trip(platform: Platform) -> None:
    r = rid()
    fields = [F("設置場所名称", "text"), F("台数", "int"), F("大きい数", "int8"), F("緯度", "float8"),
              F("金額", "numeric"), F("有効", "bool"), F("日付", "date"), F("時刻", "time"),
              F("日時", "timestamp"), F("属性", "json"), F("a b.c(d)%", "text")]
    spec = create(platform, r, ds.parse_fields([f.as_dict() for f in fields]))
    assert [f.type for f in spec.fields][:3] == ["text", "int4", "int8"]
    write(platform, r, [{"設置場所名称": "札幌市役所", "台数": 2, "大きい数": 2**40, "緯度": 43.06,
                         "金額": "12.5", "有効": True, "日付": "2024-04-01", "時刻": "09:30:00",
                         "日時": "2024-04-01T09:30:00+09:00", "属性": {"階": [1, 2]}, "a b.c(d)%": "x"}])
    got = search(platform, r)
    assert got["records"] == [{"_id": 1, "設置場所名称": "札幌市役所", "台数": 2, "大きい数": 2**40,
                               "緯度": 43.06, "金額": 12.5, "有効": True, "日付": "2024-04-01",
                               "時刻": "09:30:00", "日時": "2024-04-01T00:30:00", "属性": {"階": [1, 2]},
                               "a b.c(d)%": "x"}]
    assert got["fields"][0] == {"id": "_id", "type": "int"}
    assert got["total"] == 1 and got["total_was_estimated"] is False
    assert search(platform, r, filters={"設置場所名称": "札幌市役所", "a b.c(d)%": "x"})["total"] == 1
    assert search(platform, r, sort='"a b.c(d)%" desc, 台数')["total"] == 1


@pytest.mark.parametrize("name", ["", "_id", "_x", 'a"b', "tab\there", "長" * 22])
def test_unsafe_field_names_are_refused(name: str) -> None:
    with pytest.raises(ValidationError) as err:
        ds.parse_fields([{"id": name, "type": "text"}])
    assert "fields" in err.value.fields


def test_field_names_differing_only_in_case_are_refused() -> None:
    with pytest.raises(ValidationError, match="twice"):
        ds.parse_fields([{"id": "Name"}, {"id": "name"}])


def test_unknown_type_is_named() -> None:
    with pytest.raises(ValidationError, match="'float16'"):
        ds.parse_fields([{"id": "a", "type": "float16"}])


def test_creating_again_adds_columns_and_keeps_rows(platform: Platform) -> None:
    r = rid()
    create(platform, r, [F("a", "text")])
    write(platform, r, [{"a": "x"}])
    spec = create(platform, r, [F("a", "text"), F("b", "int4")])
    assert spec.names == ["a", "b"]
    write(platform, r, [{"a": "y", "b": 3}])
    assert [rec["b"] for rec in search(platform, r)["records"]] == [None, 3]
    with pytest.raises(ValidationError, match="type cannot change"):
        create(platform, r, [F("a", "int4")])


def test_primary_key_is_unique_and_upsert_updates(platform: Platform) -> None:
    r = rid()
    create(platform, r, [F("code", "text"), F("name", "text")], primary_key=["code"])
    write(platform, r, [{"code": "011002", "name": "札幌"}, {"code": "012025", "name": "函館"}])
    assert write(platform, r, [{"code": "011002", "name": "札幌市"}, {"code": "012033", "name": "小樽"}],
                 "upsert") == 2
    names = {rec["code"]: rec["name"] for rec in search(platform, r)["records"]}
    assert names == {"011002": "札幌市", "012025": "函館", "012033": "小樽"}
    with pytest.raises(ValidationError, match="record 1: a row with key") as err:
        write(platform, r, [{"code": "099999", "name": "new"}, {"code": "012025", "name": "dup"}])
    assert search(platform, r, filters={"code": "099999"})["total"] == 0  # nothing of the call was written
    with pytest.raises(ValidationError, match="record 0: no row has key"):
        write(platform, r, [{"code": "000000", "name": "?"}], "update")
    with ds.write_transaction(platform.engine) as conn:
        assert ds.get_spec(conn, r).row_count == 3  # type: ignore[union-attr]
    assert "records" in err.value.fields


def test_bad_record_names_index_and_field_and_writes_nothing(platform: Platform) -> None:
    r = rid()
    create(platform, r, [F("n", "int4"), F("d", "date")])
    with pytest.raises(ValidationError) as err:
        write(platform, r, [{"n": 1, "d": "2024-01-01"}, {"n": "x", "d": "2024-01-02"}, {"zzz": 1}])
    text = "; ".join(err.value.fields["records"])
    assert "record 1: field 'n'" in text and "record 2: field 'zzz' does not exist" in text
    assert search(platform, r)["total"] == 0


def test_update_by_id_and_delete_with_filters(platform: Platform) -> None:
    r = rid()
    create(platform, r, [F("k", "text"), F("v", "int4")])
    write(platform, r, [{"k": "a", "v": 1}, {"k": "b", "v": 2}, {"k": "c", "v": 3}])
    write(platform, r, [{"_id": 2, "v": 20}], "update")
    assert search(platform, r, filters={"_id": 2})["records"][0]["v"] == 20
    with ds.write_transaction(platform.engine) as conn:
        spec = ds.require_spec(conn, r)
        assert ds.delete_rows(conn, spec, {"k": ["a", "c"]}) == 2
    assert [x["k"] for x in search(platform, r)["records"]] == ["b"]
    with ds.write_transaction(platform.engine) as conn:
        ds.drop_table(conn, ds.require_spec(conn, r))
    with platform.engine.connect() as conn, pytest.raises(NotFoundError):
        ds.require_spec(conn, r)
    assert ds.table_name(r) not in sa.inspect(platform.engine).get_table_names()


@pytest.fixture
def counts(platform: Platform) -> str:
    r = rid()
    create(platform, r, PEDESTRIAN, indexes=[["point", "day", "observed"]])
    rows = []
    for point in ("P01", "P02"):
        for day in range(1, 4):
            for hour in range(0, 24, 6):
                for direction in ("north", "south"):
                    rows.append([point, f"2024-05-0{day}T{hour:02d}:00:00", f"2024-05-0{day}", direction,
                                 str(day * 100 + hour), "true" if hour == 18 else "false"])
    ds.load_rows(platform.engine, r, None, rows)
    return r


def test_search_filters_sort_fields_and_paging(platform: Platform, counts: str) -> None:
    got = search(platform, counts, filters={"point": "P01", "day": ["2024-05-02", "2024-05-03"]},
                 sort="observed desc, direction", fields="observed,direction,count", limit=3, offset=1)
    assert got["total"] == 16
    assert [f["id"] for f in got["fields"]] == ["observed", "direction", "count"]
    assert got["records"] == [{"observed": "2024-05-03T18:00:00", "direction": "south", "count": 318},
                              {"observed": "2024-05-03T12:00:00", "direction": "north", "count": 312},
                              {"observed": "2024-05-03T12:00:00", "direction": "south", "count": 312}]
    assert got["_links"]["next"].startswith("/api/3/action/datastore_search?")
    assert "offset=4" in got["_links"]["next"]


def test_search_formats(platform: Platform, counts: str) -> None:
    q = {"filters": {"point": "P02", "observed": "2024-05-01T06:00:00"}, "fields": ["direction", "estimated"],
         "sort": "direction"}
    assert search(platform, counts, **q, records_format="lists")["records"] == [["north", False],
                                                                               ["south", False]]
    assert search(platform, counts, **q, records_format="csv")["records"] == "north,false\nsouth,false\n"
    assert search(platform, counts, **q, records_format="tsv")["records"] == "north\tfalse\nsouth\tfalse\n"


def test_distinct_and_q(platform: Platform, counts: str) -> None:
    got = search(platform, counts, fields=["point"], distinct=True, sort="point")
    assert got["records"] == [{"point": "P01"}, {"point": "P02"}] and got["total"] == 2
    assert search(platform, counts, q="SOUTH p02")["total"] == 12  # every word, any text field, any case
    assert search(platform, counts, q={"direction": "nor"})["total"] == 24
    assert search(platform, counts, q="100%")["total"] == 0  # % is a character, not a wildcard


def test_bad_names_and_values_are_validation_errors(platform: Platform, counts: str) -> None:
    for kw, where, needle in [({"filters": {"nope": 1}}, "filters", "'nope'"),
                              ({"sort": "nope desc"}, "sort", "'nope'"),
                              ({"sort": "count sideways"}, "sort", "sideways"),
                              ({"fields": ["count", "nope"]}, "fields", "'nope'"),
                              ({"filters": {"count": "many"}}, "filters", "int4"),
                              ({"filters": {"day": "yesterday"}}, "filters", "date"),
                              ({"q": {"nope": "x"}}, "q", "'nope'")]:
        with pytest.raises(ValidationError) as err:
            search(platform, counts, **kw)
        assert needle in "; ".join(err.value.fields[where]), (kw, err.value.fields)


def test_total_estimation(platform: Platform, counts: str) -> None:
    got = search(platform, counts, total_estimation_threshold=10, limit=1)
    assert got["total"] == 48 and got["total_was_estimated"] is True
    exact = search(platform, counts, total_estimation_threshold=1000, limit=1)
    assert exact["total"] == 48 and exact["total_was_estimated"] is False


def test_load_reports_every_bad_cell_and_publishes_nothing(platform: Platform, counts: str) -> None:
    rows = [["P09", "2024-06-01T00:00:00", "2024-06-01", "north", "5", "false"],
            ["P09", "2024-06-01T00:15:00", "2024-06-31", "north", "lots", "false"],
            ["P09", "2024-06-01T00:30:00", "2024-06-01", "north"]]
    with pytest.raises(ds.LoadError) as err:
        ds.load_rows(platform.engine, counts, None, rows, first_row=2)
    problems = [(e.row, e.column) for e in err.value.errors]
    assert problems == [(3, "day"), (3, "count"), (4, None)]
    assert search(platform, counts, limit=0)["total"] == 48  # the old rows are still there
    assert not [n for n in sa.inspect(platform.engine).get_table_names() if "_ld_" in n]


def test_load_replaces_and_keeps_keys(platform: Platform, counts: str) -> None:
    rows = [["P05", "2024/6/1 9:00", "2024/6/1", "north", "７", "TRUE"],
            ["P05", "2024-06-01T09:15:00Z", "2024-06-01", "south", "", ""]]
    result = ds.load_rows(platform.engine, counts, None, rows)
    assert result.rows == 2
    got = search(platform, counts)
    assert got["total"] == 2
    assert got["records"][0] == {"_id": 1, "point": "P05", "observed": "2024-06-01T09:00:00",
                                 "day": "2024-06-01", "direction": "north", "count": 7, "estimated": True}
    assert got["records"][1]["count"] is None
    names = {ix["name"] for ix in sa.inspect(platform.engine).get_indexes(ds.table_name(counts))}
    assert ds._index_name(ds.table_name(counts), ("point", "day", "observed")) in names


def test_load_appends_in_one_transaction(platform: Platform, counts: str) -> None:
    row = ["P07", "2024-06-02T00:00:00", "2024-06-02", "north", "1", "false"]
    ds.load_rows(platform.engine, counts, None, [row, row], replace=False)
    assert search(platform, counts, limit=0)["total"] == 50
    with pytest.raises(ds.LoadError):
        ds.load_rows(platform.engine, counts, None, [row, [*row[:4], "x", "false"]], replace=False)
    assert search(platform, counts, limit=0)["total"] == 50


def test_readers_see_old_or_new_rows_never_half(platform: Platform) -> None:
    r = rid()
    fields = [F("n", "int4")]
    ds.load_rows(platform.engine, r, fields, ([str(i)] for i in range(3000)))
    seen: set[int] = set()
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            seen.add(search(platform, r, limit=0)["total"])

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for size in (5000, 3000, 5000):
            ds.load_rows(platform.engine, r, fields, ([str(i)] for i in range(size)), chunk_rows=500)
    finally:
        done.set()
        reader.join()
    assert seen <= {3000, 5000}


def test_info_describes_fields_and_keys(platform: Platform) -> None:
    r = rid()
    create(platform, r, [F("code", "text"), F("人口", "int8")], primary_key=["code"], indexes=["人口"])
    write(platform, r, [{"code": "1", "人口": 10}])
    with platform.engine.connect() as conn:
        got = ds.info(conn, ds.require_spec(conn, r))
    assert got["meta"]["count"] == 1
    assert got["primary_key"] == ["code"] and got["indexes"] == [["人口"]]
    assert got["fields"][0]["schema"]["uniquekey"] is True and got["fields"][1]["schema"]["is_index"] is True


def test_primary_key_over_duplicate_rows_is_refused(platform: Platform) -> None:
    r = rid()
    create(platform, r, [F("k", "text")])
    write(platform, r, [{"k": "a"}, {"k": "a"}])
    with pytest.raises(ValidationError, match="unique"):
        create(platform, r, [F("k", "text")], primary_key=["k"])


# --- text conversion (property tests) --------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(st.dates(min_value=date(1, 1, 1)))
def test_dates_parse_in_iso_and_slash_forms(d: date) -> None:
    assert ds.parse_date(d.isoformat()) == d
    if d.year >= 1000:
        assert ds.parse_date(f"{d.year}/{d.month}/{d.day}") == d


@settings(max_examples=100, deadline=None)
@given(st.times())
def test_times_parse(t: time) -> None:
    assert ds.parse_time(t.isoformat()) == t


@settings(max_examples=100, deadline=None)
@given(st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1)))
def test_timestamps_parse(dt: datetime) -> None:
    assert ds.parse_timestamp(dt.isoformat()) == dt
    assert ds.parse_timestamp(dt.isoformat() + "+09:00") == dt - timedelta(hours=9)


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=12))
def test_text_converters_raise_value_error_or_succeed(text: str) -> None:
    for kind, parse in ds.TEXT_PARSERS.items():
        try:
            parse(text)
        except (ValueError, ArithmeticError):
            pass
        except Exception as err:  # anything else would escape load_rows' per-cell report as a 500
            raise AssertionError(f"{kind}({text!r}) raised {err!r}") from err


@settings(max_examples=100, deadline=None)
@given(st.integers())
def test_int_ranges(n: int) -> None:
    for kind, (low, high) in ds.INT_RANGES.items():
        if low <= n <= high:
            assert ds.from_json(kind, n) == n and ds.from_json(kind, str(n)) == n
        else:
            with pytest.raises(ValueError):
                ds.from_json(kind, n)
