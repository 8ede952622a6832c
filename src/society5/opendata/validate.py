"""Check an uploaded CSV against a standard layout and tell the officer, row by row, what to fix.

``validate_file(path, layout_id)`` streams the file through :mod:`csvio` (encoding detected, structure
checked), then checks the header against the layout and every cell against its column's type. Without a
layout only the structure is checked. The :class:`Report` holds the first ``max_problems`` problems (each with
line, column, value and a Japanese and an English message saying what to fix) and counts all of them by kind.

Severity: *errors* make ``ok`` false: unreadable files, broken quotes, wrong cell counts, a missing required
column, a bad value in any cell, a duplicate ID. *Warnings* do not: a missing optional column, an extra
column, columns out of the official order, a column under its 2019 (legacy) or full-width name.
"""

from __future__ import annotations

import calendar
import itertools
import os
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, BinaryIO
from urllib.parse import urlsplit

from society5.opendata import csvio, layouts
from society5.opendata.layouts import Column, Layout

DEFAULT_MAX_PROBLEMS = 200
MAX_TRACKED_IDS = 2_000_000  # beyond this many rows, ID uniqueness is no longer checked (memory bound)
# Japan in WGS84, with its outlying islands: Okinotorishima ~20.4N, Etorofu ~45.6N, Yonaguni ~122.9E,
# Minamitorishima ~154.0E.
LAT_RANGE = (20.0, 46.0)
LON_RANGE = (122.0, 154.0)

WARNING_KINDS = {"missing_optional_column", "extra_column", "column_order", "legacy_column_name",
                 "column_name_width"}


@dataclass(frozen=True)
class Problem:
    line: int | None
    column: str | None
    value: str | None
    kind: str
    message_ja: str
    message_en: str

    @property
    def severity(self) -> str:
        return "warning" if self.kind in WARNING_KINDS else "error"

    def as_dict(self) -> dict[str, Any]:
        return {"line": self.line, "column": self.column, "value": self.value, "kind": self.kind,
                "severity": self.severity, "message_ja": self.message_ja, "message_en": self.message_en}


@dataclass
class Report:
    layout_id: str | None
    max_problems: int = DEFAULT_MAX_PROBLEMS
    encoding: str | None = None
    newline: str | None = None
    header: list[str] = field(default_factory=list)
    total_rows: int = 0
    problems: list[Problem] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    errors: int = 0
    warnings: int = 0
    fatal: bool = False  # the file could not be read to its end

    @property
    def ok(self) -> bool:
        return self.errors == 0

    @property
    def truncated(self) -> bool:
        return self.errors + self.warnings > len(self.problems)

    def add(self, problem: Problem) -> None:
        self.counts[problem.kind] = self.counts.get(problem.kind, 0) + 1
        if problem.severity == "error":
            self.errors += 1
        else:
            self.warnings += 1
        if len(self.problems) < self.max_problems:
            self.problems.append(problem)

    @property
    def summary_ja(self) -> str:
        head = f"{self.total_rows:,} 行を確認しました。"
        if self.fatal:
            head = f"ファイルを最後まで読めませんでした（{self.total_rows:,} 行まで確認）。"
        if self.ok and not self.warnings:
            return head + "問題はありません。"
        more = f"（最初の {len(self.problems)} 件を表示）" if self.truncated else ""
        return head + f"エラー {self.errors:,} 件、警告 {self.warnings:,} 件{more}。"

    @property
    def summary_en(self) -> str:
        head = f"{self.total_rows:,} rows checked."
        if self.fatal:
            head = f"The file could not be read to its end ({self.total_rows:,} rows checked)."
        more = f" (first {len(self.problems)} shown)" if self.truncated else ""
        return head + f" {self.errors:,} errors, {self.warnings:,} warnings{more}."

    def as_dict(self) -> dict[str, Any]:
        layout = layouts.get(self.layout_id) if self.layout_id else None
        return {
            "ok": self.ok, "fatal": self.fatal, "truncated": self.truncated,
            "layout": {"id": layout.id, "name_ja": layout.name_ja,
                       "name_en": layout.name_en} if layout else None,
            "encoding": self.encoding,
            "encoding_label": csvio.ENCODING_LABELS.get(self.encoding or "", None),
            "newline": self.newline, "header": list(self.header), "total_rows": self.total_rows,
            "errors": self.errors, "warnings": self.warnings, "counts": dict(self.counts),
            "summary_ja": self.summary_ja, "summary_en": self.summary_en,
            "problems": [p.as_dict() for p in self.problems],
        }


