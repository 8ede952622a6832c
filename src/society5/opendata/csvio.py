"""Japanese CSV as offices really upload it, read in a stream, and written safely for Excel.

Reading
    ``open_csv(path_or_binary_stream)`` detects the encoding: UTF-8 with BOM, UTF-8, or Shift_JIS as Windows
    writes it (CP932, so NEC/IBM extension characters such as ①, ㈱ and 髙 decode). The decision is taken on
    the first 64 KiB after the first non-ASCII byte (an ASCII prefix fits every candidate); bytes later in the
    file that do not decode in the chosen encoding stop the reading with :class:`CsvFormatError` naming their
    byte offset and line. The file is read in 1 MiB chunks and never held whole; ``max_bytes`` and
    ``max_rows`` bound what one upload may cost (exceeding them raises :class:`CsvLimitError`).

    Newlines may be CRLF, LF or CR (even mixed). Structural problems do not stop the reading: each becomes a
    :class:`CsvProblem` with its physical line number (the first line of a multi-line record): a stray quote
    (``"abc"def``), an unclosed quote (the parser resumes on the line after the record's first line), a row
    with the wrong number of cells, an empty or duplicate header name. Blank lines are skipped.

    :class:`CsvFormatError` is the only exception reading raises on any input (hypothesis-tested on arbitrary
    bytes); I/O errors of the file system itself (a missing file) are Python's own ``OSError``.

Writing
    ``write_csv``/``iter_csv`` stream rows as UTF-8 with BOM (``"utf-8-sig"``, what Excel needs to see UTF-8)
    or Shift_JIS (``"cp932"``). Characters Shift_JIS cannot hold are first folded where a CP932 twin exists
    (— → ―, ¥ → ￥) and otherwise **replaced by 〓 (geta mark, the customary Japanese placeholder) and
    reported** in :class:`WriteResult.replaced` with line and column, or with ``unencodable="error"`` raise
    :class:`CsvEncodeError` before anything further is written.

Formula injection (``escape_formula``)
    A cell a spreadsheet would run as a formula gets a leading ``'``: cells starting with ``=``, ``+``, ``-``,
    ``@``, tab or CR (and their full-width forms ＝＋－＠, which Japanese Excel may convert). The exception is
    a plain decimal number, ``[+-]?digits[.digits]`` (``-12.5``, ``+3``): Excel reads it as a number and it
    cannot call anything, so it stays a number. Anything else after the sign (``-1+1``, ``-A1``, ``+81 3…``
    with a space, exponents) is escaped: the rule errs towards escaping.
"""

from __future__ import annotations

import codecs
import csv
import io
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal

CHUNK = 1 << 20
SNIFF_WINDOW = 64 * 1024
DEFAULT_MAX_PROBLEMS = 1000
DEFAULT_MAX_RECORD_CHARS = 1_000_000

Encoding = Literal["utf-8-sig", "utf-8", "cp932"]
ENCODING_ALIASES: dict[str, Encoding] = {
    "utf-8-sig": "utf-8-sig", "utf8-sig": "utf-8-sig", "utf-8-bom": "utf-8-sig", "utf8bom": "utf-8-sig",
    "utf-8": "utf-8", "utf8": "utf-8",
    "cp932": "cp932", "shift_jis": "cp932", "shift-jis": "cp932", "sjis": "cp932", "ms932": "cp932",
    "windows-31j": "cp932",
}
ENCODING_LABELS = {"utf-8-sig": "UTF-8 (BOM付き)", "utf-8": "UTF-8", "cp932": "Shift_JIS (CP932)"}


class CsvFormatError(ValueError):
    """The file cannot be read as CSV at all (encoding, binary content, limits); says where and what to do."""

    def __init__(self, kind: str, message_ja: str, message_en: str, *, offset: int | None = None,
                 line: int | None = None):
        super().__init__(f"{message_ja} / {message_en}")
        self.kind = kind
        self.message_ja = message_ja
        self.message_en = message_en
        self.offset = offset
        self.line = line

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "message_ja": self.message_ja, "message_en": self.message_en,
                "offset": self.offset, "line": self.line}


