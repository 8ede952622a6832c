"""The NGSI-LD query language ``q`` (ETSI GS CIM 009 v1.8, clause 4.9): parser, evaluator, SQL compiler.

Public API
----------
``parse_q(text) -> Node``            parse (the caller has already URL-decoded ``text``)
``to_text(node) -> str``             render back to q syntax (``parse_q(to_text(n)) == n``)
``expand_names(node, expand)``       expand attribute / sub-attribute names with a JSON-LD context
``evaluate(node, doc) -> bool``      exact evaluation against a stored entity document
``to_sql(node, doc_col, dialect)``   ``(expr, exact)`` for ``sqlite`` / ``postgresql``; ``exact=False``
                                     means *superset*: the caller must re-check rows with ``evaluate``
``QSyntaxError``                     the only exception ``parse_q`` raises (a ``ValueError``)

Grammar (``;`` binds tighter than ``|``; whitespace between tokens is ignored)::

    query  := and ('|' and)*          and := factor (';' factor)*
    factor := '(' query ')' | '!' path | path [op value]
    op     := '==' | '!=' | '>' | '>=' | '<' | '<=' | '~=' | '!~='
    path   := name ('.' name)* ('[' key ('.' key)* ']')*
    value  := scalar | scalar '..' scalar | scalar (',' scalar)+     (ranges / lists only with == and !=)
    scalar := number | "quoted" | true | false | date-time | date | time | URI

Decisions
---------
* Names end at ``= < > ! ; | ( ) [ ] , "``, a backslash, whitespace, or ``~=``.  A ``.`` separates
  sub-attributes, except inside an absolute IRI (``scheme://``): there a dot belongs to the IRI while
  the IRI is still in its authority, or when the text after the dot still contains ``/`` or ``#``.
  So ``https://x.org/ns#speed.accuracy`` is ``speed`` + sub-attribute ``accuracy`` and
  ``https://x.org/v1.2/speed`` is one name.  (Orion-LD likewise splits only after the IRI's path.)
* Unquoted values are typed by their shape: number, ``true``/``false``, date-time, date, time, and
  otherwise a URI (``scheme:...``, compared as a string).  Anything else must be quoted.
* Quoted strings: ``\\"`` is a quote, ``\\\\`` a backslash, any other backslash is kept as written (so
  regular expressions such as ``"\\d+"`` need no doubling).
* ``~=`` / ``!~=`` take a quoted string or an unquoted pattern; an unquoted pattern runs to the next
  ``;`` or ``|`` outside parentheses/brackets (wrap top-level alternation in a group or quote it).
  Patterns are Python ``re`` patterns matched with ``re.search``.
* A date-time without offset, and a time without offset, are taken as UTC.
* The literal decides the comparison domain: a date/time literal compares stored strings (or
  ``{"@value": ...}`` objects) that parse as the same kind; numbers compare only with JSON numbers,
  strings only with strings, booleans only with booleans.  Any other pairing is simply false.
* ``!=`` / ``!~=`` are "the path has a value and ``==`` / ``~=`` does not hold" (for a list target:
  no element equals; for a value list: differs from all; for a range: outside it).  So
  ``speed!="x"`` holds for a numeric speed.
* The target of an attribute instance is the first member present among ``languageMap``, ``value``,
  ``object``, ``valueList``, ``vocab``, ``json``, ``objectList``; a list target matches when any element
  does, a ``languageMap`` (without ``[key]``) when any language's value does.  JSON ``null`` is "no value".
* ``attr.sub``: ``sub`` is a key of the instance.  A sub-property (a dict) is itself an instance; any
  other member (``observedAt``, ``unitCode``, ...) is compared as-is.  ``[k1][k2]`` index into the
  target through objects only.
"""

from __future__ import annotations

import json
import math
import operator
import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any, Final, TypeAlias

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB, JSONPATH
from sqlalchemy.sql.elements import ColumnElement

__all__ = [
    "And",
    "AttrPath",
    "Comparison",
    "Exists",
    "Node",
    "Or",
    "QSyntaxError",
    "Range",
    "Scalar",
    "Value",
    "ValueList",
    "evaluate",
    "expand_names",
    "parse_q",
    "to_sql",
    "to_text",
]


class QSyntaxError(ValueError):
    """Invalid q / scopeQ text; ``position`` is the 0-based offset of the problem (if known)."""

    def __init__(self, message: str, position: int | None = None) -> None:
        super().__init__(message)
        self.position = position


# ---------------------------------------------------------------------------------------------- AST

Scalar: TypeAlias = bool | int | float | str | datetime | date | time


@dataclass(frozen=True, slots=True)
class AttrPath:
    """``attr.sub1.sub2[k1][k2]``; ``attr``/``sub`` as written (or expanded), ``keys`` never expanded."""

    attr: str
    sub: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ValueList:
    """``v1,v2,...``: ``==`` any of them, ``!=`` none of them."""

    items: tuple[Scalar, ...]


@dataclass(frozen=True, slots=True)
class Range:
    """``low..high`` (inclusive), bounds of the same kind."""

    low: Scalar
    high: Scalar


Value: TypeAlias = Scalar | ValueList | Range


@dataclass(frozen=True, slots=True)
class Comparison:
    """``path op value``; for ``~=`` / ``!~=`` the value is the pattern string."""

    path: AttrPath
    op: str
    value: Value