# ---------------------------------------------------------------------------------------------- codes


def municipality_check_digit(code5: str) -> str:
    """The check digit of a 5-digit 全国地方公共団体コード (weights 6..2, modulus 11)."""
    total = sum(int(d) * w for d, w in zip(code5, (6, 5, 4, 3, 2), strict=True))
    return str((11 - total % 11) % 10)


def is_municipality_code(code: str) -> bool:
    return bool(re.fullmatch(r"\d{6}", code, re.ASCII)) and municipality_check_digit(code[:5]) == code[5]


def corporate_check_digit(base12: str) -> str:
    """The leading check digit of a 13-digit 法人番号 (National Tax Agency rule, modulus 9)."""
    digits = [int(d) for d in reversed(base12)]
    total = sum(d * (1 if i % 2 == 0 else 2) for i, d in enumerate(digits))
    return str(9 - total % 9)


def is_corporate_number(value: str) -> bool:
    return bool(re.fullmatch(r"\d{13}", value, re.ASCII)) and corporate_check_digit(value[1:]) == value[0]


# ---------------------------------------------------------------------------------------------- cells

Finding = tuple[str, str, str]  # kind, message_ja, message_en
Check = Callable[[Column, str], Finding | None]

_FULLWIDTH = re.compile("[０-９Ａ-Ｚａ-ｚ－：／．，]")
_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})\Z", re.ASCII)
_SLASH_DATE = re.compile(r"(\d{4})/(\d{1,2})/(\d{1,2})\Z", re.ASCII)
_TIME = re.compile(r"(?:[01]\d|2[0-3]):[0-5]\d(?::[0-5]\d)?\Z|24:00(?::00)?\Z", re.ASCII)
_LOOSE_TIME = re.compile(r"(\d{1,2}):(\d{2})(?::(\d{2}))?\Z", re.ASCII)
_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})?\Z",
                       re.ASCII)
_INTEGER = re.compile(r"-?\d+\Z", re.ASCII)
_NUMBER = re.compile(r"[+-]?\d+(?:\.\d+)?\Z", re.ASCII)
_PHONE = re.compile(r"0\d{1,4}-\d{1,4}-\d{3,4}\Z|0\d{9,10}\Z|\+81-?\d{1,4}-?\d{1,4}-?\d{3,4}\Z", re.ASCII)
_POSTCODE = re.compile(r"\d{3}-\d{4}\Z", re.ASCII)
_NOT_KANA = re.compile("[\u3041-\u309f\u3400-\u9fff\uf900-\ufaff\uff66-\uff9f]")


def _fullwidth(column: Column, value: str, example: str) -> Finding | None:
    if _FULLWIDTH.search(value):
        return ("fullwidth", f"全角の英数字・記号が含まれています。半角で書いてください（例: {example}）。",
                f"Contains full-width characters; use half-width (e.g. {example}).")
    return None


