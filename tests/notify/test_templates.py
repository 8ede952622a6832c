"""Message templates: ja/en choice, strict variables, autoescaped HTML next to the plain text."""

from __future__ import annotations

import pytest

from society5.notify.templates import MessageTemplate, TemplateError, TemplateRegistry, registry

ALERT = MessageTemplate(
    name="test.alert",
    title={"ja": "ヒグマ出没: {{ place }}", "en": "Bear sighting: {{ place }}"},
    body={"ja": "{{ place }}でヒグマが目撃されました。\n\n詳細: {{ detail }}",
          "en": "A bear was seen at {{ place }}.\n\nDetails: {{ detail }}"},
)


@pytest.fixture
def reg() -> TemplateRegistry:
    fresh = TemplateRegistry()
    fresh.register(ALERT)
    return fresh


def test_language_is_chosen_per_call(reg: TemplateRegistry) -> None:
    ja = reg.render("test.alert", {"place": "南区", "detail": "親子"}, "ja")
    en = reg.render("test.alert", {"place": "Minami-ku", "detail": "a cub"}, "en")
    assert (ja.title, ja.lang) == ("ヒグマ出没: 南区", "ja")
    assert ja.text == "南区でヒグマが目撃されました。\n\n詳細: 親子"
    assert en.title == "Bear sighting: Minami-ku"
    assert reg.render("test.alert", {"place": "x", "detail": "y"}, "fr").lang == "ja"


def test_missing_english_falls_back_to_japanese() -> None:
    reg = TemplateRegistry()
    reg.register(MessageTemplate("t.ja", title={"ja": "題"}, body={"ja": "本文"}))
    assert reg.render("t.ja", {}, "en").title == "題"


def test_a_missing_variable_is_an_error(reg: TemplateRegistry) -> None:
    with pytest.raises(TemplateError, match="detail"):
        reg.render("test.alert", {"place": "南区"}, "ja")


def test_html_is_escaped_and_text_is_not(reg: TemplateRegistry) -> None:
    out = reg.render("test.alert", {"place": "<b>北区</b>", "detail": "a & b\nline 2"}, "ja")
    assert "<b>北区</b>でヒグマ" in out.text
    assert "&lt;b&gt;北区&lt;/b&gt;" in out.html and "<b>北区" not in out.html
    assert "a &amp; b<br>\nline 2" in out.html
    assert out.html.count("<p>") == 2
    assert "<title>ヒグマ出没: &lt;b&gt;北区&lt;/b&gt;</title>" in out.html


def test_own_html_part_and_one_line_titles() -> None:
    reg = TemplateRegistry()
    reg.register(MessageTemplate("t.html", title={"ja": "一行目\n二行目"}, body={"ja": "{{ x }}"},
                                 html={"ja": "<p class=x>{{ x }}</p>"}))
    out = reg.render("t.html", {"x": "<i>"}, "ja")
    assert out.title == "一行目 二行目"
    assert out.html == "<p class=x>&lt;i&gt;</p>"


def test_registry_refuses_a_different_template_under_a_taken_name(reg: TemplateRegistry) -> None:
    reg.register(ALERT)  # the same definition again (a module imported twice) is harmless
    with pytest.raises(TemplateError, match="already registered"):
        reg.register(MessageTemplate("test.alert", title={"ja": "別"}, body={"ja": "別"}))
    with pytest.raises(TemplateError, match="no message template"):
        reg.render("nope", {}, "ja")


@pytest.mark.parametrize("kwargs,problem", [
    ({"title": {"en": "x"}, "body": {"ja": "x"}}, "Japanese"),
    ({"title": {"ja": "x"}, "body": {"ja": "x", "fr": "x"}}, "not ja or en"),
    ({"title": {"ja": "{{ broken"}, "body": {"ja": "x"}}, "title"),
])
def test_malformed_templates_are_refused(kwargs: dict[str, dict[str, str]], problem: str) -> None:
    with pytest.raises(TemplateError, match=problem):
        MessageTemplate("t.bad", **kwargs)


def test_the_builtin_test_template_is_registered() -> None:
    out = registry.render("notify.test", {"name": "北海 太郎", "sender": "admin"}, "ja")
    assert "北海 太郎 様" in out.text
