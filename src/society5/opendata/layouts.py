"""The Japanese recommended standard dataset layouts (推奨データセット / 自治体標準オープンデータセット).

Each layout is a JSON file under ``layouts/`` (package data): its id (what a dataset's ``conforms_to`` names),
Japanese and English names, where its column list comes from and how far it was checked (``source``,
``verification``), and its columns in the official order with the official Japanese names. A column has a
``type`` (see :data:`COLUMN_TYPES`), ``required``, allowed ``values`` for enums, ``notes_ja`` and
``legacy_names`` (names the 2019 edition used, e.g. ``NO`` for ``ID``: recognised and reported as such).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

COLUMN_TYPES = {
    "municipality_code": "全国地方公共団体コード（6桁、検査数字付き）",
    "id": "識別子（データセット内で一意）",
    "text": "文字列",
    "kana": "カタカナ",
    "date": "日付 YYYY-MM-DD",
    "time": "時刻 HH:MM",
    "datetime": "日時 YYYY-MM-DDTHH:MM:SS",
    "latitude": "緯度（WGS84、日本の範囲）",
    "longitude": "経度（WGS84、日本の範囲）",
    "phone": "電話番号",
    "postcode": "郵便番号 NNN-NNNN",
    "url": "URL（http/https）",
    "integer": "整数",
    "number": "数値",
    "enum": "決められた値のいずれか",
    "corporate_number": "法人番号（13桁、検査数字付き）",
}

# CKAN datastore field types: codes, IDs and phone numbers stay text (leading zeros matter).
DATASTORE_TYPES = {
    "integer": "int", "number": "numeric", "latitude": "numeric", "longitude": "numeric",
    "date": "date", "time": "time", "datetime": "timestamp",
}


@dataclass(frozen=True)
class Column:
    name: str
    name_en: str
    type: str
    required: bool
    values: tuple[str, ...] = ()
    notes_ja: str = ""
    legacy_names: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "name_en": self.name_en, "type": self.type,
                "type_ja": COLUMN_TYPES[self.type],
                "required": self.required, "values": list(self.values), "notes_ja": self.notes_ja,
                "legacy_names": list(self.legacy_names)}


@dataclass(frozen=True)
class Layout:
    id: str
    name_ja: str
    name_en: str
    description_ja: str
    source: str
    verification: str
    columns: tuple[Column, ...]

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.name == name), None)

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name_ja": self.name_ja, "name_en": self.name_en,
                "description_ja": self.description_ja, "source": self.source,
                "verification": self.verification,
                "columns": [c.as_dict() for c in self.columns]}


class UnknownLayout(KeyError):
    def __init__(self, layout_id: str):
        known = ", ".join(sorted(_registry()))
        super().__init__(f"unknown layout {layout_id!r} (known: {known})")
        self.layout_id = layout_id

    def __str__(self) -> str:
        return str(self.args[0])


def _column(raw: dict[str, Any]) -> Column:
    if raw["type"] not in COLUMN_TYPES:
        raise ValueError(f"column {raw['name']!r} has unknown type {raw['type']!r}")
    if raw["type"] == "enum" and not raw.get("values"):
        raise ValueError(f"enum column {raw['name']!r} lists no values")
    return Column(name=raw["name"], name_en=raw["name_en"], type=raw["type"], required=bool(raw["required"]),
                  values=tuple(raw.get("values", ())), notes_ja=raw.get("notes_ja", ""),
                  legacy_names=tuple(raw.get("legacy_names", ())))


def _load(raw: dict[str, Any]) -> Layout:
    columns = tuple(_column(c) for c in raw["columns"])
    names = [c.name for c in columns]
    if len(set(names)) != len(names):
        raise ValueError(f"layout {raw['id']!r} repeats a column name")
    return Layout(id=raw["id"], name_ja=raw["name_ja"], name_en=raw["name_en"],
                  description_ja=raw.get("description_ja", ""), source=raw["source"],
                  verification=raw["verification"], columns=columns)


@lru_cache(maxsize=1)
def _registry() -> dict[str, Layout]:
    out: dict[str, Layout] = {}
    folder = resources.files("society5.opendata").joinpath("layouts")
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json"):
            layout = _load(json.loads(entry.read_text(encoding="utf-8")))
            out[layout.id] = layout
    return out


def get(layout_id: str) -> Layout:
    """The layout named ``layout_id``; :class:`UnknownLayout` (a ``KeyError``) names the known ones."""
    found = _registry().get(layout_id)
    if found is None:
        raise UnknownLayout(layout_id)
    return found


def all() -> list[Layout]:  # shadows the builtin inside this module only: layouts.all() reads well
    """Every layout, ordered by id."""
    return list(_registry().values())


def ids() -> list[str]:
    return list(_registry())


def datastore_fields(layout: Layout | str) -> list[dict[str, Any]]:
    """CKAN ``datastore_create`` fields for a layout's columns, in order, with CKAN's data-dictionary
    ``info`` (label, notes) filled from the layout."""
    found = get(layout) if isinstance(layout, str) else layout
    return [{"id": c.name, "type": DATASTORE_TYPES.get(c.type, "text"),
             "info": {"label": c.name_en, "notes": c.notes_ja or COLUMN_TYPES[c.type]}}
            for c in found.columns]
