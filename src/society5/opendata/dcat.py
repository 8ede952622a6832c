"""DCAT-AP 3.0 export: CKAN package and organization dicts → an rdflib Graph → Turtle, JSON-LD, RDF/XML.

Harvesters (data.europa.eu, ckanext-dcat, Japanese national catalog tools) read a catalog as RDF. The shapes
follow DCAT-AP 3.0 and ckanext-dcat's conventions, so a CKAN harvester sees what it would see from CKAN:

* stable URIs from the portal's base URL: ``{base}/catalog``, ``{base}/dataset/{id}``,
  ``{base}/dataset/{id}/resource/{rid}``, ``{base}/organization/{name}``, ``{base}/group/{name}``;
* controlled vocabularies where DCAT-AP asks for them: EU frequency, language, file-type and access-right
  authority tables, IANA media types, licence URIs;
* Japanese text tagged ``@ja`` (the portal's language), English ``@en`` where the data carries English.

Nothing here touches the database: ``dcat_api`` fetches the dicts through the action registry. Values that do
not parse (a stored date that is no date, a broken GeoJSON) are left out of the graph rather than failing the
whole export: one bad dataset must not take the catalog down.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import quote

from rdflib import BNode, Graph, Literal, Namespace, URIRef

# Open namespaces: rdflib's closed DCAT predates DCAT 3 (no dcat:version) and warns on such terms.
DCAT = Namespace("http://www.w3.org/ns/dcat#")
DCTERMS = Namespace("http://purl.org/dc/terms/")
FOAF = Namespace("http://xmlns.com/foaf/0.1/")
RDF = Namespace("http://www.w3.org/1999/02/22-rdf-syntax-ns#")
SKOS = Namespace("http://www.w3.org/2004/02/skos/core#")
XSD = Namespace("http://www.w3.org/2001/XMLSchema#")
VCARD = Namespace("http://www.w3.org/2006/vcard/ns#")
LOCN = Namespace("http://www.w3.org/ns/locn#")
ADMS = Namespace("http://www.w3.org/ns/adms#")
SPDX = Namespace("http://spdx.org/rdf/terms#")
HYDRA = Namespace("http://www.w3.org/ns/hydra/core#")
GSP = Namespace("http://www.opengis.net/ont/geosparql#")
EU = "http://publications.europa.eu/resource/authority/"
IANA = "https://www.iana.org/assignments/media-types/"

PREFIXES = {"dcat": DCAT, "dct": DCTERMS, "foaf": FOAF, "vcard": VCARD, "locn": LOCN, "adms": ADMS,
            "spdx": SPDX, "hydra": HYDRA, "gsp": GSP, "skos": SKOS, "xsd": XSD, "rdf": RDF}

_PLAIN_SEGMENT = re.compile(r"[A-Za-z0-9._~-]+")  # a path segment that needs no quoting

# extension → (rdflib serializer, Content-Type); ``.xml`` is RDF/XML as in ckanext-dcat
FORMATS: dict[str, tuple[str, str]] = {
    "ttl": ("turtle", "text/turtle"),
    "jsonld": ("json-ld", "application/ld+json"),
    "rdf": ("xml", "application/rdf+xml"),
    "xml": ("xml", "application/rdf+xml"),
}


@dataclass(frozen=True)
class Site:
    """The portal that publishes the catalog: base URL (no trailing slash) and its names."""

    base_url: str
    title: str
    publisher: str
    title_en: str = ""
    description: str = ""
    description_en: str = ""

    def uri(self, *parts: str) -> URIRef:
        quoted = (p if _PLAIN_SEGMENT.fullmatch(p) else quote(p, safe="") for p in parts)
        return URIRef("/".join([self.base_url.rstrip("/"), *quoted]))


@dataclass(frozen=True)
class Standard:
    """A standard layout a dataset conforms to (推奨データセット), as ``dct:Standard``."""

    id: str
    title: str  # Japanese
    title_en: str = ""
    description: str = ""  # Japanese


StandardLookup = Callable[[str], Standard | None]


@dataclass(frozen=True)
class Page:
    """One page of a paged catalog, described with hydra as ckanext-dcat does (page URLs as literals)."""

    current: str
    first: str
    last: str
    total: int
    per_page: int
    next: str | None = None
    previous: str | None = None


# -- vocabularies --------------------------------------------------------------------------------------------

_FREQUENCIES = {
    "DAILY": ("daily", "毎日", "日次", "日毎"),
    "WEEKLY": ("weekly", "毎週", "週次", "週1回"),
    "BIWEEKLY": ("biweekly", "隔週"),
    "MONTHLY": ("monthly", "毎月", "月次", "月1回"),
    "BIMONTHLY": ("bimonthly", "隔月"),
    "QUARTERLY": ("quarterly", "四半期", "四半期毎", "四半期ごと", "3か月毎"),
    "ANNUAL_2": ("semiannual", "半年", "半年毎", "半年ごと", "年2回"),
    "ANNUAL": ("annual", "annually", "yearly", "毎年", "年次", "年1回", "年度毎", "年度ごと"),
    "BIENNIAL": ("biennial", "隔年"),
    "HOURLY": ("hourly", "毎時", "1時間毎", "1時間ごと"),
    "15MIN": ("15min", "15分毎", "15分ごと"),
    "UPDATE_CONT": ("continuous", "realtime", "real-time", "リアルタイム", "随時"),
    "IRREG": ("irregular", "不定期"),
    "NEVER": ("never", "更新なし", "更新予定なし"),
    "UNKNOWN": ("unknown", "不明"),
    "OTHER": ("other", "その他"),
}
_FREQUENCY_BY_NAME = {name.lower(): code for code, names in _FREQUENCIES.items() for name in (code, *names)}
_FREQUENCY_BY_NAME.update({c.lower(): c for c in ("CONT", "DAILY_2", "WEEKLY_2", "WEEKLY_3", "MONTHLY_2",
                                                   "MONTHLY_3", "ANNUAL_3", "TRIENNIAL", "1MIN", "5MIN",
                                                   "10MIN", "30MIN", "12HRS")})


def frequency_uri(value: str | None) -> URIRef | None:
    """The EU frequency concept of an update frequency ("daily", "毎月", "IRREG", its URI) or None."""
    if not value or not isinstance(value, str):
        return None
    text = value.strip()
    if text.startswith(EU + "frequency/"):
        return URIRef(text)
    code = _FREQUENCY_BY_NAME.get(text.lower())
    return URIRef(f"{EU}frequency/{code}") if code else None


CC_BY_4 = "http://creativecommons.org/licenses/by/4.0/"
CC0 = "http://creativecommons.org/publicdomain/zero/1.0/"
# 政府標準利用規約（第2.0版）, the Japanese government's standard terms of use (CC BY 4.0 compatible)
GOV_STANDARD_2 = "https://www.kantei.go.jp/jp/singi/it2/densi/kettei/gl2_betten_1.pdf"
_LICENSES = {
    "cc-by-4.0": CC_BY_4, "cc-by": CC_BY_4,
    "cc0-1.0": CC0, "cc-zero": CC0, "cc0": CC0,
    "cc-by-sa-4.0": "http://creativecommons.org/licenses/by-sa/4.0/",
    "cc-by-sa": "http://creativecommons.org/licenses/by-sa/4.0/",
    "gsl-2.0": GOV_STANDARD_2, "政府標準利用規約": GOV_STANDARD_2,
    "政府標準利用規約（第2.0版）": GOV_STANDARD_2,
    "odbl-1.0": "http://opendatacommons.org/licenses/odbl/1-0/",
    "odc-odbl": "http://opendatacommons.org/licenses/odbl/1-0/",
    "pdl-1.0": "https://www.digital.go.jp/resources/open_data/public_data_license_v1.0",
}


def license_uri(license_id: str | None, license_url: str | None = None) -> URIRef | None:
    """The licence document: a known id's canonical URI, else the dataset's own licence URL, else None."""
    known = _LICENSES.get((license_id or "").strip().lower())
    if known:
        return URIRef(known)
    if license_url and re.match(r"https?://", license_url):
        return URIRef(iri(license_url))
    return None


# CKAN format → (EU file-type code, IANA media type)
_FILE_TYPES: dict[str, tuple[str, str | None]] = {
    "CSV": ("CSV", "text/csv"),
    "GEOJSON": ("GEOJSON", "application/geo+json"),
    "JSON": ("JSON", "application/json"),
    "XLSX": ("XLSX", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
    "XLS": ("XLS", "application/vnd.ms-excel"),
    "ODS": ("ODS", "application/vnd.oasis.opendocument.spreadsheet"),
    "PDF": ("PDF", "application/pdf"),
    "ZIP": ("ZIP", "application/zip"),
    "XML": ("XML", "application/xml"),
    "HTML": ("HTML", "text/html"),
    "TXT": ("TXT", "text/plain"),
    "KML": ("KML", "application/vnd.google-earth.kml+xml"),
    "KMZ": ("KMZ", "application/vnd.google-earth.kmz"),
    "SHP": ("SHP", None),
    "DOCX": ("DOCX", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
    "DOC": ("DOC", "application/msword"),
    "PPTX": ("PPTX", "application/vnd.openxmlformats-officedocument.presentationml.presentation"),
    "GPKG": ("GPKG", "application/geopackage+sqlite3"),
    "PARQUET": ("PARQUET", None),
    "PNG": ("PNG", "image/png"),
    "GIF": ("GIF", "image/gif"),
    "TIFF": ("TIFF", "image/tiff"),
    "JPEG": ("JPEG", "image/jpeg"),
    "RDF_TURTLE": ("RDF_TURTLE", "text/turtle"),
    "JSON_LD": ("JSON_LD", "application/ld+json"),
    "RDF_XML": ("RDF_XML", "application/rdf+xml"),
}
_FORMAT_ALIASES = {"JPG": "JPEG", "TEXT": "TXT", "HTM": "HTML", "TIF": "TIFF", "TTL": "RDF_TURTLE",
                   "TURTLE": "RDF_TURTLE", "JSON-LD": "JSON_LD", "JSONLD": "JSON_LD",
                   "RDF": "RDF_XML", "RDF/XML": "RDF_XML"}
_FORMAT_BY_MEDIA_TYPE = {media: code for code, (_, media) in _FILE_TYPES.items() if media}


def file_type(fmt: str | None, mimetype: str | None = None, url: str | None = None) -> str | None:
    """The EU file-type code of a resource, from its format, else its media type, else its URL's extension."""
    name = (fmt or "").strip().lstrip(".").upper()
    name = _FORMAT_ALIASES.get(name, name)
    if name in _FILE_TYPES:
        return name
    by_media = _FORMAT_BY_MEDIA_TYPE.get((mimetype or "").split(";")[0].strip().lower())
    if by_media:
        return by_media
    if not name and url:
        ext = url.rsplit("?", 1)[0].rsplit("/", 1)[-1].rpartition(".")[2].upper()
        ext = _FORMAT_ALIASES.get(ext, ext)
        return ext if ext in _FILE_TYPES else None
    return None


