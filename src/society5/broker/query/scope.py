"""The NGSI-LD scope query language ``scopeQ`` (ETSI GS CIM 009 v1.8, clause 4.19).

Public API
----------
``parse_scope_q(text) -> ScopeQuery``   raises ``QSyntaxError`` (shared with ``q``) on invalid input
``to_text(query) -> str``               render back (``parse_scope_q(to_text(x)) == x``)
``matches(query, scopes) -> bool``      exact evaluation against an entity's scopes
``doc_scopes(doc) -> list[str]``        the scopes of a stored document, read as ``to_sql`` reads them
``to_sql(query, doc_col, dialect)``     ``(expr, exact)`` over ``doc.scope``, same contract as ``q.to_sql``

Grammar (``;`` AND binds tighter than ``,`` OR; parentheses group; whitespace between tokens ignored)::

    query   := and (',' and)*        and := factor (';' factor)*        factor := '(' query ')' | pattern
    pattern := ('/' level)+ ['/' '#'] | '/#'                             level  := name | '+'

Semantics: ``+`` is exactly one level (any name), ``/A/#`` is ``/A`` itself or any descendant, ``/#``
is any scope.  A pattern holds when ANY of the entity's scopes matches it; an entity without scopes
matches nothing.  Level names may use any printable character except ``/ # + ; , ( ) " \\`` and
whitespace.  A stored ``scope`` that is a single string counts as a one-element list.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.sql.elements import ColumnElement

from society5.broker.query.q import QSyntaxError, _cmp, _safe_text

__all__ = [
    "ScopeAnd",
    "ScopeOr",
    "ScopePattern",
    "ScopeQuery",
    "doc_scopes",
    "matches",
    "parse_scope_q",
    "to_sql",
    "to_text",
]

SINGLE: Final = "+"
DESCENDANTS: Final = "#"
_LEVEL_STOP: Final = frozenset('/#+;,()"\\')
_MAX_DEPTH: Final = 64


@dataclass(frozen=True, slots=True)
class ScopePattern:
    """``/A/+/C`` -> ``("A", "+", "C")``; ``/A/#`` -> ``("A", "#")``; ``/#`` -> ``("#",)``."""

    levels: tuple[str, ...]

    @property
    def descendants(self) -> bool:
        return self.levels[-1:] == (DESCENDANTS,)

    @property
    def prefix(self) -> tuple[str, ...]:
        """The levels before a trailing ``#`` (all levels when there is none)."""
        return self.levels[:-1] if self.descendants else self.levels


@dataclass(frozen=True, slots=True)
class ScopeAnd:
    items: tuple[ScopeQuery, ...]


@dataclass(frozen=True, slots=True)
class ScopeOr:
    items: tuple[ScopeQuery, ...]


ScopeQuery: TypeAlias = ScopePattern | ScopeAnd | ScopeOr


# ------------------------------------------------------------------------------------------ parser


def parse_scope_q(text: str) -> ScopeQuery:
    """Parse scopeQ text (already URL-decoded). Raises only ``QSyntaxError``."""
    if not isinstance(text, str):
        raise QSyntaxError("scopeQ must be a string")
    parser = _Parser(text)
    try:
        return parser.parse()
    except QSyntaxError:
        raise
    except (RecursionError, ValueError, MemoryError) as exc:  # belt and braces for fuzzing
        raise QSyntaxError(f"invalid scopeQ: {exc}") from None