def _check_municipality_code(column: Column, value: str) -> Finding | None:
    if found := _fullwidth(column, value, "011002"):
        return found
    if re.fullmatch(r"\d{5}", value):
        padded = "0" + value
        if is_municipality_code(padded):
            return ("municipality_code",
                    f"先頭の 0 が抜けています。{padded} と書いてください"
                    "（セルを文字列にして保存すると消えません）。",
                    f"The leading zero is missing: write {padded} (store the cell as text).")
        full = value + municipality_check_digit(value)
        return ("municipality_code", f"5桁です。検査数字を付けた6桁 {full} にしてください。",
                f"Only 5 digits: add the check digit, {full}.")
    if re.fullmatch(r"\d{4}", value):
        full = "0" + value + municipality_check_digit("0" + value)
        return ("municipality_code", f"4桁です。先頭の 0 と検査数字を付けた6桁 {full} にしてください。",
                f"Only 4 digits: write the 6-digit code {full}.")
    if not re.fullmatch(r"\d{6}", value):
        return ("municipality_code", "全国地方公共団体コードは半角数字6桁で書いてください（例: 札幌市 "
                                     "011002）。",
                "The local government code is 6 half-width digits (e.g. Sapporo 011002).")
    if not is_municipality_code(value):
        right = value[:5] + municipality_check_digit(value[:5])
        return ("check_digit", f"検査数字（6桁目）が合いません。{value[:5]} の正しいコードは {right} です。"
                "コードを確認してください。",
                f"The check digit (6th digit) is wrong: {value[:5]} gives {right}; check the code.")
    return None


def _check_date(column: Column, value: str) -> Finding | None:
    if found := _fullwidth(column, value, "2024-04-01"):
        return found
    m = _DATE.match(value)
    if m is None:
        s = _SLASH_DATE.match(value)
        if s:
            fixed = f"{int(s[1]):04d}-{int(s[2]):02d}-{int(s[3]):02d}"
            return ("date_format", f"日付はハイフン区切りの YYYY-MM-DD で書いてください（{fixed}）。",
                    f"Write dates as YYYY-MM-DD with hyphens ({fixed}).")
        return ("date_format", "日付は YYYY-MM-DD（西暦、例: 2024-04-01）で書いてください。",
                "Write the date as YYYY-MM-DD (e.g. 2024-04-01).")
    year, month, day = int(m[1]), int(m[2]), int(m[3])
    if not (1 <= month <= 12 and 1 <= day <= calendar.monthrange(year or 1, month)[1]) or year == 0:
        return ("date_invalid", f"{value} は存在しない日付です。月日を確認してください。",
                f"{value} is not a real date; check month and day.")
    return None


def _check_time(column: Column, value: str) -> Finding | None:
    if found := _fullwidth(column, value, "09:00"):
        return found
    if _TIME.match(value):
        return None
    m = _LOOSE_TIME.match(value)
    if m and int(m[1]) < 24 and int(m[2]) < 60:
        fixed = f"{int(m[1]):02d}:{m[2]}" + (f":{m[3]}" if m[3] else "")
        return ("time_format", f"時刻は2桁の HH:MM で書いてください（{fixed}）。",
                f"Write times as two-digit HH:MM ({fixed}).")
    return ("time_format", "時刻は 24時間制の HH:MM（例: 09:00、17:30）で書いてください。",
            "Write the time as 24-hour HH:MM (e.g. 09:00, 17:30).")


def _check_datetime(column: Column, value: str) -> Finding | None:
    if found := _fullwidth(column, value, "2024-04-01T09:00:00+09:00"):
        return found
    if _DATETIME.match(value):
        try:
            datetime.fromisoformat(value.replace("Z", "+00:00"))
            return None
        except ValueError:
            pass
    return ("datetime_format",
            "日時は YYYY-MM-DDTHH:MM:SS（例: 2024-04-01T09:00:00+09:00）で書いてください。",
            "Write the date-time as YYYY-MM-DDTHH:MM:SS (e.g. 2024-04-01T09:00:00+09:00).")


def _check_number(column: Column, value: str) -> Finding | None:
    if found := _fullwidth(column, value, "12.5"):
        return found
    if _NUMBER.match(value):
        return None
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", value):
        return ("number_format", "桁区切りのコンマを外して数字だけを書いてください。",
                "Remove the thousands separators.")
    return ("number_format", "数値を半角数字で書いてください（単位は付けません）。",
            "Write a half-width number without units.")