_LANGUAGES = {"ja": "JPN", "jpn": "JPN", "en": "ENG", "eng": "ENG", "zh": "ZHO", "zho": "ZHO", "chi": "ZHO",
              "ko": "KOR", "kor": "KOR", "ain": "AIN", "ru": "RUS", "rus": "RUS"}


def language_uris(value: Any) -> list[URIRef]:
    """EU language concepts for "ja", "ja,en", ["ja", "en"] or 3-letter codes; unknown codes are skipped."""
    if isinstance(value, str):
        codes = [c for c in re.split(r"[,\s]+", value) if c]
    elif isinstance(value, list):
        codes = [c for c in value if isinstance(c, str)]
    else:
        codes = []
    found = [_LANGUAGES.get(c.strip().lower()) for c in codes]
    return [URIRef(f"{EU}language/{code}") for code in dict.fromkeys(c for c in found if c)]


# -- literals and geometry -----------------------------------------------------------------------------------

_IRI_SAFE = ":/?#[]@!$&'()*+,;=%~-._"
_PLAIN_IRI = re.compile(r"[A-Za-z0-9:/?#\[\]@!$&'()*+,;=%~._-]*")


def iri(url: str) -> str:
    """``url`` with the characters an IRI may not hold (spaces, quotes, <>{}|\\^`) percent-encoded."""
    text = url.strip()
    return text if _PLAIN_IRI.fullmatch(text) else quote(text, safe=_IRI_SAFE)