@dataclass(frozen=True, slots=True)
class Exists:
    """``path`` (has a value) or ``!path`` (``negated``)."""

    path: AttrPath
    negated: bool = False


@dataclass(frozen=True, slots=True)
class And:
    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Or:
    items: tuple[Node, ...]


Node: TypeAlias = Comparison | Exists | And | Or

OPERATORS: Final = ("!~=", "==", "!=", ">=", "<=", "~=", ">", "<")  # longest first for matching
_EQUALITY_OPS: Final = frozenset({"==", "!="})
_PATTERN_OPS: Final = frozenset({"~=", "!~="})
_MAX_DEPTH: Final = 64  # parenthesis nesting; keeps recursion far from Python's limit
_INT64: Final = 2**63 - 1  # larger literals cannot be bound as SQL integers

# ------------------------------------------------------------------------------------------ lexing

_NAME_STOP: Final = frozenset('=<>!;|()[],"\\')
_KEY_STOP: Final = frozenset('[]."\\')
_VALUE_STOP: Final = frozenset(';|(),"')
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+\-]*://")
_INT = re.compile(r"-?[0-9]+")
_FLOAT = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_DATETIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]+)?)?(?:Z|[+-][0-9]{2}:[0-9]{2})?"
)
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_TIME = re.compile(r"[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?(?:Z|[+-][0-9]{2}:[0-9]{2})?")
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:.+", re.DOTALL)
_LONG_FRACTION = re.compile(r"(\.[0-9]{6})[0-9]+")


def _is_name_char(ch: str) -> bool:
    return ch not in _NAME_STOP and not ch.isspace() and ch.isprintable()


def _is_key_char(ch: str) -> bool:
    return ch not in _KEY_STOP and not ch.isspace() and ch.isprintable()


def split_names(token: str) -> list[str]:
    """Split ``a.b.c`` into names, keeping dots that belong to absolute IRIs (see module docstring)."""
    pieces = token.split(".")
    names: list[str] = []
    cur = pieces[0]
    for piece in pieces[1:]:
        if _dot_inside_iri(cur, piece):
            cur += "." + piece
        else:
            names.append(cur)
            cur = piece
    names.append(cur)
    return names


def _dot_inside_iri(cur: str, nxt: str) -> bool:
    scheme = _SCHEME.match(cur)
    if scheme is None or _SCHEME.match(nxt):
        return False
    rest = cur[scheme.end():]
    in_authority = "/" not in rest and "#" not in rest
    return in_authority or "/" in nxt or "#" in nxt


# ----------------------------------------------------------------------------------------- literals


def parse_datetime(text: str) -> datetime | None:
    """ISO 8601 date-time as accepted in q (offset-less means UTC); None when it is not one."""
    if not _DATETIME.fullmatch(text):
        return None
    try:
        value = datetime.fromisoformat(_LONG_FRACTION.sub(r"\1", text))
    except ValueError:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def parse_date(text: str) -> date | None:
    if not _DATE.fullmatch(text):
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def parse_time(text: str) -> time | None:
    if not _TIME.fullmatch(text):
        return None
    try:
        value = time.fromisoformat(_LONG_FRACTION.sub(r"\1", text))
    except ValueError:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _kind(value: Any) -> str | None:
    """The comparison domain of a Python value (datetime before date: it is a subclass)."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "num"
    if isinstance(value, str):
        return "str"
    if isinstance(value, datetime):
        return "datetime"
    if isinstance(value, date):
        return "date"
    if isinstance(value, time):
        return "time"
    return None


_TEMPORAL: Final = frozenset({"datetime", "date", "time"})
_TEMPORAL_PARSERS: Final[dict[str, Callable[[str], Any]]] = {
    "datetime": parse_datetime,
    "date": parse_date,
    "time": parse_time,
}


def _classify(token: str, pos: int) -> Scalar:
    """Type an unquoted value token by its shape."""
    if token in ("true", "false"):
        return token == "true"
    if _INT.fullmatch(token):
        return _parse_int(token, pos)
    if _FLOAT.fullmatch(token):
        number = float(token)
        if not math.isfinite(number):
            raise QSyntaxError(f"position {pos}: number {token!r} is out of range", pos)
        return number
    for kind, shape in (("datetime", _DATETIME), ("date", _DATE), ("time", _TIME)):
        if shape.fullmatch(token):
            parsed: Scalar | None = _TEMPORAL_PARSERS[kind](token)
            if parsed is None:
                name = "date-time" if kind == "datetime" else kind
                raise QSyntaxError(f"position {pos}: invalid {name} {token!r}", pos)
            return parsed
    if _URI.fullmatch(token):
        return token
    raise QSyntaxError(
        f"position {pos}: expected a value (number, quoted string, true/false, date, time, date-time or URI),"
        f" found {token!r}",
        pos,
    )


def _parse_int(token: str, pos: int) -> int:
    # Checked on length first: int() refuses very long digit strings with its own ValueError.
    if len(token.lstrip("-")) > 19 or abs(int(token)) > _INT64:
        raise QSyntaxError(f"position {pos}: integer {token!r} is out of range", pos)
    return int(token)


def _compile_pattern(pattern: str, pos: int) -> None:
    """Reject invalid regular expressions at parse time (any failure of ``re`` becomes QSyntaxError)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # FutureWarnings about set syntax must not vary by config
            re.compile(pattern)
    except Exception as exc:  # re.error, OverflowError, RecursionError: all mean "unusable pattern"
        raise QSyntaxError(f"position {pos}: invalid regular expression {pattern!r}: {exc}", pos) from None


