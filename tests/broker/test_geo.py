"""Tests for society5.broker.geo: GeoJSON validation, geo-query parsing, predicates, distances and boxes."""

from __future__ import annotations

import copy
import dataclasses
import math
import pickle
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
import shapely
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from society5.broker import geo
from society5.broker.geo import (
    EARTH_RADIUS_M,
    GeoError,
    GeoQuery,
    distance_m,
    geometry_bbox,
    haversine_m,
    parse_geo_query,
    validate_geometry,
)

# Sapporo (Odori) and helpers -------------------------------------------------------------------

LON0, LAT0 = 141.35, 43.06
M_PER_DEG_LAT = EARTH_RADIUS_M * math.pi / 180.0  # 111195.08 m on the broker's sphere

# WGS84 ellipsoid, for checking the spherical distances against the real Earth.
WGS84_A = 6_378_137.0
WGS84_F = 1 / 298.257223563
WGS84_E2 = WGS84_F * (2 - WGS84_F)


def point(lon: float, lat: float) -> dict[str, Any]:
    return {"type": "Point", "coordinates": [lon, lat]}


def box(lon1: float, lat1: float, lon2: float, lat2: float) -> list[list[list[float]]]:
    """Counter-clockwise rectangle polygon coordinates."""
    return [[[lon1, lat1], [lon2, lat1], [lon2, lat2], [lon1, lat2], [lon1, lat1]]]


def polygon(lon1: float, lat1: float, lon2: float, lat2: float) -> dict[str, Any]:
    return {"type": "Polygon", "coordinates": box(lon1, lat1, lon2, lat2)}


def around(d: float) -> list[list[list[float]]]:
    """Square of half-width ``d`` degrees centred on Sapporo."""
    return box(LON0 - d, LAT0 - d, LON0 + d, LAT0 + d)


def north_of(lat: float, metres: float) -> float:
    return lat + metres / M_PER_DEG_LAT


def east_of(lon: float, lat: float, metres: float) -> float:
    return lon + metres / (M_PER_DEG_LAT * math.cos(math.radians(lat)))


def q(georel: str, geometry: str, coordinates: Any, geoproperty: str | None = None) -> GeoQuery:
    return parse_geo_query(georel, geometry, coordinates, geoproperty)


def inside(bbox: tuple[float, float, float, float] | None, lon: float, lat: float) -> bool:
    assert bbox is not None
    return bbox[0] <= lon <= bbox[2] and bbox[1] <= lat <= bbox[3]


# validate_geometry -----------------------------------------------------------------------------


def test_validate_normalizes_tuples_keeps_foreign_members_and_does_not_mutate() -> None:
    src = {"type": "LineString", "coordinates": ((141.0, 43.0), (141.1, 43.1, 12.5)), "title": "road"}
    out = validate_geometry(src)
    assert out == {"type": "LineString", "coordinates": [[141.0, 43.0], [141.1, 43.1, 12.5]], "title": "road"}
    assert isinstance(out["coordinates"][0], list)
    assert isinstance(src["coordinates"], tuple)
    assert out is not src


