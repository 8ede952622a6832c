"""NGSI-LD scopeQ: parser, matching, and SQL (SQLite + PostgreSQL) agreeing with matches()."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.dialects.postgresql import JSONB

from society5.broker.query.q import QSyntaxError
from society5.broker.query.scope import (
    ScopeAnd,
    ScopeOr,
    ScopePattern,
    ScopeQuery,
    doc_scopes,
    matches,
    parse_scope_q,
    to_sql,
    to_text,
)

PG_URL = os.environ.get("SOCIETY5_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def S(text: str) -> ScopePattern:
    return ScopePattern(tuple(text.split("/")[1:]))


PARSE_CASES: list[tuple[str, ScopeQuery]] = [
    ("/A", S("/A")),
    ("/Hokkaido/Sapporo", S("/Hokkaido/Sapporo")),
    ("/A/+/C", ScopePattern(("A", "+", "C"))),
    ("/A/#", ScopePattern(("A", "#"))),
    ("/#", ScopePattern(("#",))),
    ("/+", ScopePattern(("+",))),
    ("/+/#", ScopePattern(("+", "#"))),
    ("/日本/北海道", S("/日本/北海道")),
    ("/a.b/c-d_e:f", S("/a.b/c-d_e:f")),
    ("/A;/B", ScopeAnd((S("/A"), S("/B")))),
    ("/A,/B", ScopeOr((S("/A"), S("/B")))),
    ("/A;/B,/C", ScopeOr((ScopeAnd((S("/A"), S("/B"))), S("/C")))),
    ("/A,/B;/C", ScopeOr((S("/A"), ScopeAnd((S("/B"), S("/C")))))),
    ("(/A,/B);/C", ScopeAnd((ScopeOr((S("/A"), S("/B"))), S("/C")))),
    (" ( /A , /B ) ", ScopeOr((S("/A"), S("/B")))),
]


@pytest.mark.parametrize(("text", "expected"), PARSE_CASES, ids=[c[0] for c in PARSE_CASES])
def test_parse(text: str, expected: ScopeQuery) -> None:
    """Patterns, wildcards, AND/OR and parentheses parse to the expected tree."""
    assert parse_scope_q(text) == expected
    assert parse_scope_q(to_text(expected)) == expected


ERROR_CASES: list[tuple[str, int, str]] = [
    ("", 0, "empty scopeQ"),
    ("A", 0, "starting with '/'"),
    ("/", 1, "scope level"),
    ("/A/", 3, "scope level"),
    ("/A//B", 3, "scope level"),
    ("/A/#/B", 4, "'#' must be the last level"),
    ("/A+", 2, "'+' must be a whole level"),
    ("/+A", 2, "'+' must be a whole level"),
    ("/#A", 2, "'#' must be a whole level"),
    ("(/A", 3, "')'"),
    ("/A)", 2, "end of scopeQ"),
    ("/A;", 3, "starting with '/'"),
    (",/A", 0, "starting with '/'"),
    ('/A"', 2, "end of scopeQ"),
    ("/A B", 3, "end of scopeQ"),
    ("(" * 70 + "/A" + ")" * 70, 64, "nested deeper"),
]


@pytest.mark.parametrize(("text", "position", "fragment"), ERROR_CASES, ids=[c[0][:20] for c in ERROR_CASES])
def test_parse_errors(text: str, position: int, fragment: str) -> None:
    """Invalid scopeQ raises QSyntaxError naming the position and what was expected."""
    with pytest.raises(QSyntaxError) as info:
        parse_scope_q(text)
    assert info.value.position == position
    assert f"position {position}" in str(info.value)
    assert fragment in str(info.value)


MATCH_CASES: list[tuple[str, list[str], bool]] = [
    ("/Hokkaido/Sapporo", ["/Hokkaido/Sapporo"], True),
    ("/Hokkaido/Sapporo", ["/Hokkaido/Sapporo/Chuo"], False),
    ("/Hokkaido/Sapporo", ["/Hokkaido"], False),
    ("/Hokkaido/#", ["/Hokkaido"], True),
    ("/Hokkaido/#", ["/Hokkaido/Sapporo/Chuo"], True),
    ("/Hokkaido/#", ["/HokkaidoX"], False),
    ("/Hokkaido/#", ["/Tokyo/Hokkaido"], False),
    ("/#", ["/Anything/at/all"], True),
    ("/#", [], False),
    ("/+", ["/Tokyo"], True),
    ("/+", ["/Tokyo/Shibuya"], False),
    ("/Hokkaido/+/Chuo", ["/Hokkaido/Sapporo/Chuo"], True),
    ("/Hokkaido/+/Chuo", ["/Hokkaido/Chuo"], False),
    ("/Hokkaido/+/Chuo", ["/Hokkaido/Sapporo/Kita/Chuo"], False),
    ("/+/Sapporo/#", ["/Hokkaido/Sapporo/Chuo/1"], True),
    ("/+/Sapporo/#", ["/Hokkaido/Otaru/Sapporo"], False),
    ("/Hokkaido;/Tokyo", ["/Hokkaido", "/Tokyo"], True),
    ("/Hokkaido;/Tokyo", ["/Hokkaido"], False),
    ("/Hokkaido,/Tokyo", ["/Tokyo"], True),
    ("/Osaka,/Tokyo", ["/Hokkaido"], False),
    ("(/Osaka,/Tokyo);/Hokkaido/#", ["/Hokkaido/Otaru", "/Tokyo"], True),
    ("/A*B", ["/AxB"], False),
]


@pytest.mark.parametrize(("text", "scopes", "expected"), MATCH_CASES,
                         ids=[f"{c[0]}-{c[1]}" for c in MATCH_CASES])
def test_matches(text: str, scopes: list[str], expected: bool) -> None:
    """matches() implements single-level '+', descendant-or-self '#', and any-scope AND/OR."""
    assert matches(parse_scope_q(text), scopes) is expected


def test_doc_scopes() -> None:
    """A stored scope list keeps its strings; a lone string is one scope; anything else is none."""
    assert doc_scopes({"scope": ["/A", 5, "/B"]}) == ["/A", "/B"]
    assert doc_scopes({"scope": "/A"}) == ["/A"]
    assert doc_scopes({"scope": None}) == []
    assert doc_scopes({}) == []


# ---------------------------------------------------------------------------------------- hypothesis

@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(), st.text(alphabet="/AB+#;,() \"\\", max_size=30)))
def test_fuzz_only_qsyntaxerror(text: str) -> None:
    """Arbitrary text either parses (and round-trips) or raises QSyntaxError."""
    try:
        query = parse_scope_q(text)
    except QSyntaxError:
        return
    assert parse_scope_q(to_text(query)) == query
    to_sql(query, sa.column("doc"), "sqlite")
    to_sql(query, sa.column("doc", JSONB()), "postgresql")


LEVELS = ["Hokkaido", "Sapporo", "Otaru", "Tokyo", "Chuo", "A*B", "c?d", "x[1]", "日本", "50%_off", "a.b"]


@st.composite
def patterns(draw: st.DrawFn) -> ScopePattern:
    levels = draw(st.lists(st.sampled_from([*LEVELS, "+", "+"]), max_size=3))
    if not levels or draw(st.booleans()):
        levels.append("#")
    return ScopePattern(tuple(levels))


def scope_trees() -> st.SearchStrategy[ScopeQuery]:
    return st.recursive(patterns(), lambda kids: st.one_of(
        st.lists(kids, min_size=2, max_size=3).map(lambda xs: ScopeAnd(tuple(xs))),
        st.lists(kids, min_size=2, max_size=3).map(lambda xs: ScopeOr(tuple(xs))),
    ), max_leaves=5)


@settings(max_examples=150, deadline=None)
@given(scope_trees())
def test_round_trip(query: ScopeQuery) -> None:
    """Generated trees render with to_text and parse back unchanged."""
    assert parse_scope_q(to_text(query)) == query


# --------------------------------------------------------------------------------------------- SQL

SCOPES: dict[str, Any] = {
    "sapporo": ["/Hokkaido/Sapporo"],
    "otaru_tokyo": ["/Hokkaido/Otaru", "/Tokyo"],
    "hokkaido": ["/Hokkaido"],
    "empty": [],
    "missing": None,
    "string": "/Hokkaido/Sapporo/Chuo",
    "globby": ["/A*B/c?d", "/x[1]/Sapporo"],
    "mixed": [5, "/Tokyo/Chuo", None],
    "deep": ["/Hokkaido/Sapporo/Chuo/1"],
    "likey": ["/50%_off/Otaru", "/a.b/Hokkaido/Sapporo"],
    "unicode": ["/日本/Hokkaido"],
    "odd": ["Hokkaido", "/Tokyo/", "//Chuo"],
}


def _docs() -> list[dict[str, Any]]:
    docs = []
    for name, scope in SCOPES.items():
        doc: dict[str, Any] = {"id": f"urn:ngsi-ld:T:{name}", "type": ["T"], "attrs": {}}
        if scope is not None:
            doc["scope"] = scope
        docs.append(doc)
    return docs


DOCS = _docs()


class DocTable:
    """A broker_entities-shaped table (own MetaData) holding DOCS."""

    def __init__(self, engine: sa.Engine, name: str) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        md = sa.MetaData()
        self.table = sa.Table(
            name, md,
            sa.Column("tenant", sa.String, primary_key=True),
            sa.Column("id", sa.String, primary_key=True),
            sa.Column("doc", sa.JSON().with_variant(JSONB(), "postgresql")),
        )
        md.create_all(engine)
        with engine.begin() as conn:
            conn.execute(self.table.insert(), [{"tenant": "t", "id": d["id"], "doc": d} for d in DOCS])

    def ids(self, expr: Any) -> set[str]:
        with self.engine.connect() as conn:
            return set(conn.execute(sa.select(self.table.c.id).where(expr)).scalars())

    def drop(self) -> None:
        self.table.drop(self.engine)
        self.engine.dispose()


@pytest.fixture(scope="module")
def sqlite_table() -> Iterator[DocTable]:
    table = DocTable(sa.create_engine("sqlite://"), "broker_entities")
    yield table
    table.drop()


@pytest.fixture(scope="module")
def pg_table() -> Iterator[DocTable]:
    engine = sa.create_engine(PG_URL)
    try:
        engine.connect().close()
    except sa.exc.OperationalError:
        pytest.fail(f"PostgreSQL is not reachable at {PG_URL}")
    table = DocTable(engine, f"broker_entities_scope_{uuid.uuid4().hex[:10]}")
    yield table
    table.drop()


def check_sql(table: DocTable, query: ScopeQuery) -> bool:
    """SQL selects exactly what matches() selects (exact) or a superset; returns exactness."""
    expr, exact = to_sql(query, table.table.c.doc, table.dialect)
    got = table.ids(expr)
    want = {d["id"] for d in DOCS if matches(query, doc_scopes(d))}
    if exact:
        assert got == want, to_text(query)
    else:
        assert got >= want, to_text(query)
    return exact


SQL_CASES = [c[0] for c in MATCH_CASES] + [
    "/Hokkaido/Sapporo/#", "/+/Sapporo", "/+/+", "/+/+/#", "/A*B/c?d", "/x[1]/+", "/50%_off/#",
    "/50%_off/Otaru", "/a.b/+/Sapporo", "/日本/#", "/Tokyo/+", "/Tokyo/#", "/Chuo", "/+/Chuo", "/#;/Tokyo",
    "/Hokkaido/Sapporo/+",
]


@pytest.mark.parametrize("text", SQL_CASES)
def test_sql_sqlite(sqlite_table: DocTable, text: str) -> None:
    """SQLite SQL agrees with matches() on the sample documents."""
    check_sql(sqlite_table, parse_scope_q(text))


@pytest.mark.postgres
@pytest.mark.parametrize("text", SQL_CASES)
def test_sql_postgres(pg_table: DocTable, text: str) -> None:
    """PostgreSQL SQL agrees with matches() on the sample documents, always exactly."""
    assert check_sql(pg_table, parse_scope_q(text)) is True


def test_sqlite_exactness() -> None:
    """SQLite is exact except for patterns with both '+' and '#'."""
    doc: Any = sa.column("doc")
    for text in ("/A", "/A/#", "/#", "/A/+/B", "/+", "/A;/B,/C"):
        assert to_sql(parse_scope_q(text), doc, "sqlite")[1] is True
    assert to_sql(parse_scope_q("/+/B/#"), doc, "sqlite")[1] is False


SQL_SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SQL_SETTINGS
@given(scope_trees())
def test_sql_matches_sqlite(sqlite_table: DocTable, query: ScopeQuery) -> None:
    """Random scope queries: SQLite SQL == matches() when exact, a superset otherwise."""
    check_sql(sqlite_table, query)


@pytest.mark.postgres
@SQL_SETTINGS
@given(scope_trees())
def test_sql_matches_postgres(pg_table: DocTable, query: ScopeQuery) -> None:
    """Random scope queries: PostgreSQL SQL == matches()."""
    assert check_sql(pg_table, query) is True