def date_time(value: Any) -> Literal | None:
    """An ``xsd:dateTime`` in UTC (CKAN's naive timestamps are UTC); None for a value that is no date-time."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return Literal(parsed.astimezone(UTC), datatype=XSD.dateTime)


def day(value: Any) -> Literal | None:
    """An ``xsd:date`` from "2024-04-01" or a date-time's date part, or None."""
    if not isinstance(value, str) or len(value.strip()) < 10:
        return None
    try:
        return Literal(date.fromisoformat(value.strip()[:10]).isoformat(), datatype=XSD.date)
    except ValueError:
        return None


def _geometry(value: Any) -> dict[str, Any] | None:
    """A GeoJSON geometry from what ``spatial`` holds: geometry, Feature(Collection), bbox, or as JSON."""
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        try:
            value = json.loads(text)
        except ValueError:
            try:
                value = [float(v) for v in text.split(",")]
            except ValueError:
                return None
    if isinstance(value, list) and len(value) == 4 and all(_is_number(v) for v in value):
        w, s, e, n = (float(v) for v in value)
        return {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}
    if not isinstance(value, dict):
        return None
    if value.get("type") == "Feature":
        return _geometry(value.get("geometry"))
    if value.get("type") == "FeatureCollection":
        parts = [g for g in (_geometry(f) for f in value.get("features") or []) if g]
        return {"type": "GeometryCollection", "geometries": parts} if parts else None
    try:
        geometry_wkt(value)
    except (ValueError, TypeError, KeyError):
        return None
    return value


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _position(p: Any) -> str:
    if not isinstance(p, list) or len(p) < 2 or not all(_is_number(v) for v in p[:3]):
        raise ValueError(f"not a GeoJSON position: {p!r}")
    return " ".join(repr(float(v)) for v in p[:2])