# ------------------------------------------------------------------------------------------ parser


def parse_q(text: str) -> Node:
    """Parse q text (already URL-decoded). Raises only ``QSyntaxError``."""
    if not isinstance(text, str):
        raise QSyntaxError("q must be a string")
    try:
        return _Parser(text).parse()
    except QSyntaxError:
        raise
    except (RecursionError, ValueError, OverflowError, MemoryError) as exc:  # belt and braces for fuzzing
        raise QSyntaxError(f"invalid q: {exc}") from None


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.depth = 0

    # --- helpers
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
        if self.text.startswith(token, self.pos):
            self.pos += len(token)
            return True
        return False

    def at_term_end(self) -> bool:
        self.skip_ws()
        return self.peek() in ("", ";", "|", ")")

    # --- grammar
    def parse(self) -> Node:
        nul = self.text.find("\x00")
        if nul >= 0:
            raise QSyntaxError(f"position {nul}: NUL character is not allowed", nul)
        if not self.text.strip():
            raise QSyntaxError("position 0: expected a query term, found empty query", 0)
        node = self.parse_or()
        self.skip_ws()
        if self.pos < len(self.text):
            raise self.error("';', '|' or end of query")
        return node

    def parse_or(self) -> Node:
        items = [self.parse_and()]
        while self.eat("|"):
            items.append(self.parse_and())
        return items[0] if len(items) == 1 else Or(tuple(items))

    def parse_and(self) -> Node:
        items = [self.parse_factor()]
        while self.eat(";"):
            items.append(self.parse_factor())
        return items[0] if len(items) == 1 else And(tuple(items))

    def parse_factor(self) -> Node:
        self.skip_ws()
        if self.peek() != "(":
            return self.parse_term()
        self.pos += 1
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise QSyntaxError(f"position {self.pos - 1}: parentheses nested deeper than {_MAX_DEPTH}",
                               self.pos - 1)
        node = self.parse_or()
        if not self.eat(")"):
            raise self.error("')'")
        self.depth -= 1
        return node

    def parse_term(self) -> Node:
        if self.eat("!"):
            path = self.parse_path()
            if not self.at_term_end():
                raise self.error("end of term after '!attribute' (non-existence takes no operator)")
            return Exists(path, negated=True)
        path = self.parse_path()
        if self.at_term_end():
            return Exists(path)
        op = self.match_operator()
        if op in _PATTERN_OPS:
            return Comparison(path, op, self.parse_pattern())
        return Comparison(path, op, self.parse_value(op))

    def match_operator(self) -> str:
        for op in OPERATORS:
            if self.text.startswith(op, self.pos):
                self.pos += len(op)
                return op
        if self.peek() == "=":
            raise self.error("an operator ('==' for equality)")
        raise self.error("an operator (==, !=, >, >=, <, <=, ~=, !~=) or end of term")

    # --- attribute paths
    def parse_path(self) -> AttrPath:
        self.skip_ws()
        start = self.pos
        while self.pos < len(self.text) and _is_name_char(self.text[self.pos]):
            if self.text.startswith("~=", self.pos):
                break
            self.pos += 1
        token = self.text[start:self.pos]
        if not token:
            raise self.error("an attribute name")
        names = split_names(token)
        if not all(names):
            raise QSyntaxError(f"position {start}: empty attribute name in {token!r}", start)
        keys: list[str] = []
        while self.peek() == "[":
            keys.extend(self.parse_keys())
        return AttrPath(names[0], tuple(names[1:]), tuple(keys))

    def parse_keys(self) -> list[str]:
        self.pos += 1  # '['
        keys: list[str] = []
        while True:
            start = self.pos
            while self.pos < len(self.text) and _is_key_char(self.text[self.pos]):
                self.pos += 1
            if self.pos == start:
                raise self.error("a key name inside '[...]'")
            keys.append(self.text[start:self.pos])
            if self.peek() == ".":
                self.pos += 1
                continue
            if self.peek() == "]":
                self.pos += 1
                return keys
            raise self.error("'.' or ']' after a key name")

    # --- values
    def parse_value(self, op: str) -> Value:
        start = self.pos
        first = self.parse_scalar()
        if self.eat(".."):
            high = self.parse_scalar()
            self.require_equality(op, "a range", start)
            return _make_range(first, high, start)
        self.skip_ws()
        if self.peek() == ",":
            items = [first]
            while self.eat(","):
                items.append(self.parse_scalar())
            self.require_equality(op, "a value list", start)
            return ValueList(tuple(items))
        if isinstance(first, bool) and op not in _EQUALITY_OPS:
            raise QSyntaxError(f"position {start}: '{op}' needs a number, string or date/time, not a boolean",
                               start)
        return first

    def require_equality(self, op: str, what: str, pos: int) -> None:
        if op not in _EQUALITY_OPS:
            raise QSyntaxError(f"position {pos}: {what} is only allowed after '==' or '!=', not '{op}'", pos)

    def parse_scalar(self) -> Scalar:
        self.skip_ws()
        if self.peek() == '"':
            return self.parse_quoted()
        start = self.pos
        text = self.text
        while self.pos < len(text):
            ch = text[self.pos]
            if ch in _VALUE_STOP or ch.isspace() or text.startswith("..", self.pos):
                break
            self.pos += 1
        if self.pos == start:
            raise self.error("a value")
        return _classify(text[start:self.pos], start)

    def parse_quoted(self) -> str:
        start = self.pos
        self.pos += 1
        out: list[str] = []
        text = self.text
        while self.pos < len(text):
            ch = text[self.pos]
            if ch == "\\" and self.pos + 1 < len(text) and text[self.pos + 1] in '"\\':
                out.append(text[self.pos + 1])
                self.pos += 2
                continue
            self.pos += 1
            if ch == '"':
                return "".join(out)
            out.append(ch)
        raise QSyntaxError(f"position {start}: unterminated string (missing closing '\"')", start)

    def parse_pattern(self) -> str:
        self.skip_ws()
        start = self.pos
        pattern = self.parse_quoted() if self.peek() == '"' else self.scan_raw_pattern()
        if not pattern and self.text[start:start + 1] != '"':
            raise self.error("a regular expression", start)
        _compile_pattern(pattern, start)
        return pattern

    def scan_raw_pattern(self) -> str:
        """Unquoted pattern: up to ';' / '|' / an unmatched ')' outside groups and character classes."""
        text, start = self.text, self.pos
        depth, in_class = 0, False
        pos = start
        while pos < len(text):
            ch = text[pos]
            if ch == "\\":
                pos += 2
                continue
            if in_class:
                in_class = ch != "]"
            elif ch == "[":
                in_class = True
            elif ch == "(":
                depth += 1
            elif ch == ")":
                if depth == 0:
                    break
                depth -= 1
            elif ch in ";|" and depth == 0:
                break
            pos += 1
        self.pos = min(pos, len(text))
        return text[start:self.pos].rstrip()


