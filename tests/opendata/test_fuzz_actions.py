"""Fuzzing the CKAN Action API: whatever a client sends, the answer is CKAN's envelope, never a 500.

Every registered action gets generated bodies (random JSON, and dicts of its real parameter names holding
wrong types, huge and negative numbers, empty strings, nested junk, Japanese text, NUL, escaped lone
surrogates, SQL-ish and Solr-ish strings, and real ids so validation reaches deep), over POST and, for read
actions, GET; as admin, as an operator and anonymously. A failure must be a 4xx whose body says
``success: false`` with an ``error.__type``, and a failed write must leave the catalog, the datastore and
the files exactly as they were. The broad sweep runs on SQLite; PostgreSQL gets a smaller pass.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from society5.core.platform import Platform
from society5.opendata import api  # noqa: F401  (fills the action registry)
from society5.opendata.actions import ACTIONS
from tests.opendata.conftest import Ckan, Tokens

# --- what a client may send -----------------------------------------------------------------------------

NASTY_TEXT = [
    "", " ", "\x00", "a\x00b", "札幌市", "ｻｯﾎﾟﾛ　全角", "🦀", "\u202e", "\ud800", "\udfff", "x" * 5000,
    "'; DROP TABLE opendata_packages; --", "\" OR 1=1 --", "%", "_", "\\", "%' OR '1'='1",
    "*:*", "*", "name:", "name:(", "tags:\"", "[* TO", "{!func}sum(1)", "title:[a TO b}", "a AND", "OR",
    "NOT", "((((", "))", "\"unclosed", "res_format:CSV OR", "-", "+", "!", "&&", "||", "~", "^2", "field:*x",
    "metadata_modified:[NOW-1DAY TO NOW]", "organization:sapporo", "title_string desc", "score desc, name",
    "name asc asc", "_id desc", "rank", "設置場所名称", "台数 desc", "null", "true", "1e999", "-1", "0",
    "NaN", "{", "[", "{}", "[]", "{\"a\": 1}", "[\"tags\"]", "[1, 2]", "{\"_id\": {\"$gt\": 0}}",
]
HUGE = [2**31, 2**63, 2**64, -(2**63) - 1, 10**30, -(10**30), -1, 0, 1]


def _strict_json_scalars() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.none(), st.booleans(), st.sampled_from(HUGE), st.integers(),
        st.floats(allow_nan=False, allow_infinity=False), st.sampled_from([1e308, -1e308, 0.5, -0.0]),
        st.sampled_from(NASTY_TEXT), st.text(max_size=20),
    )


JSON_VALUES = st.recursive(
    _strict_json_scalars(),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.one_of(st.sampled_from(NASTY_TEXT), st.text(max_size=8)),
                                            inner, max_size=4)),
    max_leaves=12,
)

# The parameters each action reads (from the action functions), so generated dicts reach their checks.
LIST = ("limit", "offset", "all_fields", "sort", "q")
GROUP = ("id", "name", "title", "description", "image_url", "extras", "tenant", "state")
PACKAGE = ("id", "name", "title", "owner_org", "notes", "private", "state", "license_id", "tags",
           "tag_string", "groups", "resources", "extras", "frequency", "spatial", "temporal_start",
           "temporal_end", "language", "url", "version", "author", "author_email", "maintainer",
           "maintainer_email", "contact_email", "contact_url", "conforms_to")
RESOURCE = ("id", "package_id", "url", "name", "description", "format", "mimetype", "mimetype_inner", "hash",
            "resource_type", "last_modified", "cache_url", "size", "datastore_active", "url_type",
            "clear_upload", "upload", "position", "layout")
DATASTORE_SEARCH = ("resource_id", "id", "filters", "q", "distinct", "plain", "language", "limit", "offset",
                    "fields", "sort", "include_total", "total_estimation_threshold", "records_format")
PUBLISHER = ("package_id", "id", "shape", "entity_type", "tenant", "q", "attrs", "public_only",
             "coordinate_digits", "every_minutes", "location_attr", "file_name", "count_attr", "bin_minutes",
             "window_days", "aggregate", "direction_attr", "site_attr", "fill_gaps", "delete_resources")
PARAMS: dict[str, tuple[str, ...]] = {
    "status_show": (), "site_read": (), "help_show": ("name",), "license_list": (),
    "organization_list": (*LIST, "organizations"), "group_list": (*LIST, "groups"),
    "organization_show": ("id", "include_datasets"), "group_show": ("id", "include_datasets"),
    "organization_create": GROUP, "organization_update": GROUP, "organization_patch": GROUP,
    "organization_delete": ("id",), "group_create": GROUP, "group_update": GROUP, "group_patch": GROUP,
    "group_delete": ("id",), "tag_list": ("query", "q", "all_fields"), "package_list": ("limit", "offset"),
    "package_show": ("id", "name"),
    "package_search": ("q", "fq", "fq_list", "rows", "start", "sort", "facet.field", "facet.limit",
                       "facet.mincount", "include_private", "include_drafts", "facet"),
    "package_create": PACKAGE, "package_update": PACKAGE, "package_patch": PACKAGE,
    "package_delete": ("id",), "dataset_purge": ("id",),
    "resource_show": ("id",), "resource_create": RESOURCE, "resource_update": RESOURCE,
    "resource_patch": RESOURCE, "resource_delete": ("id",),
    "datastore_create": ("resource_id", "resource", "fields", "records", "primary_key", "indexes", "force"),
    "datastore_upsert": ("resource_id", "records", "method", "force"),
    "datastore_delete": ("resource_id", "filters", "force"),
    "datastore_info": ("id", "resource_id"), "datastore_search": DATASTORE_SEARCH,
    "publisher_create": PUBLISHER, "publisher_show": ("id",), "publisher_list": ("package_id",),
    "publisher_delete": ("id", "delete_resources"), "publisher_run": ("id",),
}
FIELDS = [{"id": "設置場所名称", "type": "text"}, {"id": "台数", "type": "int"},
          {"id": "設置日", "type": "date"}, {"id": "緯度", "type": "numeric"},
          {"id": "更新", "type": "timestamp"}, {"id": "属性", "type": "json"}, {"id": "有効", "type": "bool"}]
RECORDS = [{"設置場所名称": "札幌市役所", "台数": 2, "設置日": "2020-04-01", "緯度": 43.06, "有効": True,
            "更新": "2024-04-01T09:00:00+09:00", "属性": {"階": 1}},
           {"設置場所名称": "北海道庁", "台数": 3, "設置日": "2021-06-15", "緯度": "43.064", "有効": "false"}]


def test_every_action_is_fuzzed() -> None:
    """A new action must be added to ``PARAMS`` (with the parameters it reads) to be fuzzed."""
    assert set(PARAMS) == set(ACTIONS)


# --- a small catalog to aim at ----------------------------------------------------------------------------


def build_world(ckan: Ckan, tokens: Tokens, orgs: dict[str, Any]) -> dict[str, Any]:
    admin = tokens.admin
    group = ckan.ok("group_create", admin, name="kankou", title="観光")
    public = ckan.ok("package_create", admin, name="fuzz-public", title="AED設置箇所", owner_org="sapporo",
                     tags=[{"name": "AED"}], groups=[{"name": "kankou"}],
                     resources=[{"url": "https://example.jp/aed.csv", "name": "AED"}])
    private = ckan.ok("package_create", admin, name="fuzz-private", owner_org="hakodate", private=True)
    table = ckan.ok("datastore_create", admin, resource={"package_id": public["id"], "name": "表"},
                    fields=FIELDS, records=RECORDS, primary_key=["設置場所名称"])
    return {
        "package_ids": [public["id"], private["id"]], "package_names": ["fuzz-public", "fuzz-private"],
        "resource_ids": [public["resources"][0]["id"], table["resource_id"]], "table": table["resource_id"],
        "org_ids": [orgs["sapporo"]["id"], orgs["hakodate"]["id"]], "group_id": group["id"],
    }


def references(world: dict[str, Any]) -> list[Any]:
    return [*world["package_ids"], *world["package_names"], *world["resource_ids"], *world["org_ids"],
            world["group_id"], "sapporo", "hakodate", "kankou", "datastore_search", "no-such-thing"]


def param_values(world: dict[str, Any]) -> st.SearchStrategy[Any]:
    return st.one_of(JSON_VALUES, st.sampled_from(references(world)), st.sampled_from(FIELDS + RECORDS),
                     st.just(FIELDS), st.just(RECORDS))


def bodies(name: str, world: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    names = PARAMS[name] or ("id",)
    shaped = st.dictionaries(st.sampled_from(names), param_values(world), max_size=len(names))
    # Usually aimed at a real object (so the deeper checks run), sometimes nothing but junk.
    aimed = st.builds(lambda ref, body: {**ref, **body},
                      st.sampled_from([{}, {"id": world["package_ids"][0]}, {"resource_id": world["table"]},
                                       {"id": world["table"]}, {"package_id": world["package_ids"][0]},
                                       {"id": world["org_ids"][0]}, {"id": world["group_id"]},
                                       {"owner_org": "sapporo", "name": "fuzz-new"}]),
                      shaped)
    junk = st.dictionaries(st.text(max_size=12), JSON_VALUES, max_size=4)
    return st.one_of(aimed, aimed, junk)


# --- what must hold ---------------------------------------------------------------------------------------


def send(ckan: Ckan, name: str, body: dict[str, Any], token: str | None, method: str) -> Any:
    headers = {"Authorization": token} if token else {}
    if method == "GET":
        params = [(k, v if isinstance(v, str) else json.dumps(v)) for k, v in body.items()]
        return ckan.client.get(f"/api/3/action/{name}", params=params, headers=headers)
    # ensure_ascii: lone surrogates travel as JSON escapes, as a client's encoder may send them.
    content = json.dumps(body, ensure_ascii=True).encode()
    return ckan.client.post(f"/api/3/action/{name}", content=content,
                            headers={**headers, "Content-Type": "application/json"})


def check_envelope(response: Any, what: str) -> bool:
    """The answer is CKAN's envelope and no 5xx; True when the call succeeded."""
    assert response.status_code < 500, f"{what}: {response.status_code} {response.text[:2000]}"
    body = response.json()
    assert isinstance(body, dict) and body.get("help"), f"{what}: {body}"
    if response.status_code == 200:
        assert body["success"] is True and "result" in body, f"{what}: {body}"
        return True
    assert response.status_code in (400, 403, 404, 409), f"{what}: {response.status_code} {body}"
    error = body.get("error")
    assert body["success"] is False and isinstance(error, dict), f"{what}: {body}"
    assert isinstance(error.get("__type"), str) and error["__type"], f"{what}: {body}"
    # A Validation Error whose field is named "message" overrides the text with its list (actions.py).
    assert isinstance(error.get("message"), str | list), f"{what}: {body}"
    return False


