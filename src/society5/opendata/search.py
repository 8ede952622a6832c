"""``package_search``: CKAN's parameters and result shape over SQL instead of Solr.

* ``q`` free text is substring matching (Japanese has no spaces between words): words of three characters
  or more go through the SQLite FTS5 ``trigram`` index (PostgreSQL: ``LIKE`` served by a ``pg_trgm`` GIN
  index), shorter ones through ``LIKE``. ``q`` may also use the ``fq`` syntax (``tags:除雪 AND 札幌``).
* ``fq`` is the subset of Solr's syntax CKAN clients send: ``field:value``, ``field:"quoted value"``,
  ``field:(a OR b)``, ``+``/``AND``/``&&`` and implicit AND between terms, ``OR``/``||``, ``-``/``NOT``,
  parentheses, ``field:*`` (has any value), ``value*`` (prefix) and ``metadata_modified:[from TO *]``.
  Anything else is a Search Query Error that says where the query went wrong.
* The matched datasets' keys are fetched once, in order: the count is their number, the page their slice,
  and the facet counts one ``GROUP BY`` over ``package_terms`` restricted to them (passed as one JSON or
  array value); results are the stored documents of the page. A search is four queries whatever it matches.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import TSQUERY
from sqlalchemy.engine import Connection

from society5.core.auth import Principal
from society5.opendata import catalog
from society5.opendata import tables as t
from society5.opendata.actions import SearchError

MAX_ROWS = 1000
DEFAULT_SORT = "score desc, metadata_modified desc"
P = t.packages
SORT_COLUMNS = {"metadata_modified": P.c.metadata_modified, "metadata_created": P.c.metadata_created,
                "title_string": P.c.title_sort, "title": P.c.title_sort, "name": P.c.name}
TIME_FIELDS = ("metadata_modified", "metadata_created")
COLUMN_FIELDS = {"name": P.c.name, "id": P.c.id, "owner_org": P.c.owner_org}
TEXT_FIELDS = ("text", "title", "notes")
OTHER_FIELDS = ("capacity", "type", "dataset_type", "state")
FQ_FIELDS = (*catalog.TERM_FIELDS, *COLUMN_FIELDS, *TEXT_FIELDS, *TIME_FIELDS, *OTHER_FIELDS)

Node = tuple[Any, ...]  # ("and"|"or", [nodes]) | ("not", node) | ("term", field, spec) | ("text", word)


# ---------------------------------------------------------------- the query language


class QueryParser:
    """Recursive descent over the Solr subset; every failure is a ``SearchError`` naming the position."""

    FIELD = re.compile(r"([A-Za-z_][A-Za-z0-9_.]*):")
    # Nesting (parentheses, NOT chains) deeper than any real query: refused before it exhausts the stack of
    # this parser or of the SQL compiler.
    MAX_DEPTH = 32
    # Terms in one query: each is a condition, and SQLite refuses expressions more than 1000 deep.
    MAX_TERMS = 100

    def __init__(self, text: str):
        self.s = text
        self.i = 0
        self.depth = 0
        self.terms = 0

    def fail(self, problem: str) -> SearchError:
        return SearchError(f"Search Query Error: {problem} at character {self.i + 1} of {self.s!r}")

    def parse(self) -> Node:
        node = self._or()
        self._ws()
        if self.i < len(self.s):
            raise self.fail(f"unexpected {self.s[self.i]!r}")
        return node

    def _ws(self) -> None:
        while self.i < len(self.s) and self.s[self.i].isspace():
            self.i += 1

    def _take(self, token: str) -> bool:
        self._ws()
        if not self.s.startswith(token, self.i):
            return False
        end = self.i + len(token)
        if token.isalpha() and end < len(self.s) and not (self.s[end].isspace() or self.s[end] == "("):
            return False  # "ORANGE" is a word, not OR
        self.i = end
        return True

    def _or(self) -> Node:
        parts = [self._and()]
        while self._take("OR") or self._take("||"):
            parts.append(self._and())
        return parts[0] if len(parts) == 1 else ("or", parts)

    def _and(self) -> Node:
        parts = [self._unary()]
        while True:
            self._ws()
            if self.i >= len(self.s) or self.s[self.i] == ")":
                break
            start = self.i
            if self._take("OR") or self._take("||"):
                self.i = start
                break
            self._take("AND") or self._take("&&")
            parts.append(self._unary())
        return parts[0] if len(parts) == 1 else ("and", parts)

    def _deeper(self) -> None:
        self.depth += 1
        if self.depth > self.MAX_DEPTH:
            raise self.fail(f"nested more than {self.MAX_DEPTH} levels deep")

    def _count_term(self) -> None:
        self.terms += 1
        if self.terms > self.MAX_TERMS:
            raise self.fail(f"more than {self.MAX_TERMS} terms")

    def _unary(self) -> Node:
        self._deeper()
        try:
            self._ws()
            if self._take("NOT") or self._take("-") or self._take("!"):
                return ("not", self._unary())
            if self._take("+"):
                return self._unary()
            return self._primary()
        finally:
            self.depth -= 1

    def _primary(self) -> Node:
        self._ws()
        if self.i >= len(self.s):
            raise self.fail("missing a term")
        self._count_term()
        if self._take("("):
            node = self._or()
            if not self._take(")"):
                raise self.fail("missing ')'")
            return node
        found = self.FIELD.match(self.s, self.i)
        if found:
            field = found.group(1)
            if field not in FQ_FIELDS:
                raise self.fail(f"unknown field {field!r} (use one of: {', '.join(FQ_FIELDS)})")
            self.i = found.end()
            return self._value(field)
        if self.s[self.i] == '"':
            return ("text", self._quoted())
        word = self._bare()
        if word in ("AND", "OR", "NOT"):
            raise self.fail(f"{word} needs a term on each side")
        return ("text", word)

    def _value(self, field: str) -> Node:
        if self.i >= len(self.s) or self.s[self.i].isspace():
            raise self.fail(f"missing value after {field}:")
        char = self.s[self.i]
        if char == '"':
            return ("term", field, ("eq", self._quoted()))
        if char == "[" or char == "{":
            return ("term", field, self._range(field))
        if char == "(":
            self._deeper()
            self.i += 1
            values: list[Node] = []
            joiner = "or"  # Solr's default operator inside a field group
            while not self._take(")"):
                self._ws()
                if self.i >= len(self.s):
                    raise self.fail("missing ')'")
                if self._take("AND") or self._take("&&"):
                    joiner = "and"
                    continue
                if self._take("OR") or self._take("||"):
                    continue
                self._count_term()
                values.append(self._value(field))
            if not values:
                raise self.fail(f"empty value list after {field}:")
            self.depth -= 1
            return values[0] if len(values) == 1 else (joiner, values)
        word = self._bare()
        if word == "*":
            return ("term", field, ("any",))
        if word.endswith("*") and "*" not in word[:-1]:
            return ("term", field, ("prefix", word[:-1]))
        if "*" in word or "?" in word:
            raise self.fail("wildcards are supported only at the end of a value")
        return ("term", field, ("eq", word))

    def _quoted(self) -> str:
        self.i += 1
        out: list[str] = []
        while self.i < len(self.s):
            char = self.s[self.i]
            if char == "\\" and self.i + 1 < len(self.s):
                out.append(self.s[self.i + 1])
                self.i += 2
                continue
            if char == '"':
                self.i += 1
                return "".join(out)
            out.append(char)
            self.i += 1
        raise self.fail("missing closing '\"'")

    def _bare(self) -> str:
        out: list[str] = []
        while self.i < len(self.s):
            char = self.s[self.i]
            if char.isspace() or char in '()"':
                break
            if char == "\\" and self.i + 1 < len(self.s):
                out.append(self.s[self.i + 1])
                self.i += 2
                continue
            if char in "[]{}^~":
                raise self.fail(f"{char!r} is not supported here (quote the value)")
            out.append(char)
            self.i += 1
        if not out:
            raise self.fail("missing a value")
        return "".join(out)

    def _range(self, field: str) -> tuple[str, str, str]:
        if field not in TIME_FIELDS:
            raise self.fail(f"ranges are supported only on {' and '.join(TIME_FIELDS)}")
        closing = "]" if self.s[self.i] == "[" else "}"
        end = self.s.find(closing, self.i)
        if end < 0:
            raise self.fail(f"missing {closing!r}")
        parts = self.s[self.i + 1:end].split(" TO ")
        if len(parts) != 2:
            raise self.fail("a range reads [from TO to]")
        self.i = end + 1
        low, high = (_time_bound(p.strip(), self) for p in parts)
        return ("range", low, high)


def _time_bound(text: str, parser: QueryParser) -> str:
    if text == "*":
        return ""
    if text.upper().startswith("NOW"):
        return catalog.now()
    if not re.match(r"^\d{4}-\d{2}-\d{2}(T[\d:.]+)?Z?$", text):
        raise parser.fail(f"{text!r} is not a date-time (2025-04-01T00:00:00Z) or NOW or *")
    return text.rstrip("Z")


def parse(text: str) -> Node:
    return QueryParser(text).parse()


# ---------------------------------------------------------------- compiling to SQL


def _like(word: str) -> str:
    return "%" + word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def text_match(conn: Connection, word: str, column: sa.ColumnElement[str] = P.c.search_text,
               ) -> sa.ColumnElement[bool]:
    """A substring of the dataset's text (``word`` is normalized here)."""
    word = catalog.normalize(word).strip()
    if not word:
        return sa.true()
    if column is P.c.search_text and conn.dialect.name == "sqlite":
        if len(word) >= 3:
            return P.c.seq.in_(_fts_hits("opendata_package_fts", word))
        if len(word) == 2 and all(not c.isascii() or c.isalnum() for c in word):
            # the bigram table's tokenizer splits at ASCII punctuation: such pairs are scanned for instead
            return P.c.seq.in_(_fts_hits("opendata_package_bigrams", word))
    if column is P.c.search_text and conn.dialect.name == "postgresql" and len(word) == 2:
        # the pair as one quoted tsquery lexeme, looked up in the GIN index (pg_trgm serves longer words)
        lexeme = "'" + word.replace("\\", "\\\\").replace("'", "''") + "'"
        return sa.literal_column("opendata_packages.search_bigrams").op("@@")(
            sa.cast(sa.literal(lexeme), TSQUERY))
    return column.like(_like(word), escape="\\")