@pytest.mark.parametrize(
    "geom",
    [
        point(LON0, LAT0),
        point(-180, -90),
        point(180, 90),
        {"type": "MultiPoint", "coordinates": [[141, 43], [142, 44]]},
        {"type": "LineString", "coordinates": [[141, 43], [142, 44]]},
        {"type": "MultiLineString", "coordinates": [[[141, 43], [142, 44]], [[140, 42], [140.5, 42.5]]]},
        {"type": "Polygon", "coordinates": around(0.1)},
        {
            "type": "Polygon",
            "coordinates": [*around(0.1), box(LON0 - 0.01, LAT0 - 0.01, LON0 + 0.01, LAT0 + 0.01)[0]],
        },
        {"type": "MultiPolygon", "coordinates": [around(0.1), box(142, 44, 142.1, 44.1)]},
        {"type": "GeometryCollection", "geometries": [point(LON0, LAT0), polygon(141, 43, 142, 44)]},
        {"type": "Point", "coordinates": [LON0, LAT0], "bbox": [LON0, LAT0, LON0, LAT0]},
    ],
)
def test_validate_accepts_valid_geometries(geom: dict[str, Any]) -> None:
    assert validate_geometry(geom) == geom


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ([141.35, 43.06], "geometry: a GeoJSON geometry must be a JSON object, got array"),
        ({"coordinates": [1, 2]}, "type: missing"),
        ({"type": "Circle", "coordinates": [1, 2]}, "type: expected one of Point, MultiPoint"),
        ({"type": "point", "coordinates": [1, 2]}, "got 'point'"),
        ({"type": "Point"}, "coordinates: missing"),
        (
            {"type": "Point", "coordinates": "141,43"},
            "coordinates: expected a position (array of 2 or 3 numbers), got string",
        ),
        ({"type": "Point", "coordinates": [141]}, "coordinates: a position must have 2 or 3 numbers"),
        ({"type": "Point", "coordinates": [141, 43, 0, 1]}, "got 4"),
        ({"type": "Point", "coordinates": [True, 43]}, "coordinates[0]: expected a number, got boolean"),
        ({"type": "Point", "coordinates": [141, "43"]}, "coordinates[1]: expected a number, got string"),
        ({"type": "Point", "coordinates": [141, None]}, "coordinates[1]: expected a number, got null"),
        ({"type": "Point", "coordinates": [math.nan, 43]}, "coordinates[0]: nan is not a finite number"),
        ({"type": "Point", "coordinates": [141, 43, math.inf]}, "coordinates[2]: inf is not a finite number"),
        ({"type": "Point", "coordinates": [181, 43]}, "coordinates: longitude 181 is outside -180..180"),
        ({"type": "Point", "coordinates": [141, -90.5]}, "coordinates: latitude -90.5 is outside -90..90"),
        (
            {"type": "Polygon", "coordinates": [[[141, 43], [142, 43], [142, 95], [141, 43]]]},
            "coordinates[0][2]: latitude 95 is outside -90..90",
        ),
        ({"type": "MultiPoint", "coordinates": []}, "coordinates: must not be empty"),
        ({"type": "MultiPoint", "coordinates": [[141, 43], 7]}, "coordinates[1]: expected a position"),
        (
            {"type": "LineString", "coordinates": [[141, 43]]},
            "coordinates: a LineString needs at least 2 positions, got 1",
        ),
        ({"type": "LineString", "coordinates": [141, 43]}, "coordinates[0]: expected a position"),
        (
            {"type": "MultiLineString", "coordinates": [[[141, 43], [142, 43]], [[141, 43]]]},
            "coordinates[1]: a LineString needs at least 2 positions, got 1",
        ),
        ({"type": "Polygon", "coordinates": []}, "coordinates: a Polygon needs at least one linear ring"),
        (
            {"type": "Polygon", "coordinates": [[[141, 43], [142, 43], [141, 43]]]},
            "coordinates[0]: a linear ring needs at least 4 positions, got 3",
        ),
        (
            {"type": "Polygon", "coordinates": [[[141, 43], [142, 43], [142, 44], [141, 44]]]},
            "coordinates[0]: a linear ring must be closed",
        ),
        (
            {"type": "Polygon", "coordinates": [[141, 43], [142, 43], [142, 44], [141, 43]]},
            "coordinates[0][0]: expected a position (array of 2 or 3 numbers), got number",
        ),
        (
            {
                "type": "MultiPolygon",
                "coordinates": [around(0.1), [[[141, 43], [142, 43], [142, 44], [141, 44]]]],
            },
            "coordinates[1][0]: a linear ring must be closed",
        ),
        ({"type": "GeometryCollection"}, "geometries: missing"),
        ({"type": "GeometryCollection", "geometries": []}, "geometries: must not be empty"),
        (
            {"type": "GeometryCollection", "geometries": [point(1, 2), point(1, 95)]},
            "geometries[1].coordinates: latitude 95 is outside -90..90",
        ),
        (
            {"type": "GeometryCollection", "geometries": [point(1, 2), "x"]},
            "geometries[1]: a GeoJSON geometry must be a JSON object, got string",
        ),
        ({"type": "Point", "coordinates": [1, 2], "bbox": [1, 2, 1]}, "bbox: expected an array of 4 or 6"),
    ],
)
def test_validate_rejects_with_path_in_message(obj: object, message: str) -> None:
    with pytest.raises(GeoError) as err:
        validate_geometry(obj)
    assert message in str(err.value)
    assert isinstance(err.value, ValueError)


def test_validate_bounds_geometry_collection_nesting() -> None:
    geom: dict[str, Any] = point(LON0, LAT0)
    for _ in range(8):
        geom = {"type": "GeometryCollection", "geometries": [geom]}
    assert validate_geometry(geom) == geom
    with pytest.raises(GeoError, match="nested more than 8 deep"):
        validate_geometry({"type": "GeometryCollection", "geometries": [geom]})


def test_validate_nested_ring_position_type_error_path() -> None:
    bad = {
        "type": "MultiPolygon",
        "coordinates": [around(0.1), [[[141, 43], [142, "43"], [142, 44], [141, 43]]]],
    }
    with pytest.raises(GeoError, match=r"^coordinates\[1\]\[0\]\[1\]\[1\]: expected a number, got string$"):
        validate_geometry(bad)


# geometry_bbox ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("geom", "expected"),
    [
        (point(LON0, LAT0), (LON0, LAT0, LON0, LAT0)),
        ({"type": "MultiPoint", "coordinates": [[141, 44], [142, 43]]}, (141, 43, 142, 44)),
        ({"type": "LineString", "coordinates": [[142, 43, 100], [141, 44]]}, (141, 43, 142, 44)),
        (
            {
                "type": "MultiLineString",
                "coordinates": [[[141, 43], [141.5, 43.5]], [[140, 45], [140.5, 45.5]]],
            },
            (140, 43, 141.5, 45.5),
        ),
        (polygon(141, 43, 142, 44), (141, 43, 142, 44)),
        (
            {"type": "MultiPolygon", "coordinates": [box(141, 43, 142, 44), box(145, 42, 146, 43)]},
            (141, 42, 146, 44),
        ),
        (
            {"type": "GeometryCollection", "geometries": [point(139, 41), polygon(141, 43, 142, 44)]},
            (139, 41, 142, 44),
        ),
    ],
)
def test_geometry_bbox(geom: dict[str, Any], expected: tuple[float, ...]) -> None:
    got = geometry_bbox(geom)
    assert got == expected
    assert all(isinstance(v, float) for v in got)