def snapshot(platform: Platform, world: dict[str, Any]) -> dict[str, Any]:
    """Everything a write could change: the catalog's tables, the datastore tables, the stored files."""
    from society5.opendata.datastore import table_name

    state: dict[str, Any] = {}
    with platform.engine.connect() as conn:
        names = [n for n in sa.inspect(conn).get_table_names() if n.startswith("opendata_")]
        names += [table_name(rid) for rid in world["resource_ids"]]
        for table in sorted(set(names)):
            if not sa.inspect(conn).has_table(table):
                continue
            rows = conn.execute(sa.text(f'SELECT * FROM "{table}"')).all()
            state[table] = sorted(repr(tuple(r)) for r in rows)
    root = Path(platform.settings.opendata_dir)
    state["files"] = sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []
    return state


def fuzz_action(ckan: Ckan, platform: Platform, world: dict[str, Any], name: str,
                principals: list[str | None], examples: int) -> None:
    found = ACTIONS[name]
    methods = ["POST"] if found.write else ["POST", "GET"]

    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    @given(body=bodies(name, world), token=st.sampled_from(principals), method=st.sampled_from(methods))
    def one(body: dict[str, Any], token: str | None, method: str) -> None:
        if method == "GET":  # a query string carries text only: no NUL or lone surrogates
            try:
                json.dumps(body, ensure_ascii=False).encode()
            except UnicodeEncodeError:
                return
        before = snapshot(platform, world) if found.write else None
        response = send(ckan, name, body, token, method)
        ok = check_envelope(response, f"{method} {name} {body!r}")
        if found.write and not ok:
            assert snapshot(platform, world) == before, f"{name} {body!r} failed but changed data"

    one()


