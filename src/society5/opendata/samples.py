"""Fictional sample rows in each standard layout, for the demo portal: never real data.

Rows are generated (nothing downloaded) for Hokkaido's municipalities from ``society5.core.regions`` (codes,
names, kana, centroids), deterministic for a seed. Every row says it is fictional: its 備考 (notes) column
holds 「サンプルデータ（架空）」, and :func:`sample_title` gives a dataset title that says so too. Phone
numbers use the 555 exchange and URLs ``example.com`` (reserved for examples), so nothing points anywhere
real. Every sample passes :func:`validate.validate_file` for its layout (tested).
"""

from __future__ import annotations

import os
import random
from datetime import date, timedelta
from typing import Any

from society5.core.regions import Municipality, hokkaido_municipalities
from society5.opendata import csvio, layouts

SAMPLE_LABEL = "サンプルデータ（架空）"
SAMPLE_LABEL_EN = "sample data (fictional)"

# (name, katakana, English) for the facilities each layout lists
_FACILITIES = {
    "aed": [("市民会館", "シミンカイカン", ""), ("総合体育館", "ソウゴウタイイクカン", ""),
            ("中央図書館", "チュウオウトショカン", ""), ("役場本庁舎", "ヤクバホンチョウシャ", ""),
            ("コミュニティセンター", "コミュニティセンター", "")],
    "public_facility": [("公民館", "コウミンカン", ""), ("児童館", "ジドウカン", ""),
                        ("総合福祉センター", "ソウゴウフクシセンター", ""), ("郷土資料館",
                                                          "キョウドシリョウカン", "")],
    "tourism": [("展望台", "テンボウダイ", "Observatory"), ("温泉センター", "オンセンセンター",
                                                   "Hot Spring Center"),
                ("道の駅", "ミチノエキ", "Roadside Station"), ("自然公園", "シゼンコウエン", "Nature Park")],
    "evacuation_site": [("小学校グラウンド", "ショウガッコウグラウンド", ""), ("中学校体育館",
                                                           "チュウガッコウタイイクカン", ""),
                        ("運動公園", "ウンドウコウエン", ""), ("高台広場", "タカダイヒロバ", "")],
    "event": [("雪まつり", "ユキマツリ", "Snow Festival"), ("収穫祭", "シュウカクサイ", "Harvest Festival"),
              ("市民マラソン", "シミンマラソン", "Citizens' Marathon"), ("花火大会", "ハナビタイカイ",
                                                            "Fireworks")],
}
_VENUES = ["市民広場", "総合体育館", "文化ホール"]
_DAYS = ["月火水木金", "月火水木金土", "毎日", "火水木金土日"]
_SYMPTOMS = ["発熱", "咳", "倦怠感", "咽頭痛", "頭痛", "味覚障害"]


def sample_title(layout_id: str) -> str:
    """A dataset title that marks the sample as fictional, e.g. 「AED設置箇所一覧 サンプルデータ（架空）」."""
    return f"{layouts.get(layout_id).name_ja} {SAMPLE_LABEL}"


def _place(rng: random.Random, town: Municipality) -> tuple[str, str, str]:
    """A fictional street address and a point within ~2 km of the municipality's centroid."""
    lat = (town.lat or 43.06) + rng.uniform(-0.02, 0.02)
    lon = (town.lon or 141.35) + rng.uniform(-0.02, 0.02)
    address = f"北海道{town.name}本町{rng.randint(1, 9)}丁目{rng.randint(1, 30)}番{rng.randint(1, 20)}号"
    return address, f"{lat:.6f}", f"{lon:.6f}"


def _phone(rng: random.Random) -> str:
    return f"0{rng.randint(11, 99)}-555-{rng.randint(0, 9999):04d}"


def _common(layout_id: str, town: Municipality, number: int) -> dict[str, str]:
    return {"全国地方公共団体コード": town.code, "ID": f"{town.code}-{layout_id}-{number:05d}",
            "地方公共団体名": f"北海道{town.name}", "備考": SAMPLE_LABEL}


def _facility_row(layout_id: str, rng: random.Random, town: Municipality, number: int) -> dict[str, str]:
    name, kana, english = rng.choice(_FACILITIES[layout_id])
    address, lat, lon = _place(rng, town)
    row = _common(layout_id, town, number)
    row.update({"名称": f"{town.name}{name}（サンプル）", "名称_カナ": f"{town.kana}{kana}（サンプル）",
                "住所": address, "緯度": lat, "経度": lon,
                "URL": f"https://example.com/sample/{layout_id}/{town.code}/{number}"})
    opening = rng.choice([8, 9, 10])
    hours = {"利用可能曜日": rng.choice(_DAYS), "開始時間": f"{opening:02d}:00",
             "終了時間": f"{opening + rng.choice([8, 9, 12]):02d}:00",
             "利用可能日時特記事項": "年末年始は休み（架空）"}
    if layout_id == "aed":
        row.update(hours)
        row.update({"方書": "1階", "設置位置": rng.choice(["正面玄関横", "事務室前", "受付カウンター内"]),
                    "電話番号": _phone(rng), "団体名": town.name, "小児対応設備の有無": rng.choice(["有",
                                                                                    "無"])})
    elif layout_id == "public_facility":
        row.update(hours)
        row.update({"電話番号": _phone(rng), "団体名": town.name,
                    "説明": f"{town.name}の{name}（架空の施設です）",
                    "バリアフリー情報": "車いす対応トイレ;スロープ"})
    elif layout_id == "tourism":
        row.update(hours)
        fee = rng.choice([0, 300, 500, 800])
        row.update({"名称_英語": f"{english} (sample)", "料金(基本)": str(fee),
                    "説明": f"{town.name}の{name}（架空）",
                    "説明_英語": "A fictional sample facility.", "連絡先名称": f"{town.name}観光協会（架空）",
                    "連絡先電話番号": _phone(rng), "アクセス方法": "最寄り駅から徒歩10分（架空）"})
    elif layout_id == "evacuation_site":
        hazards = ["洪水", "崖崩れ、土石流及び地滑り", "高潮", "地震", "津波", "大規模な火事", "内水氾濫",
                   "火山現象"]
        for hazard in hazards:
            row[f"災害種別_{hazard}"] = "1" if rng.random() < 0.5 else ""
        row.update({"標高": f"{rng.uniform(2, 120):.1f}", "電話番号": _phone(rng),
                    "指定避難所との重複": rng.choice(["1", ""]), "想定収容人数": str(rng.randint(50, 2000)),
                    "対象となる町会・自治会": "本町町内会;栄町町内会"})
    return row