def _ring(ring: Any) -> str:
    if not isinstance(ring, list) or not ring:
        raise ValueError("empty coordinate list")
    return "(" + ", ".join(_position(p) for p in ring) + ")"


def _rings(rings: Any) -> str:
    if not isinstance(rings, list) or not rings:
        raise ValueError("empty ring list")
    return "(" + ", ".join(_ring(r) for r in rings) + ")"


def geometry_wkt(geometry: Mapping[str, Any]) -> str:
    """WKT (CRS84: longitude first, as GeoJSON) of a GeoJSON geometry; ValueError if it is malformed."""
    kind, coords = geometry.get("type"), geometry.get("coordinates")
    if kind == "Point":
        return f"POINT ({_position(coords)})"
    if kind == "LineString":
        return f"LINESTRING {_ring(coords)}"
    if kind == "Polygon":
        return f"POLYGON {_rings(coords)}"
    if kind == "MultiPoint":
        if not isinstance(coords, list) or not coords:
            raise ValueError("empty MultiPoint")
        return "MULTIPOINT (" + ", ".join(f"({_position(p)})" for p in coords) + ")"
    if kind == "MultiLineString":
        return f"MULTILINESTRING {_rings(coords)}"
    if kind == "MultiPolygon":
        if not isinstance(coords, list) or not coords:
            raise ValueError("empty MultiPolygon")
        return "MULTIPOLYGON (" + ", ".join(_rings(p) for p in coords) + ")"
    if kind == "GeometryCollection":
        parts = geometry.get("geometries")
        if not isinstance(parts, list) or not parts:
            raise ValueError("empty GeometryCollection")
        return "GEOMETRYCOLLECTION (" + ", ".join(geometry_wkt(g) for g in parts) + ")"
    raise ValueError(f"unknown GeoJSON geometry type {kind!r}")


def _positions(geometry: Mapping[str, Any]) -> Iterable[tuple[float, float]]:
    if geometry.get("type") == "GeometryCollection":
        for part in geometry["geometries"]:
            yield from _positions(part)
        return
    stack: list[Any] = [geometry["coordinates"]]
    while stack:
        item = stack.pop()
        if item and _is_number(item[0]):
            yield float(item[0]), float(item[1])
        else:
            stack.extend(item)


