"""Entity type selectors: ``A``, ``A,B`` and ``A|B`` (either), ``A;B`` (both), with parentheses.

Parsed into disjunctive normal form: a list of alternatives, each the set of types an entity must all have.
"""

from __future__ import annotations

from collections.abc import Callable


class TypeExprError(ValueError):
    pass


def parse_type_expr(text: str, expand: Callable[[str], str] = lambda s: s) -> list[frozenset[str]]:
    tokens = _tokenize(text)
    pos, dnf = _expr(tokens, 0, expand)
    if pos != len(tokens):
        raise TypeExprError(f"type: unexpected {tokens[pos]!r} in {text!r}")
    return dnf


def _tokenize(text: str) -> list[str]:
    out: list[str] = []
    buf = ""
    for ch in text:
        if ch in "(),|;":
            if buf.strip():
                out.append(buf.strip())
            buf = ""
            out.append(ch)
        else:
            buf += ch
    if buf.strip():
        out.append(buf.strip())
    if not out:
        raise TypeExprError("type must not be empty")
    return out


def _expr(tokens: list[str], pos: int, expand: Callable[[str], str]) -> tuple[int, list[frozenset[str]]]:
    pos, alts = _term(tokens, pos, expand)
    while pos < len(tokens) and tokens[pos] in (",", "|"):
        pos, more = _term(tokens, pos + 1, expand)
        alts = alts + [a for a in more if a not in alts]
    return pos, alts


def _term(tokens: list[str], pos: int, expand: Callable[[str], str]) -> tuple[int, list[frozenset[str]]]:
    pos, alts = _factor(tokens, pos, expand)
    while pos < len(tokens) and tokens[pos] == ";":
        pos, more = _factor(tokens, pos + 1, expand)
        alts = [a | b for a in alts for b in more]
    return pos, alts


def _factor(tokens: list[str], pos: int, expand: Callable[[str], str]) -> tuple[int, list[frozenset[str]]]:
    if pos >= len(tokens):
        raise TypeExprError("type: expression ends too early")
    tok = tokens[pos]
    if tok == "(":
        pos, alts = _expr(tokens, pos + 1, expand)
        if pos >= len(tokens) or tokens[pos] != ")":
            raise TypeExprError("type: missing ')'")
        return pos + 1, alts
    if tok in "),|;":
        raise TypeExprError(f"type: expected a type name, found {tok!r}")
    if any(c in tok for c in "<>\"'= "):
        raise TypeExprError(f"type: {tok!r} is not a valid type name")
    return pos + 1, [frozenset([expand(tok)])]