# distances -------------------------------------------------------------------------------------


def test_haversine_known_values() -> None:
    # One degree along the equator / a meridian is R·π/180 on the sphere.
    assert haversine_m(0, 0, 1, 0) == pytest.approx(111_195.08, abs=0.01)
    assert haversine_m(LON0, 43.0, LON0, 44.0) == pytest.approx(111_195.08, abs=0.01)
    # 0.009° of latitude in Sapporo is ~1 km.
    assert haversine_m(LON0, LAT0, LON0, LAT0 + 0.009) == pytest.approx(1000.76, abs=0.01)
    # Antipodes: half the circumference; identical points: zero; symmetric.
    assert haversine_m(0, 0, 180, 0) == pytest.approx(math.pi * EARTH_RADIUS_M)
    assert haversine_m(LON0, LAT0, LON0, LAT0) == 0.0
    assert haversine_m(141, 43, 142, 44) == haversine_m(142, 44, 141, 43)
    # Longitude wraps across the antimeridian.
    assert haversine_m(179.995, 0, -179.995, 0) == pytest.approx(0.01 * M_PER_DEG_LAT)


def test_one_km_in_sapporo_matches_the_wgs84_ellipsoid_within_one_percent() -> None:
    phi = math.radians(LAT0)
    w = 1 - WGS84_E2 * math.sin(phi) ** 2
    meridian_radius = WGS84_A * (1 - WGS84_E2) / w**1.5
    prime_vertical_radius = WGS84_A / math.sqrt(w)
    # Points exactly 1 km north and 1 km east on the ellipsoid.
    lat_north = LAT0 + math.degrees(1000 / meridian_radius)
    lon_east = LON0 + math.degrees(1000 / (prime_vertical_radius * math.cos(phi)))
    assert distance_m(point(LON0, lat_north), (LON0, LAT0)) == pytest.approx(1000, rel=0.01)
    assert distance_m(point(lon_east, LAT0), (LON0, LAT0)) == pytest.approx(1000, rel=0.01)


def test_distance_to_lines_polygons_and_multipoints() -> None:
    # A parallel segment 1 km south of the point: nearest point is straight south.
    south = LAT0 - 1000 / M_PER_DEG_LAT
    line = {"type": "LineString", "coordinates": [[LON0 - 0.05, south], [LON0 + 0.05, south]]}
    assert distance_m(line, (LON0, LAT0)) == pytest.approx(1000, rel=1e-6)
    # Inside a polygon, on its boundary, and outside a hole.
    assert distance_m({"type": "Polygon", "coordinates": around(0.1)}, (LON0, LAT0)) == 0.0
    assert distance_m(polygon(LON0, LAT0, LON0 + 0.1, LAT0 + 0.1), (LON0, LAT0)) == 0.0
    holed = {
        "type": "Polygon",
        "coordinates": [*around(0.1), box(LON0 - 0.009, LAT0 - 0.009, LON0 + 0.009, LAT0 + 0.009)[0]],
    }
    # The hole is square in degrees, so its nearest edges are the meridian ones, 0.009° of longitude away.
    assert distance_m(holed, (LON0, LAT0)) == pytest.approx(
        haversine_m(LON0, LAT0, LON0 + 0.009, LAT0), rel=1e-6
    )
    assert distance_m(holed, (LON0, LAT0)) == pytest.approx(731.19, abs=0.01)
    # A polygon whose western edge is 2 km east of the point (meridian edge, same latitude range).
    east = east_of(LON0, LAT0, 2000)
    assert distance_m(polygon(east, LAT0 - 0.05, east + 0.1, LAT0 + 0.05), (LON0, LAT0)) == pytest.approx(
        2000, rel=1e-4
    )
    # MultiPoint and GeometryCollection: the nearest member wins.
    mp = {"type": "MultiPoint", "coordinates": [[LON0, LAT0 + 0.1], [LON0, LAT0 + 0.009], [LON0, LAT0 - 0.5]]}
    assert distance_m(mp, (LON0, LAT0)) == pytest.approx(1000.76, abs=0.01)
    gc = {"type": "GeometryCollection", "geometries": [point(LON0, LAT0 + 0.1), line]}
    assert distance_m(gc, (LON0, LAT0)) == pytest.approx(1000, rel=1e-6)
    # 3D coordinates are accepted and the altitude ignored.
    line3d = {"type": "LineString", "coordinates": [[LON0 - 0.05, south, 10.0], [LON0 + 0.05, south, 99.0]]}
    assert distance_m(line3d, (LON0, LAT0)) == pytest.approx(1000, rel=1e-6)


def test_distance_from_the_pole() -> None:
    line = {"type": "LineString", "coordinates": [[0, 89], [90, 89.5], [180, 89]]}
    assert distance_m(line, (0.0, 90.0)) == pytest.approx(0.5 * M_PER_DEG_LAT)