def bbox_wkt(geometry: Mapping[str, Any]) -> str:
    """The bounding box of a (valid) GeoJSON geometry as a WKT polygon, for ``dcat:bbox``."""
    points = list(_positions(geometry))
    w, e = min(p[0] for p in points), max(p[0] for p in points)
    s, n = min(p[1] for p in points), max(p[1] for p in points)
    corners = [(w, s), (e, s), (e, n), (w, n), (w, s)]
    return "POLYGON ((" + ", ".join(f"{x!r} {y!r}" for x, y in corners) + "))"


# -- graph building ------------------------------------------------------------------------------------------


def new_graph() -> Graph:
    graph = Graph(bind_namespaces="rdflib")
    for prefix, namespace in PREFIXES.items():
        graph.bind(prefix, namespace, override=True)
    return graph


def _field(package: Mapping[str, Any], name: str) -> Any:
    """A top-level field, or the same key among CKAN ``extras`` (harvested datasets keep them there)."""
    value = package.get(name)
    if value not in (None, "", []):
        return value
    for extra in package.get("extras") or []:
        if isinstance(extra, dict) and extra.get("key") == name and extra.get("value") not in (None, ""):
            return extra["value"]
    return None


# characters XML 1.0 cannot hold (RDF/XML would not parse back); spreadsheets leave such control codes in text
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _text(graph: Graph, node: URIRef | BNode, predicate: URIRef, value: Any, lang: str = "ja") -> None:
    if isinstance(value, str):
        text = _NOT_XML.sub("", value).strip()
        if text:
            graph.add((node, predicate, Literal(text, lang=lang)))


def _url(graph: Graph, node: URIRef | BNode, predicate: URIRef, value: Any, site: Site) -> bool:
    """Add an absolute URL (a path is taken as the portal's); False when ``value`` is no usable URL."""
    if not isinstance(value, str) or not value.strip():
        return False
    text = value.strip()
    if text.startswith("/"):
        text = site.base_url.rstrip("/") + text
    if not re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:", text):
        return False
    graph.add((node, predicate, URIRef(iri(text))))
    return True


def add_organization(graph: Graph, org: Mapping[str, Any], site: Site) -> URIRef:
    """An organization (municipality, prefecture, partner firm) as ``foaf:Organization``, a ``foaf:Agent``."""
    node = site.uri("organization", str(org.get("name") or org.get("id")))
    graph.add((node, RDF.type, FOAF.Agent))
    graph.add((node, RDF.type, FOAF.Organization))
    _text(graph, node, FOAF.name, org.get("title") or org.get("name"))
    if org.get("tenant"):  # the municipality's 団体コード
        graph.add((node, DCTERMS.identifier, Literal(str(org["tenant"]))))
    return node


def _contact(graph: Graph, dataset: URIRef, package: Mapping[str, Any]) -> None:
    name = _field(package, "contact_name") or package.get("maintainer") or package.get("author")
    email = _field(package, "contact_email") or package.get("maintainer_email") or package.get("author_email")
    url = _field(package, "contact_url")
    if not (name or email or url):
        return
    node = BNode()
    graph.add((dataset, DCAT.contactPoint, node))
    graph.add((node, RDF.type, VCARD.Kind))
    _text(graph, node, VCARD.fn, name or email)
    if isinstance(email, str) and "@" in email:
        graph.add((node, VCARD.hasEmail, URIRef("mailto:" + quote(email.strip(), safe="@+.-_"))))
    if isinstance(url, str) and re.match(r"https?://", url):
        graph.add((node, VCARD.hasURL, URIRef(iri(url))))