def _make_range(low: Scalar, high: Scalar, pos: int) -> Range:
    kind_low, kind_high = _kind(low), _kind(high)
    if kind_low == "bool" or kind_high == "bool":
        raise QSyntaxError(f"position {pos}: range bounds cannot be booleans", pos)
    if kind_low != kind_high:
        raise QSyntaxError(f"position {pos}: range bounds must have the same type ({kind_low}, {kind_high})",
                           pos)
    return Range(low, high)


# ------------------------------------------------------------------------------------------ to_text


def to_text(node: Node) -> str:
    """Render ``node`` as q text that ``parse_q`` reads back to an equal tree."""
    if isinstance(node, Exists):
        return ("!" if node.negated else "") + path_text(node.path)
    if isinstance(node, Comparison):
        if node.op in _PATTERN_OPS:
            return path_text(node.path) + node.op + _quote(str(node.value))
        return path_text(node.path) + node.op + _value_text(node.value)
    joiner = ";" if isinstance(node, And) else "|"
    return joiner.join(f"({to_text(i)})" if isinstance(i, And | Or) else to_text(i) for i in node.items)


def path_text(path: AttrPath) -> str:
    return ".".join((path.attr, *path.sub)) + "".join(f"[{k}]" for k in path.keys)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _value_text(value: Value) -> str:
    if isinstance(value, ValueList):
        return ",".join(_scalar_text(v) for v in value.items)
    if isinstance(value, Range):
        return f"{_scalar_text(value.low)}..{_scalar_text(value.high)}"
    return _scalar_text(value)


def _scalar_text(value: Scalar) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"q cannot express the number {value!r}")
        return repr(value)
    if isinstance(value, str):
        return _quote(value)
    if isinstance(value, datetime | time):
        return value.isoformat().replace("+00:00", "Z")
    return value.isoformat()


# ------------------------------------------------------------------------------------ expand_names

# Members stored under these short names inside an instance; expanding them would miss them.
_INSTANCE_MEMBERS: Final = frozenset(
    {"observedAt", "unitCode", "datasetId", "createdAt", "modifiedAt", "deletedAt", "instanceId", "lang"}
)


def expand_names(node: Node, expand: Callable[[str], str]) -> Node:
    """Expand ``attr`` and ``sub`` names (not compound-value keys, not core instance members)."""
    if isinstance(node, And):
        return And(tuple(expand_names(i, expand) for i in node.items))
    if isinstance(node, Or):
        return Or(tuple(expand_names(i, expand) for i in node.items))
    path = node.path
    expanded = AttrPath(
        expand(path.attr),
        tuple(s if s in _INSTANCE_MEMBERS else expand(s) for s in path.sub),
        path.keys,
    )
    if isinstance(node, Exists):
        return Exists(expanded, node.negated)
    return Comparison(expanded, node.op, node.value)


# -------------------------------------------------------------------------------------- evaluation

_MISSING: Final = object()
TARGET_MEMBERS: Final = ("languageMap", "value", "object", "valueList", "vocab", "json", "objectList")
_PY_OPS: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "==": operator.eq, ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le,
}


def evaluate(node: Node, doc: Any) -> bool:
    """Whether the stored entity document ``doc`` satisfies ``node`` (never raises on odd data)."""
    if isinstance(node, And):
        return all(evaluate(i, doc) for i in node.items)
    if isinstance(node, Or):
        return any(evaluate(i, doc) for i in node.items)
    if isinstance(node, Exists):
        found = any(_present(n) for n in _path_nodes(doc, node.path))
        return found != node.negated
    return any(_target_holds(node.op, node.value, t, lang) for t, lang in _targets(doc, node.path))