@settings(max_examples=150, deadline=None)
@given(
    lon0=st.floats(139.5, 145.5),
    lat0=st.floats(41.5, 45.3),
    offsets=st.lists(st.tuples(st.floats(-0.6, 0.6), st.floats(-0.45, 0.45)), min_size=2, max_size=4),
)
def test_line_distance_agrees_with_brute_force(
    lon0: float, lat0: float, offsets: list[tuple[float, float]]
) -> None:
    coords = [[lon0 + dx, lat0 + dy] for dx, dy in offsets]
    line = shapely.LineString(coords)
    assume(line.length > 1e-6)
    got = distance_m({"type": "LineString", "coordinates": coords}, (lon0, lat0))
    # Brute force: vectorized haversine to a dense sampling (~2 m) of the straight lon/lat edges.
    dense = np.radians(shapely.get_coordinates(shapely.segmentize(line, 0.00002)))
    lam0, phi0 = math.radians(lon0), math.radians(lat0)
    h = (
        np.sin((dense[:, 1] - phi0) / 2) ** 2
        + math.cos(phi0) * np.cos(dense[:, 1]) * np.sin((dense[:, 0] - lam0) / 2) ** 2
    )
    brute = float(np.min(2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.minimum(h, 1.0)))))
    # The sampled minimum overestimates the true one by up to half a sample step (~1.1 m); the module's
    # distance is that to an actual point of the line, picked in a local plane, so it agrees within 0.01 %.
    assert got == pytest.approx(brute, rel=1e-4, abs=1.5)


# parse_geo_query -------------------------------------------------------------------------------


def test_parse_near_from_url_parameters() -> None:
    gq = q("near;maxDistance==2000", "Point", "[141.35,43.06]")
    assert gq == GeoQuery(
        georel="near",
        geometry=point(LON0, LAT0),
        geoproperty="location",
        max_distance=2000.0,
        min_distance=None,
    )
    assert gq.point == (LON0, LAT0)
    assert gq.georel_text == "near;maxDistance==2000"
    assert gq.as_geoq() == {
        "georel": "near;maxDistance==2000",
        "geometry": "Point",
        "coordinates": [LON0, LAT0],
        "geoproperty": "location",
    }


def test_parse_variants() -> None:
    body = q("within", "Polygon", around(0.1), "observedAt_location")  # decoded POST body array
    assert body.georel == "within"
    assert body.geoproperty == "observedAt_location"
    assert body.geometry == {"type": "Polygon", "coordinates": around(0.1)}
    assert body.point is None
    # Keywords are case-insensitive (ABNF literals); whitespace around parts is tolerated.
    gq = q(" NEAR ; MinDistance==10.5 ; maxdistance==1e3 ", "point", " [141.35, 43.06] ")
    assert (gq.georel, gq.min_distance, gq.max_distance) == ("near", 10.5, 1000.0)
    assert gq.geometry["type"] == "Point"
    assert gq.georel_text == "near;maxDistance==1000;minDistance==10.5"
    assert q("near;minDistance==0", "Point", (LON0, LAT0)).min_distance == 0.0
    for rel in ("within", "contains", "intersects", "disjoint", "overlaps", "equals"):
        assert q(rel, "MultiPoint", "[[141,43],[142,44]]").georel == rel
    assert q("intersects", "LineString", "[[141,43],[142,44]]").geometry["coordinates"] == [
        [141, 43],
        [142, 44],
    ]


def test_geo_query_is_frozen_and_hashable() -> None:
    gq = q("within", "Polygon", around(0.1))
    with pytest.raises(dataclasses.FrozenInstanceError):
        gq.georel = "near"  # type: ignore[misc]
    assert hash(gq) == hash(q("within", "Polygon", around(0.1)))
    assert gq.shape is gq.shape
    assert shapely.equals(gq.shape, shapely.box(LON0 - 0.1, LAT0 - 0.1, LON0 + 0.1, LAT0 + 0.1))


def test_geo_query_survives_pickle_and_deepcopy_after_use() -> None:
    gq = q("intersects", "Polygon", around(0.1))
    assert gq.matches(SAPPORO)
    for clone in (pickle.loads(pickle.dumps(gq)), copy.deepcopy(gq)):
        assert clone == gq
        assert clone.matches(SAPPORO)
        assert not clone.matches(ASAHIKAWA)