def _spatial(graph: Graph, dataset: URIRef, value: Any) -> None:
    geometry = _geometry(value)
    if geometry is None:
        return
    node = BNode()
    graph.add((dataset, DCTERMS.spatial, node))
    graph.add((node, RDF.type, DCTERMS.Location))
    graph.add((node, LOCN.geometry, Literal(geometry_wkt(geometry), datatype=GSP.wktLiteral)))
    graph.add((node, LOCN.geometry, Literal(json.dumps(geometry, ensure_ascii=False, separators=(",", ":")),
                                            datatype=GSP.geoJSONLiteral)))
    graph.add((node, DCAT.bbox, Literal(bbox_wkt(geometry), datatype=GSP.wktLiteral)))


def _temporal(graph: Graph, dataset: URIRef, start: Any, end: Any) -> None:
    first, last = day(start), day(end)
    if first is None and last is None:
        return
    node = BNode()
    graph.add((dataset, DCTERMS.temporal, node))
    graph.add((node, RDF.type, DCTERMS.PeriodOfTime))
    if first is not None:
        graph.add((node, DCAT.startDate, first))
    if last is not None:
        graph.add((node, DCAT.endDate, last))


def _standards(graph: Graph, site: Site, value: Any, lookup: StandardLookup | None) -> list[URIRef]:
    ids = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    nodes = []
    for layout_id in (i.strip() for i in ids if isinstance(i, str) and i.strip()):
        node = site.uri("standard", layout_id)
        graph.add((node, RDF.type, DCTERMS.Standard))
        graph.add((node, DCTERMS.identifier, Literal(layout_id)))
        found = lookup(layout_id) if lookup else None
        if found is not None:
            _text(graph, node, DCTERMS.title, found.title)
            _text(graph, node, DCTERMS.title, found.title_en, "en")
            _text(graph, node, DCTERMS.description, found.description)
        nodes.append(node)
    return nodes


def _theme(graph: Graph, site: Site, group: Mapping[str, Any]) -> URIRef:
    node = site.uri("group", str(group.get("name") or group.get("id")))
    graph.add((node, RDF.type, SKOS.Concept))
    _text(graph, node, SKOS.prefLabel, group.get("title") or group.get("display_name") or group.get("name"))
    graph.add((node, SKOS.inScheme, site.uri("group")))
    return node


def add_dataset(graph: Graph, package: Mapping[str, Any], site: Site,
                standards: StandardLookup | None = None) -> URIRef:
    """Add one CKAN package as a ``dcat:Dataset`` with its distributions; returns the dataset's URI."""
    pid = str(package["id"])
    node = site.uri("dataset", pid)
    graph.add((node, RDF.type, DCAT.Dataset))
    graph.add((node, DCTERMS.identifier, Literal(pid)))
    _text(graph, node, DCTERMS.title, package.get("title") or package.get("name"))
    _text(graph, node, DCTERMS.title, _field(package, "title_en"), "en")
    _text(graph, node, DCTERMS.description, package.get("notes"))
    _text(graph, node, DCTERMS.description, _field(package, "notes_en"), "en")
    for tag in package.get("tags") or []:
        _text(graph, node, DCAT.keyword, (tag.get("display_name") or tag.get("name")) if isinstance(tag, dict)
              else tag)
    for group in package.get("groups") or []:
        if isinstance(group, dict) and (group.get("name") or group.get("id")):
            graph.add((node, DCAT.theme, _theme(graph, site, group)))
    org = package.get("organization")
    if isinstance(org, dict) and (org.get("name") or org.get("id")):
        graph.add((node, DCTERMS.publisher, add_organization(graph, org, site)))
    _contact(graph, node, package)
    frequency = frequency_uri(_field(package, "frequency"))
    if frequency is not None:
        graph.add((node, DCTERMS.accrualPeriodicity, frequency))
        graph.add((frequency, RDF.type, DCTERMS.Frequency))
    _spatial(graph, node, _field(package, "spatial"))
    _temporal(graph, node, _field(package, "temporal_start"), _field(package, "temporal_end"))
    for predicate, key in ((DCTERMS.issued, "metadata_created"), (DCTERMS.modified, "metadata_modified")):
        stamp = date_time(package.get(key))
        if stamp is not None:
            graph.add((node, predicate, stamp))
    landing = site.uri("dataset", str(package.get("name") or pid))
    graph.add((node, DCAT.landingPage, landing))
    graph.add((landing, RDF.type, FOAF.Document))
    layouts = _standards(graph, site, _field(package, "conforms_to"), standards)
    for layout in layouts:
        graph.add((node, DCTERMS.conformsTo, layout))
    for language in language_uris(_field(package, "language") or "ja"):
        graph.add((node, DCTERMS.language, language))
        graph.add((language, RDF.type, DCTERMS.LinguisticSystem))
    access = URIRef(f"{EU}access-right/{'NON_PUBLIC' if package.get('private') else 'PUBLIC'}")
    graph.add((node, DCTERMS.accessRights, access))
    graph.add((access, RDF.type, DCTERMS.RightsStatement))
    if package.get("version"):
        graph.add((node, DCAT.version, Literal(str(package["version"]))))
    if package.get("name"):
        ident = BNode()
        graph.add((node, ADMS.identifier, ident))
        graph.add((ident, RDF.type, ADMS.Identifier))
        graph.add((ident, SKOS.notation, Literal(str(package["name"]))))
        graph.add((ident, ADMS.schemaAgency, Literal(site.title, lang="ja")))
    licence = license_uri(package.get("license_id"), package.get("license_url"))
    if licence is not None:
        graph.add((licence, RDF.type, DCTERMS.LicenseDocument))
        _text(graph, licence, DCTERMS.title, package.get("license_title"))
    for resource in package.get("resources") or []:
        if isinstance(resource, dict) and resource.get("id") and resource.get("state", "active") == "active":
            dist = _distribution(graph, site, pid, resource, licence)
            graph.add((node, DCAT.distribution, dist))
            if file_type(resource.get("format"), resource.get("mimetype"), resource.get("url")) == "CSV":
                for layout in layouts:  # the layout describes the CSV's columns
                    graph.add((dist, DCTERMS.conformsTo, layout))
    return node