class CsvLimitError(CsvFormatError):
    """The file is larger (bytes or rows) than the configured limit."""


class CsvEncodeError(ValueError):
    """A cell holds a character the target encoding cannot write (``unencodable="error"``)."""

    def __init__(self, line: int, column: str, char: str, encoding: str):
        super().__init__(
            f"{line}行目「{column}」の文字「{char}」(U+{ord(char):04X}) は {ENCODING_LABELS[encoding]} で"
            f"書けません / line {line}, column {column!r}: {char!r} cannot be written in {encoding}")
        self.line, self.column, self.char, self.encoding = line, column, char, encoding


@dataclass(frozen=True)
class CsvProblem:
    """A structural problem found while parsing: ``line`` is the physical line (1-based)."""

    line: int
    kind: str  # bad_quote, unclosed_quote, column_count, empty_header, duplicate_header
    message_ja: str
    message_en: str
    column: str | None = None
    value: str | None = None


@dataclass(frozen=True)
class CsvRow:
    line: int  # physical line where the record starts
    values: list[str]


def normalize_encoding(name: str) -> Encoding:
    """``"Shift_JIS"``, ``"sjis"``, ``"utf-8-bom"`` … → one of ``utf-8-sig``, ``utf-8``, ``cp932``."""
    found = ENCODING_ALIASES.get(name.strip().lower().replace(" ", ""))
    if found is None:
        raise ValueError(f"unknown CSV encoding {name!r}: use utf-8-sig (UTF-8 with BOM), utf-8 or shift_jis")
    return found


# ---------------------------------------------------------------------------------------------- encoding


# CP932 decodes bytes no Shift_JIS text holds (0x80, 0xA0, 0xFD-0xFF) and the user-defined area (外字,
# F040-F9FC) to control and private-use characters: a file with them is not portable text.
_CP932_NOT_TEXT = re.compile("[\x80\ue000-\uf8ff]")


def _first_bad(data: bytes, encoding: str) -> int | None:
    """Offset of the first byte of ``data`` that does not decode (a character cut at the end is fine)."""
    try:
        text = codecs.getincrementaldecoder(encoding)("strict").decode(data, final=False)
    except UnicodeDecodeError as err:
        return err.start
    if encoding == "cp932":
        m = _CP932_NOT_TEXT.search(text)
        if m:
            return len(text[:m.start()].encode("cp932"))
    return None


_SIGNATURES = {
    "utf16": (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE),
    "spreadsheet": (b"PK\x03\x04", b"\xd0\xcf\x11\xe0"),
}
_NON_ASCII = re.compile(rb"[\x00\x80-\xff]")


def detect_encoding(head: bytes) -> Encoding:
    """The encoding of a file that starts with ``head``; raises :class:`CsvFormatError` for UTF-16,
    spreadsheets, binary data and text that is neither UTF-8 nor CP932."""
    if _check_signature(head):
        return "utf-8-sig"
    m = _NON_ASCII.search(head)
    return _detect_text(head[m.start():], m.start()) if m else "utf-8"


def _check_signature(head: bytes) -> bool:
    """True for a UTF-8 BOM; raises for files that are not text CSV by their first bytes."""
    if head.startswith(codecs.BOM_UTF8):
        return True
    if head.startswith(_SIGNATURES["utf16"]):
        raise CsvFormatError(
            "encoding", "UTF-16 のファイルは読めません。Excel で「CSV UTF-8（コンマ区切り）」"
                        "として保存し直してください。",
            "UTF-16 files are not supported: save as 'CSV UTF-8 (comma delimited)' in Excel.", offset=0)
    if head.startswith(_SIGNATURES["spreadsheet"]):
        raise CsvFormatError(
            "not_csv", "Excel などの表計算ファイルで、CSV ではありません。「名前を付けて保存」で CSV "
                       "形式を選んでください。",
            "This is a spreadsheet (XLSX/XLS), not CSV: save it as CSV.", offset=0)
    return False