def _fts_hits(table: str, word: str) -> sa.Select[Any]:
    phrase = '"' + word.replace('"', '""') + '"'
    return sa.select(sa.literal_column("rowid")).select_from(sa.table(table)).where(
        sa.literal_column(table).op("MATCH")(sa.literal(phrase)))


def compile_node(conn: Connection, node: Node) -> sa.ColumnElement[bool]:
    kind = node[0]
    if kind == "and":
        return sa.and_(*(compile_node(conn, n) for n in node[1]))
    if kind == "or":
        return sa.or_(*(compile_node(conn, n) for n in node[1]))
    if kind == "not":
        return sa.not_(compile_node(conn, node[1]))
    if kind == "text":
        return text_match(conn, node[1])
    return _term(conn, node[1], node[2])


def _term(conn: Connection, field: str, spec: tuple[Any, ...]) -> sa.ColumnElement[bool]:
    op = spec[0]
    if field in TEXT_FIELDS:
        if op == "any":
            return sa.true()
        column = P.c.title_text if field == "title" else P.c.search_text
        return text_match(conn, spec[1], column)
    if field in TIME_FIELDS:
        column = SORT_COLUMNS[field]
        if op == "range":
            low, high = spec[1], spec[2]
            return sa.and_(column >= low if low else sa.true(), column <= high if high else sa.true())
        return _match(column, spec)
    if field == "capacity":
        if spec[1:] not in (("public",), ("private",)):
            raise SearchError("Search Query Error: capacity is public or private")
        return P.c.private.is_(spec[1] == "private")
    if field in ("type", "dataset_type"):
        return sa.true() if op == "any" or spec[1] == "dataset" else sa.false()
    if field == "state":
        return sa.true() if op == "any" or spec[1] in ("active", "draft") else sa.false()
    if field in COLUMN_FIELDS:
        return _match(COLUMN_FIELDS[field], spec)
    terms = t.package_terms
    inner = sa.select(terms.c.package_seq).where(terms.c.field == field)
    if op != "any":
        inner = inner.where(_match(terms.c.value, spec))
    return P.c.seq.in_(inner)


