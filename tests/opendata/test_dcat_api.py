"""The DCAT endpoints over HTTP: /catalog.ttl|jsonld|rdf|xml paged, /dataset/{id}.*, privacy, filters."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from rdflib import Graph, Literal, URIRef
from rdflib.compare import isomorphic

from society5.core.auth import Principal
from society5.core.platform import Platform
from society5.opendata import actions, dcat, dcat_api
from society5.opendata.dcat import DCAT, DCTERMS, EU, HYDRA, RDF
from society5.opendata.service import service as opendata_service
from society5.web.app import create_app

pytestmark = pytest.mark.filterwarnings("ignore:ConjunctiveGraph is deprecated:DeprecationWarning")

BASE = "http://testserver"
ADMIN = Principal(role="admin", name="test")
SAPPORO, OTARU = "011002", "012033"


@dataclass
class Portal:
    client: TestClient
    platform: Platform
    ids: dict[str, str]  # dataset name → id
    tokens: dict[str, dict[str, str]]  # who → headers

    def rdf(self, path: str, who: str = "", fmt: str = "turtle", status: int = 200) -> Graph:
        response = self.client.get(path, headers=self.tokens.get(who, {}))
        assert response.status_code == status, response.text
        return Graph().parse(data=response.content, format=fmt)

    def add(self, **pkg: Any) -> dict[str, Any]:
        ctx = actions.ActionContext(self.platform, ADMIN, base_url=BASE)
        created: dict[str, Any] = actions.call("package_create", ctx, pkg)
        self.ids[created["name"]] = created["id"]
        return created


def _seed(portal: Portal) -> None:
    ctx = actions.ActionContext(portal.platform, ADMIN, base_url=BASE)
    actions.call("organization_create", ctx, {"name": "sapporo", "title": "札幌市", "tenant": SAPPORO})
    actions.call("organization_create", ctx, {"name": "otaru", "title": "小樽市", "tenant": OTARU})
    actions.call("group_create", ctx, {"name": "health", "title": "健康・福祉"})
    portal.add(
        name="sapporo-aed", title="札幌市 AED設置箇所一覧", notes="市内の AED の設置場所",
        owner_org="sapporo", license_id="CC-BY-4.0", tags=[{"name": "AED"}, {"name": "医療"}],
        groups=[{"name": "health"}],
        frequency="monthly", contact_name="札幌市保健所", contact_email="hoken@city.sapporo.jp",
        spatial={"type": "Point", "coordinates": [141.3545, 43.0621]}, temporal_start="2024-04-01",
        temporal_end="2025-03-31", language="ja", conforms_to="aed",
        resources=[{"name": "AED一覧", "url": "https://www.city.sapporo.jp/aed.csv", "format": "CSV"}])
    portal.add(
        name="otaru-events", title="小樽市 イベント一覧", notes="催し物", owner_org="otaru",
        license_id="gsl-2.0", tags=[{"name": "観光"}], frequency="irregular",
        resources=[{"name": "イベント", "url": "https://www.city.otaru.lg.jp/events.pdf", "format": "PDF"}])
    portal.add(name="sapporo-internal", title="札幌市 内部資料", owner_org="sapporo", private=True,
               license_id="CC-BY-4.0")


@pytest.fixture
def portal(platform: Platform, tmp_path: Path) -> Iterator[Portal]:
    platform.settings = platform.settings.model_copy(
        update={"auth": "on", "opendata_dir": str(tmp_path / "opendata")})
    app = create_app(platform.settings, services=[opendata_service], platform=platform)
    keys = platform.keys
    tokens = {
        "admin": {"Authorization": f"Bearer {keys.create('admin').key}"},
        "sapporo_reader": {"Authorization": f"Bearer {keys.create('reader', tenant=SAPPORO).key}"},
        "otaru_operator": {"Authorization": f"Bearer {keys.create('operator', tenant=OTARU).key}"},
    }
    with TestClient(app) as client:
        found = Portal(client, platform, {}, tokens)
        _seed(found)
        yield found


def _dataset_uri(portal: Portal, name: str) -> URIRef:
    return URIRef(f"{BASE}/dataset/{portal.ids[name]}")


def _names(graph: Graph) -> set[str]:
    pages = (graph.value(d, DCAT.landingPage) for d in graph.subjects(RDF.type, DCAT.Dataset))
    return {str(page).rsplit("/", 1)[1] for page in pages}


FORMATS = [("ttl", "turtle", "text/turtle"), ("jsonld", "json-ld", "application/ld+json"),
           ("rdf", "xml", "application/rdf+xml"), ("xml", "xml", "application/rdf+xml")]


def test_catalog_in_every_format(portal: Portal) -> None:
    for ext, fmt, content_type in FORMATS:
        response = portal.client.get(f"/catalog.{ext}")
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].split(";")[0] == content_type
        check_catalog(portal, Graph().parse(data=response.content, format=fmt))


def check_catalog(portal: Portal, g: Graph) -> None:
    catalog = URIRef(f"{BASE}/catalog")
    assert (catalog, RDF.type, DCAT.Catalog) in g
    assert Literal("北海道オープンデータ", lang="ja") in set(g.objects(catalog, DCTERMS.title))
    datasets = set(g.subjects(RDF.type, DCAT.Dataset))
    assert datasets == {_dataset_uri(portal, "sapporo-aed"), _dataset_uri(portal, "otaru-events")}
    assert set(g.objects(catalog, DCAT.dataset)) == datasets  # the private dataset is absent
    aed = _dataset_uri(portal, "sapporo-aed")
    assert g.value(aed, DCTERMS.title) == Literal("札幌市 AED設置箇所一覧", lang="ja")
    distribution = g.value(aed, DCAT.distribution)
    assert g.value(distribution, DCAT.accessURL) == URIRef("https://www.city.sapporo.jp/aed.csv")
    assert g.value(distribution, DCTERMS.license) == URIRef("http://creativecommons.org/licenses/by/4.0/")
    otaru = g.value(_dataset_uri(portal, "otaru-events"), DCAT.distribution)
    assert g.value(otaru, DCTERMS.license) == URIRef(dcat.GOV_STANDARD_2)
    standard = g.value(aed, DCTERMS.conformsTo)  # title from the layouts registry
    assert g.value(standard, DCTERMS.title, any=True) is not None
    assert Literal("AED設置箇所一覧", lang="ja") in set(g.objects(standard, DCTERMS.title))
    assert g.value(g.value(aed, DCTERMS.temporal), DCAT.startDate) == Literal(
        "2024-04-01", datatype=URIRef("http://www.w3.org/2001/XMLSchema#date"))
    assert (g.value(aed, DCTERMS.spatial), RDF.type, DCTERMS.Location) in g
    assert g.value(aed, DCTERMS.accrualPeriodicity) == URIRef(f"{EU}frequency/MONTHLY")
    assert g.value(aed, DCAT.landingPage) == URIRef(f"{BASE}/dataset/sapporo-aed")


def _without_paging(graph: Graph) -> Graph:
    """The catalog less its hydra node, whose page URLs name the format they were asked in."""
    for collection in list(graph.subjects(RDF.type, HYDRA.PagedCollection)):
        assert str(collection).startswith(f"{BASE}/catalog.")
        graph.remove((collection, None, None))
    return graph


def test_turtle_and_jsonld_are_the_same_graph(portal: Portal) -> None:
    turtle = _without_paging(portal.rdf("/catalog.ttl"))
    assert len(turtle) > 50
    assert isomorphic(turtle, _without_paging(portal.rdf("/catalog.jsonld", fmt="json-ld")))
    assert isomorphic(turtle, _without_paging(portal.rdf("/catalog.rdf", fmt="xml")))
    assert isomorphic(turtle, _without_paging(portal.rdf("/catalog.xml", fmt="xml")))
    one = portal.ids["sapporo-aed"]
    by_name = portal.rdf("/dataset/sapporo-aed.jsonld", fmt="json-ld")
    assert isomorphic(portal.rdf(f"/dataset/{one}.ttl"), by_name)


def test_dataset_endpoint(portal: Portal) -> None:
    g = portal.rdf("/dataset/otaru-events.ttl")
    assert set(g.subjects(RDF.type, DCAT.Dataset)) == {_dataset_uri(portal, "otaru-events")}
    assert not list(g.subjects(RDF.type, DCAT.Catalog))
    response = portal.client.get(f"/dataset/{portal.ids['otaru-events']}.rdf")
    assert response.headers["content-type"].startswith("application/rdf+xml")
    missing = portal.client.get("/dataset/no-such-dataset.ttl")
    assert missing.status_code == 404 and "no-such-dataset" in missing.json()["error"]["detail"]


def test_private_dataset_only_for_a_token_that_may_read_it(portal: Portal) -> None:
    private = _dataset_uri(portal, "sapporo-internal")
    for who in ("", "otaru_operator"):
        assert private not in set(portal.rdf("/catalog.ttl", who).subjects(RDF.type, DCAT.Dataset))
        for ref in ("sapporo-internal", portal.ids["sapporo-internal"]):
            response = portal.client.get(f"/dataset/{ref}.ttl", headers=portal.tokens.get(who, {}))
            assert response.status_code == 404, (who, response.text)
    for who in ("sapporo_reader", "admin"):
        assert private in set(portal.rdf("/catalog.ttl", who).subjects(RDF.type, DCAT.Dataset))
        g = portal.rdf("/dataset/sapporo-internal.ttl", who)
        assert g.value(private, DCTERMS.accessRights) == URIRef(f"{EU}access-right/NON_PUBLIC")
    # tokens as CKAN clients send them: no scheme, or X-CKAN-API-Key
    token = portal.tokens["sapporo_reader"]["Authorization"].removeprefix("Bearer ")
    for headers in ({"Authorization": token}, {"X-CKAN-API-Key": token}):
        response = portal.client.get("/dataset/sapporo-internal.jsonld", headers=headers)
        assert response.status_code == 200, response.text
    for headers in ({"Authorization": "Bearer not-a-key"}, {"X-CKAN-API-Key": "not-a-key"}):
        bad = portal.client.get("/catalog.ttl", headers=headers)
        assert bad.status_code == 401 and bad.json()["error"]["detail"], bad.text


def test_deleted_dataset_disappears(portal: Portal) -> None:
    ctx = actions.ActionContext(portal.platform, ADMIN, base_url=BASE)
    actions.call("package_delete", ctx, {"id": "otaru-events"})
    assert _names(portal.rdf("/catalog.ttl", "admin")) == {"sapporo-aed", "sapporo-internal"}
    assert portal.client.get("/dataset/otaru-events.ttl", headers=portal.tokens["admin"]).status_code == 404


def test_paging_follows_hydra_links(portal: Portal, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dcat_api, "PAGE_SIZE", 2)
    for i in range(3):
        portal.add(name=f"extra-{i}", title=f"追加データ {i}", owner_org="otaru", license_id="CC-BY-4.0")
    seen: list[str] = []
    url: str | None = f"{BASE}/catalog.ttl"
    pages = 0
    while url:
        g = portal.rdf(url.removeprefix(BASE))
        pages += 1
        seen += sorted(_names(g))
        collection = next(g.subjects(RDF.type, HYDRA.PagedCollection))
        assert g.value(collection, HYDRA.totalItems).toPython() == 5
        assert g.value(collection, HYDRA.itemsPerPage).toPython() == 2
        assert str(g.value(collection, HYDRA.lastPage)) == f"{BASE}/catalog.ttl?page=3"
        assert str(g.value(collection, HYDRA.firstPage)) == f"{BASE}/catalog.ttl?page=1"
        next_page = g.value(collection, HYDRA.nextPage)
        url = str(next_page) if next_page is not None else None
    assert pages == 3
    assert sorted(seen) == sorted(["sapporo-aed", "otaru-events", "extra-0", "extra-1", "extra-2"])
    assert portal.client.get("/catalog.ttl?page=4").status_code == 404
    assert portal.client.get("/catalog.ttl?page=0").status_code == 400
    assert portal.client.get("/catalog.ttl?page=two").status_code == 400


def test_modified_since_q_and_fq(portal: Portal) -> None:
    assert _names(portal.rdf("/catalog.ttl?modified_since=2000-01-01")) == {"sapporo-aed", "otaru-events"}
    assert _names(portal.rdf("/catalog.ttl?modified_since=2999-01-01T00:00:00Z")) == set()
    bad = portal.client.get("/catalog.ttl?modified_since=yesterday")
    assert bad.status_code == 400 and "modified_since" in bad.json()["error"]["detail"]
    assert _names(portal.rdf("/catalog.ttl?q=AED")) == {"sapporo-aed"}
    assert _names(portal.rdf("/catalog.ttl?fq=organization:otaru")) == {"otaru-events"}
    g = portal.rdf("/catalog.ttl?fq=organization:otaru&page=1")
    collection = next(g.subjects(RDF.type, HYDRA.PagedCollection))
    assert "fq=organization%3Aotaru" in str(g.value(collection, HYDRA.firstPage))
    assert portal.client.get("/catalog.ttl?fq=organization:(").status_code == 400


def test_site_url_setting_names_the_uris(portal: Portal) -> None:
    site = "https://opendata.pref.hokkaido.example"
    portal.platform.settings = portal.platform.settings.model_copy(update={"opendata_site_url": site + "/"})
    g = portal.rdf("/dataset/sapporo-aed.ttl")
    assert (URIRef(f"{site}/dataset/{portal.ids['sapporo-aed']}"), RDF.type, DCAT.Dataset) in g


def test_standard_lookup_uses_the_layouts_registry() -> None:
    found = dcat_api.standard_of("covid19_patients")
    assert found is not None and found.title and found.title_en
    assert dcat_api.standard_of("no-such-layout") is None