def _detect_text(window: bytes, base: int) -> Encoding:
    """Decide between UTF-8 and CP932 on ``window``, the bytes from the file's first non-ASCII byte
    (at offset ``base``) on."""
    nul = window.find(b"\x00")
    if nul >= 0:
        raise CsvFormatError(
            "binary", f"オフセット {base + nul} バイトに NUL 文字があります。テキストの CSV ではないか、"
            "UTF-16 で保存されています。CSV（UTF-8 または Shift_JIS）で保存し直してください。",
            f"NUL byte at byte offset {base + nul}: not a text CSV (or UTF-16); save as UTF-8 or "
            "Shift_JIS CSV.", offset=base + nul)
    bad_utf8 = _first_bad(window, "utf-8")
    if bad_utf8 is None:
        return "utf-8"
    bad_sjis = _first_bad(window, "cp932")
    if bad_sjis is None:
        return "cp932"
    raise CsvFormatError(
        "encoding",
        f"文字コードを判別できません: UTF-8 としてはオフセット {base + bad_utf8} バイト、Shift_JIS として"
        f"はオフセット {base + bad_sjis} バイトで読めない文字があります。UTF-8（BOM付き推奨）か"
        "Shift_JIS で保存し直してください。",
        f"Unknown encoding: not UTF-8 (bad byte at offset {base + bad_utf8}) nor Shift_JIS/CP932 "
        f"(bad byte at offset {base + bad_sjis}); save the file as UTF-8 (with BOM) or Shift_JIS.",
        offset=base + max(bad_utf8, bad_sjis))


def sniff_encoding(path: str | os.PathLike[str]) -> Encoding:
    """Detect the encoding of a file on disk, reading only up to its first non-ASCII window."""
    with open(path, "rb") as f:
        return _Source(f, max_bytes=None).encoding


