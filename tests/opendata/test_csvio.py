"""csvio: encodings Japanese offices upload, structural problems by line, streaming limits, safe export."""

from __future__ import annotations

import io
import string

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from society5.opendata import csvio

ROWS = [["①㈱髙", "札幌市中央区北1条西2丁目"], ["ｶﾅ・～", "-12.5"]]


def _csv(rows: list[list[str]], newline: str = "\r\n") -> str:
    return "".join(",".join(r) + newline for r in [["名称", "住所"], *rows])


@pytest.mark.parametrize("encoding,expected", [
    ("utf-8-sig", "utf-8-sig"), ("utf-8", "utf-8"), ("cp932", "cp932"),
])
def test_detects_each_encoding_office_files_use(encoding: str, expected: str) -> None:
    header, rows, reader = csvio.read_bytes(_csv(ROWS).encode(encoding))
    assert reader.encoding == expected
    assert header == ["名称", "住所"]
    assert [r.values for r in rows] == ROWS  # NEC/IBM extension characters survive CP932
    assert reader.problems == []


def test_shift_jis_after_a_long_ascii_prefix_is_still_detected() -> None:
    data = ("id,name\r\n" + "1,abc\r\n" * 50_000 + "2,髙橋\r\n").encode("cp932")
    _, rows, reader = csvio.read_bytes(data)
    assert reader.encoding == "cp932"
    assert rows[-1].values == ["2", "髙橋"] and rows[-1].line == 50_002


@pytest.mark.parametrize("newline,name", [("\r\n", "CRLF"), ("\n", "LF"), ("\r", "CR")])
def test_newline_styles(newline: str, name: str) -> None:
    _, rows, reader = csvio.read_bytes(_csv(ROWS, newline).encode("utf-8"))
    assert [r.values for r in rows] == ROWS
    assert [r.line for r in rows] == [2, 3]
    assert reader.newline == name


def test_crlf_split_across_chunks_is_one_newline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(csvio, "CHUNK", 8)
    data = b"a,b\r\n1234,5\r\n6,7\r\n"
    _, rows, reader = csvio.read_bytes(data)
    assert [(r.line, r.values) for r in rows] == [(2, ["1234", "5"]), (3, ["6", "7"])]
    assert reader.newline == "CRLF"


def test_structural_problems_are_reported_by_line_and_parsing_resumes() -> None:
    text = 'a,b,,a\n1,2,3,4\n"x"y,2,3,4\n5,6\n"unclosed,2,3,4\n7,8,9,10\n"multi\nline",2,3,4\n'
    header, rows, reader = csvio.read_bytes(text.encode())
    assert header == ["a", "b", "", "a"]
    kinds = [(p.line, p.kind) for p in reader.problems]
    assert (1, "empty_header") in kinds and (1, "duplicate_header") in kinds
    assert (3, "bad_quote") in kinds
    assert (4, "column_count") in kinds
    # line 5's quote pairs with the one opening line 7, which the parser then finds misplaced
    assert (5, "bad_quote") in kinds
    # the rows after each broken line are still read, with their own line numbers
    assert [(r.line, r.values[0]) for r in rows] == [(2, "1"), (4, "5"), (6, "7"), (7, "multi\nline")]


def test_a_quote_never_closed_costs_one_line() -> None:
    _, rows, reader = csvio.read_bytes(b'a,b\n"open,1\nf,g\n')
    assert [(p.line, p.kind) for p in reader.problems] == [(2, "unclosed_quote")]
    assert [(r.line, r.values) for r in rows] == [(3, ["f", "g"])]


def test_a_runaway_quoted_field_is_bounded() -> None:
    data = b'a,b\n"open,1\n' + b"x,y\n" * 5000
    _, rows, reader = csvio.read_bytes(data, max_record_chars=1000)
    assert reader.problem_counts == {"unclosed_quote": 1}
    assert len(rows) == 5000


def test_an_unknown_encoding_names_the_byte_offset_and_line() -> None:
    with pytest.raises(csvio.CsvFormatError) as err:
        csvio.read_bytes(b"a,b\n1,2\n\xff\xfe\xfd\n")
    assert err.value.offset == 8 and err.value.line == 3
    assert "オフセット 8" in err.value.message_ja


def test_mixed_encodings_fail_at_the_offending_byte() -> None:
    data = "名称\n".encode() + "あ\n".encode() * 40_000 + "髙\n".encode("cp932")
    with pytest.raises(csvio.CsvFormatError) as err:
        csvio.read_bytes(data)
    assert err.value.offset == len(data) - 3
    assert err.value.line == 40_002


@pytest.mark.parametrize("data,kind", [
    ("a,b\n".encode("utf-16"), "encoding"), (b"PK\x03\x04rest", "not_csv"), (b"a,b\n\x00\x01", "binary"),
    ("a\n".encode("cp932") + b"\xf0\x40\n", "encoding"),  # 外字 (user-defined area)
])
def test_files_that_are_not_text_csv(data: bytes, kind: str) -> None:
    with pytest.raises(csvio.CsvFormatError) as err:
        csvio.read_bytes(data)
    assert err.value.kind == kind