def _check_integer(column: Column, value: str) -> Finding | None:
    if found := _fullwidth(column, value, "1000"):
        return found
    if _INTEGER.match(value):
        return None
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+", value):
        return ("integer_format", f"桁区切りのコンマを外してください（{value.replace(',', '')}）。",
                f"Remove the thousands separators ({value.replace(',', '')}).")
    digits = re.match(r"-?\d+", value)
    if digits:
        return ("integer_format", f"単位や文字を付けず、整数だけを書いてください（{digits[0]}）。",
                f"Write only the whole number, without units ({digits[0]}).")
    return ("integer_format", "整数を半角数字で書いてください（例: 1000）。",
            "Write a whole number in half-width digits (e.g. 1000).")


def _check_coordinate(column: Column, value: str) -> Finding | None:
    if found := _fullwidth(column, value, "43.062096"):
        return found
    if not _NUMBER.match(value):
        return ("coordinate_format", "緯度・経度は十進の度（例: 43.062096）で書いてください。"
                                     "度分秒は使えません。",
                "Write latitude/longitude in decimal degrees (e.g. 43.062096), not degrees-minutes-seconds.")
    low, high = LAT_RANGE if column.type == "latitude" else LON_RANGE
    if not low <= float(value) <= high:
        what = "緯度" if column.type == "latitude" else "経度"
        return ("coordinate_range", f"{what} {value} は日本の範囲（{low}〜{high}）の外です。"
                "世界測地系の十進度で、緯度と経度を取り違えていないか確認してください。",
                f"{column.name_en} {value} is outside Japan ({low} to {high}); check WGS84 decimal degrees "
                "and that latitude and longitude are not swapped.")
    return None


def _check_phone(column: Column, value: str) -> Finding | None:
    if found := _fullwidth(column, value, "011-211-2111"):
        return found
    if _PHONE.match(value):
        return None
    return ("phone_format", "電話番号は市外局番から半角数字とハイフンで書いてください（例: 011-211-2111）。",
            "Write the phone number with area code, half-width digits and hyphens (e.g. 011-211-2111).")


def _check_postcode(column: Column, value: str) -> Finding | None:
    if found := _fullwidth(column, value, "060-8611"):
        return found
    if _POSTCODE.match(value):
        return None
    digits = re.sub(r"\D", "", value)
    if len(digits) == 7:
        fixed = f"{digits[:3]}-{digits[3:]}"
        return ("postcode_format", f"郵便番号は 〒 を付けず NNN-NNNN で書いてください（{fixed}）。",
                f"Write the postcode as NNN-NNNN without 〒 ({fixed}).")
    return ("postcode_format", "郵便番号は7桁を NNN-NNNN で書いてください（例: 060-8611）。",
            "Write the 7-digit postcode as NNN-NNNN (e.g. 060-8611).")


def _check_url(column: Column, value: str) -> Finding | None:
    parts = urlsplit(value) if not re.search(r"\s", value) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        return ("url_format", "URL は http:// または https:// から始まる形で、空白を含めずに書いてください。",
                "Write a full URL starting with http:// or https://, without spaces.")
    return None


def _check_enum(column: Column, value: str) -> Finding | None:
    if value in column.values:
        return None
    allowed = "、".join(f"「{v}」" for v in column.values)
    normalized = unicodedata.normalize("NFKC", value)
    hint = f"（{normalized} の全角・半角の違い）" if normalized in column.values else ""
    return ("enum", f"{allowed}のいずれかを書いてください{hint}。該当しない・不明な場合は空欄にします。",
            f"Use one of {', '.join(column.values)}; leave the cell empty when unknown.")


def _check_kana(column: Column, value: str) -> Finding | None:
    if _NOT_KANA.search(value):
        return ("kana", "読みは全角カタカナで書いてください（ひらがな・漢字・半角カナは使えません）。",
                "Write the reading in full-width katakana (no hiragana, kanji or half-width kana).")
    return None