def _event_row(rng: random.Random, town: Municipality, number: int) -> dict[str, str]:
    name, kana, english = rng.choice(_FACILITIES["event"])
    venue = rng.choice(_VENUES)
    address, lat, lon = _place(rng, town)
    start = date(2025, 4, 1) + timedelta(days=rng.randint(0, 360))
    end = start + timedelta(days=rng.randint(0, 3))
    row = _common("event", town, number)
    row.update({"イベント名": f"{town.name}{name}（サンプル）",
                "イベント名_カナ": f"{town.kana}{kana}（サンプル）",
                "イベント名_英語": f"{english} (sample)",
                "開始日": start.isoformat(), "終了日": end.isoformat(),
                "開始時間": "10:00", "終了時間": "16:00",
                "説明": f"{town.name}の{name}（架空のイベントです）",
                "料金(基本)": str(rng.choice([0, 500, 1000])),
                "連絡先名称": f"{town.name}実行委員会（架空）",
                "連絡先電話番号": _phone(rng), "主催者": f"{town.name}（架空）",
                "場所名称": f"{town.name}{venue}",
                "住所": address, "緯度": lat, "経度": lon, "定員": str(rng.choice([50, 100, 300])),
                "参加申込終了日": (start - timedelta(days=7)).isoformat(), "参加申込終了時間": "17:00",
                "URL": f"https://example.com/sample/event/{town.code}/{number}"})
    return row


def _covid_row(rng: random.Random, town: Municipality, number: int) -> dict[str, str]:
    published = date(2020, 3, 1) + timedelta(days=rng.randint(0, 900))
    onset = published - timedelta(days=rng.randint(1, 7))
    ages = layouts.get("covid19_patients").column("患者_年代")
    assert ages is not None
    return {"No": str(number), "全国地方公共団体コード": town.code, "都道府県名": "北海道",
            "市区町村名": town.name,
            "公表_年月日": published.isoformat(),
            "発症_年月日": onset.isoformat() if rng.random() < 0.8 else "",
            "患者_居住地": f"北海道{town.name}", "患者_年代": rng.choice(ages.values),
            "患者_性別": rng.choice(["男性", "女性"]), "患者_職業": rng.choice(["会社員", "学生", "自営業",
                                                                    ""]),
            "患者_状態": rng.choice(["無症状", "軽症", "中等症"]),
            "患者_症状": ";".join(rng.sample(_SYMPTOMS, rng.randint(1, 3))),
            "患者_渡航歴の有無フラグ": "0", "患者_退院済フラグ": rng.choice(["1", "0",
                                                          ""]), "備考": SAMPLE_LABEL}


def sample_rows(layout_id: str, n: int = 20, seed: int = 0) -> list[dict[str, str]]:
    """``n`` fictional rows in the layout, keyed by its column names in the official order (every column
    present, empty where the sample has no value); the same ``seed`` gives the same rows."""
    layout = layouts.get(layout_id)
    if n < 0:
        raise ValueError("n must be zero or more")
    rng = random.Random(f"{layout_id}:{seed}")
    towns = hokkaido_municipalities()
    out: list[dict[str, str]] = []
    for number in range(1, n + 1):
        town = rng.choice(towns)
        if layout_id == "event":
            row = _event_row(rng, town, number)
        elif layout_id == "covid19_patients":
            row = _covid_row(rng, town, number)
        else:
            row = _facility_row(layout_id, rng, town, number)
        out.append({name: row.get(name, "") for name in layout.column_names})
    return out


def write_sample_csv(path: str | os.PathLike[str], layout_id: str, n: int = 20, encoding: str = "utf-8-sig",
                     seed: int = 0) -> dict[str, Any]:
    """Write ``n`` sample rows as CSV (``utf-8-sig``, ``utf-8`` or ``shift_jis``); returns the row count,
    byte size and dataset title."""
    layout = layouts.get(layout_id)
    rows = sample_rows(layout_id, n, seed)
    result = csvio.write_csv(path, layout.column_names, ([r[c] for c in layout.column_names] for r in rows),
                             encoding=encoding, unencodable="error")
    return {"rows": result.rows, "bytes": result.bytes, "title": sample_title(layout_id)}
