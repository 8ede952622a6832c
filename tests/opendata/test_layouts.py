"""layouts: the standard dataset registry, its official column order and CKAN datastore fields."""

from __future__ import annotations

import json

import pytest

from society5.opendata import layouts

REQUIRED_IDS = {"aed", "public_facility", "event", "tourism", "evacuation_site", "covid19_patients"}


def test_registry_holds_the_required_layouts() -> None:
    assert set(layouts.ids()) >= REQUIRED_IDS
    assert [lay.id for lay in layouts.all()] == sorted(layouts.ids())
    for layout in layouts.all():
        assert layout.name_ja and layout.name_en and layout.source and layout.verification
        assert all(c.type in layouts.COLUMN_TYPES for c in layout.columns)
        assert any(c.required for c in layout.columns)


def test_official_column_order_and_names() -> None:
    aed = layouts.get("aed")
    assert aed.name_ja == "AED設置箇所一覧"
    assert aed.column_names[:6] == ["全国地方公共団体コード", "ID", "地方公共団体名", "名称", "名称_カナ",
                                    "住所"]
    assert aed.column_names[-3:] == ["小児対応設備の有無", "URL", "備考"]
    assert aed.column("小児対応設備の有無").values == ("有", "無")  # type: ignore[union-attr]
    covid = layouts.get("covid19_patients")
    assert covid.column_names == [
        "No", "全国地方公共団体コード", "都道府県名", "市区町村名", "公表_年月日", "発症_年月日",
        "患者_居住地",
        "患者_年代", "患者_性別", "患者_職業", "患者_状態", "患者_症状", "患者_渡航歴の有無フラグ",
        "患者_退院済フラグ", "備考"]
    evac = layouts.get("evacuation_site")
    assert [c for c in evac.column_names if c.startswith("災害種別_")] == [
        "災害種別_洪水", "災害種別_崖崩れ、土石流及び地滑り", "災害種別_高潮", "災害種別_地震",
        "災害種別_津波",
        "災害種別_大規模な火事", "災害種別_内水氾濫", "災害種別_火山現象"]
    event = layouts.get("event")
    assert event.column("開始日").type == "date" and event.column("開始日").required  # type: ignore[union-attr]


def test_unknown_layout_names_the_known_ones() -> None:
    with pytest.raises(layouts.UnknownLayout) as err:
        layouts.get("bears")
    assert "aed" in str(err.value) and isinstance(err.value, KeyError)


def test_datastore_fields_follow_the_columns_with_ckan_types() -> None:
    fields = layouts.datastore_fields("event")
    assert [f["id"] for f in fields] == layouts.get("event").column_names
    types = {f["id"]: f["type"] for f in fields}
    assert types["全国地方公共団体コード"] == "text"  # leading zeros kept
    assert types["開始日"] == "date" and types["開始時間"] == "time"
    assert types["緯度"] == "numeric" and types["定員"] == "int"
    assert all(f["info"]["label"] and f["info"]["notes"] for f in fields)
    json.dumps(fields)
    # PostgreSQL identifiers are at most 63 bytes: every column name must fit as a datastore column
    assert all(len(c.name.encode()) <= 63 for lay in layouts.all() for c in lay.columns)


def test_as_dict_is_json_serializable() -> None:
    for layout in layouts.all():
        data = json.loads(json.dumps(layout.as_dict(), ensure_ascii=False))
        assert [c["name"] for c in data["columns"]] == layout.column_names