def _check_corporate_number(column: Column, value: str) -> Finding | None:
    if found := _fullwidth(column, value, "1234567890123"):
        return found
    if not re.fullmatch(r"\d{13}", value):
        return ("corporate_number", "法人番号は半角数字13桁で書いてください（ハイフンなし）。",
                "The corporate number is 13 half-width digits, no hyphens.")
    if not is_corporate_number(value):
        return ("check_digit", "法人番号の検査数字（先頭の1桁）が合いません。番号を確認してください。",
                "The corporate number's check digit (first digit) is wrong; check the number.")
    return None


CHECKS: dict[str, Check] = {
    "municipality_code": _check_municipality_code, "date": _check_date, "time": _check_time,
    "datetime": _check_datetime, "latitude": _check_coordinate, "longitude": _check_coordinate,
    "phone": _check_phone, "postcode": _check_postcode, "url": _check_url, "integer": _check_integer,
    "number": _check_number, "enum": _check_enum, "kana": _check_kana,
    "corporate_number": _check_corporate_number,
}


def check_value(column: Column, value: str) -> Finding | None:
    """``(kind, message_ja, message_en)`` if ``value`` does not fit ``column`` (empty = absent: only
    required columns complain), else None."""
    text = value.strip()
    if not text:
        if column.required:
            return ("required", f"「{column.name}」は必須項目です。値を入れてください。",
                    f"{column.name} ({column.name_en}) is required; fill it in.")
        return None
    check = CHECKS.get(column.type)
    return check(column, text) if check else None


# ---------------------------------------------------------------------------------------------- header


def _match_header(report: Report, layout: Layout, header: list[str], line: int) -> list[Column | None]:
    """The layout column each header position holds (None for extra columns), reporting missing, extra,
    renamed and misordered columns."""
    by_name = {c.name: c for c in layout.columns}
    by_legacy = {legacy: c for c in layout.columns for legacy in c.legacy_names}
    by_width = {unicodedata.normalize("NFKC", c.name): c for c in layout.columns}
    present = set(header)
    mapped: list[Column | None] = []
    taken: set[str] = set()
    for name in header:
        col = by_name.get(name)
        if col is None and (legacy := by_legacy.get(name)) and legacy.name not in present:
            col = legacy
            report.add(Problem(line, name, None, "legacy_column_name",
                               f"列名「{name}」は旧版の名称です。「{col.name}」に変えてください。",
                               f"Column {name!r} is the 2019 name; rename it to {col.name!r}."))
        if col is None and (wide := by_width.get(unicodedata.normalize("NFKC", name))) \
                and wide.name not in present:
            col = wide
            report.add(Problem(line, name, None, "column_name_width",
                               f"列名「{name}」の全角・半角が標準と違います。「{col.name}」にしてください。",
                               f"Column {name!r} differs in character width; write {col.name!r}."))
        if col is not None and col.name in taken:
            col = None  # a duplicate header: csvio reports it; its cells are not checked twice
        if col is not None:
            taken.add(col.name)
        elif name:
            report.add(Problem(line, name, None, "extra_column",
                               f"列「{name}」は「{layout.name_ja}」の標準にない列です。独自の列なら末尾に置いてください。",
                               f"Column {name!r} is not part of {layout.name_en}; keep extra columns at the "
                               "end."))
        mapped.append(col)
    for col in layout.columns:
        if col.name in taken:
            continue
        if col.required:
            report.add(Problem(line, col.name, None, "missing_column",
                               f"必須の列「{col.name}」がありません。標準の順序どおりに列を追加してください。",
                               f"The required column {col.name!r} ({col.name_en}) is missing; add it."))
        else:
            report.add(Problem(line, col.name, None, "missing_optional_column",
                               f"列「{col.name}」がありません（任意項目。値がなくても列は残すことを推奨します）。",
                               f"The optional column {col.name!r} ({col.name_en}) is missing (keep it, "
                               "empty)."))
    order = {c.name: i for i, c in enumerate(layout.columns)}
    seen = [c for c in mapped if c is not None]
    for before, after in itertools.pairwise(seen):
        if order[before.name] > order[after.name]:
            report.add(Problem(line, after.name, None, "column_order",
                               f"列の順序が標準と違います。「{after.name}」は「{before.name}」より前に置いてください。",
                               f"Columns are out of the official order: {after.name!r} comes before "
                               f"{before.name!r}."))
            break
    return mapped


