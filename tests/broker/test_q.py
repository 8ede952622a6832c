"""NGSI-LD q language: parser, round trip, evaluator, and SQL (SQLite + PostgreSQL) agreeing with evaluate."""

from __future__ import annotations

import copy
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import JSONB

from society5.broker.query.q import (
    And,
    AttrPath,
    Comparison,
    Exists,
    Node,
    Or,
    QSyntaxError,
    Range,
    Scalar,
    ValueList,
    evaluate,
    expand_names,
    parse_q,
    to_sql,
    to_text,
)

DEFAULT = "https://uri.etsi.org/ngsi-ld/default-context/"
PG_URL = os.environ.get("SOCIETY5_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def P(attr: str, *sub: str, keys: tuple[str, ...] = ()) -> AttrPath:
    return AttrPath(attr, tuple(sub), keys)


def expand(name: str) -> str:
    """Test context: bare names live in the default context, anything with ':' is already an IRI."""
    return name if ":" in name else DEFAULT + name


def D(name: str) -> str:
    return DEFAULT + name


BUILDING: dict[str, Any] = {
    "id": "urn:ngsi-ld:Building:1",
    "type": ["https://ngsi-ld-test-suite/context#Building"],
    "scope": ["/Hokkaido/Sapporo"],
    "createdAt": "2026-11-26T05:00:00.000000Z",
    "modifiedAt": "2026-11-26T05:00:00.000000Z",
    "attrs": {
        "https://ngsi-ld-test-suite/context#name": [{"type": "Property", "value": "Tower"}],
        D("speed"): [
            {"type": "Property", "value": 55, "observedAt": "2026-11-26T05:00:00Z", "unitCode": "KMH",
             D("accuracy"): {"type": "Property", "value": 0.9}},
            {"type": "Property", "value": 60, "datasetId": "urn:ngsi-ld:Dataset:gps"},
        ],
        D("owner"): [{"type": "Relationship", "object": "urn:ngsi-ld:Person:1"}],
        D("address"): [{"type": "Property", "value": {"city": "Sapporo", "zip": {"code": "060"}}}],
        D("label"): [{"type": "LanguageProperty", "languageMap": {"ja": "札幌", "en": "Sapporo"}}],
        D("when"): [{"type": "Property", "value": {"@type": "DateTime", "@value": "2026-11-26T05:00:00Z"}}],
        D("tags"): [{"type": "ListProperty", "valueList": [1, 2, 3]}],
        D("kind"): [{"type": "VocabProperty", "vocab": "https://x/ns#Bear"}],
    },
}


# ------------------------------------------------------------------------------------------ parser

PARSE_CASES: list[tuple[str, Node]] = [
    ("speed", Exists(P("speed"))),
    ("!speed", Exists(P("speed"), negated=True)),
    ("speed==5", Comparison(P("speed"), "==", 5)),
    ("speed!=5", Comparison(P("speed"), "!=", 5)),
    ("speed>-5", Comparison(P("speed"), ">", -5)),
    ("speed>=5.5", Comparison(P("speed"), ">=", 5.5)),
    ("speed<1e3", Comparison(P("speed"), "<", 1000.0)),
    ("speed<=-0.25", Comparison(P("speed"), "<=", -0.25)),
    ('name=="Tower"', Comparison(P("name"), "==", "Tower")),
    (r'name=="say \"hi\" \\ \d"', Comparison(P("name"), "==", 'say "hi" \\ \\d')),
    ("flag==true", Comparison(P("flag"), "==", True)),
    ("flag!=false", Comparison(P("flag"), "!=", False)),
    ("t>2018-12-04T12:00:00Z", Comparison(P("t"), ">", datetime(2018, 12, 4, 12, tzinfo=UTC))),
    ("t>2018-12-04T12:00:00.5+09:00",
     Comparison(P("t"), ">", datetime(2018, 12, 4, 12, 0, 0, 500000, tzinfo=timezone(timedelta(hours=9))))),
    ("t>2018-12-04T12:00", Comparison(P("t"), ">", datetime(2018, 12, 4, 12, tzinfo=UTC))),
    ("d==2018-12-04", Comparison(P("d"), "==", date(2018, 12, 4))),
    ("h<12:00:00Z", Comparison(P("h"), "<", time(12, tzinfo=UTC))),
    ("h<12:00:00", Comparison(P("h"), "<", time(12, tzinfo=UTC))),
    ("owner==urn:ngsi-ld:Person:1", Comparison(P("owner"), "==", "urn:ngsi-ld:Person:1")),
    ('c=="red","green",3', Comparison(P("c"), "==", ValueList(("red", "green", 3)))),
    ("c!=1,2", Comparison(P("c"), "!=", ValueList((1, 2)))),
    ("n==1..10", Comparison(P("n"), "==", Range(1, 10))),
    ("n==1.5..2.5", Comparison(P("n"), "==", Range(1.5, 2.5))),
    ('n=="a".."z"', Comparison(P("n"), "==", Range("a", "z"))),
    ("t==2018-01-01T00:00:00Z..2019-01-01T00:00:00Z",
     Comparison(P("t"), "==", Range(datetime(2018, 1, 1, tzinfo=UTC), datetime(2019, 1, 1, tzinfo=UTC)))),
    ("n!=1..10", Comparison(P("n"), "!=", Range(1, 10))),
    ("speed.accuracy>0.5", Comparison(P("speed", "accuracy"), ">", 0.5)),
    ("a.b.c", Exists(P("a", "b", "c"))),
    ('address[city]=="Sapporo"', Comparison(P("address", keys=("city",)), "==", "Sapporo")),
    ('address[zip.code]=="060"', Comparison(P("address", keys=("zip", "code")), "==", "060")),
    ('address[zip][code]=="060"', Comparison(P("address", keys=("zip", "code")), "==", "060")),
    ("a.b[k]==1", Comparison(P("a", "b", keys=("k",)), "==", 1)),
    ("https://x.org/ns#name", Exists(P("https://x.org/ns#name"))),
    ("https://x.org/ns#speed.accuracy", Exists(P("https://x.org/ns#speed", "accuracy"))),
    ("https://x.org/v1.2/speed==1", Comparison(P("https://x.org/v1.2/speed"), "==", 1)),
    ("https://x.org/ns#a.https://x.org/ns#b", Exists(P("https://x.org/ns#a", "https://x.org/ns#b"))),
    ("ngsi-ld:foo.bar", Exists(P("ngsi-ld:foo", "bar"))),
    ("name~=^T.w", Comparison(P("name"), "~=", "^T.w")),
    ('name~="(?i)tower|house"', Comparison(P("name"), "~=", "(?i)tower|house")),
    ("name!~=(a|b)c", Comparison(P("name"), "!~=", "(a|b)c")),
    ("a;b", And((Exists(P("a")), Exists(P("b"))))),
    ("a|b", Or((Exists(P("a")), Exists(P("b"))))),
    ("a;b|c", Or((And((Exists(P("a")), Exists(P("b")))), Exists(P("c"))))),
    ("a|b;c", Or((Exists(P("a")), And((Exists(P("b")), Exists(P("c"))))))),
    ("a;(b|c)", And((Exists(P("a")), Or((Exists(P("b")), Exists(P("c"))))))),
    ("((a))", Exists(P("a"))),
    ("a;b;c", And((Exists(P("a")), Exists(P("b")), Exists(P("c"))))),
    ("(a;b);c", And((And((Exists(P("a")), Exists(P("b")))), Exists(P("c"))))),
    (" a == 1 ; ( b | !c ) ", And((Comparison(P("a"), "==", 1), Or((Exists(P("b")), Exists(P("c"), True)))))),
    ("name~=a;b", And((Comparison(P("name"), "~=", "a"), Exists(P("b"))))),
    ("(name~=x(y)z)", Comparison(P("name"), "~=", "x(y)z")),
    ("name~=[;|)]", Comparison(P("name"), "~=", "[;|)]")),
]


@pytest.mark.parametrize(("text", "expected"), PARSE_CASES, ids=[c[0] for c in PARSE_CASES])
def test_parse(text: str, expected: Node) -> None:
    """Each construct of the grammar parses to the expected tree, types included."""
    node = parse_q(text)
    assert node == expected
    assert repr(node) == repr(expected)  # == alone would let True pass for 1


@pytest.mark.parametrize(("text", "expected"), PARSE_CASES, ids=[c[0] for c in PARSE_CASES])
def test_to_text_round_trip(text: str, expected: Node) -> None:
    """to_text renders every parsed tree so that it parses back to the same tree."""
    assert repr(parse_q(to_text(expected))) == repr(expected)


ERROR_CASES: list[tuple[str, int, str]] = [
    ("", 0, "empty query"),
    ("   ", 0, "empty query"),
    ("a=1", 1, "'=='"),
    ("a==", 3, "expected a value"),
    ("a>true", 2, "not a boolean"),
    ('a=="x', 3, "unterminated string"),
    ("(a", 2, "expected ')'"),
    ("a)", 1, "expected ';', '|' or end of query"),
    ("a;", 2, "attribute name"),
    ("|a", 0, "attribute name"),
    ("a..b==1", 0, "empty attribute name"),
    ("a[]", 2, "key name"),
    ("a[x", 3, "']'"),
    ("a==foo", 3, "found 'foo'"),
    ("a~=(", 3, "invalid regular expression"),
    ("!a==1", 2, "non-existence takes no operator"),
    ('a==1.."x"', 3, "same type"),
    ("a==true..false", 3, "booleans"),
    ("a>1,2", 2, "only allowed after '==' or '!='"),
    ("a<1..2", 2, "only allowed after '==' or '!='"),
    ("a==99999999999999999999", 3, "out of range"),
    ("a==1e999", 3, "out of range"),
    ("a==2018-13-01", 3, "invalid date"),
    ("a==2018-12-04T25:00:00Z", 3, "invalid date-time"),
    ("a==1 2", 5, "expected ';', '|' or end of query"),
    ("a b", 2, "operator"),
    ("a\x00", 1, "NUL"),
    ("(" * 100 + "a" + ")" * 100, 64, "nested deeper"),
]


@pytest.mark.parametrize(("text", "position", "fragment"), ERROR_CASES,
                         ids=[repr(c[0])[:30] for c in ERROR_CASES])
def test_parse_errors(text: str, position: int, fragment: str) -> None:
    """Invalid q raises QSyntaxError naming the position and what was expected."""
    with pytest.raises(QSyntaxError) as info:
        parse_q(text)
    assert info.value.position == position
    assert f"position {position}" in str(info.value)
    assert fragment in str(info.value)
    assert isinstance(info.value, ValueError)


def test_expand_names_expands_attrs_and_subs_only() -> None:
    """expand_names maps attribute and sub-attribute names, never compound keys or core instance members."""
    node = parse_q('speed.accuracy>1;address[city]=="x"|!speed.observedAt')
    got = expand_names(node, expand)
    assert got == Or((
        And((Comparison(P(D("speed"), D("accuracy")), ">", 1),
             Comparison(P(D("address"), keys=("city",)), "==", "x"))),
        Exists(P(D("speed"), "observedAt"), negated=True),
    ))


# ---------------------------------------------------------------------------------- hypothesis: parser

Q_ALPHABET = "ab.:/#=!<>~;|()[],\"\\ 0123456789-TZ+e'truefals"


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(), st.text(alphabet=Q_ALPHABET, max_size=40)))
def test_fuzz_only_qsyntaxerror(text: str) -> None:
    """Arbitrary text either parses (and then round-trips, evaluates and compiles) or raises QSyntaxError."""
    try:
        node = parse_q(text)
    except QSyntaxError:
        return
    assert repr(parse_q(to_text(node))) == repr(node)
    evaluate(node, BUILDING)
    to_sql(node, sa.column("doc"), "sqlite")
    to_sql(node, sa.column("doc", JSONB()), "postgresql")


