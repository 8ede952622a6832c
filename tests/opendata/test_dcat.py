"""DCAT-AP 3 conversion of CKAN package dicts: the triples harvesters read, in every serialization."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rdflib import BNode, Graph, Literal, URIRef
from rdflib.compare import isomorphic

from society5.opendata import dcat
from society5.opendata.dcat import (
    ADMS,
    DCAT,
    DCTERMS,
    EU,
    FOAF,
    GSP,
    HYDRA,
    LOCN,
    RDF,
    SKOS,
    SPDX,
    VCARD,
    XSD,
)

# rdflib's own JSON-LD parser uses its deprecated ConjunctiveGraph
pytestmark = pytest.mark.filterwarnings("ignore:ConjunctiveGraph is deprecated:DeprecationWarning")

BASE = "https://opendata.example.jp"
SITE = dcat.Site(BASE, "北海道オープンデータ", "北海道", title_en="Hokkaido Open Data",
                 description="北海道のオープンデータ", description_en="Hokkaido's open data")
PID = "5c8a2f0e-0000-4000-8000-000000000001"
DIGEST = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


def standards(layout_id: str) -> dcat.Standard | None:
    return dcat.Standard(layout_id, "AED設置箇所一覧", "AED locations") if layout_id == "aed" else None


def package(**changes: Any) -> dict[str, Any]:
    """A CKAN 2.10 package_show dict with the Japanese portal fields, as the catalog returns it."""
    pkg: dict[str, Any] = {
        "id": PID, "name": "sapporo-aed", "type": "dataset",
        "title": "札幌市 AED設置箇所一覧", "notes": "市内の AED の設置場所です。",
        "title_en": "Sapporo AED locations",
        "state": "active", "private": False, "version": "2024.1",
        "license_id": "CC-BY-4.0", "license_title": "クリエイティブ・コモンズ 表示 4.0 国際",
        "license_url": "https://creativecommons.org/licenses/by/4.0/deed.ja",
        "metadata_created": "2024-04-01T09:00:00.123456", "metadata_modified": "2024-06-01T00:30:00",
        "owner_org": "org-1",
        "organization": {"id": "org-1", "name": "sapporo", "title": "札幌市", "tenant": "011002",
                         "type": "organization", "is_organization": True},
        "tags": [{"name": "AED", "display_name": "AED"}, {"name": "医療", "display_name": "医療"}],
        "groups": [{"id": "g-1", "name": "health", "title": "健康・福祉", "display_name": "健康・福祉"}],
        "extras": [], "frequency": "monthly",
        "contact_name": "札幌市保健所", "contact_email": "hoken@city.sapporo.jp",
        "contact_url": "https://www.city.sapporo.jp/hokenjo/",
        "spatial": json.dumps({"type": "Point", "coordinates": [141.3545, 43.0621]}),
        "temporal_start": "2024-04-01", "temporal_end": "2025-03-31", "language": "ja", "conforms_to": "aed",
        "resources": [
            {"id": "r-csv", "package_id": PID, "name": "AED一覧（CSV）",
             "description": "UTF-8 の CSV", "format": "CSV", "mimetype": "text/csv", "url_type": "upload",
             "url": f"{BASE}/dataset/{PID}/resource/r-csv/download/aed 一覧.csv",
             "size": 2048, "hash": f"sha256:{DIGEST}", "created": "2024-04-01T09:00:00",
             "last_modified": "2024-06-01T00:30:00", "state": "active", "position": 0},
            {"id": "r-link", "name": "市のページ", "format": "HTML", "url": "https://www.city.sapporo.jp/aed.html",
             "url_type": "", "size": None, "hash": "", "state": "active", "position": 1},
        ],
        "num_resources": 2, "num_tags": 2,
    }
    pkg.update(changes)
    return pkg


DATASET = URIRef(f"{BASE}/dataset/{PID}")
CSV = URIRef(f"{DATASET}/resource/r-csv")
LINK = URIRef(f"{DATASET}/resource/r-link")


def reparse(graph: Graph, ext: str) -> Graph:
    return Graph().parse(data=dcat.serialize(graph, ext), format=dcat.FORMATS[ext][0])


def one(graph: Graph, subject: Any, predicate: URIRef) -> Any:
    values = list(graph.objects(subject, predicate))
    assert len(values) == 1, f"{predicate}: {values}"
    return values[0]


@pytest.fixture(params=sorted(dcat.FORMATS))
def parsed(request: pytest.FixtureRequest) -> Graph:
    """The example dataset, serialized in one format and parsed back."""
    return reparse(dcat.dataset_graph(package(), SITE, standards), request.param)


def test_dataset_core_triples(parsed: Graph) -> None:
    g = parsed
    assert (DATASET, RDF.type, DCAT.Dataset) in g
    assert one(g, DATASET, DCTERMS.identifier) == Literal(PID)
    assert set(g.objects(DATASET, DCTERMS.title)) == {Literal("札幌市 AED設置箇所一覧", lang="ja"),
                                                       Literal("Sapporo AED locations", lang="en")}
    assert one(g, DATASET, DCTERMS.description) == Literal("市内の AED の設置場所です。", lang="ja")
    assert set(g.objects(DATASET, DCAT.keyword)) == {Literal("AED", lang="ja"), Literal("医療", lang="ja")}
    theme = one(g, DATASET, DCAT.theme)
    assert theme == URIRef(f"{BASE}/group/health") and (theme, RDF.type, SKOS.Concept) in g
    assert one(g, theme, SKOS.prefLabel) == Literal("健康・福祉", lang="ja")
    publisher = one(g, DATASET, DCTERMS.publisher)
    assert publisher == URIRef(f"{BASE}/organization/sapporo") and (publisher, RDF.type, FOAF.Agent) in g
    assert one(g, publisher, FOAF.name) == Literal("札幌市", lang="ja")
    assert one(g, publisher, DCTERMS.identifier) == Literal("011002")
    assert one(g, DATASET, DCAT.landingPage) == URIRef(f"{BASE}/dataset/sapporo-aed")
    issued = Literal("2024-04-01T09:00:00.123456+00:00", datatype=XSD.dateTime)
    assert one(g, DATASET, DCTERMS.issued) == issued
    assert one(g, DATASET, DCTERMS.modified).datatype == XSD.dateTime
    assert one(g, DATASET, DCTERMS.accrualPeriodicity) == URIRef(f"{EU}frequency/MONTHLY")
    assert one(g, DATASET, DCTERMS.language) == URIRef(f"{EU}language/JPN")
    assert one(g, DATASET, DCTERMS.accessRights) == URIRef(f"{EU}access-right/PUBLIC")
    assert one(g, DATASET, DCAT.version) == Literal("2024.1")
    ident = one(g, DATASET, ADMS.identifier)
    assert (ident, RDF.type, ADMS.Identifier) in g and one(g, ident, SKOS.notation) == Literal("sapporo-aed")


def test_contact_temporal_spatial_and_standard(parsed: Graph) -> None:
    g = parsed
    contact = one(g, DATASET, DCAT.contactPoint)
    assert (contact, RDF.type, VCARD.Kind) in g
    assert one(g, contact, VCARD.fn) == Literal("札幌市保健所", lang="ja")
    assert one(g, contact, VCARD.hasEmail) == URIRef("mailto:hoken@city.sapporo.jp")
    assert one(g, contact, VCARD.hasURL) == URIRef("https://www.city.sapporo.jp/hokenjo/")

    period = one(g, DATASET, DCTERMS.temporal)
    assert (period, RDF.type, DCTERMS.PeriodOfTime) in g
    assert one(g, period, DCAT.startDate) == Literal("2024-04-01", datatype=XSD.date)
    assert one(g, period, DCAT.endDate) == Literal("2025-03-31", datatype=XSD.date)

    place = one(g, DATASET, DCTERMS.spatial)
    assert (place, RDF.type, DCTERMS.Location) in g
    geometries = {lit.datatype: str(lit) for lit in g.objects(place, LOCN.geometry)}
    assert geometries[GSP.wktLiteral] == "POINT (141.3545 43.0621)"
    assert json.loads(geometries[GSP.geoJSONLiteral]) == {"type": "Point", "coordinates": [141.3545, 43.0621]}
    bbox = one(g, place, DCAT.bbox)
    assert bbox.datatype == GSP.wktLiteral and str(bbox).startswith("POLYGON ((141.3545 43.0621")

    standard = one(g, DATASET, DCTERMS.conformsTo)
    assert standard == URIRef(f"{BASE}/standard/aed") and (standard, RDF.type, DCTERMS.Standard) in g
    assert Literal("AED設置箇所一覧", lang="ja") in set(g.objects(standard, DCTERMS.title))
    assert one(g, standard, DCTERMS.identifier) == Literal("aed")


def test_distributions(parsed: Graph) -> None:
    g = parsed
    assert set(g.objects(DATASET, DCAT.distribution)) == {CSV, LINK}
    assert (CSV, RDF.type, DCAT.Distribution) in g
    assert one(g, CSV, DCTERMS.title) == Literal("AED一覧（CSV）", lang="ja")
    assert one(g, CSV, DCTERMS.description) == Literal("UTF-8 の CSV", lang="ja")
    download = f"{DATASET}/resource/r-csv/download/aed%20%E4%B8%80%E8%A6%A7.csv"  # space, kanji encoded
    assert one(g, CSV, DCAT.accessURL) == URIRef(download)
    assert one(g, CSV, DCAT.downloadURL) == URIRef(download)
    assert one(g, CSV, DCTERMS["format"]) == URIRef(f"{EU}file-type/CSV")
    assert one(g, CSV, DCAT.mediaType) == URIRef("https://www.iana.org/assignments/media-types/text/csv")
    assert one(g, CSV, DCAT.byteSize) == Literal("2048", datatype=XSD.nonNegativeInteger)
    checksum = one(g, CSV, SPDX.checksum)
    assert one(g, checksum, SPDX.algorithm) == SPDX.checksumAlgorithm_sha256
    assert one(g, checksum, SPDX.checksumValue) == Literal(DIGEST, datatype=XSD.hexBinary)
    licence = URIRef("http://creativecommons.org/licenses/by/4.0/")
    assert one(g, CSV, DCTERMS.license) == licence and (licence, RDF.type, DCTERMS.LicenseDocument) in g
    assert one(g, CSV, DCTERMS.conformsTo) == URIRef(f"{BASE}/standard/aed")  # the layout describes the CSV
    # a link resource: reachable, but no download URL, no size, no checksum, not in the CSV layout
    assert one(g, LINK, DCAT.accessURL) == URIRef("https://www.city.sapporo.jp/aed.html")
    assert one(g, LINK, DCTERMS["format"]) == URIRef(f"{EU}file-type/HTML")
    for predicate in (DCAT.downloadURL, DCAT.byteSize, SPDX.checksum, DCTERMS.conformsTo):
        assert not list(g.objects(LINK, predicate)), predicate
    assert one(g, LINK, DCTERMS.license) == licence


def test_every_serialization_is_the_same_graph() -> None:
    graph = dcat.catalog_graph([package()], SITE, standards=standards)
    turtle, jsonld = reparse(graph, "ttl"), reparse(graph, "jsonld")
    assert len(turtle) > 80
    assert isomorphic(turtle, jsonld)
    assert isomorphic(turtle, reparse(graph, "rdf")) and isomorphic(turtle, reparse(graph, "xml"))
    assert isomorphic(turtle, graph)


def test_catalog_with_two_datasets_and_paging() -> None:
    second = package(id="5c8a2f0e-0000-4000-8000-000000000002", name="otaru-events", title="小樽市 行事",
                     metadata_modified="2024-07-01T12:00:00", resources=[], groups=[], conforms_to=None)
    page = dcat.Page(current=f"{BASE}/catalog.ttl?page=2", first=f"{BASE}/catalog.ttl?page=1",
                     last=f"{BASE}/catalog.ttl?page=3", total=250, per_page=100,
                     next=f"{BASE}/catalog.ttl?page=3", previous=f"{BASE}/catalog.ttl?page=1")
    g = reparse(dcat.catalog_graph([package(), second], SITE, page=page, standards=standards), "ttl")
    catalog = URIRef(f"{BASE}/catalog")
    assert len(set(g.subjects(RDF.type, DCAT.Dataset))) == 2
    assert set(g.objects(catalog, DCAT.dataset)) == set(g.subjects(RDF.type, DCAT.Dataset))
    assert set(g.objects(catalog, DCTERMS.title)) == {Literal("北海道オープンデータ", lang="ja"),
                                                       Literal("Hokkaido Open Data", lang="en")}
    assert Literal("Hokkaido's open data", lang="en") in set(g.objects(catalog, DCTERMS.description))
    assert one(g, catalog, FOAF.homepage) == URIRef(f"{BASE}/")
    assert one(g, one(g, catalog, DCTERMS.publisher), FOAF.name) == Literal("北海道", lang="ja")
    assert one(g, catalog, DCTERMS.modified).toPython().isoformat() == "2024-07-01T12:00:00+00:00"  # newest
    collection = URIRef(f"{BASE}/catalog.ttl?page=2")
    assert (collection, RDF.type, HYDRA.PagedCollection) in g
    assert one(g, collection, HYDRA.totalItems).toPython() == 250
    assert one(g, collection, HYDRA.itemsPerPage).toPython() == 100
    assert str(one(g, collection, HYDRA.nextPage)) == f"{BASE}/catalog.ttl?page=3"
    assert str(one(g, collection, HYDRA.previousPage)) == f"{BASE}/catalog.ttl?page=1"
    assert str(one(g, collection, HYDRA.lastPage)) == f"{BASE}/catalog.ttl?page=3"


def test_private_dataset_is_marked_non_public() -> None:
    g = dcat.dataset_graph(package(private=True), SITE)
    assert one(g, DATASET, DCTERMS.accessRights) == URIRef(f"{EU}access-right/NON_PUBLIC")


@pytest.mark.parametrize(("license_id", "license_url", "expected"), [
    ("CC-BY-4.0", "", "http://creativecommons.org/licenses/by/4.0/"),
    ("cc-by", "", "http://creativecommons.org/licenses/by/4.0/"),
    ("gsl-2.0", "", dcat.GOV_STANDARD_2),
    ("CC0-1.0", "", "http://creativecommons.org/publicdomain/zero/1.0/"),
    ("city-terms", "https://www.city.example.jp/terms of use", "https://www.city.example.jp/terms%20of%20use"),
    ("other-closed", "", None),
    ("", "not a url", None),
])
def test_license_uri(license_id: str, license_url: str, expected: str | None) -> None:
    found = dcat.license_uri(license_id, license_url)
    assert (str(found) if found else None) == expected


def test_government_standard_terms_on_distributions() -> None:
    g = dcat.dataset_graph(package(license_id="gsl-2.0", license_title="政府標準利用規約（第2.0版）",
                                   license_url=""), SITE)
    licence = URIRef(dcat.GOV_STANDARD_2)
    assert set(g.objects(CSV, DCTERMS.license)) == {licence}
    assert one(g, licence, DCTERMS.title) == Literal("政府標準利用規約（第2.0版）", lang="ja")


@pytest.mark.parametrize(("value", "code"), [
    ("daily", "DAILY"), ("Monthly", "MONTHLY"), ("irregular", "IRREG"), ("毎年", "ANNUAL"),
    ("随時", "UPDATE_CONT"),
    ("四半期", "QUARTERLY"), ("15min", "15MIN"), ("IRREG", "IRREG"), (f"{EU}frequency/WEEKLY", "WEEKLY"),
    ("sometimes", None), ("", None), (None, None),
])
def test_frequency_uri(value: str | None, code: str | None) -> None:
    found = dcat.frequency_uri(value)
    assert found == (URIRef(f"{EU}frequency/{code}") if code else None)


def test_bad_stored_values_are_left_out_not_fatal() -> None:
    bad = package(spatial="{not json", temporal_start="2024-13-45", temporal_end="soon", frequency="whenever",
                  metadata_created="yesterday", contact_name="", contact_email="", contact_url="",
                  maintainer=None, author=None, conforms_to=None, language="xx")
    bad["resources"][0].update(size=-1, hash="md5:zzzz", format="", mimetype="", url="www.example.jp/x")
    g = reparse(dcat.dataset_graph(bad, SITE), "xml")
    assert (DATASET, RDF.type, DCAT.Dataset) in g
    for predicate in (DCTERMS.spatial, DCTERMS.temporal, DCTERMS.accrualPeriodicity, DCTERMS.issued,
                      DCAT.contactPoint, DCTERMS.conformsTo, DCTERMS.language):
        assert not list(g.objects(DATASET, predicate)), predicate
    for predicate in (DCAT.byteSize, SPDX.checksum, DCTERMS["format"], DCAT.mediaType, DCAT.downloadURL):
        assert not list(g.objects(CSV, predicate)), predicate
    assert one(g, CSV, DCAT.accessURL) == DATASET  # no usable URL: the dataset's page is where to get it


def test_japanese_fields_in_extras_and_other_shapes() -> None:
    pkg = package(frequency=None, spatial=None, language=["ja", "en"], conforms_to=["aed", "unknown-layout"],
                  extras=[{"key": "frequency", "value": "毎週"},
                          {"key": "spatial", "value": "141.0,42.5,142.0,43.5"}])
    pkg["resources"][0].update(hash=DIGEST.upper(), mimetype="text/csv; charset=utf-8", format="csv")
    g = dcat.dataset_graph(pkg, SITE, standards)
    assert one(g, DATASET, DCTERMS.accrualPeriodicity) == URIRef(f"{EU}frequency/WEEKLY")
    place = one(g, DATASET, DCTERMS.spatial)
    assert str(one(g, place, DCAT.bbox)) == \
        "POLYGON ((141.0 42.5, 142.0 42.5, 142.0 43.5, 141.0 43.5, 141.0 42.5))"
    languages = set(g.objects(DATASET, DCTERMS.language))
    assert languages == {URIRef(f"{EU}language/JPN"), URIRef(f"{EU}language/ENG")}
    unknown = URIRef(f"{BASE}/standard/unknown-layout")
    assert unknown in set(g.objects(DATASET, DCTERMS.conformsTo))
    assert not list(g.objects(unknown, DCTERMS.title))
    assert one(g, one(g, CSV, SPDX.checksum), SPDX.checksumValue) == Literal(DIGEST, datatype=XSD.hexBinary)
    assert one(g, CSV, DCAT.mediaType) == URIRef("https://www.iana.org/assignments/media-types/text/csv")


def test_geojson_shapes_to_wkt() -> None:
    polygon = {"type": "Polygon", "coordinates": [[[141, 43], [142, 43], [142, 44], [141, 43]]]}
    feature = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": {"type": "Point", "coordinates": [140.5, 41.8]}},
        {"type": "Feature", "properties": {}, "geometry": polygon}]}
    g = dcat.dataset_graph(package(spatial=feature), SITE)
    place = one(g, DATASET, DCTERMS.spatial)
    wkt = next(str(v) for v in g.objects(place, LOCN.geometry) if v.datatype == GSP.wktLiteral)
    assert wkt == ("GEOMETRYCOLLECTION (POINT (140.5 41.8), "
                   "POLYGON ((141.0 43.0, 142.0 43.0, 142.0 44.0, 141.0 43.0)))")
    assert str(one(g, place, DCAT.bbox)) == \
        "POLYGON ((140.5 41.8, 142.0 41.8, 142.0 44.0, 140.5 44.0, 140.5 41.8))"
    lines = {"type": "MultiLineString", "coordinates": [[[1, 2], [3, 4]], [[5, 6], [7, 8]]]}
    assert dcat.geometry_wkt(lines) == "MULTILINESTRING ((1.0 2.0, 3.0 4.0), (5.0 6.0, 7.0 8.0))"
    for broken in ({"type": "Point", "coordinates": [1]}, {"type": "Polygon", "coordinates": []},
                   {"type": "Circle", "coordinates": [1, 2]}, {"type": "Point", "coordinates": ["a", "b"]}):
        with pytest.raises(ValueError):
            dcat.geometry_wkt(broken)


# -- properties ----------------------------------------------------------------------------------------------

coordinate = st.tuples(st.floats(-180, 180, allow_nan=False), st.floats(-90, 90, allow_nan=False))
positions = st.lists(coordinate.map(list), min_size=1, max_size=8)
geometries = st.one_of(
    coordinate.map(lambda p: {"type": "Point", "coordinates": list(p)}),
    positions.map(lambda ps: {"type": "LineString", "coordinates": ps}),
    positions.map(lambda ps: {"type": "MultiPoint", "coordinates": ps}),
    st.lists(positions, min_size=1, max_size=3).map(lambda rs: {"type": "Polygon", "coordinates": rs}),
    st.lists(st.lists(positions, min_size=1, max_size=2), min_size=1, max_size=2).map(
        lambda ps: {"type": "MultiPolygon", "coordinates": ps}),
)


def _flat(coords: Any) -> list[tuple[float, float]]:
    if coords and isinstance(coords[0], float | int):
        return [(float(coords[0]), float(coords[1]))]
    return [p for part in coords for p in _flat(part)]


@given(geometries)
def test_wkt_holds_every_position_in_order_and_bbox_encloses_them(geometry: dict[str, Any]) -> None:
    points = _flat(geometry["coordinates"])
    numbers = [float(n) for n in re.findall(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?", dcat.geometry_wkt(geometry))]
    assert numbers == [v for p in points for v in p]
    box = [float(n) for n in re.findall(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?", dcat.bbox_wkt(geometry))]
    xs, ys = box[0::2], box[1::2]
    assert all(min(xs) <= x <= max(xs) and min(ys) <= y <= max(ys) for x, y in points)
    assert (min(xs), min(ys), max(xs), max(ys)) == (min(p[0] for p in points), min(p[1] for p in points),
                                                    max(p[0] for p in points), max(p[1] for p in points))


free_text = st.text(max_size=30)
json_values = st.recursive(st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | free_text,
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(free_text, inner,
                                                                                          max_size=4),
                           max_leaves=12)


@settings(max_examples=60, deadline=None)
@given(title=free_text, tag=free_text, url=free_text, fmt=free_text, spatial=json_values, hash_=free_text,
       start=free_text)
def test_any_stored_text_serializes_to_rdf_that_parses_back(title: str, tag: str, url: str, fmt: str,
                                                             spatial: Any, hash_: str, start: str) -> None:
    pkg = package(title=title, tags=[{"name": tag}], spatial=spatial, temporal_start=start,
                  contact_email=f"{tag}@example.jp")
    pkg["resources"][0].update(url=url, format=fmt, hash=hash_, name=title)
    graph = dcat.dataset_graph(copy.deepcopy(pkg), SITE, standards)
    turtle = reparse(graph, "ttl")
    assert isomorphic(turtle, reparse(graph, "jsonld")) and isomorphic(turtle, reparse(graph, "rdf"))
    assert (DATASET, RDF.type, DCAT.Dataset) in turtle
    assert all(not isinstance(s, BNode) or list(turtle.predicate_objects(s)) for s in turtle.subjects())