def _instances(doc: Any, attr: str) -> list[Any]:
    attrs = doc.get("attrs") if isinstance(doc, dict) else None
    insts = attrs.get(attr) if isinstance(attrs, dict) else None
    return insts if isinstance(insts, list) else []


def _member(value: Any, names: tuple[str, ...]) -> Any:
    for name in names:
        if not isinstance(value, dict) or name not in value:
            return _MISSING
        value = value[name]
    return value


def _target(node: Any, has_sub: bool) -> Any:
    """The compared value of an instance; a non-dict sub-attribute member is its own target."""
    if isinstance(node, dict):
        for name in TARGET_MEMBERS:
            if name in node:
                return node[name]
        return _MISSING
    return node if has_sub else _MISSING


def _present(value: Any) -> bool:
    return value is not _MISSING and value is not None


def _path_nodes(doc: Any, path: AttrPath) -> Iterator[Any]:
    """What existence tests look at: the instance, its sub-attribute, or the keyed part of its target."""
    for inst in _instances(doc, path.attr):
        node = _member(inst, path.sub) if path.sub else inst
        if path.keys:
            node = _member(_target(node, bool(path.sub)), path.keys)
        yield node


def _targets(doc: Any, path: AttrPath) -> Iterator[tuple[Any, bool]]:
    """(target value, target-is-a-languageMap) per instance."""
    for inst in _instances(doc, path.attr):
        node = _member(inst, path.sub) if path.sub else inst
        target = _target(node, bool(path.sub))
        if path.keys:
            yield _member(target, path.keys), False
        else:
            yield target, isinstance(node, dict) and "languageMap" in node


def _candidates(target: Any, lang: bool) -> list[Any]:
    if isinstance(target, list):
        return target
    if lang and isinstance(target, dict):
        return list(target.values())
    return [target]


def _target_holds(op: str, value: Value, target: Any, lang: bool) -> bool:
    if not _present(target):
        return False
    if op in ("!=", "!~="):
        positive = "==" if op == "!=" else "~="
        return not any(_candidate_holds(positive, value, c) for c in _candidates(target, lang))
    return any(_candidate_holds(op, value, c) for c in _candidates(target, lang))


def _candidate_holds(op: str, value: Value, cand: Any) -> bool:
    if isinstance(value, ValueList):
        return any(_scalar_holds("==", v, cand) for v in value.items)
    if isinstance(value, Range):
        return _scalar_holds(">=", value.low, cand) and _scalar_holds("<=", value.high, cand)
    if op == "~=":
        return isinstance(cand, str) and re.search(str(value), cand) is not None
    return _scalar_holds(op, value, cand)


def _scalar_holds(op: str, value: Scalar, cand: Any) -> bool:
    kind = _kind(value)
    if kind in _TEMPORAL:
        cand = _as_temporal(cand, str(kind))
        if cand is None:
            return False
    elif _kind(cand) != kind:
        return False
    try:
        return _PY_OPS[op](cand, value)
    except (TypeError, OverflowError):  # e.g. an odd tz pairing: incomparable means "does not match"
        return False


def _as_temporal(cand: Any, kind: str) -> Any:
    if isinstance(cand, dict):  # typed literal {"@type": "DateTime", "@value": "..."}
        cand = cand.get("@value")
    return _TEMPORAL_PARSERS[kind](cand) if isinstance(cand, str) else None


# ---------------------------------------------------------------------------------------------- SQL

SqlExpr: TypeAlias = ColumnElement[Any]
SqlBool: TypeAlias = ColumnElement[bool]
_SQL_OPS: Final = {"==": "=", ">": ">", ">=": ">=", "<": "<", "<=": "<="}
# Comparing whole seconds only can turn a strict comparison into a non-strict one (superset, never less).
_RELAXED_OPS: Final = {"==": "=", ">": ">=", ">=": ">=", "<": "<=", "<=": "<="}


def to_sql(node: Node, doc_col: SqlExpr, dialect: str) -> tuple[SqlBool, bool]:
    """Compile to a boolean over the JSON column ``doc_col``: ``(expr, exact)``.

    ``exact=False`` means ``expr`` selects a superset; the caller re-checks rows with ``evaluate``.
    Exact: numbers, strings, booleans, lists and ranges of those, existence, AND/OR.  Superset:
    date/time literals (stored strings come in many ISO forms) and regular expressions.
    All values and JSON paths are bound parameters.
    """
    if dialect == "sqlite":
        return _compile(node, _SqliteSql(doc_col))
    if dialect == "postgresql":
        return _compile(node, _PostgresSql(doc_col))
    raise ValueError(f"unsupported dialect {dialect!r}")


def _compile(node: Node, sql: _Sql) -> tuple[SqlBool, bool]:
    if isinstance(node, And | Or):
        parts = [_compile(i, sql) for i in node.items]
        exprs = [p[0] for p in parts]
        exact = all(p[1] for p in parts)
        if isinstance(node, And):
            return (sa.and_(*exprs) if exprs else sa.true()), exact
        return (sa.or_(*exprs) if exprs else sa.false()), exact
    if not _path_is_safe(node.path):
        return sa.true(), False
    if isinstance(node, Exists):
        found = _exists_sql(node.path, sql)
        return (sa.not_(found) if node.negated else found), True
    return _comparison_sql(node, sql)