def _match(column: sa.ColumnElement[Any], spec: tuple[Any, ...]) -> sa.ColumnElement[bool]:
    if spec[0] == "any":
        return column.is_not(None)
    if spec[0] == "prefix":
        escaped = spec[1].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return column.like(escaped + "%", escape="\\")
    if spec[0] == "range":
        raise SearchError("Search Query Error: ranges are supported only on metadata_modified/_created")
    return column == spec[1]


def _positive_words(node: Node) -> list[str]:
    """Free-text words not under a NOT: what a title must contain to score higher."""
    if node[0] in ("and", "or"):
        return [w for n in node[1] for w in _positive_words(n)]
    if node[0] == "text":
        return [catalog.normalize(node[1])]
    return []


# ---------------------------------------------------------------- parameters


@dataclass
class SearchParams:
    q: str = ""
    fq: tuple[str, ...] = ()
    rows: int = 10
    start: int = 0
    sort: str = DEFAULT_SORT
    facet_fields: tuple[str, ...] = ()
    facet_limit: int = 50
    facet_mincount: int = 1
    include_private: bool = False
    include_drafts: bool = False

    @classmethod
    def of(cls, data: dict[str, Any]) -> SearchParams:
        problems = catalog.Problems()
        q = _string(data.get("q"), problems, "q")
        sort = _string(data.get("sort"), problems, "sort") or DEFAULT_SORT
        rows = catalog.as_int(data.get("rows"), problems, "rows")
        start = catalog.as_int(data.get("start"), problems, "start")
        limit = catalog.as_int(data.get("facet.limit"), problems, "facet.limit", minimum=-1)
        mincount = catalog.as_int(data.get("facet.mincount"), problems, "facet.mincount")
        private = catalog.as_bool(data.get("include_private"), problems, "include_private")
        drafts = catalog.as_bool(data.get("include_drafts"), problems, "include_drafts")
        fq = [_string(data.get("fq"), problems, "fq")]
        fq_list = _list(data.get("fq_list"), problems, "fq_list")
        facets = _list(data.get("facet.field"), problems, "facet.field")
        problems.raise_if_any()
        for field in facets:
            if field not in catalog.TERM_FIELDS:
                raise SearchError(f"Search Query Error: cannot facet on {field!r}; use one of: "
                                  + ", ".join(catalog.TERM_FIELDS))
        return cls(
            q=q, fq=tuple(f for f in fq + fq_list if f.strip()),
            rows=min(MAX_ROWS, 10 if rows is None else rows), start=start or 0,
            sort=sort, facet_fields=tuple(facets),
            facet_limit=50 if limit is None else limit, facet_mincount=1 if mincount is None else mincount,
            include_private=private, include_drafts=drafts,
        )


