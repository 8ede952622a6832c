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
  ``https://x.org/v1.2/speed`` is one name.  (A dot inside the last path segment of an IRI attribute
  name cannot be written; such names are unusual and can be given in compact form instead.)
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
* A term holds when ANY instance of the attribute (one per datasetId) satisfies it.
* ``attr.sub``: ``sub`` is a key of the instance.  A sub-property (a dict) is itself an instance; any
  other member (``observedAt``, ``unitCode``, ...) is compared as-is.  ``[k1][k2]`` index into the
  target through objects only.  ``expand_names`` leaves those core member names unexpanded because
  the stored instance keeps them in compact form.
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
#
# Both dialects implement the evaluator's semantics term by term; AND/OR map to SQL AND/OR.  A term is
# exact unless its literal is a date/time or a pattern (then the SQL keeps a superset).  Negated terms
# (!=, !~=) are exact only when the positive term is; otherwise they keep "the path has a value".
#
# SQLite: json_each over the attribute's instances, then over each target's candidates.
# PostgreSQL: one strict-mode SQL/JSON path per term (jsonb_path_exists, errors silenced), which is an
# order of magnitude faster than set-returning functions; values travel in the path's $vars.

SqlExpr: TypeAlias = ColumnElement[Any]
SqlBool: TypeAlias = ColumnElement[bool]
_Term: TypeAlias = Comparison | Exists
_SQL_OPS: Final = {"==": "=", ">": ">", ">=": ">=", "<": "<", "<=": "<="}
# Comparing whole seconds only can turn a strict comparison into a non-strict one (superset, never less).
_RELAXED_OPS: Final = {"==": "=", ">": ">=", ">=": ">=", "<": "<=", "<=": "<="}


def to_sql(node: Node, doc_col: SqlExpr, dialect: str) -> tuple[SqlBool, bool]:
    """Compile to a boolean over the JSON column ``doc_col``: ``(expr, exact)``.

    ``exact=False`` means ``expr`` selects a superset; the caller re-checks rows with ``evaluate``.
    Exact: numbers, strings, booleans, lists and ranges of those, existence, AND/OR.  Superset:
    date/time literals (stored strings come in many ISO forms) and regular expressions.
    All values and JSON paths are bound parameters.  SQLite needs 3.38+ (the ``->`` operator).
    """
    if dialect == "sqlite":
        sqlite_sql = _SqliteSql(doc_col)
        return _compile(node, sqlite_sql.term)
    if dialect == "postgresql":
        return _compile(node, lambda term: _pg_term(term, doc_col))
    raise ValueError(f"unsupported dialect {dialect!r}")


def _compile(node: Node, term_sql: Callable[[_Term], tuple[SqlBool, bool]]) -> tuple[SqlBool, bool]:
    if isinstance(node, And | Or):
        parts = [_compile(i, term_sql) for i in node.items]
        exprs = [p[0] for p in parts]
        exact = all(p[1] for p in parts)
        if isinstance(node, And):
            return (sa.and_(*exprs) if exprs else sa.true()), exact
        return (sa.or_(*exprs) if exprs else sa.false()), exact
    if not _path_is_safe(node.path):
        return sa.true(), False
    return term_sql(node)


def _path_is_safe(path: AttrPath) -> bool:
    """Names must be quotable in a SQLite JSON path and bindable as text (expansion can yield anything)."""
    return all(_safe_text(n) and '"' not in n and "\\" not in n for n in (path.attr, *path.sub, *path.keys))