class _Source:
    """A binary stream decoded in chunks: yields text, tracks byte offsets, enforces ``max_bytes``."""

    def __init__(self, stream: BinaryIO, *, max_bytes: int | None, encoding: str | None = None):
        self.stream = stream
        self.max_bytes = max_bytes
        self.bytes_read = 0
        self._buffered: list[bytes] = []  # bytes read while sniffing a stream that cannot seek back
        self.encoding: Encoding = normalize_encoding(encoding) if encoding else self._sniff()

    def _read(self) -> bytes:
        data = self.stream.read(CHUNK)
        self.bytes_read += len(data)
        if self.max_bytes is not None and self.bytes_read > self.max_bytes:
            raise CsvLimitError(
                "too_large", f"ファイルが大きすぎます（上限 {_human(self.max_bytes)}）。"
                             "分割してアップロードしてください。",
                f"The file is larger than the limit of {_human(self.max_bytes)}; split it.",
                offset=self.max_bytes)
        return data

    def _sniff(self) -> Encoding:
        # Only the bytes from the first non-ASCII byte on can tell UTF-8 from CP932 (an ASCII prefix reads
        # the same in both), so read until a window after it, then rewind (or replay what was read).
        start = self.stream.tell() if self.stream.seekable() else None
        offset = 0
        window = b""
        base = 0
        lines_before = 0  # newline bytes before the window: 0x0A and 0x0D mean the same in every candidate
        while len(window) < SNIFF_WINDOW:
            data = self._read()
            if not data:
                break
            if start is None:
                self._buffered.append(data)
            if offset == 0 and _check_signature(data):
                window = data
                break
            if window:
                window += data
            else:
                m = _NON_ASCII.search(data)
                if m:
                    window, base = data[m.start():], offset + m.start()
                lines_before += _count_lines(data[:m.start() if m else len(data)].decode("ascii"))
            offset += len(data)
        if start is not None:
            self.stream.seek(start)
            self.bytes_read = 0
        if window.startswith(codecs.BOM_UTF8) and base == 0:
            return "utf-8-sig"
        try:
            return _detect_text(window[:SNIFF_WINDOW], base) if window else "utf-8"
        except CsvFormatError as err:
            if err.offset is not None:
                err.line = lines_before + _count_lines(window[:err.offset - base].decode("latin-1")) + 1
            raise

    def text(self) -> Iterator[tuple[int, str]]:
        """(byte offset of the chunk, decoded text) pairs; a decode failure names its byte offset."""
        decoder = codecs.getincrementaldecoder(self.encoding)("strict")
        offset = 0
        lines_done = 0
        while True:
            data = self._buffered.pop(0) if self._buffered else self._read()
            final = not data
            pending = len(decoder.getstate()[0])
            try:
                text = decoder.decode(data, final=final)
            except UnicodeDecodeError as err:
                at = offset - pending + err.start
                line = lines_done + _count_lines(err.object[:err.start].decode(self.encoding, "ignore")) + 1
                raise CsvFormatError(
                    "encoding",
                    f"オフセット {at} バイトに {ENCODING_LABELS[self.encoding]} として読めない文字があります"
                    "（ファイルの途中で文字コードが混在している可能性）。ファイル全体を同じ文字コードで保存し直して"
                    "ください。",
                    f"Byte offset {at} does not decode as {self.encoding} (mixed encodings in one file?); "
                    "save the whole file in one encoding.", offset=at, line=line) from None
            if self.encoding == "cp932" and (m := _CP932_NOT_TEXT.search(text)):
                at = offset - pending + len(text[:m.start()].encode("cp932"))
                line = lines_done + _count_lines(text[:m.start()]) + 1
                raise CsvFormatError(
                    "gaiji", f"オフセット {at} バイトに外字（利用者定義文字）か Shift_JIS "
                             "にないバイトがあります。"
                    "他の環境では表示できないため、通常の文字に置き換えてください。",
                    f"Byte offset {at} holds a user-defined character (gaiji) or a byte outside Shift_JIS; "
                    "replace it with a standard character.", offset=at, line=line)
            lines_done += _count_lines(text)
            yield offset, text
            offset += len(data)
            if final:
                return


def _count_lines(text: str) -> int:
    """Newlines in ``text`` (CRLF counts once; one split across two chunks may count twice: only for the
    line number of an error message)."""
    return text.count("\n") + text.count("\r") - text.count("\r\n")


def _human(n: int) -> str:
    return f"{n / (1 << 20):.0f} MB" if n >= 1 << 20 else f"{n} bytes"


# ---------------------------------------------------------------------------------------------- lines

_NEWLINE = re.compile(r"\r\n|\r|\n")


def _lines(chunks: Iterator[tuple[int, str]], newlines: set[str]) -> Iterator[tuple[int, str]]:
    """(line number, line with its terminator) for CRLF, LF and CR files; a CR at a chunk's end waits for
    the next chunk so that a CRLF split between two chunks stays one newline."""
    number = 0
    rest = ""
    for _, text in chunks:
        text = rest + text
        rest = ""
        if text.endswith("\r"):
            text, rest = text[:-1], "\r"
        start = 0
        for m in _NEWLINE.finditer(text):
            number += 1
            newlines.add(m.group())
            yield number, text[start:m.end()]
            start = m.end()
        rest = text[start:] + rest
    if rest:
        if rest.endswith("\r"):
            newlines.add("\r")
        yield number + 1, rest


class _RecordTooLong(Exception):
    pass