def _distribution(graph: Graph, site: Site, pid: str, resource: Mapping[str, Any],
                  licence: URIRef | None) -> URIRef:
    node = site.uri("dataset", pid, "resource", str(resource["id"]))
    graph.add((node, RDF.type, DCAT.Distribution))
    _text(graph, node, DCTERMS.title, resource.get("name"))
    _text(graph, node, DCTERMS.description, resource.get("description"))
    url = resource.get("url") or ""
    if not _url(graph, node, DCAT.accessURL, url, site):  # DCAT-AP requires one: the dataset's page then
        graph.add((node, DCAT.accessURL, site.uri("dataset", pid)))
    if resource.get("url_type") == "upload":
        _url(graph, node, DCAT.downloadURL, url, site)
    _url(graph, node, DCAT.downloadURL, resource.get("download_url"), site)
    code = file_type(resource.get("format"), resource.get("mimetype"), url)
    if code is not None:
        fmt = URIRef(f"{EU}file-type/{code}")
        graph.add((node, DCTERMS["format"], fmt))
        graph.add((fmt, RDF.type, DCTERMS.MediaTypeOrExtent))
    mimetype = (resource.get("mimetype") or "").split(";")[0].strip().lower()
    if not re.fullmatch(r"[a-z0-9.+-]+/[a-z0-9.+-]+", mimetype):
        mimetype = (_FILE_TYPES[code][1] or "") if code else ""
    if mimetype:
        media = URIRef(IANA + mimetype)
        graph.add((node, DCAT.mediaType, media))
        graph.add((media, RDF.type, DCTERMS.MediaType))
    size = resource.get("size")
    if isinstance(size, int) and not isinstance(size, bool) and size >= 0:
        graph.add((node, DCAT.byteSize, Literal(str(size), datatype=XSD.nonNegativeInteger)))
    _checksum(graph, node, resource.get("hash"))
    if licence is not None:
        graph.add((node, DCTERMS.license, licence))
    for predicate, key in ((DCTERMS.issued, "created"), (DCTERMS.modified, "last_modified")):
        stamp = date_time(resource.get(key))
        if stamp is not None:
            graph.add((node, predicate, stamp))
    return node


_DIGEST_LENGTHS = {64: "sha256", 40: "sha1", 32: "md5"}


