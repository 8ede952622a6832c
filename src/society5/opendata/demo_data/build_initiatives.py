"""Derive ``initiatives.csv`` from the Hokkaido Society 5.0 report (run once; the CSV is committed).

    .venv/bin/python src/society5/opendata/demo_data/build_initiatives.py [report.txt]

The report (``shared/seed/000_6fca131b4e637a7b.txt``, text extracted from the prefecture's slides) lists its
case studies in four forms, each read here: the tables of 取組事例 (区分 / 名称 / 内容, one bullet per
initiative), the prefecture's own 主な取組 (名称 <tab> 内容 under 暮らし / 産業), the IoT・データ活用推進事業
table, and the closing examples (``市町村「取組名」`` followed by a description). The field (分野) and the
technologies (技術) are not columns of the report: they are assigned by the keyword rules below, so they
can be checked and corrected by reading this file. Municipality codes come from ``society5.core.regions``.
"""

from __future__ import annotations

import csv
import re
import sys
from pathlib import Path

from society5.core.regions import hokkaido_municipalities

HERE = Path(__file__).resolve().parent
DEFAULT_REPORT = HERE.parents[4] / "shared" / "seed" / "000_6fca131b4e637a7b.txt"
OUT = HERE / "initiatives.csv"
COLUMNS = ["No", "区分", "実施主体", "市町村コード", "市町村名", "分野", "取組名", "内容", "技術", "出典"]
PREFECTURE = ("010006", "北海道")
# The report writes 更別町; the municipality is 更別村 (016390).
ALIASES = {"更別町": "更別村"}
# (field, keywords): the first rule with a keyword in the text wins.
FIELDS = [
    ("防災", ("ヒグマ", "野生鳥獣", "治山", "河川", "漁港の施設点検", "防災")),
    ("健康・福祉", ("介護", "見守り", "健康", "バイタル", "スマートスーツ", "高齢者", "新型コロナ情報")),
    ("子育て・教育", ("授業", "学校", "GIGA", "図書館", "子育て")),
    ("交通", ("バス", "自動運転", "オンデマンド交通", "MaaS", "除排雪", "路面", "通行量")),
    ("物流", ("配送", "物流", "トドック")),
    ("観光", ("観光", "イルミネーション", "ドローンショー")),
    ("農林水産業", ("農業", "農場", "搾乳", "牧草", "林業", "森林", "コンブ", "水産", "海洋", "営農", "施肥",
                   "ハウス栽培")),
    ("産業", ("食品", "食関連", "建築", "施工", "テレワーク", "キッチンカー", "飲食", "混雑")),
    ("情報通信", ("5G",)),
    ("行政", ("窓口", "RPA", "証明書", "会計", "スーパーシティ", "オープンデータ", "ヘルプデスク", "行政")),
]
TECHNOLOGIES = [
    ("ドローン", ("ドローン", "UAV")), ("AI", ("AI", "ディープラーニング", "チャットボット")),
    ("IoT", ("IoT", "センサー", "センサ", "電力センサー")), ("ローカル5G", ("5G",)),
    ("自動運転", ("自動運転", "ロボットトラクター", "無人自動配送")), ("ロボット", ("ロボット",)),
    ("RPA", ("RPA",)), ("GPS", ("GPS",)), ("クラウド", ("クラウド",)),
    ("オープンデータ", ("オープンデータ",)),
    ("マイナンバーカード", ("マイナンバー",)), ("生体認証", ("顔認証", "手のひら認証")),
    ("3次元計測", ("3D", "3次元")), ("MaaS", ("MaaS",)),
    ("オンライン・遠隔", ("遠隔", "テレビ会議", "オンライン", "テレワーク")),
    ("ICT", ("ICT",)),
]
BODY_KINDS = {"国": "国の機関", "市町村": "市町村", "企業、 団体": "企業・団体", "企業、団体": "企業・団体"}


class Municipalities:
    def __init__(self) -> None:
        self.by_name = {m.name: m.code for m in hokkaido_municipalities()}
        # Longest names first, so 釧路市 is not also read as a shorter name inside it.
        self.names = sorted(self.by_name, key=len, reverse=True)

    def mentioned(self, text: str) -> list[str]:
        for wrong, right in ALIASES.items():
            text = text.replace(wrong, right)
        found: list[str] = []
        rest = text
        for name in self.names:
            if name in rest:
                found.append(name)
                rest = rest.replace(name, "　")
        return sorted(found, key=text.index)


def field_of(text: str) -> str:
    return next((name for name, words in FIELDS if any(w in text for w in words)), "その他")


def technologies_of(text: str) -> str:
    return ";".join(name for name, words in TECHNOLOGIES if any(w in text for w in words))


def title_of(text: str) -> str:
    quoted = re.findall(r"「([^「」]+)」", text)
    if quoted:
        return "・".join(quoted)
    short = re.sub(r"(を実施|を実践|を実現|の運行|を設置)?(（[^）]*）)?$", "", text).strip()
    return short if len(short) <= 40 else short[:39] + "…"