# ---------------------------------------------------------------------------------------------- rows

_DATE_PAIRS = (("開始日", "終了日"),)


class _RowChecker:
    def __init__(self, report: Report, layout: Layout, mapped: list[Column | None]):
        self.report = report
        self.cells = [(i, c, CHECKS.get(c.type)) for i, c in enumerate(mapped) if c is not None]
        self.index = {c.name: i for i, c in enumerate(mapped) if c is not None}
        self.lat = next((i for i, c in enumerate(mapped) if c is not None and c.type == "latitude"), None)
        self.lon = next((i for i, c in enumerate(mapped) if c is not None and c.type == "longitude"), None)
        self.ids: dict[int, dict[int, int]] = {i: {} for i, c, _ in self.cells if c.type == "id"}
        self.pairs = [(self.index[a], self.index[b], a, b) for a, b in _DATE_PAIRS
                      if a in self.index and b in self.index]

    def check(self, row: csvio.CsvRow) -> None:
        values = row.values
        add = self.report.add
        for i, col, check in self.cells:
            if i >= len(values):
                continue
            raw = values[i]
            value = raw.strip()
            if not value:
                if col.required:
                    kind, ja, en = check_value(col, value) or ("required", "", "")
                    add(Problem(row.line, col.name, raw, kind, ja, en))
                continue
            if i in (self.lat, self.lon):
                continue  # checked as a pair below
            if check is not None and (found := check(col, value)):
                add(Problem(row.line, col.name, raw, *found))
            if i in self.ids:
                self._check_unique(i, col, value, row.line)
        self._check_coordinates(row)
        for a, b, name_a, name_b in self.pairs:
            self._check_date_order(values, a, b, name_a, name_b, row.line)

    def _check_unique(self, i: int, col: Column, value: str, line: int) -> None:
        seen = self.ids[i]
        first = seen.get(hash(value))
        if first is not None:
            self.report.add(Problem(line, col.name, value, "duplicate_id",
                                    f"「{col.name}」の値 {value} が {first} 行目と重複しています。"
                                    "一意にしてください。",
                                    f"{col.name} {value} repeats line {first}; IDs must be unique."))
        elif len(seen) < MAX_TRACKED_IDS:
            seen[hash(value)] = line

    def _check_coordinates(self, row: csvio.CsvRow) -> None:
        if self.lat is None or self.lon is None:
            return
        values = row.values
        lat = values[self.lat].strip() if self.lat < len(values) else ""
        lon = values[self.lon].strip() if self.lon < len(values) else ""
        lat_col = self.cells_col(self.lat)
        lon_col = self.cells_col(self.lon)
        if bool(lat) != bool(lon):
            missing = lat_col if not lat else lon_col
            self.report.add(Problem(row.line, missing.name, "", "coordinates_pair",
                                    "緯度と経度は両方とも書くか、両方とも空欄にしてください。",
                                    "Give both latitude and longitude, or leave both empty."))
            return
        if not lat:
            return
        if (_NUMBER.match(lat) and _NUMBER.match(lon) and LON_RANGE[0] <= float(lat) <= LON_RANGE[1]
                and LAT_RANGE[0] <= float(lon) <= LAT_RANGE[1]):
            self.report.add(Problem(row.line, lat_col.name, lat, "coordinates_swapped",
                                    f"緯度と経度が入れ替わっています。緯度に {lon}、経度に {lat} "
                                    "を書いてください。",
                                    f"Latitude and longitude are swapped: latitude {lon}, longitude {lat}."))
            return
        for col, value in ((lat_col, lat), (lon_col, lon)):
            if found := _check_coordinate(col, value):
                self.report.add(Problem(row.line, col.name, value, *found))

    def cells_col(self, index: int) -> Column:
        return next(c for i, c, _ in self.cells if i == index)

    def _check_date_order(self, values: list[str], a: int, b: int, name_a: str, name_b: str,
                          line: int) -> None:
        if max(a, b) >= len(values):
            return
        start, end = values[a].strip(), values[b].strip()
        try:
            if date.fromisoformat(end) < date.fromisoformat(start):
                self.report.add(Problem(line, name_b, end, "date_order",
                                        f"「{name_b}」{end} が「{name_a}」{start} より前です。"
                                        "日付を確認してください。",
                                        f"{name_b} {end} is before {name_a} {start}."))
        except ValueError:
            return  # a malformed date is already reported by its own cell check