def _checksum(graph: Graph, node: URIRef, value: Any) -> None:
    """``spdx:checksum`` from CKAN's free-form ``hash``: "sha256:<hex>" or bare hex (algorithm by length)."""
    if not isinstance(value, str):
        return
    algorithm, _, digest = value.strip().lower().rpartition(":")
    algorithm = algorithm.replace("-", "") or _DIGEST_LENGTHS.get(len(digest), "")
    if algorithm not in ("sha256", "sha1", "md5") or not re.fullmatch(r"[0-9a-f]+", digest):
        return
    checksum = BNode()
    graph.add((node, SPDX.checksum, checksum))
    graph.add((checksum, RDF.type, SPDX.Checksum))
    graph.add((checksum, SPDX.algorithm, SPDX[f"checksumAlgorithm_{algorithm}"]))
    graph.add((checksum, SPDX.checksumValue, Literal(digest, datatype=XSD.hexBinary)))


def dataset_graph(package: Mapping[str, Any], site: Site, standards: StandardLookup | None = None) -> Graph:
    """One dataset on its own (``/dataset/{id}.ttl``)."""
    graph = new_graph()
    add_dataset(graph, package, site, standards)
    return graph


def catalog_graph(packages: Iterable[Mapping[str, Any]], site: Site, *, page: Page | None = None,
                  modified: str | None = None, standards: StandardLookup | None = None) -> Graph:
    """The ``dcat:Catalog`` holding ``packages`` (one page of them when ``page`` is given)."""
    graph = new_graph()
    catalog = site.uri("catalog")
    graph.add((catalog, RDF.type, DCAT.Catalog))
    _text(graph, catalog, DCTERMS.title, site.title)
    _text(graph, catalog, DCTERMS.title, site.title_en, "en")
    _text(graph, catalog, DCTERMS.description, site.description or site.title)
    _text(graph, catalog, DCTERMS.description, site.description_en, "en")
    publisher = URIRef(f"{catalog}#publisher")
    graph.add((catalog, DCTERMS.publisher, publisher))
    graph.add((publisher, RDF.type, FOAF.Agent))
    _text(graph, publisher, FOAF.name, site.publisher)
    graph.add((catalog, FOAF.homepage, URIRef(site.base_url.rstrip("/") + "/")))
    graph.add((catalog, DCTERMS.language, URIRef(f"{EU}language/JPN")))
    scheme = site.uri("group")
    graph.add((catalog, DCAT.themeTaxonomy, scheme))
    graph.add((scheme, RDF.type, SKOS.ConceptScheme))
    _text(graph, scheme, DCTERMS.title, f"{site.title} 分類")
    newest = date_time(modified)
    for package in packages:
        graph.add((catalog, DCAT.dataset, add_dataset(graph, package, site, standards)))
        stamp = date_time(package.get("metadata_modified"))
        if stamp is not None and (newest is None or stamp.toPython() > newest.toPython()):
            newest = stamp
    if newest is not None:
        graph.add((catalog, DCTERMS.modified, newest))
    if page is not None:
        _paging(graph, page)
    return graph


def _paging(graph: Graph, page: Page) -> None:
    node = URIRef(iri(page.current))
    graph.add((node, RDF.type, HYDRA.PagedCollection))
    graph.add((node, HYDRA.totalItems, Literal(page.total)))
    graph.add((node, HYDRA.itemsPerPage, Literal(page.per_page)))
    graph.add((node, HYDRA.firstPage, Literal(page.first)))
    graph.add((node, HYDRA.lastPage, Literal(page.last)))
    if page.next:
        graph.add((node, HYDRA.nextPage, Literal(page.next)))
    if page.previous:
        graph.add((node, HYDRA.previousPage, Literal(page.previous)))


def serialize(graph: Graph, ext: str) -> bytes:
    """``graph`` in the format of a URL extension (``ttl``, ``jsonld``, ``rdf``, ``xml``), UTF-8."""
    fmt, _ = FORMATS[ext]
    if fmt == "json-ld":
        context = {prefix: str(ns) for prefix, ns in PREFIXES.items()}
        return graph.serialize(format=fmt, context=context, auto_compact=True, encoding="utf-8")
    return graph.serialize(format=fmt, encoding="utf-8")