def _items(content: str) -> list[str]:
    content = re.sub(r"<[^>]+>", " ", content)
    parts = re.split(r"\s*[•・]\s+|\s*•\s*", content)
    out: list[str] = []
    for part in parts:
        # The first table runs its bullets together: split after the verbs that end an item.
        ends = r"(?:(?<=実施)|(?<=実践)|(?<=実現)|(?<=ース化)|(?<=見守り))\s+"
        out.extend(s.strip() for s in re.split(ends, part))
    return [o for o in out if o]


def case_tables(lines: list[str]) -> list[dict[str, str]]:
    """区分 / 名称 / 内容 rows of the 取組事例 tables."""
    rows: list[dict[str, str]] = []
    kind = ""
    inside = False
    for line in lines:
        if line.startswith("区分\t名称"):
            inside = True
            continue
        if not inside:
            continue
        if not line.strip() or line.startswith("道内の") or line.startswith("他にも"):
            inside = not line.startswith("他にも") and inside
            continue
        cells = [c.strip() for c in line.split("\t")]
        if cells[0] in BODY_KINDS:
            kind = BODY_KINDS[cells[0]]
            cells = cells[1:]
        elif cells[0] == "":
            cells = cells[1:]
        cells = [c for c in cells if c]
        if len(cells) < 2:
            continue
        for item in _items(cells[1]):
            rows.append({"区分": kind, "名称": cells[0], "内容": item,
                         "出典": "道内の「北海道Society5.0」取組事例"})
    return rows


def prefecture_table(lines: list[str]) -> list[dict[str, str]]:
    """名称 <tab> 内容 rows of 令和3年度の道の主な取組 (暮らし, 産業)."""
    rows = []
    inside = False
    for line in lines:
        if line.startswith("令和3年度の道の主な取組"):
            inside = True
        elif line.startswith("「暮らし」の取組"):
            inside = False
        elif inside and "\t" in line:
            name, text = (c.strip() for c in line.split("\t", 1))
            rows.append({"区分": "北海道", "名称": "北海道", "取組名": name, "内容": text,
                         "出典": "令和3年度の道の主な取組（抜粋）"})
    return rows


def iot_table(lines: list[str]) -> list[dict[str, str]]:
    rows = []
    inside = False
    for line in lines:
        if line.startswith("事業分野\t"):
            inside = True
            continue
        if inside and line.count("\t") == 3:
            _field, company, town, name = (c.strip() for c in line.split("\t"))
            rows.append({"区分": "企業・団体", "名称": company, "市町村": town, "取組名": name, "内容": name,
                         "出典": "北海道IoT・データ活用推進事業の実績"})
        elif inside and line.strip():
            inside = False
    return rows


def closing_examples(lines: list[str]) -> list[dict[str, str]]:
    """``市町村「取組名」`` headings near the end, with the next text line as the description."""
    rows = []
    start = next(i for i, line in enumerate(lines) if line.startswith("北海道 Society 5.0 事例集"))
    for i, line in enumerate(lines[start:], start):
        match = re.match(r"^([^「\s]+)「(.+)」$", line.strip())
        if not match:
            continue
        description = next((n.strip() for n in lines[i + 1:] if n.strip()), "")
        if not description.endswith("。"):  # a caption of a figure, not a description
            description = ""
        names = re.findall(r"「?\d?\s*([^「」・]+?)」", f"「{match.group(2)}」")
        for name in names or [match.group(2)]:
            rows.append({"区分": "市町村", "名称": match.group(1), "取組名": name.strip(),
                         "内容": description if len(names) <= 1 and description else name.strip(),
                         "出典": "北海道Society5.0事例集（抜粋）"})
    return rows


def build(report: Path) -> list[list[str]]:
    lines = report.read_text(encoding="utf-8").splitlines()
    towns = Municipalities()
    out: list[list[str]] = []
    seen: set[tuple[str, str]] = set()
    for raw in case_tables(lines) + prefecture_table(lines) + iot_table(lines) + closing_examples(lines):
        text = raw["内容"]
        body = ALIASES.get(raw["名称"], raw["名称"])
        if (body, text) in seen:  # the report lists 更別村's proposal on two slides
            continue
        seen.add((body, text))
        # 民間企業 / 民間団体 rows name the firms (or the place) in brackets at the end of the text.
        company = re.search(r"（([^（）]+)）$", text)
        if raw["区分"] == "企業・団体" and company and company.group(1) not in towns.by_name:
            body = company.group(1)
        if body == "北海道":
            codes, names = [PREFECTURE[0]], [PREFECTURE[1]]
        else:
            names = towns.mentioned(" ".join([body, raw.get("市町村", ""), text]))
            codes = [towns.by_name[n] for n in names]
        kind = raw["区分"]
        body_name = body.replace(" ", "・") if kind == "市町村" else body.replace(" ", "")
        title = raw.get("取組名") or title_of(text)
        out.append([str(len(out) + 1), kind, body_name, ";".join(codes), ";".join(names),
                    field_of(title + text), title, text, technologies_of(title + text), raw["出典"]])
    return out


def main() -> None:
    report = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_REPORT
    rows = build(report)
    with OUT.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\r\n")
        writer.writerow(COLUMNS)
        writer.writerows(rows)
    print(f"{len(rows)} initiatives → {OUT}")


if __name__ == "__main__":
    main()