def sweep(ckan: Ckan, platform: Platform, tokens: Tokens, orgs: dict[str, Any], examples: int,
          only: Callable[[str], bool] = lambda name: True) -> None:
    world = build_world(ckan, tokens, orgs)
    principals = [tokens.admin, None, tokens.hakodate]
    failures: list[str] = []
    for name in sorted(ACTIONS):
        if not only(name):
            continue
        try:
            fuzz_action(ckan, platform, world, name, principals, examples)
        except AssertionError as err:  # every action is tried before the test fails
            failures.append(f"{name}: {err}")
    assert not failures, "\n\n".join(failures)


# Examples per action (SOCIETY5_FUZZ_EXAMPLES=300 for a long hunt; the default keeps the file fast).
EXAMPLES = int(os.environ.get("SOCIETY5_FUZZ_EXAMPLES", "10"))


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_no_action_answers_500(ckan: Ckan, od_platform: Platform, tokens: Tokens,
                               orgs: dict[str, Any]) -> None:
    sweep(ckan, od_platform, tokens, orgs, EXAMPLES)


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_no_action_answers_500_on_postgresql(ckan: Ckan, od_platform: Platform, tokens: Tokens,
                                             orgs: dict[str, Any]) -> None:
    """A smaller pass where the database's own checks differ: datastore and catalog writes and searches."""
    sweep(ckan, od_platform, tokens, orgs, max(3, EXAMPLES // 5))


# --- datastore_search and package_search, aimed at their query languages ----------------------------------

FIELD_NAMES = [f["id"] for f in FIELDS]
COLUMN = st.sampled_from([*FIELD_NAMES, "_id", "no_such", '"台数"', "台数\"", "", " "])
SORTS = st.lists(st.tuples(COLUMN, st.sampled_from(["", " asc", " desc", " DESC", " up", " asc desc"])),
                 max_size=3).map(lambda parts: ", ".join(c + d for c, d in parts))


def _datastore_queries(table: str) -> st.SearchStrategy[dict[str, Any]]:
    stored = st.sampled_from([r[k] for r in RECORDS for k in r])
    filters = st.dictionaries(COLUMN, st.one_of(JSON_VALUES, st.lists(JSON_VALUES, max_size=3), stored),
                              max_size=3)
    q = st.one_of(st.sampled_from(NASTY_TEXT), st.text(max_size=10),
                  st.dictionaries(COLUMN, st.one_of(st.text(max_size=6), JSON_VALUES), max_size=2))
    fields = st.one_of(st.lists(COLUMN, max_size=4), st.lists(COLUMN, max_size=4).map(",".join), JSON_VALUES)
    return st.fixed_dictionaries({"resource_id": st.just(table)}, optional={
        "filters": st.one_of(filters, filters.map(json.dumps), JSON_VALUES), "q": q, "fields": fields,
        "sort": st.one_of(SORTS, JSON_VALUES), "distinct": st.one_of(st.booleans(), JSON_VALUES),
        "limit": st.one_of(st.sampled_from(HUGE), JSON_VALUES), "offset": st.one_of(st.sampled_from(HUGE),
                                                                                  JSON_VALUES),
        "records_format": st.sampled_from(["objects", "lists", "csv", "tsv", "xml", ""]),
        "include_total": st.one_of(st.booleans(), JSON_VALUES),
        "total_estimation_threshold": st.one_of(st.sampled_from(HUGE), JSON_VALUES),
        "plain": st.one_of(st.booleans(), JSON_VALUES),
    })


SOLR_FIELDS = ["name", "title", "tags", "organization", "groups", "res_format", "license_id", "text", "id",
               "metadata_modified", "capacity", "state", "type", "frequency", "no_such", "tags.x", "_x"]
SOLR_ATOMS = st.one_of(
    st.sampled_from(NASTY_TEXT), st.text(alphabet="abc札幌*?\\\"()[]{}:-+!^~ ", max_size=8),
    st.builds(lambda f, v: f"{f}:{v}", st.sampled_from(SOLR_FIELDS),
              st.sampled_from(["aed", '"AED 設置"', "(a OR b)", "(a AND", "*", "a*", "*a", "a?b", "",
                               "[* TO NOW]", "[2020-01-01 TO *]", "{2020 TO 2021}", "[a TO", "public",
                               '"unclosed', "(())", "\\", "札幌"])),
)
SOLR = st.recursive(SOLR_ATOMS, lambda inner: st.one_of(
    st.builds(lambda a, op, b: f"{a}{op}{b}", inner, st.sampled_from([" ", " AND ", " OR ", " && ", " || ",
                                                                       " NOT ", " -", "AND", " OR"]), inner),
    inner.map(lambda x: f"({x})"), inner.map(lambda x: f"NOT {x}"), inner.map(lambda x: f"-{x}"),
), max_leaves=6)


def fuzz_searches(ckan: Ckan, tokens: Tokens, world: dict[str, Any], examples: int) -> None:
    @settings(max_examples=examples, deadline=None, database=None)
    @given(query=_datastore_queries(world["table"]), token=st.sampled_from([tokens.admin, None]))
    def datastore(query: dict[str, Any], token: str | None) -> None:
        response = send(ckan, "datastore_search", query, token, "POST")
        if check_envelope(response, f"datastore_search {query!r}"):
            result = response.json()["result"]
            assert isinstance(result["records"], list | str) and result["resource_id"] == world["table"]

    @settings(max_examples=examples, deadline=None, database=None)
    @given(q=st.one_of(st.none(), SOLR), fq=st.one_of(st.none(), SOLR),
           sort=st.one_of(st.none(), SORTS, SOLR), facets=st.lists(st.sampled_from(SOLR_FIELDS), max_size=2),
           token=st.sampled_from([tokens.admin, None]))
    def packages(q: str | None, fq: str | None, sort: str | None, facets: list[str],
                 token: str | None) -> None:
        body = {k: v for k, v in {"q": q, "fq": fq, "sort": sort, "facet.field": facets}.items() if v}
        response = send(ckan, "package_search", body, token, "POST")
        if not check_envelope(response, f"package_search {body!r}"):
            # A query the engine cannot run is CKAN's 409 Search Query Error (bad types: Validation Error;
            # a lone surrogate: the body is not JSON at all).
            error = response.json()["error"]
            assert (response.status_code, error["__type"]) in (
                (409, "Search Query Error"), (409, "Validation Error"), (400, "Bad request")), error

    datastore()
    packages()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_search_languages_never_answer_500(ckan: Ckan, tokens: Tokens, orgs: dict[str, Any]) -> None:
    fuzz_searches(ckan, tokens, build_world(ckan, tokens, orgs), EXAMPLES * 4)


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_search_languages_never_answer_500_on_postgresql(ckan: Ckan, tokens: Tokens,
                                                         orgs: dict[str, Any]) -> None:
    fuzz_searches(ckan, tokens, build_world(ckan, tokens, orgs), EXAMPLES)


# --- what the fuzzing found, kept as plain examples (on both databases) ----------------------------------


def test_found_inputs_are_clear_4xx(ckan: Ckan, od_platform: Platform, tokens: Tokens,
                                    orgs: dict[str, Any]) -> None:
    """Each of these answered 500 (on SQLite, PostgreSQL or both) before its fix; now a 4xx naming the
    field, and nothing written."""
    world = build_world(ckan, tokens, orgs)
    pid, (link, table) = world["package_ids"][0], world["resource_ids"]
    nul = "a\x00b"
    cases: list[tuple[str, dict[str, Any], int, str | None]] = [
        ("package_update", {"id": pid, "name": "fuzz-public", "owner_org": "sapporo", "frequency": {"a": 1}},
         409, "frequency"),
        ("package_patch", {"id": pid, "resources": [{"url": "http://x.jp", "id": ["a"]}]}, 409, "resources"),
        ("package_patch", {"id": pid, "title": nul}, 409, "title"),
        ("package_patch", {"id": pid, "extras": [{"key": "k", "value": nul}]}, 409, "extras"),
        ("package_patch", {"id": pid, "name": "fuzz-public\n"}, 409, "name"),
        ("package_show", {"id": nul}, 409, "id"),
        ("package_create", {"name": "dup-res", "owner_org": "sapporo",
                            "resources": [{"url": "http://x.jp", "id": link}]}, 409, "id"),
        ("resource_create", {"package_id": pid, "url": "http://x.jp", "id": table}, 409, "id"),
        ("resource_create", {"package_id": pid, "url": "http://x.jp", "note": nul}, 409, "note"),
        ("group_create", {"name": "g-nul", "title": nul}, 409, "title"),
        ("organization_show", {"id": nul}, 409, "id"),
        ("package_list", {"offset": 2**63}, 409, "offset"),
        ("package_search", {"q": nul}, 409, "q"),
        ("package_search", {"fq_list": [nul]}, 409, "fq_list"),
        ("package_search", {"q": "(" * 2000 + "a" + ")" * 2000}, 200, None),  # q: searched as words
        ("package_search", {"fq": "(" * 2000 + "a" + ")" * 2000}, 409, None),
        ("package_search", {"fq": "NOT " * 2000 + "a"}, 409, None),
        ("package_search", {"fq": " OR ".join(["ab"] * 1500)}, 409, None),
        ("package_search", {"q": " ".join(["ab"] * 1500)}, 409, None),
        ("datastore_search", {"resource_id": table, "offset": 2**63}, 409, "offset"),
        ("datastore_search", {"resource_id": table, "q": nul}, 409, "q"),
        ("datastore_search", {"resource_id": table, "q": {"設置場所名称": nul}}, 409, "q"),
        ("datastore_search", {"resource_id": table, "filters": {"設置場所名称": nul}}, 409, "filters"),
        ("datastore_search", {"resource_id": table, "filters": {"_id": 2**63}}, 409, "filters"),
        ("datastore_search", {"resource_id": table, "filters": {"更新": "0001-01-01T00:00:00+01:00"}},
         409, "filters"),
        ("datastore_search", {"resource_id": table, "filters": {"緯度": "1e999999"}}, 409, "filters"),
        ("datastore_info", {"id": nul}, 409, "id"),
        ("datastore_upsert", {"resource_id": table, "records": [{"_id": 2**63, "台数": 1}]}, 409, "records"),
        ("datastore_upsert", {"resource_id": table, "method": "insert",
                              "records": [{"設置場所名称": "x", "更新": "0001-01-01T00:00:00+01:00"}]},
         409, "records"),
        ("datastore_upsert", {"resource_id": table, "method": "insert",
                              "records": [{"設置場所名称": nul}]}, 409, "records"),
        ("datastore_upsert", {"resource_id": table, "method": "insert",
                              "records": [{"設置場所名称": "y", "属性": {"k": nul}}]}, 409, "records"),
        ("datastore_upsert", {"resource_id": table, "method": "insert",
                              "records": [{"設置場所名称": "z", "緯度": "1e999999"}]}, 409, "records"),
        ("datastore_create", {"resource_id": table, "fields": [{"id": "備考", "info": {"label": nul}}]},
         409, "fields"),
        ("datastore_delete", {"resource_id": table, "filters": {"設置場所名称": nul}}, 409, "filters"),
        ("publisher_show", {"id": nul}, 409, "id"),
        ("publisher_create", {"package_id": pid, "entity_type": "AED", "q": nul}, 409, "q"),
        ("publisher_create", {"package_id": pid, "entity_type": "AED", "file_name": "aed\n"},
         409, "file_name"),
    ]
    for name, body, status, field in cases:
        before = snapshot(od_platform, world)
        response = send(ckan, name, body, tokens.admin, "POST")
        assert response.status_code == status, f"{name} {body!r}: {response.text[:500]}"
        check_envelope(response, name)
        if field is not None:
            assert field in response.json()["error"], f"{name}: {response.text[:500]}"
        assert snapshot(od_platform, world) == before, f"{name} {body!r} changed data"


# --- inputs that once answered 500 ------------------------------------------------------------------------


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_help_show_with_a_list_name(ckan: Ckan) -> None:
    ckan.error(ckan.post("help_show", None, name=["package_show"]), 409, "Validation Error")


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_group_list_with_a_blank_sort(ckan: Ckan) -> None:
    assert ckan.post("organization_list", None, sort=" ").json()["success"] is True  # the default order


def test_nul_in_catalog_lookups(ckan: Ckan) -> None:
    """PostgreSQL text cannot hold NUL: every action refuses it up front, naming the field."""
    for name, body, field in [("tag_list", {"q": "a\x00"}, "q"), ("organization_list", {"q": "a\x00"}, "q"),
                              ("resource_show", {"id": "a\x00"}, "id"),
                              ("package_search", {"fq_list": ["tags:a", "x\x00"]}, "fq_list")]:
        response = ckan.post(name, None, **body)
        assert response.status_code == 409, name
        assert field in response.json()["error"], response.text


# --- bodies that are not JSON objects ---------------------------------------------------------------------

RAW_BODIES = st.one_of(
    st.binary(max_size=64),
    st.sampled_from([b"[]", b"null", b"1", b'"x"', b"{", b'{"a": NaN}', b'{"a": 1e999}', b'{"id": "\\ud800"}',
                     b"\xff\xfe", b"name=%00&owner_org=sapporo", b"name=a&name=b", b"--x\r\n\r\n--x--"]),
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
)
CONTENT_TYPES = ["application/json", "application/x-www-form-urlencoded", "text/plain", "",
                 "multipart/form-data; boundary=x", "multipart/form-data"]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_raw_bodies_never_answer_500(ckan: Ckan, od_platform: Platform, tokens: Tokens,
                                     orgs: dict[str, Any]) -> None:
    world = build_world(ckan, tokens, orgs)

    @settings(max_examples=EXAMPLES * 4, deadline=None, database=None)
    @given(body=RAW_BODIES, kind=st.sampled_from(CONTENT_TYPES),
           name=st.sampled_from(["package_create", "package_search", "datastore_upsert", "no_such_action"]))
    def raw(body: bytes, kind: str, name: str) -> None:
        before = snapshot(od_platform, world)
        headers = {"Authorization": tokens.admin, **({"Content-Type": kind} if kind else {})}
        response = ckan.client.post(f"/api/3/action/{name}", content=body, headers=headers)
        if not check_envelope(response, f"{name} {kind} {body!r}"):
            assert snapshot(od_platform, world) == before

    raw()
