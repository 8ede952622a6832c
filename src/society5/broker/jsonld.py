"""JSON-LD contexts for NGSI-LD: a local cache of documents and the expansion/compaction of terms.

NGSI-LD needs only a slice of JSON-LD: attribute names, entity types and vocab values are expanded to IRIs
through the request's ``@context`` (plus the core context, applied last so it cannot be overridden), and
compacted back on output. That slice is implemented here directly: it is several times faster than a general
JSON-LD processor and has no network side effects. Remote contexts are never fetched from the internet at
request time: they come from the bundled files, the preload directory, the database cache, or hosts the
operator allowed (loopback by default, for test suites that serve their own contexts).
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from society5.core.errors import BadRequest, ContextNotAvailable

log = logging.getLogger(__name__)

CORE_CONTEXT_URL = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld"
CORE_ALIASES = (
    "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld",
    "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.3.jsonld",
    "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.4.jsonld",
    "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.5.jsonld",
    "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.6.jsonld",
    "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.7.jsonld",
    CORE_CONTEXT_URL,
)
NGSI_LD = "https://uri.etsi.org/ngsi-ld/"
DEFAULT_VOCAB = "https://uri.etsi.org/ngsi-ld/default-context/"
LINK_REL = "http://www.w3.org/ns/json-ld#context"
_GEN_DELIMS = (":", "/", "?", "#", "[", "]", "@")


def _load_core() -> dict[str, Any]:
    text = (
        resources.files("society5.broker").joinpath("contexts/ngsi-ld-core-context-v1.8.jsonld").read_text()
    )
    doc: dict[str, Any] = json.loads(text)
    return doc


@dataclass
class TermDef:
    iri: str
    coerce: str | None = None  # "@id" or "@vocab" when values are IRIs


@dataclass
class ActiveContext:
    """Terms of a processed context. Expansion and compaction results are memoised per instance."""

    terms: dict[str, TermDef]
    vocab: str | None
    source: Any = None  # what the client sent: URL string, list or inline object (echoed back in responses)
    _expand_memo: dict[str, str] = field(default_factory=dict, repr=False)
    _compact_memo: dict[str, str] = field(default_factory=dict, repr=False)
    # Entity type names that passed model.parse_types, with their IRIs (a batch repeats the same few types).
    types_memo: dict[str, tuple[str, ...]] = field(default_factory=dict, repr=False, compare=False)
    _reverse: dict[str, str] = field(default_factory=dict, repr=False)
    _prefixes: list[tuple[str, str]] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        for term, tdef in sorted(self.terms.items(), key=lambda kv: (len(kv[0]), kv[0]), reverse=True):
            self._reverse[tdef.iri] = term  # shortest then least term wins (JSON-LD's preference)
            if tdef.iri.endswith(_GEN_DELIMS) and ":" not in term:
                self._prefixes.append((tdef.iri, term))
        self._prefixes.sort(key=lambda p: len(p[0]), reverse=True)

    def expand(self, name: str) -> str:
        hit = self._expand_memo.get(name)
        if hit is not None:
            return hit
        iri = self._expand(name)
        if len(self._expand_memo) < 50_000:
            self._expand_memo[name] = iri
        return iri

    def _expand(self, name: str) -> str:
        tdef = self.terms.get(name)
        if tdef is not None:
            return tdef.iri
        if ":" in name:
            prefix, suffix = name.split(":", 1)
            if not suffix.startswith("//"):
                pdef = self.terms.get(prefix)
                if pdef is not None:
                    return pdef.iri + suffix
            return name
        if self.vocab is not None:
            return self.vocab + name
        return name

    def compact(self, iri: str) -> str:
        hit = self._compact_memo.get(iri)
        if hit is not None:
            return hit
        term = self._compact(iri)
        if len(self._compact_memo) < 50_000:
            self._compact_memo[iri] = term
        return term

    def _compact(self, iri: str) -> str:
        term = self._reverse.get(iri)
        if term is not None:
            return term
        if self.vocab and iri.startswith(self.vocab):
            suffix = iri[len(self.vocab) :]
            if suffix and ":" not in suffix and suffix not in self.terms:
                return suffix
        for prefix_iri, prefix in self._prefixes:
            if iri.startswith(prefix_iri) and len(iri) > len(prefix_iri):
                suffix = iri[len(prefix_iri) :]
                if not suffix.startswith("//") and f"{prefix}:{suffix}" not in self.terms:
                    return f"{prefix}:{suffix}"
        return iri

    def coercion(self, name: str) -> str | None:
        tdef = self.terms.get(name)
        return tdef.coerce if tdef else None


def parse_link_header(value: str | None) -> str | None:
    """The @context URL of an HTTP ``Link`` header with rel json-ld#context, or None."""
    if not value:
        return None
    for part in value.split(","):
        segs = [s.strip() for s in part.split(";")]
        if not segs or not (segs[0].startswith("<") and segs[0].endswith(">")):
            continue
        url = segs[0][1:-1].strip()
        rels = [s for s in segs[1:] if s.replace(" ", "").lower().startswith("rel=")]
        if not rels or any(LINK_REL in r for r in rels):
            return url
    raise BadRequest('Link header: expected <URL>; rel="http://www.w3.org/ns/json-ld#context"')