class CsvReader:
    """Rows of one CSV file, streamed: iterate for :class:`CsvRow`; ``header``, ``problems`` as found.

    Use :func:`open_csv`. ``problems`` keeps the first ``max_problems`` problems (or each is passed to
    ``on_problem`` instead, as found); ``problem_counts`` counts all of them by kind.
    """

    def __init__(self, stream: BinaryIO, *, has_header: bool = True, encoding: str | None = None,
                 max_bytes: int | None = None, max_rows: int | None = None,
                 max_problems: int = DEFAULT_MAX_PROBLEMS, max_record_chars: int = DEFAULT_MAX_RECORD_CHARS,
                 delimiter: str = ",", close: bool = False,
                 on_problem: Callable[[CsvProblem], None] | None = None):
        self._stream = stream
        self._on_problem = on_problem
        self._close = close
        self._source = _Source(stream, max_bytes=max_bytes, encoding=encoding)
        self.encoding: Encoding = self._source.encoding
        self.max_rows = max_rows
        self.max_problems = max_problems
        self.max_record_chars = max_record_chars
        self.delimiter = delimiter
        self.problems: list[CsvProblem] = []
        self.problem_counts: dict[str, int] = {}
        self.rows_read = 0
        self._newlines: set[str] = set()
        self._records = self._parse()
        self.header: list[str] | None = None
        self.header_line = 0
        if has_header:
            first = next(self._records, None)
            if first is not None:
                self.header_line, self.header = first.line, [h.strip() for h in first.values]
                self._check_header(self.header, first.line)
        if self.header is not None and self.header and self.header[0].startswith("\ufeff"):
            self.header[0] = self.header[0].lstrip("\ufeff")  # a second BOM pasted into a UTF-8 file

    # context manager / iteration
    def __enter__(self) -> CsvReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._close:
            self._stream.close()

    def __iter__(self) -> Iterator[CsvRow]:
        width = len(self.header) if self.header is not None else None
        for record in self._records:
            self.rows_read += 1
            if self.max_rows is not None and self.rows_read > self.max_rows:
                raise CsvLimitError(
                    "too_many_rows", f"行数が上限（{self.max_rows:,} 行）を超えています。分割してください。",
                    f"More than the limit of {self.max_rows:,} rows; split the file.", line=record.line)
            if width is None:
                width = len(record.values)
            elif len(record.values) != width:
                self.add(CsvProblem(
                    record.line, "column_count",
                    f"列の数が {len(record.values)} 個です（見出しは {width} 個）。"
                    "区切りのコンマや引用符を確認してください。",
                    f"{len(record.values)} cells where the header has {width}; check commas and quotes."))
            yield record

    @property
    def bytes_read(self) -> int:
        return self._source.bytes_read

    @property
    def newline(self) -> str:
        """``CRLF``, ``LF``, ``CR``, ``mixed`` or ``none`` (a single line without terminator)."""
        names = {"\r\n": "CRLF", "\n": "LF", "\r": "CR"}
        if not self._newlines:
            return "none"
        return names[next(iter(self._newlines))] if len(self._newlines) == 1 else "mixed"

    def add(self, problem: CsvProblem) -> None:
        self.problem_counts[problem.kind] = self.problem_counts.get(problem.kind, 0) + 1
        if self._on_problem is not None:
            self._on_problem(problem)
        elif len(self.problems) < self.max_problems:
            self.problems.append(problem)

    def _check_header(self, header: list[str], line: int) -> None:
        seen: dict[str, int] = {}
        for i, name in enumerate(header, 1):
            if not name:
                self.add(CsvProblem(line, "empty_header", f"{i} 列目の見出し（列名）が空です。"
                                                          "列名を入れてください。",
                                    f"Column {i} has an empty header name; give it a name.", column=f"#{i}"))
            elif name in seen:
                self.add(CsvProblem(
                    line, "duplicate_header",
                    f"見出し「{name}」が {seen[name]} 列目と {i} 列目で重複しています。"
                    "どちらかの名前を変えてください。",
                    f"Header {name!r} appears in columns {seen[name]} and {i}; rename one.", column=name))
            else:
                seen[name] = i

    def _parse(self) -> Iterator[CsvRow]:
        """Records with the line they start on; a csv error is reported and parsing resumes on the line after
        the failed record's first line (so one stray quote costs one row, not the rest of the file)."""
        lines = _lines(self._source.text(), self._newlines)
        replay: list[tuple[int, str]] = []
        while True:
            taken: list[tuple[int, str]] = []
            size = [0]

            def feed(taken: list[tuple[int, str]] = taken, size: list[int] = size) -> Iterator[str]:
                while True:
                    item = replay.pop(0) if replay else next(lines, None)
                    if item is None:
                        return
                    taken.append(item)
                    size[0] += len(item[1])
                    if size[0] > self.max_record_chars:
                        raise _RecordTooLong
                    yield item[1]

            reader = csv.reader(feed(), delimiter=self.delimiter, strict=True)
            try:
                for values in reader:
                    first = taken[0][0]
                    taken.clear()
                    size[0] = 0
                    if values:
                        yield CsvRow(first, values)
                return
            except (csv.Error, _RecordTooLong) as err:
                if not taken:
                    return
                first, text = taken[0]
                self.add(self._quote_problem(first, err, text))
                replay[:0] = taken[1:]

    def _quote_problem(self, line: int, err: Exception, text: str) -> CsvProblem:
        snippet = text.rstrip("\r\n")[:80]
        message = str(err)
        runaway = "unexpected end of data" in message or "field larger" in message
        if isinstance(err, _RecordTooLong) or runaway:
            return CsvProblem(
                line, "unclosed_quote",
                "引用符（\"）が閉じられていません。この行の引用符を確認してください（この行は読み飛ばしました）。",
                "A quote (\") opened on this line is never closed; check the quotes (the line was skipped).",
                value=snippet)
        return CsvProblem(
            line, "bad_quote",
            "引用符（\"）の使い方が正しくありません。値の中の \" は \"\" "
            "と2つ重ねてください（この行は読み飛ばしました）。",
            f"Malformed quoting ({message}); write a \" inside a value as \"\" (the line was skipped).",
            value=snippet)