def _path_is_safe(path: AttrPath) -> bool:
    """Names must be quotable in a SQLite JSON path and bindable as text (expansion can yield anything)."""
    return all(_safe_text(n) and '"' not in n and "\\" not in n for n in (path.attr, *path.sub, *path.keys))


def _safe_text(text: str) -> bool:
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _exists_sql(path: AttrPath, sql: _Sql) -> SqlBool:
    inst = sql.instances(path.attr)
    if not path.sub and not path.keys:
        return inst.exists(inst.present)
    node = sql.member(inst.json, path.sub) if path.sub else inst.json
    if path.keys:
        node = sql.member(sql.target(node, bool(path.sub)), path.keys)
    return inst.exists(sql.present(node))


def _comparison_sql(node: Comparison, sql: _Sql) -> tuple[SqlBool, bool]:
    """EXISTS instance whose target (computed once, as a one-row table) has a matching candidate."""
    path = node.path
    inst = sql.instances(path.attr)
    base = sql.member(inst.json, path.sub) if path.sub else inst.json
    target = sql.target(base, bool(path.sub))
    lang: SqlBool | None = None
    if path.keys:
        target = sql.member(target, path.keys)
    else:
        lang = sql.member(base, ("languageMap",)).is_not(None)
    op, negate = node.op, node.op in ("!=", "!~=")
    if negate:
        op = "==" if op == "!=" else "~="
    exact = _candidate_sql(op, node.value, None, sql)[1]
    if negate and not exact:  # NOT of a superset is not a superset: fall back to "has a value"
        return inst.exists(sql.present(target)), False

    def pred(cand: _Value) -> SqlBool:
        return _candidate_sql(op, node.value, cand, sql)[0]

    return inst.exists(sql.any_candidate(target, lang, pred, negate)), exact


def _candidate_sql(op: str, value: Value, cand: _Value | None, sql: _Sql) -> tuple[SqlBool, bool]:
    """Predicate on one candidate, and whether it is exact (``cand=None``: only the exactness is wanted)."""
    if isinstance(value, ValueList):
        parts = [_scalar_sql("==", v, cand, sql) for v in value.items]
        return sa.or_(*(p[0] for p in parts)), all(p[1] for p in parts)
    if isinstance(value, Range):
        low, low_exact = _scalar_sql(">=", value.low, cand, sql)
        high, high_exact = _scalar_sql("<=", value.high, cand, sql)
        return sa.and_(low, high), low_exact and high_exact
    if op == "~=":  # Python `re` has no SQL equivalent: keep the string candidates
        return (sa.true() if cand is None else sql.is_string(cand)), False
    return _scalar_sql(op, value, cand, sql)


def _scalar_sql(op: str, value: Scalar, cand: _Value | None, sql: _Sql) -> tuple[SqlBool, bool]:
    if isinstance(value, bool):
        if op != "==":
            return sa.true(), False
        return (sa.true() if cand is None else sql.bool_eq(cand, value)), True
    if isinstance(value, int | float):
        return (sa.true() if cand is None else sql.num_cmp(cand, op, value)), True
    if isinstance(value, str):
        if not _safe_text(value):
            return sa.true(), False
        return (sa.true() if cand is None else sql.str_cmp(cand, op, value)), True
    return (sa.true() if cand is None else _temporal_sql(op, value, cand, sql)), False


def _temporal_sql(op: str, value: Scalar, cand: _Value, sql: _Sql) -> SqlBool:
    """Superset filter for date/time literals.

    A stored string in the canonical UTC form ``YYYY-MM-DDTHH:MM:SS[.fff]Z`` is compared on its first 19
    characters (whole seconds, so strict operators become non-strict); canonical dates ``YYYY-MM-DD``
    compare as strings (lexical order is date order).  Every other string / typed object is kept.
    """
    text = sql.temporal_text(cand)
    has_text = text.is_not(None)
    if isinstance(value, datetime):
        try:
            prefix = value.astimezone(UTC).isoformat()[:19]
        except OverflowError:  # near datetime.min/max: no useful bound
            return has_text
        bound_ok = sql.text_cmp(sa.func.substr(text, 1, 19), _RELAXED_OPS[op], prefix)
        return sa.and_(has_text, sa.or_(sa.not_(sql.canonical_datetime(text)), bound_ok))
    if isinstance(value, date):
        bound_ok = sql.text_cmp(text, _SQL_OPS[op], value.isoformat())
        return sa.and_(has_text, sa.or_(sa.not_(sql.canonical_date(text)), bound_ok))
    return has_text  # times: offsets make a lexical bound unsound; keep every candidate


def _cmp(left: SqlExpr, sql_op: str, right: SqlExpr) -> SqlBool:
    """A boolean binary operator (``is_comparison`` makes SQLAlchemy type the result as boolean)."""
    return left.op(sql_op, is_comparison=True)(right)


class _Value:
    """A JSON value inside SQL: ``value`` (SQLite: json_each's SQL value; PG: jsonb) and its type name."""

    def __init__(self, value: SqlExpr, jtype: SqlExpr) -> None:
        self.value = value
        self.jtype = jtype