def test_shared_query_matches_consistently_from_many_threads() -> None:
    targets = [
        BIG,
        SMALL,
        HALF_OVERLAP,
        LINE_CROSSING,
        LINE_FAR,
        MULTI_SPLIT,
        SAPPORO,
        ASAHIKAWA,
        ON_EDGE,
    ] * 50
    queries = [q(rel, "Polygon", around(0.05)) for rel in ("within", "contains", "intersects", "overlaps")]
    expected = [[fresh.matches(t) for t in targets] for fresh in (dataclasses.replace(x) for x in queries)]

    def run(_: int) -> list[list[bool]]:
        return [[gq.matches(t) for t in targets] for gq in queries]

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(run, range(16)))
    assert all(r == expected for r in results)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((None, "Point", "[1,2]"), "georel is missing"),
        (("near;maxDistance==1", None, "[1,2]"), "geometry is missing"),
        (("near;maxDistance==1", "Point", None), "coordinates is missing"),
        (("within", "Point", "  "), "coordinates is missing"),
        ((None, None, None), "georel, geometry, coordinates are missing"),
        (("nearby", "Point", "[1,2]"), "georel: unknown geo-relationship 'nearby'"),
        (("near", "Point", "[1,2]"), "georel: near needs a distance"),
        (("near;", "Point", "[1,2]"), "georel: near needs a distance"),
        (
            ("near;maxDistance=2000", "Point", "[1,2]"),
            "georel: expected maxDistance==<m> or minDistance==<m>",
        ),
        (("near;radius==2000", "Point", "[1,2]"), "got 'radius==2000'"),
        (("near;maxDistance==abc", "Point", "[1,2]"), "georel: maxDistance must be a non-negative number"),
        (("near;maxDistance==-5", "Point", "[1,2]"), "georel: maxDistance must be a non-negative number"),
        (("near;minDistance==inf", "Point", "[1,2]"), "georel: minDistance must be a non-negative number"),
        (("near;maxDistance==1e999", "Point", "[1,2]"), "georel: maxDistance '1e999' is too large"),
        (
            ("near;maxDistance==1;maxDistance==2", "Point", "[1,2]"),
            "georel: maxDistance given more than once",
        ),
        (("near;maxDistance==10;minDistance==20", "Point", "[1,2]"), "minDistance 20 exceeds maxDistance 10"),
        (
            ("within;maxDistance==10", "Polygon", "[[[1,2],[2,2],[2,3],[1,2]]]"),
            "georel: within takes no modifiers",
        ),
        (
            ("near;maxDistance==10", "Polygon", "[[[1,2],[2,2],[2,3],[1,2]]]"),
            "geometry: georel near needs a Point reference geometry, got Polygon",
        ),
        (("within", "Circle", "[1,2]"), "geometry: expected one of Point, MultiPoint"),
        (("within", "GeometryCollection", "[]"), "geometry: expected one of"),
        (("within", "Point", "[141.35,43.06"), "coordinates: not valid JSON"),
        (("within", "Point", '{"lon": 1}'), "coordinates: expected a JSON array, got object"),
        (("within", "Point", 141.35), "coordinates: expected a JSON array, got number"),
        (("within", "Point", "[[141.35,43.06]]"), "coordinates[0]: expected a number, got array"),
        (("within", "Point", "[141.35,95]"), "coordinates: latitude 95 is outside -90..90"),
        (("within", "Point", "[141.35,NaN]"), "coordinates[1]: nan is not a finite number"),
        (("within", "LineString", "[[141.35,43.06]]"), "a LineString needs at least 2 positions"),
        (("within", "Polygon", "[[[141,43],[142,43],[142,44],[141,44]]]"), "a linear ring must be closed"),
    ],
)
def test_parse_errors(args: tuple[Any, Any, Any], message: str) -> None:
    with pytest.raises(GeoError) as err:
        parse_geo_query(*args, None)
    assert message in str(err.value)


def test_self_intersecting_query_polygon_is_repaired() -> None:
    bowtie = q("within", "Polygon", "[[[0,0],[1,1],[1,0],[0,1],[0,0]]]")
    assert bowtie.matches({"type": "Point", "coordinates": [0.2, 0.5]})
    assert not bowtie.matches({"type": "Point", "coordinates": [0.5, 0.2]})


def test_parse_rejects_pathologically_nested_json() -> None:
    with pytest.raises(GeoError, match="coordinates: the JSON array is nested too deeply"):
        q("within", "Polygon", "[" * 100_000 + "]" * 100_000)


def test_parse_rejects_empty_geoproperty() -> None:
    with pytest.raises(GeoError, match="geoproperty: must be a non-empty attribute name"):
        q("within", "Point", "[1,2]", " ")


# predicates around Sapporo ---------------------------------------------------------------------

BIG = {"type": "Polygon", "coordinates": around(0.1)}
SMALL = {"type": "Polygon", "coordinates": around(0.01)}
ASAHIKAWA = point(142.365, 43.771)
SAPPORO = point(LON0, LAT0)
LINE_INSIDE = {"type": "LineString", "coordinates": [[LON0 - 0.05, LAT0], [LON0 + 0.05, LAT0 + 0.02]]}
LINE_CROSSING = {"type": "LineString", "coordinates": [[LON0, LAT0], [LON0 + 0.5, LAT0]]}
LINE_FAR = {"type": "LineString", "coordinates": [[142.3, 43.7], [142.4, 43.8]]}
MULTI_IN = {
    "type": "MultiPolygon",
    "coordinates": [around(0.01), box(LON0 + 0.05, LAT0, LON0 + 0.06, LAT0 + 0.01)],
}
MULTI_SPLIT = {"type": "MultiPolygon", "coordinates": [around(0.01), box(142.3, 43.7, 142.4, 43.8)]}
HALF_OVERLAP = polygon(LON0, LAT0, LON0 + 0.2, LAT0 + 0.2)
ON_EDGE = point(LON0 + 0.1, LAT0)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (SAPPORO, True),
        (ASAHIKAWA, False),
        (ON_EDGE, False),  # OGC: a point on the boundary is not within
        (SMALL, True),
        (BIG, True),  # a geometry is within itself
        (HALF_OVERLAP, False),
        (LINE_INSIDE, True),
        (LINE_CROSSING, False),
        (LINE_FAR, False),
        (MULTI_IN, True),
        (MULTI_SPLIT, False),
        ({"type": "GeometryCollection", "geometries": [SAPPORO, SMALL]}, True),
    ],
)
def test_within_big_square(target: dict[str, Any], expected: bool) -> None:
    assert q("within", "Polygon", around(0.1)).matches(target) is expected


