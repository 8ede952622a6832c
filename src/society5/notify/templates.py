"""Message templates in Japanese and English, registered by name by the services that send them.

A template has a title and a body per language, written in Jinja2. The body gives the plain text; the HTML
part of a mail is either the template's own ``html`` (rendered with autoescaping) or the plain text, escaped,
with its paragraphs and line breaks kept. A variable missing from the context is an error
(``StrictUndefined``), raised to the caller of ``Notifier.tell`` before anything is queued.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jinja2
from markupsafe import Markup, escape

LANGS = ("ja", "en")
DEFAULT_LANG = "ja"

_text_env = jinja2.Environment(autoescape=False, undefined=jinja2.StrictUndefined)
_html_env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)


class TemplateError(ValueError):
    """A template is malformed, unknown, or its context lacks a variable."""


@dataclass(frozen=True)
class MessageTemplate:
    """``title`` and ``body`` map a language ("ja", "en") to Jinja2 source; Japanese is required."""

    name: str
    title: Mapping[str, str]
    body: Mapping[str, str]
    html: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name or len(self.name) > 128:
            raise TemplateError("a template name is 1 to 128 characters, e.g. 'bears.alert'")
        for part in ("title", "body"):
            texts = getattr(self, part)
            if DEFAULT_LANG not in texts:
                raise TemplateError(f"template {self.name!r}: {part} needs a Japanese ('ja') text")
        for part in ("title", "body", "html"):
            for lang, source in getattr(self, part).items():
                if lang not in LANGS:
                    raise TemplateError(f"template {self.name!r}: {part} language {lang!r} is not ja or en")
                try:
                    (_html_env if part == "html" else _text_env).parse(source)
                except jinja2.TemplateSyntaxError as err:
                    raise TemplateError(f"template {self.name!r}: {part}[{lang}]: {err}") from err


@dataclass(frozen=True)
class Rendered:
    lang: str
    title: str
    text: str
    html: str


def _pick(texts: Mapping[str, str], lang: str) -> str:
    return texts.get(lang) or texts[DEFAULT_LANG]


class TemplateRegistry:
    def __init__(self) -> None:
        self._templates: dict[str, MessageTemplate] = {}
        self._compiled: dict[tuple[str, str, str], jinja2.Template] = {}
        self._lock = threading.Lock()

    def register(self, template: MessageTemplate) -> MessageTemplate:
        """Add a template; registering the same definition again is harmless, a different one is refused."""
        with self._lock:
            known = self._templates.get(template.name)
            if known is not None and known != template:
                raise TemplateError(f"another template is already registered as {template.name!r}")
            self._templates[template.name] = template
        return template

    def get(self, name: str) -> MessageTemplate:
        try:
            return self._templates[name]
        except KeyError:
            raise TemplateError(f"no message template named {name!r} is registered") from None

    def names(self) -> list[str]:
        return sorted(self._templates)

    def _compiled_source(self, template: MessageTemplate, part: str, lang: str,
                         html: bool) -> jinja2.Template:
        key = (template.name, part + ("/html" if html else ""), lang)
        found = self._compiled.get(key)
        if found is None:
            env = _html_env if html else _text_env
            found = self._compiled[key] = env.from_string(_pick(getattr(template, part), lang))
        return found

    def render(self, name: str, context: Mapping[str, Any], lang: str) -> Rendered:
        template = self.get(name)
        lang = lang if lang in LANGS else DEFAULT_LANG
        try:
            # A title is one line: a subject header or a LINE first line must not break.
            title = " ".join(self._compiled_source(template, "title", lang, False).render(context).split())
            text = self._compiled_source(template, "body", lang, False).render(context)
            if template.html:
                html = self._compiled_source(template, "html", lang, True).render(context)
            else:
                # Escape the rendered text as a whole: the template's own words are plain text too.
                html = _as_html(escape(title), escape(text.strip("\n")))
        except jinja2.UndefinedError as err:
            raise TemplateError(f"template {name!r} ({lang}): {err.message}") from err
        return Rendered(lang=lang, title=title, text=text.strip("\n"), html=html)


def _as_html(title: Markup, body: Markup) -> str:
    paragraphs = [p for p in str(body).strip("\n").split("\n\n") if p.strip()]
    inner = "\n".join(f"<p>{p.replace(chr(10), '<br>' + chr(10))}</p>" for p in paragraphs)
    return (
        '<!doctype html>\n<html><head><meta charset="utf-8">'
        f"<title>{title}</title></head>\n<body>\n{inner}\n</body></html>\n"
    )


# The registry services add their templates to at import time (pure data: no settings, no engine).
registry = TemplateRegistry()

TEST_TEMPLATE = registry.register(MessageTemplate(
    name="notify.test",
    title={"ja": "【テスト】通知の確認", "en": "[Test] Notification check"},
    body={
        "ja": "{{ name }} 様\n\nこれは北海道 Society 5.0 データ連携基盤からのテスト通知です。\n"
              "送信者: {{ sender }}",
        "en": "Dear {{ name }},\n\nThis is a test message from the Hokkaido Society 5.0 Data Platform.\n"
              "Sent by: {{ sender }}",
    },
))