# ---------------------------------------------------------------------------------------------- entry points


def validate_stream(stream: BinaryIO, layout_id: str | None = None, *,
                    max_problems: int = DEFAULT_MAX_PROBLEMS,
                    max_bytes: int | None = None, max_rows: int | None = None) -> Report:
    """Like :func:`validate_file` on an open binary stream."""
    layout = layouts.get(layout_id) if layout_id else None
    report = Report(layout.id if layout else None, max_problems=max_problems)
    try:
        def structural(p: csvio.CsvProblem) -> None:
            report.add(Problem(p.line, p.column, p.value, p.kind, p.message_ja, p.message_en))

        with csvio.CsvReader(stream, max_bytes=max_bytes, max_rows=max_rows, on_problem=structural) as reader:
            report.encoding = reader.encoding
            header = reader.header
            if header is None:
                report.add(Problem(None, None, None, "empty", "ファイルが空です。"
                                                              "見出し行とデータを入れてください。",
                                   "The file is empty; it needs a header row and data."))
                return report
            report.header = header
            checker = None
            if layout is not None:
                checker = _RowChecker(report, layout, _match_header(report, layout, header,
                                                                    reader.header_line))
            for row in reader:
                report.total_rows += 1
                if checker is not None:
                    checker.check(row)
            report.newline = reader.newline
    except csvio.CsvFormatError as err:
        report.fatal = True
        report.add(Problem(err.line, None, None, err.kind, err.message_ja, err.message_en))
    return report


def validate_file(path: str | os.PathLike[str], layout_id: str | None = None, *,
                  max_problems: int = DEFAULT_MAX_PROBLEMS, max_bytes: int | None = None,
                  max_rows: int | None = None) -> Report:
    """Validate the CSV at ``path`` against the layout ``layout_id`` (None: structure only).

    Streams the file (memory stays flat for any size); ``max_bytes``/``max_rows`` make a larger file a fatal
    problem in the report. Raises :class:`layouts.UnknownLayout` for an unknown layout id and ``OSError``
    if the file cannot be opened; everything about the file's content ends up in the report.
    """
    layout = layouts.get(layout_id) if layout_id else None
    with open(path, "rb") as stream:
        if max_bytes is not None and os.fstat(stream.fileno()).st_size > max_bytes:
            report = Report(layout.id if layout else None, max_problems=max_problems, fatal=True)
            mb = max_bytes / (1 << 20)
            report.add(Problem(None, None, None, "too_large",
                               f"ファイルが大きすぎます（上限 {mb:.0f} MB）。"
                               "分割してアップロードしてください。",
                               f"The file is larger than the limit of {mb:.0f} MB; split it."))
            return report
        return validate_stream(stream, layout_id, max_problems=max_problems, max_bytes=max_bytes,
                               max_rows=max_rows)