def test_within_multipolygon_query() -> None:
    gq = q("within", "MultiPolygon", [around(0.01), box(142.3, 43.7, 142.4, 43.8)])
    assert gq.matches(SAPPORO)
    assert gq.matches(ASAHIKAWA)
    assert not gq.matches(point(LON0 + 0.5, LAT0))
    assert not gq.matches(LINE_CROSSING)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (BIG, True),
        (SMALL, True),
        (SAPPORO, True),  # a point contains an equal point
        (point(LON0, LAT0 + 0.001), False),
        (polygon(142.3, 43.7, 142.4, 43.8), False),
        (LINE_CROSSING, False),  # the point is the line's end point: boundary, not interior
        ({"type": "LineString", "coordinates": [[LON0 - 0.1, LAT0], [LON0 + 0.1, LAT0]]}, True),
        (MULTI_SPLIT, True),
    ],
)
def test_contains_sapporo_point(target: dict[str, Any], expected: bool) -> None:
    assert q("contains", "Point", [LON0, LAT0]).matches(target) is expected


def test_contains_polygon_query() -> None:
    gq = q("contains", "Polygon", around(0.01))
    assert gq.matches(BIG)
    assert not gq.matches(HALF_OVERLAP)
    assert not gq.matches(SAPPORO)


@pytest.mark.parametrize(
    ("target", "intersects"),
    [
        (SAPPORO, True),
        (ON_EDGE, True),  # touching the boundary counts
        (ASAHIKAWA, False),
        (LINE_CROSSING, True),
        (LINE_FAR, False),
        (HALF_OVERLAP, True),
        (polygon(LON0 + 0.1, LAT0, LON0 + 0.2, LAT0 + 0.1), True),  # shares an edge
        (MULTI_SPLIT, True),
        ({"type": "MultiPolygon", "coordinates": [box(142.3, 43.7, 142.4, 43.8)]}, False),
        ({"type": "MultiPoint", "coordinates": [[142.0, 44.0], [LON0, LAT0]]}, True),
    ],
)
def test_intersects_and_disjoint_are_complements(target: dict[str, Any], intersects: bool) -> None:
    assert q("intersects", "Polygon", around(0.1)).matches(target) is intersects
    assert q("disjoint", "Polygon", around(0.1)).matches(target) is not intersects


def test_intersects_line_query() -> None:
    gq = q("intersects", "LineString", [[LON0 - 1, LAT0], [LON0 + 1, LAT0]])
    assert gq.matches(SAPPORO)
    assert gq.matches(BIG)
    assert not gq.matches(point(LON0, LAT0 + 0.0001))
    assert gq.matches({"type": "LineString", "coordinates": [[LON0, LAT0 - 1], [LON0, LAT0 + 1]]})


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (HALF_OVERLAP, True),
        (SMALL, False),  # fully inside: not an overlap
        (BIG, False),  # identical: not an overlap
        (polygon(142.3, 43.7, 142.4, 43.8), False),
        (polygon(LON0 + 0.1, LAT0, LON0 + 0.2, LAT0 + 0.1), False),  # touching only
        (SAPPORO, False),  # different dimension
        (LINE_CROSSING, False),  # different dimension
        ({"type": "MultiPolygon", "coordinates": [box(LON0, LAT0, LON0 + 0.2, LAT0 + 0.2)]}, True),
    ],
)
def test_overlaps(target: dict[str, Any], expected: bool) -> None:
    assert q("overlaps", "Polygon", around(0.1)).matches(target) is expected


def test_equals_is_topological() -> None:
    gq = q("equals", "Polygon", around(0.1))
    ring = around(0.1)[0]
    rotated_reversed = [list(reversed(ring[1:] + ring[1:2]))]
    assert rotated_reversed[0][0] != ring[0]
    assert gq.matches({"type": "Polygon", "coordinates": rotated_reversed})
    assert gq.matches({"type": "MultiPolygon", "coordinates": [around(0.1)]})
    assert not gq.matches(SMALL)
    assert not gq.matches(SAPPORO)
    assert q("equals", "Point", [LON0, LAT0]).matches(point(LON0, LAT0))
    assert q("equals", "Point", [LON0, LAT0]).matches({"type": "Point", "coordinates": [LON0, LAT0, 35.0]})
    assert not q("equals", "Point", [LON0, LAT0]).matches(point(LON0, LAT0 + 1e-7))
    # A line with an extra collinear vertex is topologically equal.
    gl = q("equals", "LineString", [[141, 43], [142, 43]])
    assert gl.matches({"type": "LineString", "coordinates": [[142, 43], [141.5, 43], [141, 43]]})