def _string(value: Any, problems: catalog.Problems, field: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        problems.add(field, "Must be a string")
        return ""
    if isinstance(value, str) and "\x00" in value:
        problems.add(field, catalog.NUL_PROBLEM)
        return ""
    return str(value)


def _list(value: Any, problems: catalog.Problems, field: str) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.lstrip().startswith("[") else [value]
        except ValueError:
            problems.add(field, "Must be a JSON list of strings")
            return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        problems.add(field, "Must be a list of strings")
        return []
    if any("\x00" in v for v in value):
        problems.add(field, catalog.NUL_PROBLEM)
        return []
    return list(value)


# ---------------------------------------------------------------- running a search


def visible(principal: Principal, include_private: bool, include_drafts: bool) -> sa.ColumnElement[bool]:
    """What the caller may see: active public datasets, plus (when asked) the private ones and drafts of
    its tenant (an admin: all)."""
    state: sa.ColumnElement[bool] = P.c.state == "active"
    if include_drafts and principal.is_admin:
        state = P.c.state.in_(("active", "draft"))
    elif include_drafts and principal.role == "operator" and principal.tenant:
        state = sa.or_(P.c.state == "active", sa.and_(P.c.state == "draft", P.c.tenant == principal.tenant))
    if include_private and principal.is_admin:
        return state
    if include_private and principal.role in ("operator", "reader", "device") and principal.tenant:
        return sa.and_(state, sa.or_(P.c.private.is_(False), P.c.tenant == principal.tenant))
    return sa.and_(state, P.c.private.is_(False))


def _query(conn: Connection, text: str, strict: bool) -> Node | None:
    text = text.strip()
    if not text or text in ("*:*", "*"):
        return None
    if strict:
        return parse(text)
    try:
        return parse(text)
    except SearchError:
        # A person's q ("http://…", "A&B (C") is searched as the words it contains.
        words = text.split()
        if len(words) > QueryParser.MAX_TERMS:
            raise SearchError(f"Search Query Error: q has more than {QueryParser.MAX_TERMS} words") from None
        return ("and", [("text", w) for w in words]) if len(words) > 1 else ("text", text)


def _order(sort: str, score: sa.ColumnElement[Any]) -> list[sa.ColumnElement[Any]]:
    order: list[sa.ColumnElement[Any]] = []
    for part in sort.split(","):
        words = part.split()
        if not words:
            continue
        if len(words) > 2 or (len(words) == 2 and words[1].lower() not in ("asc", "desc")):
            raise SearchError(f"Search Query Error: sort {part.strip()!r}: use 'field asc' or 'field desc'")
        field, desc = words[0], len(words) == 2 and words[1].lower() == "desc"
        if field == "score":
            column = score
        elif field in SORT_COLUMNS:
            column = SORT_COLUMNS[field]
        else:
            raise SearchError(f"Search Query Error: cannot sort by {field!r}; use score, "
                              + ", ".join(SORT_COLUMNS))
        order.append(column.desc() if desc else column.asc())
    return [*order, P.c.seq.desc()]  # a total order: pages never repeat or skip a dataset


def search(conn: Connection, principal: Principal, data: dict[str, Any], base_url: str) -> dict[str, Any]:
    """CKAN's ``package_search`` result: ``{count, results, facets, search_facets, sort}``."""
    params = SearchParams.of(data)
    conditions = [visible(principal, params.include_private, params.include_drafts)]
    q = _query(conn, params.q, strict=False)
    if q is not None:
        conditions.append(compile_node(conn, q))
    for fq in params.fq:
        node = _query(conn, fq, strict=True)
        if node is not None:
            conditions.append(compile_node(conn, node))
    where = sa.and_(*conditions)
    words = _positive_words(q) if q is not None else []
    score: sa.ColumnElement[Any] = sa.literal(0)
    for word in words:
        score = score + sa.case((P.c.title_text.like(_like(word), escape="\\"), 1), else_=0)
    order = _order(params.sort, score)
    # Count, page and facets are all answered by the database: shipping every matched id to Python (thousands
    # for a common word) cost more than the queries themselves.
    count, page = _count_and_page(conn, where, order, params.start, params.rows)
    results: list[dict[str, Any]] = []
    if page:
        docs = dict(conn.execute(sa.select(t.package_docs.c.package_seq, t.package_docs.c.doc)
                                 .where(t.package_docs.c.package_seq.in_(page))).all())
        results = catalog.present(conn, [docs[seq] for seq in page], base_url)
    facets = _facets(conn, params, where) if params.facet_fields and count else {
        f: {} for f in params.facet_fields}
    return {"count": count, "results": results, "facets": facets,
            "search_facets": _search_facets(conn, facets), "sort": params.sort}


def _count_and_page(conn: Connection, where: sa.ColumnElement[bool], order: list[sa.ColumnElement[Any]],
                    start: int, rows: int) -> tuple[int, list[int]]:
    """How many datasets match, and the ids of the requested page (one query when the page is not empty)."""
    if rows > 0:
        found = conn.execute(sa.select(P.c.seq, sa.func.count().over().label("total")).where(where)
                             .order_by(*order).offset(start).limit(rows)).all()
        if found:
            return int(found[0].total), [r.seq for r in found]
        if start == 0:
            return 0, []
    return int(conn.execute(sa.select(sa.func.count()).select_from(P).where(where)).scalar() or 0), []


def _facets(conn: Connection, params: SearchParams,
            where: sa.ColumnElement[bool]) -> dict[str, dict[str, int]]:
    terms = t.package_terms
    matched = sa.select(P.c.seq).where(where)
    rows = list(conn.execute(
        sa.select(terms.c.field, terms.c.value, sa.func.count().label("n"))
        .where(terms.c.field.in_(params.facet_fields), terms.c.package_seq.in_(matched))
        .group_by(terms.c.field, terms.c.value)
    ))
    grouped: dict[str, list[tuple[int, str]]] = {f: [] for f in params.facet_fields}
    for field, value, n in rows:
        if n >= params.facet_mincount:
            grouped[field].append((-int(n), value))
    out: dict[str, dict[str, int]] = {}
    for field, items in grouped.items():
        items.sort()
        if params.facet_limit >= 0:
            items = items[: params.facet_limit]
        out[field] = {value: -n for n, value in items}
    return out


def _search_facets(conn: Connection, facets: dict[str, dict[str, int]]) -> dict[str, Any]:
    names = sorted({v for f in ("organization", "groups") for v in facets.get(f, {})})
    titles: dict[str, str] = {}
    if names:
        titles = dict(conn.execute(sa.select(t.groups.c.name, t.groups.c.title)
                                   .where(t.groups.c.name.in_(names))).all())
    out: dict[str, Any] = {}
    for field, counts in facets.items():
        items = []
        for value, n in counts.items():
            display = value
            if field in ("organization", "groups"):
                display = titles.get(value) or value
            elif field == "license_id" and value in catalog.LICENSE_BY_ID:
                display = catalog.LICENSE_BY_ID[value]["title"]
            elif field == "frequency":
                display = catalog.FREQUENCIES.get(value, value)
            items.append({"name": value, "display_name": display, "count": n})
        out[field] = {"title": field, "items": items}
    return out
