"""Where a sighting is: inside Hokkaido and on land, its municipality, distances, public rounding.

Hokkaido is told from Honshu by a hand-drawn ring through the middle of the Tsugaru Strait (a bounding box
alone would take in Aomori's Shimokita peninsula); land from sea by the 1 km GLOBE land mask that the
``global-land-mask`` package carries (offline). A point within one grid cell of land counts as land, so a
harbour or a river mouth on the coast is not refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from society5.core.regions import Municipality, hokkaido_municipalities

EARTH_M = 6_371_008.8
# (lon, lat), counter-clockwise: the Tsugaru Strait's middle in the south, open sea on the other sides
# (Rishiri, Rebun, Okushiri and the Northern Territories inside; Sakhalin's Cape Crillon outside).
HOKKAIDO_RING: tuple[tuple[float, float], ...] = (
    (139.0, 41.35), (140.25, 41.33), (140.6, 41.45), (140.9, 41.63), (141.3, 41.62), (141.8, 41.75),
    (143.0, 41.7), (146.2, 42.9), (149.0, 45.0), (148.0, 45.6), (141.9, 45.65), (140.5, 45.65),
    (139.0, 43.5),
)
LAND_TOLERANCE_DEG = 0.01  # about one cell of the 1 km mask


class OutsideHokkaido(ValueError):
    """A location this service cannot take (outside Hokkaido, or at sea); the message says which."""


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_M * math.asin(min(1.0, math.sqrt(h)))


def in_ring(lat: float, lon: float, ring: tuple[tuple[float, float], ...] = HOKKAIDO_RING) -> bool:
    inside = False
    j = len(ring) - 1
    for i, (xi, yi) in enumerate(ring):
        xj, yj = ring[j]
        if (yi > lat) != (yj > lat) and lon < (xj - xi) * (lat - yi) / (yj - yi) + xi:
            inside = not inside
        j = i
    return inside


def on_land(lat: float, lon: float) -> bool:
    land = hokkaido_land()
    if land.is_land(lat, lon):
        return True
    d = LAND_TOLERANCE_DEG
    return any(land.is_land(lat + a, lon + b) for a in (-d, 0, d) for b in (-d, 0, d) if a or b)


# The part of the GLOBE mask this service reads: the ring's box with a margin.
MASK_LAT = (41.0, 46.0)
MASK_LON = (138.5, 149.5)


@dataclass(frozen=True)
class LandMask:
    """A window of the GLOBE land mask, read the way ``global_land_mask.globe.is_land`` reads the whole."""

    ocean: Any  # numpy bool array, True at sea
    lat0: float  # the whole mask's first latitude and step (the package's own index arithmetic)
    dlat: float
    lon0: float
    dlon: float
    row0: int  # the window's first row and column in the whole mask
    col0: int

    def is_land(self, lat: float, lon: float) -> bool:
        row = int((lat - self.lat0) / self.dlat) - self.row0
        col = int((lon - self.lon0) / self.dlon) - self.col0
        if not (0 <= row < self.ocean.shape[0] and 0 <= col < self.ocean.shape[1]):
            return False  # outside the window: never inside the ring
        return not bool(self.ocean[row, col])


@lru_cache(maxsize=1)
def hokkaido_land() -> LandMask:
    """Hokkaido's window of the mask (0.6 MB), streamed out of the package's compressed file.

    ``from global_land_mask import globe`` inflates the whole 1 km world mask into memory, 21600 × 43200
    cells: 890 MB held for as long as the process runs, which was three quarters of the demo's memory. The
    rows are stored north to south, so the file is inflated only down to Hokkaido's southern edge, a few
    hundred rows at a time, and all but the window is dropped as it goes."""
    import importlib.util
    import zipfile

    import numpy as np
    from numpy.lib import format as npformat

    spec = importlib.util.find_spec("global_land_mask")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the global-land-mask package is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "globe_combined_mask_compressed.npz"
    with np.load(path) as npz:
        lats, lons = npz["lat"], npz["lon"]
    lat0, dlat = float(lats[0]), float(lats[1] - lats[0])
    lon0, dlon = float(lons[0]), float(lons[1] - lons[0])
    rows = sorted(int((lat - lat0) / dlat) for lat in MASK_LAT)
    cols = sorted(int((lon - lon0) / dlon) for lon in MASK_LON)
    with zipfile.ZipFile(path) as zf, zf.open("mask.npy") as f:
        version = npformat.read_magic(f)
        read_header = npformat.read_array_header_1_0 if version == (1, 0) else npformat.read_array_header_2_0
        shape, fortran, dtype = read_header(f)
        if fortran or dtype != np.bool_ or len(shape) != 2 or shape[1] != len(lons):
            raise RuntimeError(f"unexpected land mask layout {shape} {dtype} fortran={fortran}")
        width = shape[1]
        skip = rows[0]
        while skip:
            step = min(skip, 256)
            f.read(step * width)
            skip -= step
        band = np.frombuffer(f.read((rows[1] - rows[0] + 1) * width), dtype=np.bool_)
    band = band.reshape(-1, width)[:, cols[0] : cols[1] + 1].copy()
    return LandMask(band, lat0, dlat, lon0, dlon, rows[0], cols[0])


def check_location(lat: float, lon: float) -> None:
    """Raise :class:`OutsideHokkaido` (the message is for the sender) unless the point is usable."""
    if not (-90 <= lat <= 90 and -180 <= lon <= 180) or math.isnan(lat) or math.isnan(lon):
        raise OutsideHokkaido(f"({lat}, {lon}) is not a latitude/longitude / 緯度経度として正しくありません")
    if not in_ring(lat, lon):
        raise OutsideHokkaido(f"({lat:.5f}, {lon:.5f}) is outside Hokkaido / 北海道の外の地点です")
    if not on_land(lat, lon):
        raise OutsideHokkaido(f"({lat:.5f}, {lon:.5f}) is in the sea / 海上の地点です")


@lru_cache(maxsize=1)
def _located() -> tuple[Municipality, ...]:
    return tuple(m for m in hokkaido_municipalities() if m.lat is not None and m.lon is not None)


def nearest_municipality(lat: float, lon: float) -> Municipality:
    """The municipality whose office (centroid of record) is nearest: a first guess staff can correct, since
    the platform carries no municipal boundaries."""
    return min(_located(), key=lambda m: haversine_m(lat, lon, m.lat or 0.0, m.lon or 0.0))


def rounded(value: float, decimals: int) -> float:
    return round(value, decimals)


def bbox_around(lat: float, lon: float, radius_m: float) -> tuple[float, float, float, float]:
    """(min_lat, min_lon, max_lat, max_lon) enclosing a circle: a cheap SQL pre-filter before haversine."""
    dlat = math.degrees(radius_m / EARTH_M)
    dlon = dlat / max(0.01, math.cos(math.radians(lat)))
    return lat - dlat, lon - dlon, lat + dlat, lon + dlon