class _Instances:
    """One attribute's instances as a table-valued FROM item, with the JSON of each instance."""

    def __init__(self, from_: Any, json_: SqlExpr, present: SqlBool, guard: SqlBool) -> None:
        self.from_ = from_
        self.json = json_
        self.present = present
        self.guard = guard

    def exists(self, pred: SqlBool) -> SqlBool:
        return sa.select(sa.literal(1)).select_from(self.from_).where(self.guard, pred).exists()


class _Sql:
    """Dialect primitives; JSON values are JSON text on SQLite and jsonb on PostgreSQL."""

    def __init__(self, doc: SqlExpr) -> None:
        self.doc = doc

    def instances(self, attr: str) -> _Instances:
        raise NotImplementedError

    def member(self, value: SqlExpr, names: tuple[str, ...]) -> SqlExpr:
        raise NotImplementedError

    def jtype(self, value: SqlExpr) -> SqlExpr:
        raise NotImplementedError

    def any_candidate(self, target: SqlExpr, lang: SqlBool | None, pred: Callable[[_Value], SqlBool],
                      negate: bool) -> SqlBool:
        """Some candidate of ``target`` satisfies ``pred`` (``negate``: target present and none does)."""
        raise NotImplementedError

    def num_cmp(self, cand: _Value, op: str, value: int | float) -> SqlBool:
        raise NotImplementedError

    def str_cmp(self, cand: _Value, op: str, value: str) -> SqlBool:
        raise NotImplementedError

    def bool_eq(self, cand: _Value, value: bool) -> SqlBool:
        raise NotImplementedError

    def is_string(self, cand: _Value) -> SqlBool:
        raise NotImplementedError

    def temporal_text(self, cand: _Value) -> SqlExpr:
        raise NotImplementedError

    def canonical_datetime(self, text: SqlExpr) -> SqlBool:
        raise NotImplementedError

    def canonical_date(self, text: SqlExpr) -> SqlBool:
        raise NotImplementedError

    def text_cmp(self, text: SqlExpr, sql_op: str, value: str) -> SqlBool:
        raise NotImplementedError

    # shared on top of the primitives
    def present(self, value: SqlExpr) -> SqlBool:
        """Has a value: not missing (SQL NULL) and not JSON null."""
        return sa.func.coalesce(self.jtype(value), "null") != "null"

    def target(self, node: SqlExpr, has_sub: bool) -> SqlExpr:
        """SQL twin of ``_target``: first member present; a non-object sub-attribute is its own target."""
        first = sa.func.coalesce(*(self.member(node, (name,)) for name in TARGET_MEMBERS))
        if not has_sub:
            return first
        return sa.case((self.jtype(node) == "object", first), else_=node)


def _sqlite_path(names: tuple[str, ...]) -> str:
    # Labels are double-quoted; _path_is_safe guarantees they contain no '"' or backslash.
    return "$" + "".join(f'."{n}"' for n in names)


_SQLITE_DATETIME_GLOB: Final = "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9]*Z"
_SQLITE_DATE_GLOB: Final = "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]"


class _SqliteSql(_Sql):
    """SQLite JSON1: ``json_each`` rows carry an SQL ``value`` and a ``type`` (text/integer/real/true/...)."""

    def instances(self, attr: str) -> _Instances:
        path = _sqlite_path(("attrs", attr))
        rows = sa.func.json_each(self.doc, sa.literal(path)).table_valued("value", "type")
        # Non-object instances have no members: NULL keeps '->' from parsing a bare SQL scalar as JSON.
        inst_json = sa.case((rows.c["type"] == "object", rows.c.value))
        guard = sa.func.json_type(self.doc, sa.literal(path)) == "array"
        return _Instances(rows, inst_json, rows.c["type"] != "null", guard)

    def member(self, value: SqlExpr, names: tuple[str, ...]) -> SqlExpr:
        return value.op("->")(sa.literal(_sqlite_path(names)))

    def jtype(self, value: SqlExpr) -> SqlExpr:
        return sa.func.json_type(value)

    def any_candidate(self, target: SqlExpr, lang: SqlBool | None, pred: Callable[[_Value], SqlBool],
                      negate: bool) -> SqlBool:
        # The target becomes one json_each row t ('[' || T || ']': T is JSON text; NULL gives no row).
        wrapped = sa.literal("[").op("||")(target).op("||")(sa.literal("]"))
        row = sa.func.json_each(wrapped).table_valued("value", "type")
        t = _Value(row.c.value, row.c["type"])
        iterate = t.jtype == "array"
        if lang is not None:
            iterate = sa.or_(iterate, sa.and_(lang, t.jtype == "object"))
        # The CASE keeps json_each from ever parsing a scalar's bare SQL value as JSON text.
        listed = sa.case((iterate, t.value), else_=sa.literal("[]"))
        items = sa.func.json_each(listed).table_valued("value", "type")
        item = _Value(items.c.value, items.c["type"])
        in_items = sa.select(sa.literal(1)).select_from(items).where(pred(item))
        hit = sa.or_(sa.and_(sa.not_(iterate), pred(t)), sa.and_(iterate, in_items.exists()))
        cond = sa.and_(t.jtype != "null", sa.not_(hit)) if negate else hit
        return sa.select(sa.literal(1)).select_from(row).where(cond).exists()

    def num_cmp(self, cand: _Value, op: str, value: int | float) -> SqlBool:
        return sa.and_(cand.jtype.in_(("integer", "real")), _cmp(cand.value, _SQL_OPS[op], sa.literal(value)))

    def str_cmp(self, cand: _Value, op: str, value: str) -> SqlBool:
        return sa.and_(cand.jtype == "text", _cmp(cand.value, _SQL_OPS[op], sa.literal(value)))

    def bool_eq(self, cand: _Value, value: bool) -> SqlBool:
        return cand.jtype == ("true" if value else "false")

    def is_string(self, cand: _Value) -> SqlBool:
        return cand.jtype == "text"

    def temporal_text(self, cand: _Value) -> SqlExpr:
        return sa.case(
            (cand.jtype == "text", cand.value),
            (cand.jtype == "object", sa.func.json_extract(cand.value, sa.literal('$."@value"'))),
        )

    def canonical_datetime(self, text: SqlExpr) -> SqlBool:
        return _cmp(text, "GLOB", sa.literal(_SQLITE_DATETIME_GLOB))

    def canonical_date(self, text: SqlExpr) -> SqlBool:
        return _cmp(text, "GLOB", sa.literal(_SQLITE_DATE_GLOB))

    def text_cmp(self, text: SqlExpr, sql_op: str, value: str) -> SqlBool:
        return _cmp(text, sql_op, sa.literal(value))