def open_csv(source: str | os.PathLike[str] | BinaryIO, **options: Any) -> CsvReader:
    """A :class:`CsvReader` over a path or a binary stream (see :class:`CsvReader` for the options:
    ``has_header``, ``encoding`` (skip detection), ``max_bytes``, ``max_rows``, ``max_problems``,
    ``max_record_chars``, ``delimiter``)."""
    if isinstance(source, (str, os.PathLike)):
        max_bytes = options.get("max_bytes")
        if max_bytes is not None and Path(source).stat().st_size > max_bytes:
            raise CsvLimitError(
                "too_large", f"ファイルが大きすぎます（上限 {_human(max_bytes)}）。"
                             "分割してアップロードしてください。",
                f"The file is larger than the limit of {_human(max_bytes)}; split it.", offset=max_bytes)
        stream: BinaryIO = open(source, "rb")  # noqa: SIM115 - closed by the reader
        try:
            return CsvReader(stream, close=True, **options)
        except BaseException:
            stream.close()
            raise
    return CsvReader(source, **options)


def read_bytes(data: bytes, **options: Any) -> tuple[list[str] | None, list[CsvRow], CsvReader]:
    """Parse a small in-memory CSV (tests, previews): header, all rows, and the reader with its problems."""
    reader = CsvReader(io.BytesIO(data), **options)
    rows = list(reader)
    return reader.header, rows, reader


# ---------------------------------------------------------------------------------------------- writing

FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r", "＝", "＋", "－", "＠")
_PLAIN_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d+)?|\.\d+)\Z", re.ASCII)
# Characters outside CP932 that have a CP932 twin of the same meaning (not reported as replacements).
_CP932_FOLD = str.maketrans({"\u2014": "\u2015", "\u00a5": "\uffe5", "\u00a0": " "})
REPLACEMENT = "〓"