def test_limits_on_bytes_and_rows(tmp_path) -> None:
    path = tmp_path / "big.csv"
    path.write_bytes(b"a,b\n" + b"1,2\n" * 1000)
    with pytest.raises(csvio.CsvLimitError):
        csvio.open_csv(path, max_bytes=100)
    with pytest.raises(csvio.CsvLimitError):  # a stream whose size is not known up front
        list(csvio.CsvReader(io.BytesIO(path.read_bytes()), max_bytes=100))
    with csvio.open_csv(path, max_rows=10) as reader, pytest.raises(csvio.CsvLimitError) as err:
        list(reader)
    assert err.value.kind == "too_many_rows"


def test_reading_streams_a_large_file_in_chunks(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[int] = []
    path = tmp_path / "large.csv"
    path.write_bytes("名称,値\n".encode() + "あいう,1\n".encode() * 300_000)  # ~4 MB
    with csvio.open_csv(path) as reader:
        original = reader._source.stream.read

        def spy(n: int = -1) -> bytes:
            reads.append(n)
            return original(n)

        monkeypatch.setattr(reader._source.stream, "read", spy)
        count = sum(1 for _ in reader)
    assert count == 300_000
    assert reads and all(0 < n <= csvio.CHUNK for n in reads)  # never read(-1): never the whole file


@pytest.mark.parametrize("value,escaped", [
    ("=SUM(A1:A3)", "'=SUM(A1:A3)"), ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"), ("@SUM(1)", "'@SUM(1)"),
    ("-1+1", "'-1+1"), ("\tx", "'\tx"), ("\rx", "'\rx"), ("＝1+1", "'＝1+1"),
    ("-12.5", "-12.5"), ("+3", "+3"), ("-0.25", "-0.25"), ("札幌", "札幌"), ("", ""), ("a=b", "a=b"),
])
def test_formula_escaping(value: str, escaped: str) -> None:
    assert csvio.escape_formula(value) == escaped


def test_shift_jis_export_folds_and_reports_what_it_cannot_hold() -> None:
    result = csvio.WriteResult()
    data = b"".join(csvio.iter_csv(["名前"], [["髙橋①—¥"], ["𠀋"]], encoding="Shift_JIS", result=result))
    assert data.decode("cp932") == "名前\r\n髙橋①―￥\r\n〓\r\n"
    assert result.replaced_count == 1
    assert (result.replaced[0].line, result.replaced[0].column, result.replaced[0].char) == (3, "名前", "𠀋")
    with pytest.raises(csvio.CsvEncodeError):
        list(csvio.iter_csv(["名前"], [["𠀋"]], encoding="sjis", unencodable="error"))


def test_utf8_export_has_a_bom_and_write_csv_leaves_no_partial_file(tmp_path) -> None:
    path = tmp_path / "out.csv"
    csvio.write_csv(path, ["a"], [["x"]])
    assert path.read_bytes() == b"\xef\xbb\xbfa\r\nx\r\n"
    with pytest.raises(csvio.CsvEncodeError):
        csvio.write_csv(tmp_path / "bad.csv", ["a"], [["𠀋"]], encoding="cp932", unencodable="error")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]


# Private-use characters and U+0080 are what CP932 decodes 外字 and stray bytes to: the reader refuses them.
cell = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Co"), blacklist_characters="\x00\x80"),
               max_size=12)
sjis_cell = st.text(alphabet=st.sampled_from(list(string.printable) + list("あア漢字髙①㈱～ー、。「」\"'")),
                    max_size=12)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(cell, min_size=2, max_size=2), max_size=6), st.sampled_from(["utf-8-sig", "cp932"]))
def test_round_trip_through_both_encodings(rows: list[list[str]], encoding: str) -> None:
    if encoding == "cp932":
        rows = [[c.encode("cp932", "ignore").decode("cp932") for c in r] for r in rows]
    data = b"".join(csvio.iter_csv(["h1", "h2"], rows, encoding=encoding, escape=False))
    if encoding == "cp932" and not data.isascii():
        # a few bytes of CP932 can also be valid UTF-8; real Japanese text is not (detection takes UTF-8)
        assume(csvio._first_bad(data, "utf-8") is not None)
    header, back, reader = csvio.read_bytes(data)
    assert header == ["h1", "h2"]
    assert [r.values for r in back] == rows  # newlines inside quoted cells included
    assert reader.problems == []


@settings(max_examples=150, deadline=None)
@given(st.lists(sjis_cell, min_size=1, max_size=4))
def test_shift_jis_round_trip_of_japanese_text(cells: list[str]) -> None:
    header = [f"列{i}" for i in range(len(cells))]
    data = b"".join(csvio.iter_csv(header, [cells], encoding="shift_jis", escape=False))
    _, back, reader = csvio.read_bytes(data)
    if any(cells):
        assert back[0].values == cells
    assert reader.encoding in ("cp932", "utf-8")  # pure ASCII reads the same either way


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_escaping_never_leaves_a_formula_trigger(value: str) -> None:
    out = csvio.escape_formula(value)
    assert not out.startswith(csvio.FORMULA_TRIGGERS) or csvio.is_plain_number(out)
    assert out in (value, "'" + value)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_reader_raises_only_its_documented_error_on_arbitrary_bytes(data: bytes) -> None:
    try:
        csvio.read_bytes(data, max_record_chars=100)
    except csvio.CsvFormatError:
        pass