def link_header(url: str) -> str:
    return f'<{url}>; rel="{LINK_REL}"; type="application/ld+json"'


def is_absolute_iri(text: str) -> bool:
    scheme, colon, _ = text.partition(":")
    if not colon:
        return False
    known = _SCHEMES.get(scheme)
    if known is not None:  # every entity id and type of a batch has one of a few schemes (urn, https)
        return known
    valid = bool(scheme) and scheme[0].isalpha() and all(c.isalnum() or c in "+-." for c in scheme)
    if len(scheme) <= 32 and len(_SCHEMES) < 1000:
        _SCHEMES[scheme] = valid
    return valid


_SCHEMES: dict[str, bool] = {}


class ContextStore:
    """Resolves context URLs to documents: bundled core, preloaded files, database cache, allowed hosts."""

    def __init__(
        self,
        *,
        fetch_hosts: Iterable[str] = (),
        fetch_timeout_s: float = 3.0,
        persist: Callable[[str, str, Any], None] | None = None,
    ):
        core = _load_core()
        self._docs: dict[str, Any] = {url: core for url in CORE_ALIASES}
        self._kinds: dict[str, str] = {url: "Cached" for url in CORE_ALIASES}
        self._lock = threading.Lock()
        self._active_cache: dict[str, ActiveContext] = {}
        self.fetch_hosts = set(fetch_hosts)
        self.fetch_timeout_s = fetch_timeout_s
        self.persist = persist
        self.core = self.activate(None)

    # -- the cache ---------------------------------------------------------------------------------------
    def preload_dir(self, directory: Path) -> int:
        """Load every ``{url: file}`` of ``directory/index.json`` into the cache; returns the count."""
        index = json.loads((directory / "index.json").read_text())
        for url, name in index.items():
            self.add(url, json.loads((directory / name).read_text()), kind="Cached")
        return len(index)

    def add(self, url: str, doc: Any, kind: str = "Cached") -> None:
        if not isinstance(doc, dict) or "@context" not in doc:
            raise BadRequest("a JSON-LD context document must be an object with an '@context' member")
        with self._lock:
            self._docs[url] = doc
            self._kinds[url] = kind
            self._active_cache.clear()

    def remove(self, url: str) -> bool:
        if url in CORE_ALIASES:
            raise BadRequest("the core context cannot be deleted")
        with self._lock:
            found = self._docs.pop(url, None) is not None
            self._kinds.pop(url, None)
            self._active_cache.clear()
        return found

    def get(self, url: str) -> Any | None:
        return self._docs.get(url)

    def kind(self, url: str) -> str | None:
        return self._kinds.get(url)

    def urls(self) -> list[str]:
        return list(self._docs)

    def _fetch(self, url: str) -> Any:
        host = urllib.parse.urlsplit(url).hostname or ""
        if host not in self.fetch_hosts:
            raise ContextNotAvailable(
                f"@context {url} is not in the local context cache and remote contexts are not fetched "
                "from this host; preload it (SOCIETY5_PRELOAD_CONTEXTS or POST /ngsi-ld/v1/jsonldContexts)"
            )
        import httpx

        try:
            resp = httpx.get(url, timeout=self.fetch_timeout_s, follow_redirects=True)
            resp.raise_for_status()
            doc = resp.json()
        except (httpx.HTTPError, ValueError) as err:
            raise ContextNotAvailable(f"@context {url} could not be retrieved: {err}") from err
        self.add(url, doc, kind="Cached")
        if self.persist is not None:
            self.persist(url, "Cached", doc)
        return doc

    def document(self, url: str) -> Any:
        doc = self._docs.get(url)
        if doc is None:
            if not is_absolute_iri(url):
                raise BadRequest(f"@context entry {url!r} is not an absolute URL")
            doc = self._fetch(url)
        return doc

    # -- processing --------------------------------------------------------------------------------------
    def activate(self, context: Any) -> ActiveContext:
        """The active context for what a client sent (URL, list, object or None), core context last."""
        key = context if isinstance(context, str) else json.dumps(context, sort_keys=True)
        hit = self._active_cache.get(key)
        if hit is not None:
            return hit
        terms: dict[str, TermDef] = {}
        vocab: list[str | None] = [None]
        if context is not None:
            self._process(context, terms, vocab, depth=0)
        core_terms: dict[str, TermDef] = {}
        core_vocab: list[str | None] = [None]
        self._process(self._docs[CORE_CONTEXT_URL]["@context"], core_terms, core_vocab, depth=0)
        terms.update(core_terms)  # the core context wins (NGSI-LD forbids overriding core terms)
        _resolve_compact_iris(terms)
        active = ActiveContext(terms=terms, vocab=vocab[0] or core_vocab[0] or DEFAULT_VOCAB, source=context)
        with self._lock:
            if len(self._active_cache) > 1000:
                self._active_cache.clear()
            self._active_cache[key] = active
        return active

    def _process(self, ctx: Any, terms: dict[str, TermDef], vocab: list[str | None], depth: int) -> None:
        if depth > 10:
            raise BadRequest("@context nests more than 10 levels (a loop?)")
        if ctx is None:
            return
        if isinstance(ctx, str):
            doc = self.document(ctx)
            self._process(doc.get("@context"), terms, vocab, depth + 1)
        elif isinstance(ctx, list):
            for item in ctx:
                self._process(item, terms, vocab, depth + 1)
        elif isinstance(ctx, dict):
            for term, definition in ctx.items():
                if term == "@vocab":
                    if definition is not None and not isinstance(definition, str):
                        raise BadRequest("@context: @vocab must be a string")
                    vocab[0] = definition
                elif term.startswith("@"):
                    continue
                elif isinstance(definition, str):
                    terms[term] = TermDef(definition)
                elif isinstance(definition, dict):
                    iri = definition.get("@id", term)
                    if not isinstance(iri, str):
                        raise BadRequest(f"@context: term {term!r} has a non-string @id")
                    coerce = definition.get("@type")
                    terms[term] = TermDef(iri, coerce if coerce in ("@id", "@vocab") else None)
                elif definition is None:
                    terms.pop(term, None)
                else:
                    raise BadRequest(f"@context: term {term!r} must map to a string or an object")
        else:
            raise BadRequest("@context must be a URL, an object or a list of them")


def _resolve_compact_iris(terms: dict[str, TermDef]) -> None:
    """Turn term IRIs written as ``prefix:suffix`` (``ngsi-ld:observedAt``) into absolute IRIs."""
    for _ in range(3):
        changed = False
        for tdef in terms.values():
            if ":" in tdef.iri:
                prefix, suffix = tdef.iri.split(":", 1)
                if not suffix.startswith("//") and prefix in terms and terms[prefix].iri != tdef.iri:
                    tdef.iri = terms[prefix].iri + suffix
                    changed = True
        if not changed:
            break