def test_a_self_intersecting_polygon_equals_contains_and_lies_within_itself() -> None:
    """An invalid (bow-tie) reference polygon is repaired before comparing: a stored target with the very
    same coordinates gets the same repair, so it still equals itself (the ETSI suite's 019_11_01 shape)."""
    ring = [[13.2865906, 52.5648645], [13.2879639, 52.5648645], [13.2797241, 52.4988679],
            [13.477478, 52.4712703], [13.5049438, 52.5373084], [13.2865906, 52.5648645]]
    assert not shapely.is_valid(shapely.Polygon(ring))
    same = {"type": "Polygon", "coordinates": [ring]}
    for rel in ("equals", "within", "contains", "intersects"):
        assert q(rel, "Polygon", [ring]).matches(same), rel
    assert not q("disjoint", "Polygon", [ring]).matches(same)
    assert not q("equals", "Polygon", [ring]).matches({"type": "Polygon", "coordinates": around(0.1)})


def test_near_points_one_km_apart() -> None:
    one_km = point(LON0, LAT0 + 0.009)  # 1000.76 m north
    assert q("near;maxDistance==1010", "Point", [LON0, LAT0]).matches(one_km)
    assert not q("near;maxDistance==990", "Point", [LON0, LAT0]).matches(one_km)
    assert q("near;minDistance==990", "Point", [LON0, LAT0]).matches(one_km)
    assert not q("near;minDistance==1010", "Point", [LON0, LAT0]).matches(one_km)
    assert q("near;minDistance==900;maxDistance==1100", "Point", [LON0, LAT0]).matches(one_km)
    assert not q("near;minDistance==900;maxDistance==1100", "Point", [LON0, LAT0]).matches(SAPPORO)
    assert q("near;maxDistance==0", "Point", [LON0, LAT0]).matches(SAPPORO)
    east = point(east_of(LON0, LAT0, 1000), LAT0)
    assert q("near;maxDistance==1001", "Point", [LON0, LAT0]).matches(east)
    assert not q("near;maxDistance==999", "Point", [LON0, LAT0]).matches(east)


def test_near_non_point_targets() -> None:
    # Sapporo ↔ Asahikawa is about 114 km.
    assert 110_000 < distance_m(ASAHIKAWA, (LON0, LAT0)) < 118_000
    edge = east_of(LON0, LAT0, 500)
    target = polygon(edge, LAT0 - 0.01, edge + 0.01, LAT0 + 0.01)
    assert q("near;maxDistance==510", "Point", [LON0, LAT0]).matches(target)
    assert not q("near;maxDistance==490", "Point", [LON0, LAT0]).matches(target)
    assert q("near;maxDistance==0", "Point", [LON0, LAT0]).matches(BIG)  # inside a polygon
    assert not q("near;minDistance==1", "Point", [LON0, LAT0]).matches(BIG)
    assert q("near;maxDistance==120000", "Point", [LON0, LAT0]).matches(LINE_FAR)
    assert not q("near;maxDistance==100000", "Point", [LON0, LAT0]).matches(LINE_FAR)
    assert q("near;maxDistance==10", "Point", [LON0, LAT0]).matches(MULTI_SPLIT)
    mp = {"type": "MultiPoint", "coordinates": [[142.0, 44.0], [LON0, LAT0 + 0.009]]}
    assert q("near;maxDistance==1010", "Point", [LON0, LAT0]).matches(mp)
    assert not q("near;maxDistance==990", "Point", [LON0, LAT0]).matches(mp)


def test_query_distance_helper() -> None:
    assert q("near;maxDistance==5", "Point", [LON0, LAT0]).distance(
        point(LON0, LAT0 + 0.009)
    ) == pytest.approx(1000.76, abs=0.01)
    with pytest.raises(GeoError, match="only defined for a Point"):
        q("within", "Polygon", around(0.1)).distance(SAPPORO)


class _NoShapely:
    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"shapely.{name} used on a hot path")


def test_point_fast_paths_build_no_shapely_objects(monkeypatch: pytest.MonkeyPatch) -> None:
    near = q("near;maxDistance==2000", "Point", [LON0, LAT0])
    within = q("within", "Polygon", around(0.1))
    within.matches(SAPPORO)  # build and cache the prepared query geometry first
    monkeypatch.setattr(geo, "shapely", _NoShapely())
    assert near.matches(point(LON0, LAT0 + 0.009))
    assert not near.matches(ASAHIKAWA)
    assert near.matches({"type": "MultiPoint", "coordinates": [[142.0, 44.0], [LON0, LAT0]]})
    assert distance_m(SAPPORO, (LON0, LAT0 + 0.009)) == pytest.approx(1000.76, abs=0.01)
    with pytest.raises(AssertionError, match="shapely"):  # sanity: the guard is active
        near.matches(LINE_FAR)


def test_invalid_stored_polygon_does_not_crash() -> None:
    bowtie = {
        "type": "Polygon",
        "coordinates": [
            [
                [LON0 - 0.01, LAT0 - 0.01],
                [LON0 + 0.01, LAT0 + 0.01],
                [LON0 + 0.01, LAT0 - 0.01],
                [LON0 - 0.01, LAT0 + 0.01],
                [LON0 - 0.01, LAT0 - 0.01],
            ]
        ],
    }
    for rel in ("within", "contains", "intersects", "disjoint", "overlaps", "equals"):
        assert isinstance(q(rel, "Polygon", around(0.1)).matches(bowtie), bool)
    assert q("intersects", "Polygon", around(0.1)).matches(bowtie)


# bbox ------------------------------------------------------------------------------------------


