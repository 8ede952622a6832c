"""package_search: Japanese substring text, the fq subset, paging, sorting, facets and visibility."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from society5.opendata.actions import SearchError
from society5.opendata.search import parse

from .conftest import Ckan, Tokens

DATASETS: list[dict[str, Any]] = [
    {"name": "aed-sapporo", "title": "AED設置箇所一覧", "owner_org": "sapporo", "tags": ["防災", "医療"],
     "conforms_to": "aed", "resources": [{"url": "https://e.jp/aed.csv"}]},
    {"name": "shelter-sapporo", "title": "指定緊急避難場所一覧", "owner_org": "sapporo", "tags": ["防災"],
     "license_id": "CC0-1.0", "resources": [{"url": "https://e.jp/s.geojson"}, {"url": "https://e.jp/s.csv"}]},
    {"name": "walkway-counts", "title": "地下歩行空間 歩行者数", "owner_org": "sapporo",
     "tags": ["交通", "統計"],
     "notes": "札幌駅前通地下歩行空間の15分毎の通行量", "frequency": "daily"},
    {"name": "hakodate-tourism", "title": "観光施設一覧", "owner_org": "hakodate", "tags": ["観光"],
     "resources": [{"url": "https://e.jp/k.xlsx", "name": "函館山ロープウェイ"}]},
    {"name": "hakodate-events", "title": "イベント一覧", "owner_org": "hakodate",
     "tags": ["観光", "イベント"],
     "license_id": "gsl-2.0"},
    {"name": "hakodate-private", "title": "職員向け 防災 内部資料", "owner_org": "hakodate", "tags": ["防災"],
     "private": True},
]


@pytest.fixture
def catalog(ckan: Ckan, tokens: Tokens, orgs: Any) -> Ckan:
    for data in DATASETS:
        token = tokens.sapporo if data["owner_org"] == "sapporo" else tokens.hakodate
        ckan.ok("package_create", token, **data)
    return ckan


def names(result: dict[str, Any]) -> list[str]:
    return sorted(r["name"] for r in result["results"])


def test_text_is_substring_search(catalog: Ckan) -> None:
    assert names(catalog.ok("package_search", q="避難")) == ["shelter-sapporo"]  # 2 characters: LIKE
    assert names(catalog.ok("package_search", q="緊急避難場所")) == ["shelter-sapporo"]  # trigram index
    assert names(catalog.ok("package_search", q="一覧")) == [
        "aed-sapporo", "hakodate-events", "hakodate-tourism", "shelter-sapporo"]
    assert names(catalog.ok("package_search", q="通行量")) == ["walkway-counts"]  # in notes
    # the organization's title
    assert names(catalog.ok("package_search", q="函館市")) == ["hakodate-events", "hakodate-tourism"]
    assert names(catalog.ok("package_search", q="ロープウェイ")) == ["hakodate-tourism"]  # resource name
    assert names(catalog.ok("package_search", q="ａｅｄ")) == ["aed-sapporo"]  # full-width, other case
    assert names(catalog.ok("package_search", q="一覧　避難")) == ["shelter-sapporo"]  # words are ANDed
    assert catalog.ok("package_search", q="防災")["count"] == 2  # the private one is not counted
    assert catalog.ok("package_search", q="tags:観光 イベント")["results"][0]["name"] == "hakodate-events"
    assert catalog.ok("package_search", q="http://example.jp/(")["count"] == 0  # not a query: plain words
    assert catalog.ok("package_search", q="100%_")["count"] == 0  # LIKE wildcards are literal


def test_fq_subset(catalog: Ckan) -> None:
    def fq(expr: str, **more: Any) -> list[str]:
        return names(catalog.ok("package_search", fq=expr, rows=100, **more))

    assert fq("tags:防災") == ["aed-sapporo", "shelter-sapporo"]
    assert fq('organization:"hakodate"') == ["hakodate-events", "hakodate-tourism"]
    assert fq("res_format:CSV AND -res_format:GeoJSON") == ["aed-sapporo"]
    assert fq("+tags:観光 +license_id:gsl-2.0") == ["hakodate-events"]
    assert fq("tags:(交通 OR イベント)") == ["hakodate-events", "walkway-counts"]
    assert fq("(tags:交通 OR tags:イベント) AND organization:sapporo") == ["walkway-counts"]
    assert fq("conforms_to:aed") == ["aed-sapporo"]
    assert fq("name:hakodate-*") == ["hakodate-events", "hakodate-tourism"]
    assert fq("frequency:*") == ["walkway-counts"]
    assert fq("NOT organization:sapporo") == ["hakodate-events", "hakodate-tourism"]
    every = names(catalog.ok("package_search", rows=100))
    assert fq("metadata_modified:[2000-01-01T00:00:00Z TO *]") == every
    assert fq("metadata_modified:[* TO 2000-01-01]") == []
    both = catalog.ok("package_search", fq_list=["tags:防災", "res_format:GeoJSON"])
    assert names(both) == ["shelter-sapporo"]
    for bad in ("tags:", "owner:x", "tags:(a OR", '"open', "tags:a*b", "name:[a TO b]", "AND tags:x", "x)"):
        err = catalog.error(catalog.post("package_search", fq=bad), 409, "Search Query Error")
        assert "Search Query Error" in err["message"], bad


def test_paging_sorting_and_visibility(catalog: Ckan, tokens: Tokens) -> None:
    everything = catalog.ok("package_search", rows=2, sort="name asc")
    assert everything["count"] == 5 and [r["name"] for r in everything["results"]] == [
        "aed-sapporo", "hakodate-events"]
    page = catalog.ok("package_search", rows=2, start=4, sort="name asc")
    assert [r["name"] for r in page["results"]] == ["walkway-counts"] and page["sort"] == "name asc"
    newest = catalog.ok("package_search", rows=1)["results"][0]["name"]
    assert newest == "hakodate-events"
    assert catalog.ok("package_search")["sort"] == "score desc, metadata_modified desc"
    titles = [r["title"] for r in catalog.ok("package_search", sort="title_string desc")["results"]]
    assert titles == sorted(titles, reverse=True)
    # score: a title match ranks above a match elsewhere
    assert catalog.ok("package_search", q="歩行")["results"][0]["name"] == "walkway-counts"
    assert catalog.ok("package_search", rows=0)["results"] == []
    assert catalog.ok("package_search", rows=5000)["count"] == 5  # rows is capped, not an error
    # private datasets: only with include_private and a token of their tenant
    assert catalog.ok("package_search", tokens.hakodate, q="防災")["count"] == 2
    assert catalog.ok("package_search", tokens.hakodate, q="防災", include_private=True)["count"] == 3
    assert catalog.ok("package_search", tokens.sapporo, q="防災", include_private=True)["count"] == 2
    assert catalog.ok("package_search", tokens.admin, include_private=True)["count"] == 6
    catalog.ok("package_patch", tokens.sapporo, id="walkway-counts", state="draft")
    assert catalog.ok("package_search", tokens.sapporo)["count"] == 4
    assert catalog.ok("package_search", tokens.sapporo, include_drafts=True)["count"] == 5
    assert catalog.ok("package_search", tokens.hakodate, include_drafts=True)["count"] == 4
    for params, field in (({"rows": "ten"}, "rows"), ({"start": -1}, "start"), ({"facet.field": "{"}, None)):
        response = catalog.post("package_search", **params)
        assert response.status_code in (409,), response.text
        if field:
            assert field in response.json()["error"]
    catalog.error(catalog.post("package_search", sort="popularity desc"), 409, "Search Query Error")
    catalog.error(catalog.post("package_search", sort="name sideways"), 409, "Search Query Error")
    catalog.error(catalog.post("package_search", **{"facet.field": ["notes"]}), 409, "Search Query Error")


def test_facets_shaped_as_ckan(catalog: Ckan) -> None:
    result = catalog.ok("package_search", q="一覧", **{"facet.field": ["organization", "tags", "res_format",
                                                                         "license_id"]})
    assert result["facets"]["organization"] == {"sapporo": 2, "hakodate": 2}
    assert result["facets"]["tags"] == {"観光": 2, "防災": 2, "イベント": 1, "医療": 1}
    assert result["facets"]["res_format"] == {"CSV": 2, "GeoJSON": 1, "XLSX": 1}
    orgs = result["search_facets"]["organization"]
    assert orgs["title"] == "organization"
    assert {(i["name"], i["display_name"], i["count"]) for i in orgs["items"]} == {
        ("sapporo", "札幌市", 2), ("hakodate", "函館市", 2)}
    licences = {i["name"]: i["display_name"] for i in result["search_facets"]["license_id"]["items"]}
    assert "政府標準利用規約" in licences["gsl-2.0"]
    limited = catalog.ok("package_search", **{"facet.field": '["tags"]', "facet.limit": 1,
                                              "facet.mincount": 2})
    assert limited["facets"] == {"tags": {"観光": 2}}  # ties: in value order
    none = catalog.ok("package_search", q="該当なしの言葉", **{"facet.field": ["tags"]})
    assert none["count"] == 0 and none["facets"] == {"tags": {}}
    assert none["search_facets"]["tags"]["items"] == []


# ---------------------------------------------------------------- the parser, property-tested

FIELDS = ("tags", "organization", "res_format", "name", "license_id", "text")


@given(st.text(max_size=40))
@settings(max_examples=300, deadline=None)
def test_any_text_parses_or_is_a_search_error(text: str) -> None:
    try:
        parse(text)
    except SearchError as err:
        assert "Search Query Error" in err.message


terms = st.builds(lambda f, v: f"{f}:{v}", st.sampled_from(FIELDS),
                  st.text(st.characters(categories=("L", "N")), min_size=1, max_size=6))
exprs = st.recursive(terms, lambda inner: st.one_of(
    st.builds(lambda a, b: f"({a} OR {b})", inner, inner),
    st.builds(lambda a, b: f"{a} AND {b}", inner, inner),
    st.builds(lambda a: f"-{a}", inner)), max_leaves=6)


@given(exprs)
@settings(max_examples=200, deadline=None)
def test_generated_queries_parse(expr: str) -> None:
    assert parse(expr)[0] in ("term", "and", "or", "not")


TAGS = ("a1", "b2", "c3", "d4")
tag_exprs = st.recursive(st.sampled_from(TAGS).map(lambda t: ("t", t)), lambda inner: st.one_of(
    st.tuples(st.just("or"), inner, inner), st.tuples(st.just("and"), inner, inner),
    st.tuples(st.just("not"), inner)), max_leaves=5)


def _fq(node: tuple[Any, ...]) -> str:
    if node[0] == "t":
        return f"tags:{node[1]}"
    if node[0] == "not":
        return f"-({_fq(node[1])})"
    return f"({_fq(node[1])} {node[0].upper()} {_fq(node[2])})"


def _holds(node: tuple[Any, ...], tags: set[str]) -> bool:
    if node[0] == "t":
        return node[1] in tags
    if node[0] == "not":
        return not _holds(node[1], tags)
    if node[0] == "or":
        return _holds(node[1], tags) or _holds(node[2], tags)
    return _holds(node[1], tags) and _holds(node[2], tags)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(node=tag_exprs)
def test_fq_matches_a_model(tag_catalog: tuple[Ckan, dict[str, set[str]]], node: tuple[Any, ...]) -> None:
    ckan, tagged = tag_catalog
    expected = sorted(name for name, tags in tagged.items() if _holds(node, tags))
    assert names(ckan.ok("package_search", fq=_fq(node), rows=100)) == expected


@pytest.fixture
def tag_catalog(ckan: Ckan, tokens: Tokens, orgs: Any) -> tuple[Ckan, dict[str, set[str]]]:
    tagged = {f"set-{i}": {t for bit, t in enumerate(TAGS) if i >> bit & 1} for i in range(16)}
    for name, tags in tagged.items():
        ckan.ok("package_create", tokens.sapporo, name=name, owner_org="sapporo", tags=sorted(tags))
    return ckan, tagged


def test_two_character_words_match_like_a_substring_search(ckan: Ckan, tokens: Tokens,
                                                          orgs: dict[str, Any]) -> None:
    """Two-character words (the commonest in Japanese) go through SQLite's bigram index: the same datasets
    as a plain substring search, also across Japanese punctuation, and ASCII pairs with punctuation too."""
    titles = {"pop": "人口・世帯数の推移", "bousai": "防災マップ", "aed": "AED-設置場所",
              "mix": "世帯別 口座"}
    for name, title in titles.items():
        ckan.ok("package_create", tokens.sapporo, name=name, title=title, owner_org="sapporo")
    for word in ("人口", "口・", "世帯", "口座", "防災", "d-", "ae", "帯数", "数の"):
        found = {r["name"] for r in ckan.ok("package_search", q=word, rows=50)["results"]}
        expected = {n for n, title in titles.items() if word in title.casefold()}
        assert found == expected, word
    ckan.ok("package_patch", tokens.sapporo, id="pop", title="人の流れ")  # the index follows edits
    assert {r["name"] for r in ckan.ok("package_search", q="人口")["results"]} == set()
    assert {r["name"] for r in ckan.ok("package_search", q="流れ")["results"]} == {"pop"}


def test_quotes_and_backslashes_in_two_character_words(ckan: Ckan, tokens: Tokens,
                                                      orgs: dict[str, Any]) -> None:
    """A pair holding a quote or a backslash is still a literal (PostgreSQL builds a tsquery lexeme of it)."""
    ckan.ok("package_create", tokens.sapporo, name="odd", title="a'b と c\\d", owner_org="sapporo")
    for word in ("a'", "'b", "c\\", "\\d", "と "):
        found = {r["name"] for r in ckan.ok("package_search", q=word)["results"]}
        assert found == {"odd"}, word