_PG_DATETIME_RE: Final = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?Z$"
_PG_DATE_RE: Final = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"


class _PostgresSql(_Sql):
    """PostgreSQL jsonb: type-guarded comparisons that never raise; strings compare in "C" order."""

    def arrow(self, value: SqlExpr, key: str, op: str = "->") -> SqlExpr:
        return value.op(op, return_type=JSONB if op == "->" else sa.Text)(sa.literal(key, sa.Text))

    def instances(self, attr: str) -> _Instances:
        arr = self.arrow(self.arrow(self.doc, "attrs"), attr)
        only_arrays = sa.case((sa.func.jsonb_typeof(arr) == "array", arr))  # NULL yields no rows
        rows = sa.func.jsonb_array_elements(only_arrays).table_valued("value")
        value = rows.c.value
        return _Instances(rows, value, sa.func.jsonb_typeof(value) != "null", sa.true())

    def member(self, value: SqlExpr, names: tuple[str, ...]) -> SqlExpr:
        for name in names:
            value = self.arrow(value, name)
        return value

    def jtype(self, value: SqlExpr) -> SqlExpr:
        return sa.func.jsonb_typeof(value)

    def any_candidate(self, target: SqlExpr, lang: SqlBool | None, pred: Callable[[_Value], SqlBool],
                      negate: bool) -> SqlBool:
        # One row t holding the target (a function in FROM may refer to the enclosing instance row).
        row = sa.func.jsonb_array_elements(sa.func.jsonb_build_array(target)).table_valued("value")
        t = row.c.value
        whens: list[tuple[Any, Any]] = [(self.jtype(t) == "array", t)]
        if lang is not None:
            values = sa.func.jsonb_path_query_array(t, sa.cast(sa.literal("$.*"), JSONPATH))
            whens.append((sa.and_(lang, self.jtype(t) == "object"), values))
        items = sa.func.jsonb_array_elements(sa.case(*whens, else_=sa.func.jsonb_build_array(t)))
        items_tv = items.table_valued("value")
        cand = _Value(items_tv.c.value, self.jtype(items_tv.c.value))
        hit = sa.select(sa.literal(1)).select_from(items_tv).where(pred(cand)).exists()
        cond = sa.and_(self.jtype(t) != "null", sa.not_(hit)) if negate else hit
        return sa.select(sa.literal(1)).select_from(row).where(cond).exists()

    def as_text(self, value: SqlExpr) -> SqlExpr:
        return value.op("#>>", return_type=sa.Text)(sa.literal_column("'{}'"))

    def num_cmp(self, cand: _Value, op: str, value: int | float) -> SqlBool:
        # jsonb vs jsonb compares numbers numerically and cannot raise, unlike a ::numeric cast.
        bound = sa.cast(sa.literal(json.dumps(value)), JSONB)
        return sa.and_(cand.jtype == "number", _cmp(cand.value, _SQL_OPS[op], bound))

    def str_cmp(self, cand: _Value, op: str, value: str) -> SqlBool:
        return sa.and_(cand.jtype == "string", self.text_cmp(self.as_text(cand.value), _SQL_OPS[op], value))

    def bool_eq(self, cand: _Value, value: bool) -> SqlBool:
        return _cmp(cand.value, "=", sa.cast(sa.literal("true" if value else "false"), JSONB))

    def is_string(self, cand: _Value) -> SqlBool:
        return cand.jtype == "string"

    def temporal_text(self, cand: _Value) -> SqlExpr:
        return sa.case(
            (cand.jtype == "string", self.as_text(cand.value)),
            (cand.jtype == "object", self.arrow(cand.value, "@value", "->>")),
        )

    def canonical_datetime(self, text: SqlExpr) -> SqlBool:
        return _cmp(text, "~", sa.literal(_PG_DATETIME_RE))

    def canonical_date(self, text: SqlExpr) -> SqlBool:
        return _cmp(text, "~", sa.literal(_PG_DATE_RE))

    def text_cmp(self, text: SqlExpr, sql_op: str, value: str) -> SqlBool:
        return _cmp(sa.collate(text, "C"), sql_op, sa.literal(value))
