"""Geo-queries for the NGSI-LD broker (ETSI GS CIM 009 v1.8, clause 4.10).

This module validates GeoJSON geometries (RFC 7946, WGS84 longitude/latitude in degrees), parses
the ``georel`` / ``geometry`` / ``coordinates`` / ``geoproperty`` query parameters into a
:class:`GeoQuery`, and evaluates that query exactly against stored geometries.

Public API
----------
``GeoError``
    ``ValueError`` subclass; the message names the offending member (the API layer turns it into
    a 400 ``BadRequestData``).
``validate_geometry(obj) -> dict``
    Structural validation of a GeoJSON geometry; returns a normalized copy (tuples become lists).
``parse_geo_query(georel, geometry, coordinates, geoproperty) -> GeoQuery``
    Parses the geo-query members as they arrive in a URL query or a POST ``/entityOperations/query``
    body.
``GeoQuery.matches(geom) -> bool``, ``GeoQuery.bbox()``, ``GeoQuery.as_geoq()``
    Exact predicate, index prefilter box, and the NGSI-LD ``GeoQuery`` JSON representation.
``geometry_bbox(geom)``, ``distance_m(geom, point)``
    Bounding box of a stored geometry (for the spatial index) and geodesic distance in metres.

Semantics and accuracy
----------------------
* Predicates are evaluated in the planar lon/lat plane, as RFC 7946 section 3.1.1 prescribes for
  edges ("straight lines in the coordinate reference system"). ``within`` means *target within
  query geometry*, ``contains`` means *target contains query geometry*; ``intersects``,
  ``disjoint``, ``overlaps`` and ``equals`` (topological equality) are the OGC/shapely predicates,
  which are symmetric. Altitudes are carried but ignored by every predicate.
* ``near`` requires a ``Point`` query geometry. Distances are great-circle distances on a sphere of
  radius :data:`EARTH_RADIUS_M` (the IUGG mean radius); against the WGS84 ellipsoid this is
  within about 0.5 %.
  - Point and MultiPoint targets use a pure-math haversine; no shapely object is built.
  - Other targets are mapped into a local equirectangular plane centred on the query point
    (``x = Δlon·cos(lat0)``, ``y = Δlat``). That map is affine in lon/lat, so straight GeoJSON
    edges stay straight and containment is exact; shapely finds the nearest point of the target in
    that plane, the point is mapped back to lon/lat (it lies on the target), and the reported
    distance is the haversine distance to it. The result is therefore the exact distance to a point
    of the target, never shorter than the true minimum, and only too long by the second-order
    error of picking the nearest point under the slightly distorted local metric: for targets
    within 50 km of the query point in Hokkaido the excess is well under 0.1 % (see the tests).
  - Longitude differences of non-point targets are not wrapped across the antimeridian; point
    targets are (haversine), and :meth:`GeoQuery.bbox` widens to the full longitude range whenever
    the search circle crosses ±180°, so the index prefilter never drops a match.
* The query geometry is converted to shapely and prepared once per :class:`GeoQuery` and thread
  (GEOS prepared geometries are not thread-safe), so repeated predicate evaluations against
  thousands of candidates reuse the GEOS prepared geometry;
  Point targets of ``within``/``intersects``/``disjoint`` are first rejected (or, for
  ``disjoint``, accepted) by a pure-Python test against the reference bounding box and otherwise
  use ``contains_xy``/``intersects_xy`` without building a shapely point.
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import Any, Final, Literal, TypeAlias, cast

import numpy as np
import shapely
from shapely.errors import GEOSException
from shapely.geometry.base import BaseGeometry

__all__ = [
    "EARTH_RADIUS_M",
    "GEOMETRY_TYPES",
    "GEORELS",
    "QUERY_GEOMETRY_TYPES",
    "BBox",
    "GeoError",
    "GeoQuery",
    "GeoRel",
    "distance_m",
    "geometry_bbox",
    "haversine_m",
    "parse_geo_query",
    "validate_geometry",
]

EARTH_RADIUS_M: Final = 6_371_008.8
"""Mean Earth radius (IUGG) in metres; the sphere on which all distances are measured."""

BBox: TypeAlias = tuple[float, float, float, float]
"""(min_lon, min_lat, max_lon, max_lat) in degrees."""

GeoRel: TypeAlias = Literal["near", "within", "contains", "intersects", "disjoint", "overlaps", "equals"]

GEORELS: Final[tuple[GeoRel, ...]] = (
    "near",
    "within",
    "contains",
    "intersects",
    "disjoint",
    "overlaps",
    "equals",
)

QUERY_GEOMETRY_TYPES: Final = (
    "Point",
    "MultiPoint",
    "LineString",
    "MultiLineString",
    "Polygon",
    "MultiPolygon",
)
"""Geometry types a geo-query may name (CIM 009 clause 4.10)."""

GEOMETRY_TYPES: Final = (*QUERY_GEOMETRY_TYPES, "GeometryCollection")
"""Geometry types accepted by :func:`validate_geometry`."""

_WORLD: Final[BBox] = (-180.0, -90.0, 180.0, 90.0)
# Padding of the near-query box, in degrees (~0.1 mm): absorbs floating-point rounding so a point
# that `matches` at exactly maxDistance is never just outside the box.
_BBOX_PAD_DEG: Final = 1e-9
# RFC 7946 discourages nested GeometryCollections; a bound keeps the recursive helpers safe.
_MAX_COLLECTION_DEPTH: Final = 8
_NUMBER_RE: Final = re.compile(r"\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?")


class GeoError(ValueError):
    """An invalid geometry or geo-query; the message names the offending member."""


# --------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, list | tuple):
        return "array"
    return type(value).__name__


def _array(value: object, path: str, what: str) -> Sequence[Any]:
    if not isinstance(value, list | tuple):
        raise GeoError(f"{path}: expected {what}, got {_json_type(value)}")
    return value


def _position(value: object, path: str) -> list[int | float]:
    pos = _array(value, path, "a position (array of 2 or 3 numbers)")
    out: list[int | float] = []
    for i, num in enumerate(pos):
        if isinstance(num, bool) or not isinstance(num, int | float):
            raise GeoError(f"{path}[{i}]: expected a number, got {_json_type(num)}")
        if not math.isfinite(num):
            raise GeoError(f"{path}[{i}]: {num} is not a finite number")
        out.append(num)
    if not 2 <= len(out) <= 3:
        raise GeoError(
            f"{path}: a position must have 2 or 3 numbers (longitude, latitude[, altitude]), got {len(out)}"
        )
    lon, lat = out[0], out[1]
    if not -180 <= lon <= 180:
        raise GeoError(f"{path}: longitude {lon} is outside -180..180")
    if not -90 <= lat <= 90:
        raise GeoError(f"{path}: latitude {lat} is outside -90..90")
    return out


def _positions(value: object, path: str, minimum: int, kind: str) -> list[list[int | float]]:
    arr = _array(value, path, f"an array of positions ({kind})")
    positions = [_position(p, f"{path}[{i}]") for i, p in enumerate(arr)]  # nesting errors first
    if len(positions) < minimum:
        raise GeoError(f"{path}: a {kind} needs at least {minimum} positions, got {len(positions)}")
    return positions


def _line(value: object, path: str) -> list[list[int | float]]:
    return _positions(value, path, 2, "LineString")


def _ring(value: object, path: str) -> list[list[int | float]]:
    ring = _positions(value, path, 4, "linear ring")
    if ring[0] != ring[-1]:
        raise GeoError(
            f"{path}: a linear ring must be closed (first position {ring[0]} differs from "
            f"last position {ring[-1]})"
        )
    return ring


def _polygon(value: object, path: str) -> list[list[list[int | float]]]:
    rings = _array(value, path, "an array of linear rings (Polygon)")
    if not rings:
        raise GeoError(f"{path}: a Polygon needs at least one linear ring")
    return [_ring(r, f"{path}[{i}]") for i, r in enumerate(rings)]


def _non_empty(value: object, path: str, what: str) -> Sequence[Any]:
    arr = _array(value, path, what)
    if not arr:
        raise GeoError(f"{path}: must not be empty")
    return arr


def _coordinates(gtype: str, value: object, path: str) -> list[Any]:
    if gtype == "Point":
        return _position(value, path)
    if gtype == "MultiPoint":
        return [
            _position(p, f"{path}[{i}]")
            for i, p in enumerate(_non_empty(value, path, "an array of positions (MultiPoint)"))
        ]
    if gtype == "LineString":
        return _line(value, path)
    if gtype == "MultiLineString":
        return [
            _line(p, f"{path}[{i}]")
            for i, p in enumerate(_non_empty(value, path, "an array of LineStrings (MultiLineString)"))
        ]
    if gtype == "Polygon":
        return _polygon(value, path)
    # MultiPolygon
    return [
        _polygon(p, f"{path}[{i}]")
        for i, p in enumerate(_non_empty(value, path, "an array of Polygons (MultiPolygon)"))
    ]


def _validate(obj: object, prefix: str, depth: int = 0) -> dict[str, Any]:
    where = prefix.rstrip(".") or "geometry"
    if not isinstance(obj, Mapping):
        raise GeoError(f"{where}: a GeoJSON geometry must be a JSON object, got {_json_type(obj)}")
    if "type" not in obj:
        raise GeoError(f"{prefix}type: missing")
    gtype = obj["type"]
    if not isinstance(gtype, str) or gtype not in GEOMETRY_TYPES:
        raise GeoError(f"{prefix}type: expected one of {', '.join(GEOMETRY_TYPES)}, got {gtype!r}")
    out = dict(obj)
    if gtype == "GeometryCollection":
        if "geometries" not in obj:
            raise GeoError(f"{prefix}geometries: missing")
        if depth >= _MAX_COLLECTION_DEPTH:
            raise GeoError(
                f"{prefix}geometries: GeometryCollections nested more than {_MAX_COLLECTION_DEPTH} deep"
            )
        members = _non_empty(obj["geometries"], f"{prefix}geometries", "an array of geometries")
        out["geometries"] = [
            _validate(g, f"{prefix}geometries[{i}].", depth + 1) for i, g in enumerate(members)
        ]
    else:
        if "coordinates" not in obj:
            raise GeoError(f"{prefix}coordinates: missing")
        out["coordinates"] = _coordinates(gtype, obj["coordinates"], f"{prefix}coordinates")
    if "bbox" in obj:
        box = _array(obj["bbox"], f"{prefix}bbox", "an array of 4 or 6 numbers")
        if len(box) not in (4, 6) or not all(
            isinstance(n, int | float) and not isinstance(n, bool) and math.isfinite(n) for n in box
        ):
            raise GeoError(f"{prefix}bbox: expected an array of 4 or 6 finite numbers")
        out["bbox"] = list(box)
    return out


def validate_geometry(obj: object) -> dict[str, Any]:
    """Validate a GeoJSON geometry object and return a normalized copy.

    Checks the ``type``, the nesting of ``coordinates`` (``geometries`` for a GeometryCollection),
    that every coordinate is a finite JSON number (booleans are rejected), longitude in -180..180,
    latitude in -90..90, 2 or 3 numbers per position, at least 2 positions per LineString, closed
    linear rings of at least 4 positions, and non-empty Multi* / GeometryCollection arrays. Ring
    orientation and self-intersection are not checked (RFC 7946 tells parsers not to reject on
    winding order). Foreign members are kept; tuples become lists.

    Raises :class:`GeoError` whose message starts with the JSON path of the problem, e.g.
    ``"coordinates[0][2]: latitude 95 is outside -90..90"`` (ring 0, position 2).
    """
    return _validate(obj, "")


# --------------------------------------------------------------------------------------------------
# Coordinate helpers (pure Python, no shapely)
# --------------------------------------------------------------------------------------------------


def _iter_positions(geom: Mapping[str, Any]) -> Iterator[Sequence[float]]:
    gtype = geom["type"]
    if gtype == "GeometryCollection":
        for member in geom["geometries"]:
            yield from _iter_positions(member)
        return
    coords = geom["coordinates"]
    if gtype == "Point":
        yield coords
    elif gtype in ("MultiPoint", "LineString"):
        yield from coords
    elif gtype in ("MultiLineString", "Polygon"):
        for part in coords:
            yield from part
    elif gtype == "MultiPolygon":
        for poly in coords:
            for ring in poly:
                yield from ring
    else:
        raise GeoError(f"type: unsupported geometry type {gtype!r}")


def geometry_bbox(geom: Mapping[str, Any]) -> BBox:
    """Return ``(min_lon, min_lat, max_lon, max_lat)`` of a (validated) GeoJSON geometry."""
    if geom.get("type") == "Point":
        lon, lat = geom["coordinates"][0], geom["coordinates"][1]
        return (float(lon), float(lat), float(lon), float(lat))
    min_lon = min_lat = math.inf
    max_lon = max_lat = -math.inf
    for pos in _iter_positions(geom):
        lon, lat = pos[0], pos[1]
        if lon < min_lon:
            min_lon = lon
        if lon > max_lon:
            max_lon = lon
        if lat < min_lat:
            min_lat = lat
        if lat > max_lat:
            max_lat = lat
    if min_lon > max_lon:
        raise GeoError("coordinates: the geometry is empty")
    return (float(min_lon), float(min_lat), float(max_lon), float(max_lat))


def haversine_m(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """Great-circle distance in metres between two lon/lat points (degrees)."""
    p1 = math.radians(lat1)
    p2 = math.radians(lat2)
    s_lat = math.sin((p2 - p1) * 0.5)
    s_lon = math.sin(math.radians(lon2 - lon1) * 0.5)
    h = s_lat * s_lat + math.cos(p1) * math.cos(p2) * s_lon * s_lon
    return 2.0 * EARTH_RADIUS_M * math.asin(math.sqrt(min(1.0, h)))


# --------------------------------------------------------------------------------------------------
# Shapely conversion and distance
# --------------------------------------------------------------------------------------------------


_Xform: TypeAlias = Callable[[np.ndarray], np.ndarray]
_ORIGIN: Final = shapely.Point(0.0, 0.0)


def _xy(coords: Sequence[Sequence[float]], xform: _Xform | None) -> np.ndarray:
    """Positions as an (N, 2) float array (altitudes dropped), optionally transformed."""
    try:
        arr = np.asarray(coords, dtype=np.float64)
    except ValueError:  # mixed 2D/3D positions
        arr = np.array([(p[0], p[1]) for p in coords], dtype=np.float64)
    if arr.shape[1] != 2:
        arr = arr[:, :2]
    return arr if xform is None else xform(arr)


def _polygon_shape(rings: Sequence[Sequence[Sequence[float]]], xform: _Xform | None) -> shapely.Polygon:
    shell = _xy(rings[0], xform)
    if len(rings) == 1:
        return cast(shapely.Polygon, shapely.polygons(shell))
    return shapely.Polygon(shell, [_xy(r, xform) for r in rings[1:]])


def _to_shape(geom: Mapping[str, Any], xform: _Xform | None = None) -> BaseGeometry:
    """Build a 2D shapely geometry from a validated GeoJSON geometry (faster than ``shape()``).

    ``xform`` maps an (N, 2) array of lon/lat positions to the plane the geometry is built in.
    """
    gtype = geom["type"]
    coords: Any = geom.get("coordinates")
    if gtype == "Point":
        if xform is None:
            return shapely.Point(float(coords[0]), float(coords[1]))
        return shapely.Point(_xy([coords], xform)[0])
    if gtype == "LineString":
        return cast(BaseGeometry, shapely.linestrings(_xy(coords, xform)))
    if gtype == "Polygon":
        return _polygon_shape(coords, xform)
    if gtype == "MultiPoint":
        return shapely.MultiPoint(_xy(coords, xform))
    if gtype == "MultiLineString":
        return shapely.MultiLineString([shapely.linestrings(_xy(line, xform)) for line in coords])
    if gtype == "MultiPolygon":
        return shapely.MultiPolygon([_polygon_shape(poly, xform) for poly in coords])
    if gtype == "GeometryCollection":
        return shapely.GeometryCollection([_to_shape(g, xform) for g in geom["geometries"]])
    raise GeoError(f"type: unsupported geometry type {gtype!r}")


def _distance(lon0: float, lat0: float, geom: Mapping[str, Any]) -> float:
    gtype = geom["type"]
    if gtype == "Point":
        c = geom["coordinates"]
        return haversine_m(lon0, lat0, c[0], c[1])
    if gtype == "MultiPoint":
        return min(haversine_m(lon0, lat0, c[0], c[1]) for c in geom["coordinates"])
    k = math.cos(math.radians(lat0))
    if k < 1e-12:
        # Query point at a pole: the nearest point of the target is its vertex closest to that pole
        # (straight lon/lat edges never get closer to a pole than their end points).
        lat_pole = 90.0 if lat0 > 0 else -90.0
        return min(haversine_m(0.0, lat_pole, p[0], p[1]) for p in _iter_positions(geom))

    def to_local(xy: np.ndarray) -> np.ndarray:
        # Local equirectangular plane centred on the query point (degrees of latitude as unit).
        return (xy - (lon0, lat0)) * (k, 1.0)

    local = _to_shape(geom, to_local)
    x, y = shapely.get_coordinates(shapely.shortest_line(local, _ORIGIN))[0]
    return haversine_m(lon0, lat0, lon0 + float(x) / k, lat0 + float(y))


def distance_m(geom: Mapping[str, Any], point: tuple[float, float]) -> float:
    """Geodesic distance in metres from ``point`` (lon, lat) to the nearest point of ``geom``.

    Zero when the point lies inside or on the geometry. See the module docstring for accuracy.
    """
    return _distance(float(point[0]), float(point[1]), geom)


# --------------------------------------------------------------------------------------------------
# Geo-query
# --------------------------------------------------------------------------------------------------


def _near_bbox(lon0: float, lat0: float, max_distance: float) -> BBox:
    """Smallest lon/lat box holding every point within ``max_distance`` metres of (lon0, lat0).

    Uses the exact extent of a spherical cap (the longitude half-width is ``asin(sin δ / cos φ)``);
    when the cap reaches a pole or crosses the antimeridian the longitude range is the full -180..180.
    """
    delta = max_distance / EARTH_RADIUS_M  # angular radius, radians
    if delta >= math.pi:
        return _WORLD
    delta_deg = math.degrees(delta)
    min_lat = lat0 - delta_deg - _BBOX_PAD_DEG
    max_lat = lat0 + delta_deg + _BBOX_PAD_DEG
    if min_lat <= -90.0 or max_lat >= 90.0:
        return (-180.0, max(min_lat, -90.0), 180.0, min(max_lat, 90.0))
    dlon = math.degrees(math.asin(min(1.0, math.sin(delta) / math.cos(math.radians(lat0))))) + _BBOX_PAD_DEG
    min_lon, max_lon = lon0 - dlon, lon0 + dlon
    if min_lon < -180.0 or max_lon > 180.0:
        min_lon, max_lon = -180.0, 180.0
    return (min_lon, min_lat, max_lon, max_lat)


def _format_number(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)


@dataclass(frozen=True)
class GeoQuery:
    """A parsed NGSI-LD geo-query. Build it with :func:`parse_geo_query`.

    ``geometry`` is the validated GeoJSON reference geometry; ``max_distance``/``min_distance``
    (metres) are only set for ``near``. Instances are immutable, hashable and safe to share between
    threads; the shapely form of the reference geometry is built lazily, prepared once per thread
    and cached, as is the matcher.
    """

    georel: GeoRel
    geometry: dict[str, Any] = field(hash=False)
    geoproperty: str = "location"
    max_distance: float | None = None
    min_distance: float | None = None

    # ---- cached derived state -----------------------------------------------------------------

    @cached_property
    def point(self) -> tuple[float, float] | None:
        """(lon, lat) of a Point reference geometry, else ``None``."""
        if self.geometry["type"] != "Point":
            return None
        c = self.geometry["coordinates"]
        return (float(c[0]), float(c[1]))

    @cached_property
    def shape(self) -> BaseGeometry:
        """The reference geometry as a (2D, unprepared) shapely geometry, e.g. for WKT."""
        return _valid_shape(self.geometry)

    @cached_property
    def _thread_local(self) -> threading.local:
        return threading.local()

    def _prepared(self) -> BaseGeometry:
        """This thread's prepared copy of the reference geometry.

        GEOS prepared geometries build their indexes lazily and are not thread-safe (libgeos/geos
        issue 825), and shapely releases the GIL in predicates; a query shared between threads (a
        subscription's ``geoQ``, say) therefore gets one prepared copy per thread.
        """
        local = self._thread_local
        geom: BaseGeometry | None = getattr(local, "geom", None)
        if geom is None:
            geom = _valid_shape(self.geometry)
            shapely.prepare(geom)
            local.geom = geom
        return geom

    def __getstate__(self) -> dict[str, Any]:
        # Pickle/copy only the fields; caches (closures, thread-locals, GEOS objects) are rebuilt.
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @cached_property
    def _bbox(self) -> BBox | None:
        if self.georel == "disjoint":
            return None
        if self.georel == "near":
            if self.max_distance is None:
                return None
            assert self.point is not None
            return _near_bbox(self.point[0], self.point[1], self.max_distance)
        # within/contains/intersects/overlaps/equals all require the target to share at least one
        # point with the reference geometry, hence to intersect its bounding box.
        return geometry_bbox(self.geometry)

    @cached_property
    def _matcher(self) -> Callable[[Mapping[str, Any]], bool]:
        if self.georel == "near":
            return self._near_matcher()
        return self._relation_matcher()

    # ---- public API ---------------------------------------------------------------------------

    def bbox(self) -> BBox | None:
        """Box ``(min_lon, min_lat, max_lon, max_lat)`` that every matching target intersects.

        Meant for a spatial-index prefilter (closed intervals). ``None`` when no box applies:
        ``disjoint`` and ``near`` with only ``minDistance``.
        """
        return self._bbox

    def matches(self, geom: Mapping[str, Any]) -> bool:
        """Evaluate the query against a target geometry (a validated GeoJSON geometry dict)."""
        return self._matcher(geom)

    def distance(self, geom: Mapping[str, Any]) -> float:
        """Geodesic distance in metres from the Point reference geometry to ``geom``.

        Raises :class:`GeoError` when the reference geometry is not a Point.
        """
        if self.point is None:
            raise GeoError("geometry: distances are only defined for a Point reference geometry")
        return _distance(self.point[0], self.point[1], geom)

    @property
    def georel_text(self) -> str:
        """The canonical ``georel`` string, e.g. ``near;maxDistance==2000``."""
        if self.georel != "near":
            return self.georel
        parts = ["near"]
        if self.max_distance is not None:
            parts.append(f"maxDistance=={_format_number(self.max_distance)}")
        if self.min_distance is not None:
            parts.append(f"minDistance=={_format_number(self.min_distance)}")
        return ";".join(parts)

    def as_geoq(self) -> dict[str, Any]:
        """The NGSI-LD ``GeoQuery`` data type representation (e.g. for a Subscription's ``geoQ``)."""
        return {
            "georel": self.georel_text,
            "geometry": self.geometry["type"],
            "coordinates": self.geometry["coordinates"],
            "geoproperty": self.geoproperty,
        }

    # ---- matcher construction -----------------------------------------------------------------

    def _near_matcher(self) -> Callable[[Mapping[str, Any]], bool]:
        assert self.point is not None
        lon0, lat0 = self.point
        hi = math.inf if self.max_distance is None else self.max_distance
        lo = -math.inf if self.min_distance is None else self.min_distance

        def near(geom: Mapping[str, Any]) -> bool:
            if geom["type"] == "Point":
                c = geom["coordinates"]
                d = haversine_m(lon0, lat0, c[0], c[1])
            else:
                d = _distance(lon0, lat0, geom)
            return lo <= d <= hi

        return near

    def _relation_matcher(self) -> Callable[[Mapping[str, Any]], bool]:
        prepared = self._prepared
        rel = self.georel
        # predicate(Q, T) with Q the reference geometry, T the target.
        predicate: Callable[[Any, Any], Any] = {
            "within": shapely.contains,  # T within Q  <=>  Q contains T
            "contains": shapely.within,  # T contains Q  <=>  Q within T
            "intersects": shapely.intersects,
            "disjoint": shapely.disjoint,
            "overlaps": shapely.overlaps,
            "equals": shapely.equals,
        }[rel]
        # Point targets of these relations are tested on raw x/y, without building a shapely Point.
        point_xy: Callable[[Any, float, float], Any] | None = {
            "within": shapely.contains_xy,
            "intersects": shapely.intersects_xy,
            "disjoint": shapely.intersects_xy,
        }.get(rel)
        negate = rel == "disjoint"
        min_x, min_y, max_x, max_y = geometry_bbox(self.geometry)

        def relation(geom: Mapping[str, Any]) -> bool:
            if point_xy is not None and geom["type"] == "Point":
                c = geom["coordinates"]
                x, y = float(c[0]), float(c[1])
                if not (min_x <= x <= max_x and min_y <= y <= max_y):
                    return negate  # outside the reference box: cannot touch it (pure-Python reject)
                return bool(point_xy(prepared(), x, y)) is not negate
            q = prepared()
            # The reference polygon was repaired if invalid (_valid_shape): the target gets the same repair,
            # or an invalid polygon would not equal (contain, lie within) itself.
            target = _valid_shape(geom)
            try:
                return bool(predicate(q, target))
            except GEOSException:
                # Topologically invalid stored geometry (e.g. a self-intersecting polygon).
                return bool(predicate(q, shapely.make_valid(target)))

        return relation


def _valid_shape(geom: Mapping[str, Any]) -> BaseGeometry:
    shape = _to_shape(geom)
    if geom.get("type") in ("Polygon", "MultiPolygon") and not shapely.is_valid(shape):
        shape = shapely.make_valid(shape)
    return shape


# --------------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------------


def _parse_distance(name: str, text: str) -> float:
    if not _NUMBER_RE.fullmatch(text):
        raise GeoError(f"georel: {name} must be a non-negative number of metres, got {text!r}")
    value = float(text)
    if not math.isfinite(value):
        raise GeoError(f"georel: {name} {text!r} is too large")
    return value


def _parse_georel(text: str) -> tuple[GeoRel, float | None, float | None]:
    op, *modifiers = (part.strip() for part in text.strip().split(";"))
    rel = op.lower()
    if rel not in GEORELS:
        raise GeoError(
            f"georel: unknown geo-relationship {op!r}; expected one of "
            f"near;maxDistance==<m>, near;minDistance==<m>, {', '.join(GEORELS[1:])}"
        )
    if rel != "near":
        if modifiers:
            raise GeoError(f"georel: {rel} takes no modifiers, got {text!r}")
        return cast(GeoRel, rel), None, None
    if not modifiers or modifiers == [""]:
        raise GeoError("georel: near needs a distance, e.g. near;maxDistance==2000 or near;minDistance==10")
    distances: dict[str, float] = {}
    for mod in modifiers:
        name, sep, value = mod.partition("==")
        key = {"maxdistance": "maxDistance", "mindistance": "minDistance"}.get(name.strip().lower())
        if not sep or key is None:
            raise GeoError(f"georel: expected maxDistance==<m> or minDistance==<m> after near;, got {mod!r}")
        if key in distances:
            raise GeoError(f"georel: {key} given more than once")
        distances[key] = _parse_distance(key, value.strip())
    max_d, min_d = distances.get("maxDistance"), distances.get("minDistance")
    if max_d is not None and min_d is not None and min_d > max_d:
        raise GeoError(
            f"georel: minDistance {_format_number(min_d)} exceeds maxDistance {_format_number(max_d)}"
        )
    return "near", max_d, min_d


def _present(value: object) -> bool:
    return value is not None and not (isinstance(value, str) and not value.strip())


def parse_geo_query(
    georel: str | None,
    geometry: str | None,
    coordinates: str | object | None,
    geoproperty: str | None = None,
) -> GeoQuery:
    """Parse the geo-query members of an NGSI-LD query.

    ``georel``: ``near;maxDistance==<m>``, ``near;minDistance==<m>`` (both may be combined),
    ``within``, ``contains``, ``intersects``, ``disjoint``, ``overlaps`` or ``equals``.
    ``geometry``: the reference geometry type (Point, MultiPoint, LineString, MultiLineString,
    Polygon, MultiPolygon). ``coordinates``: the JSON text of its coordinates as sent in a URL
    (``[141.35,43.06]``) or an already decoded array (POST query body). ``geoproperty``: the
    GeoProperty to test, ``location`` by default. Keywords (georel operators, distance names and
    geometry types) are matched case-insensitively, as in the specification's ABNF. ``near``
    requires a Point.

    Raises :class:`GeoError` naming the missing or invalid member.
    """
    members = (("georel", georel), ("geometry", geometry), ("coordinates", coordinates))
    missing = [name for name, value in members if not _present(value)]
    if missing:
        raise GeoError(
            f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing: a geo-query "
            "needs georel, geometry and coordinates together"
        )
    assert georel is not None and geometry is not None
    if not isinstance(georel, str):
        raise GeoError(f"georel: expected a string, got {_json_type(georel)}")
    if not isinstance(geometry, str):
        raise GeoError(f"geometry: expected a string, got {_json_type(geometry)}")
    rel, max_d, min_d = _parse_georel(georel)

    gtype = {t.lower(): t for t in QUERY_GEOMETRY_TYPES}.get(geometry.strip().lower())
    if gtype is None:
        raise GeoError(f"geometry: expected one of {', '.join(QUERY_GEOMETRY_TYPES)}, got {geometry!r}")
    if rel == "near" and gtype != "Point":
        raise GeoError(f"geometry: georel near needs a Point reference geometry, got {gtype}")

    coords: object = coordinates
    if isinstance(coordinates, str):
        try:
            coords = json.loads(coordinates)
        except RecursionError:
            raise GeoError("coordinates: the JSON array is nested too deeply") from None
        except ValueError as exc:
            raise GeoError(
                f"coordinates: not valid JSON ({exc}); expected an array such as [141.35,43.06]"
            ) from None
    if not isinstance(coords, list | tuple):
        raise GeoError(f"coordinates: expected a JSON array, got {_json_type(coords)}")
    geom = validate_geometry({"type": gtype, "coordinates": coords})

    # A self-intersecting query polygon is repaired (shapely.make_valid) rather than refused: the same
    # polygon is accepted as an entity's location, and clients draw such shapes by hand.

    if geoproperty is None:
        prop = "location"
    elif not isinstance(geoproperty, str) or not geoproperty.strip():
        raise GeoError("geoproperty: must be a non-empty attribute name")
    else:
        prop = geoproperty.strip()
    return GeoQuery(georel=rel, geometry=geom, geoproperty=prop, max_distance=max_d, min_distance=min_d)