def test_bbox_per_georel() -> None:
    assert q("within", "Polygon", around(0.1)).bbox() == pytest.approx(
        (LON0 - 0.1, LAT0 - 0.1, LON0 + 0.1, LAT0 + 0.1)
    )
    assert q("contains", "Point", [LON0, LAT0]).bbox() == (LON0, LAT0, LON0, LAT0)
    assert q("intersects", "LineString", [[141, 43], [142, 44]]).bbox() == (141, 43, 142, 44)
    assert q("overlaps", "MultiPolygon", [box(141, 43, 142, 44), box(145, 42, 146, 43)]).bbox() == (
        141,
        42,
        146,
        44,
    )
    assert q("equals", "MultiPoint", [[141, 44], [142, 43]]).bbox() == (141, 43, 142, 44)
    assert q("disjoint", "Polygon", around(0.1)).bbox() is None
    assert q("near;minDistance==10", "Point", [LON0, LAT0]).bbox() is None


def test_near_bbox_is_tight_around_sapporo() -> None:
    d = 2000.0
    bb = q(f"near;maxDistance=={d}", "Point", [LON0, LAT0]).bbox()
    assert bb is not None
    min_lon, min_lat, max_lon, max_lat = bb
    # Half-heights/widths in metres are the distance itself (to well under a millimetre).
    assert (max_lat - LAT0) * M_PER_DEG_LAT == pytest.approx(d, abs=1e-3)
    assert (LAT0 - min_lat) * M_PER_DEG_LAT == pytest.approx(d, abs=1e-3)
    assert haversine_m(LON0, LAT0, max_lon, LAT0) == pytest.approx(d, rel=1e-6)
    assert haversine_m(LON0, LAT0, min_lon, LAT0) == pytest.approx(d, rel=1e-6)
    # With minDistance as well, the box is still that of maxDistance.
    assert q(f"near;minDistance==500;maxDistance=={d}", "Point", [LON0, LAT0]).bbox() == bb


def test_near_bbox_antimeridian_and_pole() -> None:
    gq = q("near;maxDistance==5000", "Point", [179.99, 0.0])
    across = point(-179.995, 0.0)  # ~1.7 km away across the antimeridian
    assert gq.matches(across)
    assert inside(gq.bbox(), -179.995, 0.0)
    bb = q("near;maxDistance==5000", "Point", [10.0, 89.99]).bbox()
    assert bb is not None and bb[0] == -180.0 and bb[2] == 180.0 and bb[3] == 90.0
    assert q("near;maxDistance==1e8", "Point", [LON0, LAT0]).bbox() == (-180.0, -90.0, 180.0, 90.0)


@settings(max_examples=400, deadline=None)
@given(
    lon0=st.floats(139.3, 146.0),
    lat0=st.floats(41.3, 45.6),
    max_distance=st.floats(10.0, 50_000.0),
    bearing=st.floats(0.0, 2 * math.pi),
    fraction=st.one_of(st.floats(0.0, 1.3), st.floats(0.995, 1.005)),
)
def test_near_bbox_contains_every_matching_point(
    lon0: float, lat0: float, max_distance: float, bearing: float, fraction: float
) -> None:
    gq = q(f"near;maxDistance=={max_distance!r}", "Point", [lon0, lat0])
    r = fraction * max_distance
    lat = lat0 + r * math.cos(bearing) / M_PER_DEG_LAT
    lon = lon0 + r * math.sin(bearing) / (M_PER_DEG_LAT * math.cos(math.radians(lat0)))
    target = point(lon, lat)
    if gq.matches(target):
        assert inside(gq.bbox(), lon, lat)
    if fraction < 0.99:
        assert gq.matches(target)  # the offset construction is accurate to well under 1 %
        assert inside(gq.bbox(), lon, lat)


@settings(max_examples=200, deadline=None)
@given(
    lon0=st.floats(139.3, 146.0),
    lat0=st.floats(41.3, 45.6),
    max_distance=st.floats(10.0, 50_000.0),
    ends=st.tuples(st.floats(-1.5, 1.5), st.floats(-1.5, 1.5), st.floats(-1.5, 1.5), st.floats(-1.5, 1.5)),
)
def test_near_bbox_intersects_every_matching_line(
    lon0: float, lat0: float, max_distance: float, ends: tuple[float, float, float, float]
) -> None:
    scale = max_distance / M_PER_DEG_LAT  # offsets in units of the search radius
    coords = [
        [lon0 + ends[0] * scale, lat0 + ends[1] * scale],
        [lon0 + ends[2] * scale, lat0 + ends[3] * scale],
    ]
    assume(coords[0] != coords[1])
    gq = q(f"near;maxDistance=={max_distance!r}", "Point", [lon0, lat0])
    bb = gq.bbox()
    assert bb is not None
    if gq.matches({"type": "LineString", "coordinates": coords}):
        assert shapely.intersects(shapely.box(*bb), shapely.LineString(coords))


@settings(max_examples=200, deadline=None)
@given(lon=st.floats(140.9, 141.8), lat=st.floats(42.6, 43.5))
def test_relation_bbox_contains_matching_points(lon: float, lat: float) -> None:
    for rel in ("within", "intersects", "equals"):
        gq = q(rel, "Polygon", around(0.1))
        if gq.matches(point(lon, lat)):
            assert inside(gq.bbox(), lon, lat)