def is_plain_number(value: str) -> bool:
    return bool(_PLAIN_NUMBER.match(value))


def escape_formula(value: str) -> str:
    """``value`` made safe to open in a spreadsheet (see the module docstring for the rule)."""
    if value.startswith(FORMULA_TRIGGERS) and not is_plain_number(value):
        return "'" + value
    return value


@dataclass
class Replacement:
    line: int
    column: str
    char: str


@dataclass
class WriteResult:
    rows: int = 0
    bytes: int = 0
    replaced_count: int = 0
    replaced: list[Replacement] = field(default_factory=list)  # the first 1000


def _fit_cp932(value: str, line: int, column: str, result: WriteResult, unencodable: str) -> str:
    value = value.translate(_CP932_FOLD)
    try:
        value.encode("cp932")
        return value
    except UnicodeEncodeError:
        pass
    out = []
    for ch in value:
        try:
            ch.encode("cp932")
            out.append(ch)
        except UnicodeEncodeError:
            if unencodable == "error":
                raise CsvEncodeError(line, column, ch, "cp932") from None
            result.replaced_count += 1
            if len(result.replaced) < 1000:
                result.replaced.append(Replacement(line, column, ch))
            out.append(REPLACEMENT)
    return "".join(out)


def iter_csv(header: Sequence[str], rows: Iterable[Sequence[Any]], *, encoding: str = "utf-8-sig",
             escape: bool = True, unencodable: Literal["replace", "error"] = "replace",
             newline: str = "\r\n", result: WriteResult | None = None) -> Iterator[bytes]:
    """CSV bytes, one chunk per ~64 KiB, for streaming a download. ``None`` cells are written empty.

    ``result`` (optional) collects counts and Shift_JIS replacements as the stream is consumed.
    """
    enc = normalize_encoding(encoding)
    result = result if result is not None else WriteResult()
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator=newline)
    names = [str(h) for h in header]
    out: list[bytes] = [codecs.BOM_UTF8] if enc == "utf-8-sig" else []
    size = 0

    def encode_row(cells: Sequence[Any], line: int) -> bytes:
        texts = ["" if c is None else str(c) for c in cells]
        if escape:
            texts = [escape_formula(t) for t in texts]
        if enc == "cp932":
            texts = [_fit_cp932(t, line, names[i] if i < len(names) else f"#{i + 1}", result, unencodable)
                     for i, t in enumerate(texts)]
        writer.writerow(texts)
        text = buf.getvalue()
        buf.seek(0)
        buf.truncate()
        return text.encode("cp932" if enc == "cp932" else "utf-8")

    out.append(encode_row(names, 1))
    size = sum(map(len, out))
    for line, cells in enumerate(rows, 2):
        out.append(encode_row(cells, line))
        size += len(out[-1])
        result.rows += 1
        if size >= SNIFF_WINDOW:
            chunk = b"".join(out)
            result.bytes += len(chunk)
            yield chunk
            out, size = [], 0
    if out:
        chunk = b"".join(out)
        result.bytes += len(chunk)
        yield chunk


def write_csv(dest: str | os.PathLike[str] | BinaryIO, header: Sequence[str], rows: Iterable[Sequence[Any]],
              **options: Any) -> WriteResult:
    """Write a CSV file (path or binary stream) with :func:`iter_csv`'s options; returns what was done.

    Writing to a path goes through a temporary file renamed at the end, so a failure leaves no half file.
    """
    result = WriteResult()
    chunks = iter_csv(header, rows, result=result, **options)
    if isinstance(dest, (str, os.PathLike)):
        path = Path(dest)
        tmp = path.with_name(f".{path.name}.part")
        try:
            with open(tmp, "wb") as f:
                for chunk in chunks:
                    f.write(chunk)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    else:
        for chunk in chunks:
            dest.write(chunk)
    return result