def _is_level_char(ch: str) -> bool:
    return bool(ch) and ch not in _LEVEL_STOP and not ch.isspace() and ch.isprintable()


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.depth = 0

    def error(self, expected: str, pos: int | None = None) -> QSyntaxError:
        at = self.pos if pos is None else pos
        found = repr(self.text[at]) if at < len(self.text) else "end of input"
        return QSyntaxError(f"position {at}: expected {expected}, found {found}", at)

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def skip_ws(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def eat(self, token: str) -> bool:
        self.skip_ws()
        if self.peek() == token:
            self.pos += 1
            return True
        return False

    def parse(self) -> ScopeQuery:
        if not self.text.strip():
            raise QSyntaxError("position 0: expected a scope pattern, found empty scopeQ", 0)
        node = self.parse_or()
        self.skip_ws()
        if self.pos < len(self.text):
            raise self.error("';', ',' or end of scopeQ")
        return node

    def parse_or(self) -> ScopeQuery:
        items = [self.parse_and()]
        while self.eat(","):
            items.append(self.parse_and())
        return items[0] if len(items) == 1 else ScopeOr(tuple(items))

    def parse_and(self) -> ScopeQuery:
        items = [self.parse_factor()]
        while self.eat(";"):
            items.append(self.parse_factor())
        return items[0] if len(items) == 1 else ScopeAnd(tuple(items))

    def parse_factor(self) -> ScopeQuery:
        if not self.eat("("):
            return self.parse_pattern()
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise QSyntaxError(f"position {self.pos - 1}: parentheses nested deeper than {_MAX_DEPTH}",
                               self.pos - 1)
        node = self.parse_or()
        if not self.eat(")"):
            raise self.error("')'")
        self.depth -= 1
        return node

    def parse_pattern(self) -> ScopePattern:
        self.skip_ws()
        if self.peek() != "/":
            raise self.error("a scope pattern starting with '/'")
        levels: list[str] = []
        while self.peek() == "/":
            if levels and levels[-1] == DESCENDANTS:
                raise self.error("end of pattern after '#' ('#' must be the last level)")
            self.pos += 1
            levels.append(self.parse_level())
        return ScopePattern(tuple(levels))

    def parse_level(self) -> str:
        if self.peek() in (SINGLE, DESCENDANTS):
            level = self.peek()
            self.pos += 1
            if _is_level_char(self.peek()):
                raise self.error(f"'/' or end of pattern ('{level}' must be a whole level)")
            return level
        start = self.pos
        while self.pos < len(self.text) and _is_level_char(self.text[self.pos]):
            self.pos += 1
        if self.pos == start:
            raise self.error("a scope level name, '+' or '#'")
        if self.peek() in (SINGLE, DESCENDANTS):
            raise self.error(f"'/' or end of pattern ('{self.peek()}' must be a whole level)")
        return self.text[start:self.pos]


# ----------------------------------------------------------------------------------------- to_text


def to_text(query: ScopeQuery) -> str:
    """Render as scopeQ text; nested groups are parenthesised so the tree shape survives a re-parse."""
    if isinstance(query, ScopePattern):
        return "".join("/" + level for level in query.levels)
    joiner = ";" if isinstance(query, ScopeAnd) else ","
    return joiner.join(to_text(i) if isinstance(i, ScopePattern) else f"({to_text(i)})" for i in query.items)


# -------------------------------------------------------------------------------------- evaluation


def doc_scopes(doc: Any) -> list[str]:
    """An entity document's scopes: a list's strings, or a lone string; anything else is none."""
    raw = doc.get("scope") if isinstance(doc, dict) else None
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list):
        return [s for s in raw if isinstance(s, str)]
    return []


def matches(query: ScopeQuery, scopes: Iterable[str]) -> bool:
    """Whether an entity with ``scopes`` satisfies ``query``."""
    scopes = list(scopes)
    if isinstance(query, ScopeAnd):
        return all(matches(i, scopes) for i in query.items)
    if isinstance(query, ScopeOr):
        return any(matches(i, scopes) for i in query.items)
    return any(pattern_matches(query, s) for s in scopes)


def pattern_matches(pattern: ScopePattern, scope: str) -> bool:
    """One pattern against one scope string (``+`` accepts any single level, even an empty one)."""
    if not scope.startswith("/"):
        return False
    levels = scope[1:].split("/")
    prefix = pattern.prefix
    if pattern.descendants:
        if len(levels) < len(prefix):
            return False
    elif len(levels) != len(prefix):
        return False
    return all(p in (SINGLE, level) for p, level in zip(prefix, levels, strict=False))


# ---------------------------------------------------------------------------------------------- SQL

SqlExpr: TypeAlias = ColumnElement[Any]
SqlBool: TypeAlias = ColumnElement[bool]
_Matcher: TypeAlias = Callable[[SqlExpr], tuple[SqlBool, bool]]


def to_sql(query: ScopeQuery, doc_col: SqlExpr, dialect: str) -> tuple[SqlBool, bool]:
    """``(expr, exact)`` over ``doc.scope``; inexact only for SQLite patterns with both ``+`` and ``#``."""
    if dialect not in ("sqlite", "postgresql"):
        raise ValueError(f"unsupported dialect {dialect!r}")
    return _compile(query, doc_col, dialect)


def _compile(query: ScopeQuery, doc: SqlExpr, dialect: str) -> tuple[SqlBool, bool]:
    if isinstance(query, ScopeAnd | ScopeOr):
        parts = [_compile(i, doc, dialect) for i in query.items]
        exprs = [p[0] for p in parts]
        exact = all(p[1] for p in parts)
        if isinstance(query, ScopeAnd):
            return (sa.and_(*exprs) if exprs else sa.true()), exact
        return (sa.or_(*exprs) if exprs else sa.false()), exact
    if not all(_safe_text(level) for level in query.levels):
        return sa.true(), False
    if dialect == "sqlite":
        return _sqlite_scopes(doc, lambda s: _sqlite_match(query, s))
    if SINGLE not in query.levels and not query.descendants:
        return _pg_literal(doc, _literal_prefix(query.levels)), True
    return _pg_scopes(doc, lambda s: (_pg_match(query, s), True))