def _safe_text(text: str) -> bool:
    """Bindable as PostgreSQL text / jsonb (no NUL) and encodable as UTF-8 (no lone surrogates)."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _positive(op: str) -> str:
    return {"!=": "==", "!~=": "~="}.get(op, op)


def _is_exact(op: str, value: Value) -> bool:
    """Whether the positive operator ``op`` with ``value`` compiles to exact SQL."""
    if op == "~=":
        return False
    if isinstance(value, ValueList):
        return all(_scalar_is_exact("==", v) for v in value.items)
    if isinstance(value, Range):
        return _scalar_is_exact(">=", value.low) and _scalar_is_exact("<=", value.high)
    return _scalar_is_exact(op, value)


def _scalar_is_exact(op: str, value: Scalar) -> bool:
    if isinstance(value, bool):
        return op == "=="
    if isinstance(value, int | float):
        return True
    if isinstance(value, str):
        return _safe_text(value)
    return False


def _utc_prefix(value: datetime) -> str | None:
    """``YYYY-MM-DDTHH:MM:SS`` in UTC, or None near datetime.min/max where UTC overflows."""
    try:
        return value.astimezone(UTC).isoformat()[:19]
    except OverflowError:
        return None


def _cmp(left: SqlExpr, sql_op: str, right: SqlExpr) -> SqlBool:
    """A boolean binary operator (``is_comparison`` makes SQLAlchemy type the result as boolean)."""
    return left.op(sql_op, is_comparison=True)(right)


# --- SQLite ---------------------------------------------------------------------------------------


def _sqlite_path(names: tuple[str, ...]) -> str:
    # Labels are double-quoted; _path_is_safe guarantees they contain no '"' or backslash.
    return "$" + "".join(f'."{n}"' for n in names)


_SQLITE_DATETIME_GLOB: Final = "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9]*Z"
_SQLITE_DATE_GLOB: Final = "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]"


class _Row:
    """A json_each row: its SQL ``value`` (JSON text for arrays/objects) and its ``type`` name."""

    def __init__(self, from_: Any) -> None:
        self.from_ = from_
        self.value: SqlExpr = from_.c.value
        self.jtype: SqlExpr = from_.c["type"]

    def exists(self, *where: SqlBool) -> SqlBool:
        return sa.select(sa.literal(1)).select_from(self.from_).where(*where).exists()


class _SqliteSql:
    """SQLite JSON1 twin of the evaluator.  JSON values are JSON text produced by ``->``."""

    def __init__(self, doc: SqlExpr) -> None:
        self.doc = doc

    def term(self, node: _Term) -> tuple[SqlBool, bool]:
        if isinstance(node, Exists):
            found = self.exists_path(node.path)
            return (sa.not_(found) if node.negated else found), True
        return self.comparison(node)

    # -- structure
    def instances(self, attr: str) -> tuple[_Row, SqlExpr, SqlBool]:
        """(instance rows, JSON of an object instance else NULL, "attribute is a JSON array")."""
        path = _sqlite_path(("attrs", attr))
        row = _Row(sa.func.json_each(self.doc, sa.literal(path)).table_valued("value", "type"))
        # NULL for non-objects keeps '->' from parsing a bare SQL scalar (json_each's value) as JSON.
        inst_json = sa.case((row.jtype == "object", row.value))
        return row, inst_json, sa.func.json_type(self.doc, sa.literal(path)) == "array"

    def member(self, value: SqlExpr, names: tuple[str, ...]) -> SqlExpr:
        return value.op("->")(sa.literal(_sqlite_path(names)))

    def present(self, value: SqlExpr) -> SqlBool:
        """Has a value: not missing (SQL NULL) and not JSON null."""
        return sa.func.coalesce(sa.func.json_type(value), "null") != "null"

    def target(self, node: SqlExpr, has_sub: bool) -> SqlExpr:
        """Twin of ``_target``: the first member present; a non-object sub-attribute is its own target."""
        first = sa.func.coalesce(*(self.member(node, (name,)) for name in TARGET_MEMBERS))
        if not has_sub:
            return first
        return sa.case((sa.func.json_type(node) == "object", first), else_=node)

    def exists_path(self, path: AttrPath) -> SqlBool:
        inst, inst_json, is_array = self.instances(path.attr)
        if not path.sub and not path.keys:
            return inst.exists(is_array, inst.jtype != "null")
        node = self.member(inst_json, path.sub) if path.sub else inst_json
        if path.keys:
            node = self.member(self.target(node, bool(path.sub)), path.keys)
        return inst.exists(is_array, self.present(node))

    def comparison(self, node: Comparison) -> tuple[SqlBool, bool]:
        path = node.path
        inst, inst_json, is_array = self.instances(path.attr)
        base = self.member(inst_json, path.sub) if path.sub else inst_json
        target = self.target(base, bool(path.sub))
        lang: SqlBool | None = None
        if path.keys:
            target = self.member(target, path.keys)
        else:
            lang = self.member(base, ("languageMap",)).is_not(None)
        op, negate = _positive(node.op), node.op in ("!=", "!~=")
        exact = _is_exact(op, node.value)
        if negate and not exact:  # NOT of a superset is not a superset: keep "has a value"
            return inst.exists(is_array, self.present(target)), False
        hit = self.any_candidate(target, lang, lambda c: self.candidate(op, node.value, c), negate)
        return inst.exists(is_array, hit), exact

    def any_candidate(self, target: SqlExpr, lang: SqlBool | None, pred: Callable[[_Row], SqlBool],
                      negate: bool) -> SqlBool:
        """Some candidate of ``target`` satisfies ``pred`` (``negate``: target present and none does)."""
        # The target becomes one row t ('[' || T || ']', T being JSON text; NULL gives no row), so the
        # long target expression is written once.
        t = _Row(sa.func.json_each(sa.literal("[").op("||")(target).op("||")(sa.literal("]")))
                 .table_valued("value", "type"))
        iterate = t.jtype == "array"
        if lang is not None:
            iterate = sa.or_(iterate, sa.and_(lang, t.jtype == "object"))
        # The CASE keeps json_each from ever parsing a scalar's bare SQL value as JSON text.
        items = _Row(sa.func.json_each(sa.case((iterate, t.value), else_=sa.literal("[]")))
                     .table_valued("value", "type"))
        hit = sa.or_(sa.and_(sa.not_(iterate), pred(t)), sa.and_(iterate, items.exists(pred(items))))
        return t.exists(sa.and_(t.jtype != "null", sa.not_(hit)) if negate else hit)

    # -- candidate predicates (superset where _is_exact says so)
    def candidate(self, op: str, value: Value, cand: _Row) -> SqlBool:
        if isinstance(value, ValueList):
            return sa.or_(*(self.scalar("==", v, cand) for v in value.items))
        if isinstance(value, Range):
            return sa.and_(self.scalar(">=", value.low, cand), self.scalar("<=", value.high, cand))
        if op == "~=":  # Python `re` has no SQL equivalent: keep the string candidates
            return cand.jtype == "text"
        return self.scalar(op, value, cand)

    def scalar(self, op: str, value: Scalar, cand: _Row) -> SqlBool:
        if isinstance(value, bool):
            return cand.jtype == ("true" if value else "false") if op == "==" else sa.true()
        if isinstance(value, int | float):
            is_number = cand.jtype.in_(("integer", "real"))
            return sa.and_(is_number, _cmp(cand.value, _SQL_OPS[op], sa.literal(value)))
        if isinstance(value, str):
            if not _safe_text(value):
                return sa.true()
            return sa.and_(cand.jtype == "text", _cmp(cand.value, _SQL_OPS[op], sa.literal(value)))
        return self.temporal(op, value, cand)

    def temporal(self, op: str, value: datetime | date | time, cand: _Row) -> SqlBool:
        """Superset for date/time literals.

        A string in the canonical UTC form ``YYYY-MM-DDTHH:MM:SS[.f]Z`` is compared on its first 19
        characters (whole seconds, so strict operators become non-strict); a canonical ``YYYY-MM-DD``
        compares as a string (lexical order is date order).  Any other string / typed object is kept.
        """
        text = sa.case(
            (cand.jtype == "text", cand.value),
            (cand.jtype == "object", sa.func.json_extract(cand.value, sa.literal('$."@value"'))),
        )
        has_text = text.is_not(None)
        if isinstance(value, datetime):
            prefix = _utc_prefix(value)
            if prefix is None:
                return has_text
            canonical = _cmp(text, "GLOB", sa.literal(_SQLITE_DATETIME_GLOB))
            bound = _cmp(sa.func.substr(text, 1, 19), _RELAXED_OPS[op], sa.literal(prefix))
            return sa.and_(has_text, sa.or_(sa.not_(canonical), bound))
        if isinstance(value, date):
            canonical = _cmp(text, "GLOB", sa.literal(_SQLITE_DATE_GLOB))
            bound = _cmp(text, _SQL_OPS[op], sa.literal(value.isoformat()))
            return sa.and_(has_text, sa.or_(sa.not_(canonical), bound))
        return has_text  # times: offsets make a lexical bound unsound; keep every candidate


# --- PostgreSQL -----------------------------------------------------------------------------------

# like_regex patterns are path literals: written without backslashes so they need no escaping.
_JP_DATETIME_RE: Final = "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}([.][0-9]+)?Z$"
_JP_DATE_RE: Final = "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
_JP_TRUE: Final = "(1 == 1)"


def _jp_lit(text: str) -> str:
    """A SQL/JSON path string literal (JSON string syntax, which the path grammar shares)."""
    return json.dumps(text, ensure_ascii=False)


def _pg_term(node: _Term, doc: SqlExpr) -> tuple[SqlBool, bool]:
    builder = _PathBuilder()
    path = node.path
    inst = "@" + "".join("." + _jp_lit(s) for s in path.sub)
    if isinstance(node, Exists):
        pred, exact = builder.exists(inst, path), True
    else:
        pred, exact = builder.comparison(inst, node)
    text = f"strict $.attrs.{_jp_lit(path.attr)}[*] ? ({pred})"
    # silent=true turns "no such attribute / not an array" into NULL; COALESCE makes it false, so that
    # NOT (...) stays two-valued.
    found = sa.func.coalesce(
        sa.func.jsonb_path_exists(
            doc, sa.cast(sa.literal(text), JSONPATH), sa.cast(sa.literal(json.dumps(builder.vars)), JSONB),
            sa.true(),
        ),
        sa.false(),
    )
    if isinstance(node, Exists) and node.negated:
        return sa.not_(found), True
    return found, exact


class _PathBuilder:
    """Builds the filter of one strict-mode path.  Strict mode never auto-unwraps arrays, and any error
    inside a filter (missing member, type mismatch) is "unknown", which filters out — like ``_MISSING``.
    """

    def __init__(self) -> None:
        self.vars: dict[str, Any] = {}

    def var(self, value: Any) -> str:
        name = f"v{len(self.vars)}"
        self.vars[name] = value
        return "$" + name

    @staticmethod
    def targets(node: str, keys: tuple[str, ...], has_sub: bool) -> list[tuple[str, str, bool]]:
        """(condition, target path, is-languageMap) per target member: the first member present wins."""
        suffix = "".join("." + _jp_lit(k) for k in keys)
        out: list[tuple[str, str, bool]] = []
        for i, member in enumerate(TARGET_MEMBERS):
            # In strict mode exists() of a missing member is an error, i.e. unknown: "is unknown" tests
            # absence cheaply (keyvalue() would enumerate the instance, several times slower).
            absent = [f"(exists({node}.{_jp_lit(m)})) is unknown" for m in TARGET_MEMBERS[:i]]
            cond = " && ".join([f"exists({node}.{_jp_lit(member)})", *absent])
            out.append((cond, f"{node}.{_jp_lit(member)}{suffix}", member == "languageMap" and not keys))
        if has_sub and not keys:  # a non-object sub-attribute member (observedAt, ...) is its own target
            out.append((f'{node}.type() != "object"', node, False))
        return out

    def exists(self, node: str, path: AttrPath) -> str:
        if not path.keys:
            return f'{node}.type() != "null"'
        return " || ".join(f'({cond} && {target}.type() != "null")'
                           for cond, target, _ in self.targets(node, path.keys, bool(path.sub)))

    def comparison(self, node: str, term: Comparison) -> tuple[str, bool]:
        op, negate = _positive(term.op), term.op in ("!=", "!~=")
        exact = _is_exact(op, term.value)
        pred = self.candidate(op, term.value)
        branches = []
        for cond, target, is_lang in self.targets(node, term.path.keys, bool(term.path.sub)):
            present = f'{target}.type() != "null"'
            if not negate:
                body = self.any_candidate(target, pred, is_lang)
            elif exact:
                body = f"{present} && !{self.any_candidate(target, pred, is_lang)}"
            else:  # NOT of a superset is not a superset: keep "has a value"
                body = present
            branches.append(f"({cond} && {body})")
        return " || ".join(branches), exact

    @staticmethod
    def any_candidate(target: str, pred: str, is_lang: bool) -> str:
        """List elements, languageMap values, or the target itself (an object never matches a scalar)."""
        parts = [f'exists({target} ? (@.type() == "array")[*] ? ({pred}))',
                 f'exists({target} ? (@.type() != "array" && ({pred})))']
        if is_lang:
            parts.append(f'exists({target} ? (@.type() == "object").* ? ({pred}))')
        return "(" + " || ".join(parts) + ")"

    def candidate(self, op: str, value: Value) -> str:
        if isinstance(value, ValueList):
            return "(" + " || ".join(self.scalar("==", v) for v in value.items) + ")"
        if isinstance(value, Range):
            return f"({self.scalar('>=', value.low)} && {self.scalar('<=', value.high)})"
        if op == "~=":
            return '@.type() == "string"'
        return self.scalar(op, value)

    def scalar(self, op: str, value: Scalar) -> str:
        # Strict comparisons of different JSON types are "unknown", so no type guards are needed; strings
        # compare by code point, numbers numerically, as in Python.
        if isinstance(value, bool):
            return f"@ == {self.var(value)}" if op == "==" else _JP_TRUE
        if isinstance(value, int | float | str):
            if isinstance(value, str) and not _safe_text(value):
                return _JP_TRUE
            return f"@ {op} {self.var(value)}"
        return (f'((@.type() == "string" && {self.temporal(op, value, "@")}) || '
                f'(@.type() == "object" && {self.temporal(op, value, "@." + _jp_lit("@value"))}))')

    def temporal(self, op: str, value: datetime | date | time, text: str) -> str:
        """Superset for date/time literals, as in ``_SqliteSql.temporal``."""
        is_string = f'{text}.type() == "string"'
        if isinstance(value, datetime):
            prefix = _utc_prefix(value)
            if prefix is None:
                return is_string
            var = self.var(prefix)
            # On canonical strings: first 19 chars >= P  <=>  text >= P;  first 19 chars <= P  <=>
            # text < P or text starts with P;  equal  <=>  starts with P.
            bound = {
                ">": f"{text} >= {var}", ">=": f"{text} >= {var}",
                "<": f"({text} < {var} || {text} starts with {var})",
                "<=": f"({text} < {var} || {text} starts with {var})",
                "==": f"{text} starts with {var}",
            }[op]
            return f'({is_string} && (!({text} like_regex "{_JP_DATETIME_RE}") || {bound}))'
        if isinstance(value, date):
            bound = f"{text} {op} {self.var(value.isoformat())}"
            return f'({is_string} && (!({text} like_regex "{_JP_DATE_RE}") || {bound}))'
        return is_string