TZS = [UTC, timezone(timedelta(hours=9)), timezone(-timedelta(hours=5, minutes=30))]
NAMES = ["speed", "a_b-c", "ngsi-ld:foo", "urn:ngsi-ld:attr", "https://x.org/ns#temp",
         "https://example.org/v1.2/attr", "日本"]
SUBS = ["accuracy", "observedAt", "https://x.org/ns#acc"]
KEY = st.text(alphabet="abcxyz09_-:", min_size=1, max_size=4)
SCALARS: st.SearchStrategy[Scalar] = st.one_of(
    st.integers(min_value=-(2**63) + 1, max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text().filter(lambda s: "\x00" not in s),
    st.booleans(),
    st.datetimes(timezones=st.sampled_from(TZS)).map(lambda v: v.replace(fold=0)),  # fold is not ISO 8601
    st.dates(),
    st.times(timezones=st.sampled_from(TZS)).map(lambda v: v.replace(fold=0)),
)
COMPARABLE = SCALARS.filter(lambda v: not isinstance(v, bool))


def _kind(v: Scalar) -> type:
    return float if isinstance(v, int | float) and not isinstance(v, bool) else type(v)


@st.composite
def ranges(draw: st.DrawFn) -> Range:
    low = draw(COMPARABLE)
    high = draw(COMPARABLE.filter(lambda v: _kind(v) == _kind(low)))
    return Range(low, high)


paths = st.builds(
    AttrPath,
    st.sampled_from(NAMES),
    st.lists(st.sampled_from(SUBS), max_size=2).map(tuple),
    st.lists(KEY, max_size=2).map(tuple),
)
PATTERNS = ["^T", "(?i)tower", 'a"b', r"\d+", "x|y", ""]
terms: st.SearchStrategy[Node] = st.one_of(
    st.builds(Exists, paths, st.booleans()),
    st.builds(Comparison, paths, st.sampled_from([">", ">=", "<", "<="]), COMPARABLE),
    st.builds(Comparison, paths, st.sampled_from(["==", "!="]),
              st.one_of(SCALARS, ranges(), st.lists(SCALARS, min_size=2, max_size=3).map(
                  lambda xs: ValueList(tuple(xs))))),
    st.builds(Comparison, paths, st.sampled_from(["~=", "!~="]), st.sampled_from(PATTERNS)),
)


def trees(leaves: st.SearchStrategy[Node]) -> st.SearchStrategy[Node]:
    return st.recursive(leaves, lambda kids: st.one_of(
        st.lists(kids, min_size=2, max_size=3).map(lambda xs: And(tuple(xs))),
        st.lists(kids, min_size=2, max_size=3).map(lambda xs: Or(tuple(xs))),
    ), max_leaves=6)


@settings(max_examples=200, deadline=None)
@given(trees(terms))
def test_round_trip_generated_trees(node: Node) -> None:
    """Any valid tree rendered with to_text parses back to an identical tree (types included)."""
    text = to_text(node)
    assert repr(parse_q(text)) == repr(node), text


# ---------------------------------------------------------------------------------------- evaluate

EVAL_CASES: list[tuple[str, bool]] = [
    ("speed", True),
    ("!speed", False),
    ("nope", False),
    ("!nope", True),
    ("speed==55", True),
    ("speed==60", True),  # the second instance (datasetId) counts
    ("speed==55.0", True),
    ("speed==56", False),
    ("speed>59", True),
    ("speed>60", False),
    ("speed<55", False),
    ("speed<=55", True),
    ("speed!=55", True),  # the gps instance differs
    ("speed!=55,60", False),
    ("speed==1..55", True),
    ("speed==56..59", False),
    ("speed!=50..70", False),
    ('speed=="55"', False),  # number vs string
    ('speed>"a"', False),
    ('speed!="a"', True),  # has a value and it is not "a"
    ("speed==true", False),
    ("speed.accuracy>0.5", True),
    ("speed.accuracy<0.5", False),
    ("speed.accuracy", True),
    ('speed.unitCode=="KMH"', True),
    ("speed.observedAt==2026-11-26T05:00:00Z", True),
    ("speed.observedAt>2026-11-26T05:00:00.000001Z", False),
    ("speed.observedAt==2026-11-26T14:00:00+09:00", True),
    ("speed.datasetId==urn:ngsi-ld:Dataset:gps", True),
    ("speed.nothing", False),
    ('https://ngsi-ld-test-suite/context#name=="Tower"', True),
    ('https://ngsi-ld-test-suite/context#name=="tower"', False),
    ("https://ngsi-ld-test-suite/context#name~=^T.w", True),
    ("https://ngsi-ld-test-suite/context#name~=(?i)^tow", True),
    ("https://ngsi-ld-test-suite/context#name~=^t", False),
    ("https://ngsi-ld-test-suite/context#name!~=^t", True),
    ('https://ngsi-ld-test-suite/context#name=="A".."U"', True),
    ('https://ngsi-ld-test-suite/context#name>"Tower"', False),
    ("owner==urn:ngsi-ld:Person:1", True),
    ('owner=="urn:ngsi-ld:Person:1"', True),
    ("owner!=urn:ngsi-ld:Person:1", False),
    ("owner==urn:ngsi-ld:Person:2,urn:ngsi-ld:Person:1", True),
    ('address[city]=="Sapporo"', True),
    ('address[city]=="Otaru"', False),
    ('address[zip.code]=="060"', True),
    ('address[zip][code]=="060"', True),
    ("address[zip]", True),
    ("address[nope]", False),
    ('address=="Sapporo"', False),  # a compound value is not its members
    ('label=="Sapporo"', True),
    ('label=="札幌"', True),
    ('label[ja]=="札幌"', True),
    ('label[en]=="札幌"', False),
    ('label!="Sapporo"', False),
    ("when>2026-01-01T00:00:00Z", True),
    ("when==2026-11-26T05:00:00Z", True),
    ("when<2026-11-26T05:00:00Z", False),
    ("when==2026-01-01T00:00:00Z..2026-12-31T00:00:00Z", True),
    ('when=="2026-11-26T05:00:00Z"', False),  # a quoted string is a string, not a DateTime
    ("when==2026-11-26", False),  # a date is not a date-time
    ("tags==2", True),
    ("tags==4", False),
    ("tags>2", True),
    ("tags!=2", False),
    ("tags!=4", True),
    ('kind=="https://x/ns#Bear"', True),
    ("kind==https://x/ns#Bear", True),
    ("speed>59;owner", True),
    ("speed>59;nope", False),
    ("nope|speed>59", True),
    ("nope|(speed<0;owner)", False),
]


@pytest.mark.parametrize(("text", "expected"), EVAL_CASES, ids=[c[0] for c in EVAL_CASES])
def test_evaluate_building(text: str, expected: bool) -> None:
    """evaluate() on the reference Building document."""
    assert evaluate(expand_names(parse_q(text), expand), BUILDING) is expected


def test_evaluate_odd_documents_never_raise() -> None:
    """Malformed stored data is simply not matched."""
    node = expand_names(parse_q("speed>1|speed.x[y]==2|name~=a|!speed"), expand)
    for doc in [{}, {"attrs": None}, {"attrs": {D("speed"): {"value": 3}}},
                {"attrs": {D("speed"): [None, 5, "x"]}}, {"attrs": {D("speed"): [{"value": None}]}}, [], "x"]:
        assert evaluate(node, doc) in (True, False)


# --------------------------------------------------------------------------------------------- SQL

def _docs() -> dict[str, dict[str, Any]]:
    """About ten varied documents: types, instances, lists, typed dates, odd shapes."""
    def doc(attrs: dict[str, Any]) -> dict[str, Any]:
        return {"id": "", "type": ["T"], "attrs": {k if ":" in k else D(k): v for k, v in attrs.items()}}

    prop: Any = lambda v, **kw: {"type": "Property", "value": v, **kw}  # noqa: E731
    docs = {
        "building": copy.deepcopy(BUILDING),
        "otaru": doc({
            "speed": [prop(30)], "https://ngsi-ld-test-suite/context#name": [prop("Alpha")],
            "owner": [{"type": "Relationship", "object": ["urn:ngsi-ld:Person:1", "urn:ngsi-ld:Person:2"]}],
            "address": [prop({"city": "Otaru", "zip": {"code": "047"}})],
            "label": [{"type": "LanguageProperty", "languageMap": {"en": "Otaru"}}],
            "tags": [{"type": "ListProperty", "valueList": [4, 5]}],
            "when": [prop("2025-01-01T00:00:00Z")],
            "kind": [{"type": "VocabProperty", "vocab": ["https://x/ns#Bear", "https://x/ns#Fox"]}]}),
        "mismatch": doc({
            "speed": [prop("fast")], "https://ngsi-ld-test-suite/context#name": [prop(42)],
            "flag": [prop(True)], "tags": [prop(["1", "2"])], "owner": [prop("urn:ngsi-ld:Person:1")]}),
        "offsets": doc({
            "speed": [prop(55.0, observedAt="2026-11-26T14:00:00+09:00")],
            "when": [prop({"@type": "DateTime", "@value": "2026-11-26T14:00:00+09:00"})],
            "address": [prop({"city": "Sapporo", "zip": {"code": 60}})], "flag": [prop(False)]}),
        "empty": doc({}),
        "nulls": doc({
            "speed": [prop(None)], "https://ngsi-ld-test-suite/context#name": [],
            "address": [prop([{"city": "Sapporo"}])], "flag": [{"type": "Property"}]}),
        "weird": doc({
            "speed": {"type": "Property", "value": 55}, "https://ngsi-ld-test-suite/context#name": ["bare"],
            "label": [{"type": "LanguageProperty", "languageMap": {"en": ["Sapporo", "Otaru"]}}],
            "tags": [{"type": "ListProperty", "valueList": [[1, 2], 3]}], "owner": [None, 7],
            # malformed: several target members; the first of TARGET_MEMBERS present is the target
            "flag": [{"type": "Property", "value": "yes", "object": True}],
            "kind": [{"languageMap": None, "vocab": "https://x/ns#Bear"}]}),
        "multi": doc({
            "speed": [prop(10, **{D("accuracy"): prop(0.2)}), prop([70, 80], datasetId="urn:x:list")],
            "https://ngsi-ld-test-suite/context#name": [prop("tower")],
            "owner": [{"type": "Relationship", "object": "urn:ngsi-ld:Person:3"}],
            "flag": [prop(False)], "when": [prop("2026-11-26T05:00:00.5Z")]}),
        "unicode": doc({
            "https://ngsi-ld-test-suite/context#name": [prop("札幌タワー")],
            "label": [{"type": "LanguageProperty", "languageMap": {"ja": "小樽"}}],
            "speed": [prop(1e3)], "when": [prop({"@type": "Date", "@value": "2026-11-26"})],
            "flag": [prop("true")]}),
        "subs": doc({
            "speed": [prop(60, **{D("accuracy"): prop("high")}), prop(59.5, unitCode="KMH")],
            "address": [prop("Sapporo")],
            "json": [{"type": "JsonProperty", "json": {"a": 1, "city": "Sapporo"}}],
            "when": [prop("2026-11-27")]}),
    }
    for name, d in docs.items():
        d["id"] = f"urn:ngsi-ld:T:{name}"
    return docs


DOCS = _docs()

SQL_CASES = [text for text, _ in EVAL_CASES] + [
    "flag==true", "flag==false", "flag!=true", "flag", "!flag",
    "speed>=30;speed<=55", "speed==10,30", "speed==70", "speed!=70", "speed.accuracy==0.2",
    'speed.accuracy=="high"', 'speed.unitCode!="KMH"', "speed.observedAt", "speed[x]",
    'address[city]!="Sapporo"', "address[zip.code]==60", 'address[zip.code]=="047".."060"',
    'json[city]=="Sapporo"', "json[a]>=1", 'label[en]=="Otaru"', 'label=="Otaru"', 'label!="Otaru"',
    'tags=="1"', "tags==3", "tags==1..2", "owner==urn:ngsi-ld:Person:2", 'owner!="urn:ngsi-ld:Person:3"',
    "when>=2026-11-26", "when<2026-11-26T05:00:00.6Z", "when!=2026-11-26T05:00:00Z", "when>12:00:00Z",
    'https://ngsi-ld-test-suite/context#name>="Tower"', 'https://ngsi-ld-test-suite/context#name<"z"',
    'https://ngsi-ld-test-suite/context#name!="Tower","tower"', "https://ngsi-ld-test-suite/context#name==42",
    "https://ngsi-ld-test-suite/context#name", "!https://ngsi-ld-test-suite/context#name",
    "https://ngsi-ld-test-suite/context#name!~=(?i)tower", "speed==55;(flag==false|owner)",
    'flag=="yes"', "flag!=true", 'kind!="https://x/ns#Bear"', "kind",
]


class DocTable:
    """The broker_entities table (own MetaData) filled with DOCS; answers "which ids does this select"."""

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
            rows = [{"tenant": "t", "id": d["id"], "doc": d} for d in DOCS.values()]
            conn.execute(self.table.insert(), rows)

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
    table = DocTable(engine, f"broker_entities_q_{uuid.uuid4().hex[:10]}")
    yield table
    table.drop()


def expected_ids(node: Node) -> set[str]:
    return {d["id"] for d in DOCS.values() if evaluate(node, d)}


def check_sql(table: DocTable, node: Node) -> bool:
    """SQL selects exactly what evaluate selects (exact) or a superset of it; returns exactness."""
    expr, exact = to_sql(node, table.table.c.doc, table.dialect)
    got, want = table.ids(expr), expected_ids(node)
    if exact:
        assert got == want, to_text(node)
    else:
        assert got >= want, to_text(node)
    return exact


def test_sql_cases_are_discriminating() -> None:
    """The case table is meaningful: most cases select some but not all documents."""
    sizes = [len(expected_ids(expand_names(parse_q(t), expand))) for t in SQL_CASES]
    assert sum(0 < s < len(DOCS) for s in sizes) > len(SQL_CASES) * 0.6


@pytest.mark.parametrize("text", SQL_CASES)
def test_sql_sqlite(sqlite_table: DocTable, text: str) -> None:
    """SQLite SQL agrees with evaluate() on the sample documents."""
    check_sql(sqlite_table, expand_names(parse_q(text), expand))


@pytest.mark.postgres
@pytest.mark.parametrize("text", SQL_CASES)
def test_sql_postgres(pg_table: DocTable, text: str) -> None:
    """PostgreSQL SQL agrees with evaluate() on the sample documents."""
    check_sql(pg_table, expand_names(parse_q(text), expand))


@pytest.mark.parametrize("text", [
    "speed==55", "speed!=55,60", 'name=="x"', "flag==true", "tags==1..2", "speed", "!speed", "a.b[c]>1",
    "speed>1|name<2",
])
def test_common_cases_are_exact(text: str) -> None:
    """Numbers, strings, booleans, lists, ranges, existence and AND/OR compile to exact SQL."""
    node = expand_names(parse_q(text), expand)
    assert to_sql(node, sa.column("doc"), "sqlite")[1] is True
    assert to_sql(node, sa.column("doc", JSONB()), "postgresql")[1] is True


@pytest.mark.parametrize("text", ["t>2020-01-01T00:00:00Z", "t==2020-01-01", "t<12:00:00Z", "name~=x",
                                  "name!~=x", "t!=2020-01-01", "a==1;t>2020-01-01"])
def test_superset_cases_are_flagged(text: str) -> None:
    """Date/time and regular-expression terms are reported as superset filters."""
    node = parse_q(text)
    assert to_sql(node, sa.column("doc"), "sqlite")[1] is False
    assert to_sql(node, sa.column("doc", JSONB()), "postgresql")[1] is False


def test_sql_binds_every_value_and_name() -> None:
    """User values and attribute IRIs never appear in the SQL text: they are bound parameters."""
    evil = "x'); DROP TABLE broker_entities; --"
    node = Comparison(AttrPath("https://e.org/ns#it's", ("s'ub",), ("k'ey",)), "==", ValueList((evil, 7)))
    doc = sa.table("e", sa.column("doc")).c.doc
    for dialect, name in ((sqlite.dialect(), "sqlite"), (postgresql.psycopg.dialect(), "postgresql")):
        expr, _ = to_sql(node, doc, name)
        compiled = str(sa.select(sa.literal(1)).where(expr).compile(dialect=dialect))
        assert "DROP" not in compiled and "it's" not in compiled and "k'ey" not in compiled


def test_unquotable_names_fall_back_to_superset(sqlite_table: DocTable) -> None:
    """A name that cannot be quoted in a SQLite JSON path (e.g. from expansion) gives true() + recheck."""
    node = Comparison(AttrPath('we"ird'), "==", 1)
    expr, exact = to_sql(node, sqlite_table.table.c.doc, "sqlite")
    assert exact is False
    assert sqlite_table.ids(expr) == {d["id"] for d in DOCS.values()}


def test_unknown_dialect_is_rejected() -> None:
    """Only sqlite and postgresql are supported."""
    with pytest.raises(ValueError, match="dialect"):
        to_sql(parse_q("a"), sa.column("doc"), "mysql")


# ------------------------------------------------------------------------- hypothesis: SQL == evaluate

V_PATHS = st.sampled_from([
    P(D("speed")), P(D("speed"), D("accuracy")), P(D("speed"), "observedAt"), P(D("speed"), "unitCode"),
    P("https://ngsi-ld-test-suite/context#name"), P(D("owner")), P(D("address"), keys=("city",)),
    P(D("address"), keys=("zip", "code")), P(D("address")), P(D("label")), P(D("label"), keys=("ja",)),
    P(D("when")), P(D("tags")), P(D("kind")), P(D("flag")), P(D("json"), keys=("a",)), P(D("nope")),
])
V_NUMBERS: st.SearchStrategy[Scalar] = st.sampled_from(
    [-1, 0, 1, 2, 3, 10, 30, 55, 60, 70, 1000, 0.2, 0.9, 55.0, 59.5])
V_STRINGS: st.SearchStrategy[Scalar] = st.sampled_from([
    "Tower", "tower", "Sapporo", "Otaru", "札幌", "urn:ngsi-ld:Person:1", "KMH", "fast", "060", "", "high",
    "https://x/ns#Bear", "1"])
V_TEMPORAL: st.SearchStrategy[Scalar] = st.sampled_from([
    datetime(2026, 11, 26, 5, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC),
    datetime(2026, 11, 26, 14, tzinfo=timezone(timedelta(hours=9))), date(2026, 11, 26), time(5, tzinfo=UTC),
])
V_ORDERED: st.SearchStrategy[Scalar] = st.one_of(V_NUMBERS, V_STRINGS, V_TEMPORAL)
V_SCALARS: st.SearchStrategy[Scalar] = st.one_of(V_ORDERED, st.booleans())
V_LISTS = st.lists(V_SCALARS, min_size=2, max_size=3).map(lambda xs: ValueList(tuple(xs)))


@st.composite
def v_ranges(draw: st.DrawFn) -> Range:
    kind = draw(st.sampled_from([V_NUMBERS, V_STRINGS]))
    return Range(draw(kind), draw(kind))


V_TERMS: st.SearchStrategy[Node] = st.one_of(
    st.builds(Exists, V_PATHS, st.booleans()),
    st.builds(Comparison, V_PATHS, st.sampled_from([">", ">=", "<", "<="]), V_ORDERED),
    st.builds(Comparison, V_PATHS, st.sampled_from(["==", "!="]), st.one_of(V_SCALARS, v_ranges(), V_LISTS)),
    st.builds(Comparison, V_PATHS, st.sampled_from(["~=", "!~="]),
              st.sampled_from(["^T", "(?i)sap", "[0-9]"])),
)
SQL_SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SQL_SETTINGS
@given(trees(V_TERMS))
def test_sql_matches_evaluate_sqlite(sqlite_table: DocTable, node: Node) -> None:
    """Random q trees: SQLite SQL == evaluate() when exact, a superset otherwise."""
    check_sql(sqlite_table, node)


@pytest.mark.postgres
@SQL_SETTINGS
@given(trees(V_TERMS))
def test_sql_matches_evaluate_postgres(pg_table: DocTable, node: Node) -> None:
    """Random q trees: PostgreSQL SQL == evaluate() when exact, a superset otherwise."""
    check_sql(pg_table, node)