def _literal_prefix(levels: tuple[str, ...]) -> str:
    return "".join("/" + level for level in levels)


def _prefix_match(text: SqlExpr, prefix: tuple[str, ...]) -> SqlBool:
    """``text`` is the literal scope ``prefix`` or a descendant of it (no wildcards in ``prefix``)."""
    if not prefix:
        return sa.func.substr(text, 1, 1) == "/"
    lit = _literal_prefix(prefix)
    return sa.or_(text == lit, sa.func.substr(text, 1, len(lit) + 1) == lit + "/")


# --- SQLite: no regular expressions; '+' is a GLOB '*' pinned down by counting slashes.

def _sqlite_scopes(doc: SqlExpr, match: _Matcher) -> tuple[SqlBool, bool]:
    rows = sa.func.json_each(doc, sa.literal("$.scope")).table_valued("value", "type")
    pred, exact = match(rows.c.value)
    found = sa.select(sa.literal(1)).select_from(rows).where(rows.c["type"] == "text", pred).exists()
    return found, exact


def _glob_escape(level: str) -> str:
    return "".join(f"[{ch}]" if ch in "*?[" else ch for ch in level)


def _sqlite_glob(levels: tuple[str, ...]) -> str:
    return "".join("/" + ("*" if level == SINGLE else _glob_escape(level)) for level in levels)


def _slash_count(text: SqlExpr) -> SqlExpr:
    return sa.func.length(text) - sa.func.length(sa.func.replace(text, "/", ""))


def _sqlite_match(pattern: ScopePattern, text: SqlExpr) -> tuple[SqlBool, bool]:
    prefix = pattern.prefix
    if SINGLE not in prefix:
        if pattern.descendants:
            return _prefix_match(text, prefix), True
        return text == _literal_prefix(prefix), True
    # Exactly len(prefix) slashes: every '*' then stands for one level without '/'.
    glob = _cmp(text, "GLOB", sa.literal(_sqlite_glob(prefix)))
    exact_depth = sa.and_(_slash_count(text) == len(prefix), glob)
    if not pattern.descendants:
        return exact_depth, True
    # Below the prefix a '*' may also swallow '/', so descendants are only a superset here.
    deeper = _cmp(text, "GLOB", sa.literal(_sqlite_glob(prefix) + "/*"))
    return sa.or_(exact_depth, deeper), False


# --- PostgreSQL: exact for every pattern (literal scopes by containment, '+' by a bound regular expression).

def _pg_scopes(doc: SqlExpr, match: _Matcher) -> tuple[SqlBool, bool]:
    raw = doc.op("->", return_type=doc.type)(sa.literal("scope", sa.Text))
    listed = sa.case(
        (sa.func.jsonb_typeof(raw) == "array", raw),
        (sa.func.jsonb_typeof(raw) == "string", sa.func.jsonb_build_array(raw)),
    )
    rows = sa.func.jsonb_array_elements(listed).table_valued("value")
    text = rows.c.value.op("#>>", return_type=sa.Text)(sa.literal_column("'{}'"))
    pred, exact = match(text)
    is_string = sa.func.jsonb_typeof(rows.c.value) == "string"
    return sa.select(sa.literal(1)).select_from(rows).where(is_string, pred).exists(), exact


def _pg_literal(doc: SqlExpr, scope: str) -> SqlBool:
    """Exact scope: jsonb containment (string elements only, and usable by a GIN index) or a lone string."""
    raw = doc.op("->", return_type=doc.type)(sa.literal("scope", sa.Text))
    as_list = _cmp(raw, "@>", sa.cast(sa.literal(json.dumps([scope])), JSONB))
    return sa.or_(as_list, _cmp(raw, "=", sa.cast(sa.literal(json.dumps(scope)), JSONB)))


def _regex_escape(level: str) -> str:
    # In PostgreSQL AREs a backslash before a non-alphanumeric character is that literal character.
    return "".join("\\" + ch if ch.isascii() and not ch.isalnum() else ch for ch in level)


def _pg_match(pattern: ScopePattern, text: SqlExpr) -> SqlBool:
    prefix = pattern.prefix
    if SINGLE not in prefix:
        if pattern.descendants:
            return _prefix_match(text, prefix)
        return text == _literal_prefix(prefix)
    body = "".join("/" + ("[^/]*" if level == SINGLE else _regex_escape(level)) for level in prefix)
    regex = "^" + body + ("(/.*)?$" if pattern.descendants else "$")
    return _cmp(text, "~", sa.literal(regex))
