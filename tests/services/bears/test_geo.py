"""Where a sighting may be: the ring round Hokkaido and the land mask window read from the package's file."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest

from society5.services.bears import geo


def _package_answers(points: list[tuple[float, float]]) -> list[bool]:
    """``global_land_mask.globe.is_land`` for each point, in a process of its own (it inflates the whole
    890 MB world mask, which this test process should not keep)."""
    code = ("import json, sys\nfrom global_land_mask import globe\n"
            "print(json.dumps([bool(globe.is_land(a, b)) for a, b in json.load(sys.stdin)]))")
    out = subprocess.run([sys.executable, "-c", code], input=json.dumps(points), capture_output=True,
                         text=True, check=True, timeout=300)
    return [bool(x) for x in json.loads(out.stdout)]


def test_the_window_answers_like_the_whole_mask() -> None:
    rng = random.Random(3)
    points = [(rng.uniform(41.2, 45.8), rng.uniform(138.8, 149.2)) for _ in range(4000)]
    # coastlines, where a cell either way matters: along the shore of Ishikari Bay and Hakodate
    points += [(43.2 + i * 0.0004, 141.3) for i in range(500)]
    points += [(41.77, 140.6 + i * 0.0004) for i in range(500)]
    land = geo.hokkaido_land()
    ours = [land.is_land(lat, lon) for lat, lon in points]
    assert ours == _package_answers(points)
    assert 0.2 < sum(ours) / len(ours) < 0.8  # both land and sea were asked about
    assert land.ocean.nbytes < 2_000_000


@pytest.mark.parametrize(("lat", "lon", "problem"), [
    (43.0621, 141.3544, None),  # Sapporo
    (42.75, 141.95, None),  # inland (Yubari hills)
    (43.2, 140.3, "海上"),  # Sea of Japan
    (41.0, 141.2, "北海道の外"),  # Aomori, south of the strait
    (95.0, 141.0, "緯度経度"),
])
def test_check_location(lat: float, lon: float, problem: str | None) -> None:
    if problem is None:
        geo.check_location(lat, lon)
    else:
        with pytest.raises(geo.OutsideHokkaido, match=problem):
            geo.check_location(lat, lon)


def test_a_harbour_on_the_coast_counts_as_land() -> None:
    """Within one cell of land is land: a report from the quay of Otaru harbour is not refused."""
    land = geo.hokkaido_land()
    lat, lon = 43.2, 141.0
    while land.is_land(lat, lon):  # walk north from Otaru until the mask says sea
        lat += 0.001
    assert not land.is_land(lat, lon) and geo.on_land(lat, lon)
    assert not geo.on_land(lat + 0.05, lon)
