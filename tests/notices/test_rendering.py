"""Notice templates: packaged in two languages, an admin's rows first, English otherwise."""

from __future__ import annotations

from decimal import Decimal

import pytest

from shelfmark.notices.errors import InvalidNoticeTemplate
from shelfmark.notices.models import NOTICE_KINDS
from shelfmark.notices.rendering import (
    Renderer,
    TemplateText,
    check_template,
    packaged_languages,
    sample_context,
)


class TestPackagedTemplates:
    def test_english_and_french_are_shipped(self) -> None:
        assert {"eng", "fre"} <= packaged_languages()

    @pytest.mark.parametrize("language", ["eng", "fre"])
    @pytest.mark.parametrize("kind", NOTICE_KINDS)
    def test_every_kind_renders_text_and_html(self, kind: str, language: str) -> None:
        rendered = Renderer().render(kind, language, sample_context(kind))
        assert rendered.language == language
        assert rendered.subject
        assert "\n" not in rendered.subject
        assert "Ada Lovelace" in rendered.text
        assert rendered.html is not None
        assert "<p>" in rendered.html

    def test_the_patrons_language_is_used(self) -> None:
        context = sample_context("hold-ready")
        english = Renderer().render("hold-ready", "eng", context)
        french = Renderer().render("hold-ready", "fre", context)
        assert english.subject == "Ready for you: The Analytical Engine"
        assert french.subject == "Disponible pour vous : The Analytical Engine"
        assert "16 March 2026" in english.text
        assert "16 mars 2026" in french.text

    def test_the_other_iso_639_2_code_finds_the_same_templates(self) -> None:
        rendered = Renderer().render("due-soon", "fra", sample_context("due-soon"))
        assert rendered.language == "fre"

    def test_a_language_without_templates_gets_english_written_the_english_way(self) -> None:
        rendered = Renderer().render("fee-charged", "spa", sample_context("fee-charged"))
        assert rendered.language == "eng"
        assert rendered.subject == "A charge of 2.50 on your library account"

    def test_no_language_is_english(self) -> None:
        assert Renderer().render("overdue", None, sample_context("overdue")).language == "eng"

    def test_amounts_are_written_the_french_way_in_french(self) -> None:
        context = sample_context("fee-charged")
        context["fee"]["amount"] = Decimal("12.30")
        assert "12,30" in Renderer().render("fee-charged", "fre", context).subject

    def test_overdue_levels_read_differently(self) -> None:
        context = sample_context("overdue")
        subjects = []
        for level in (1, 2, 3):
            context["notice"]["level"] = level
            subjects.append(Renderer().render("overdue", "eng", context).subject)
        assert subjects == [
            "Overdue: The Analytical Engine",
            "Second reminder: The Analytical Engine",
            "Final reminder: The Analytical Engine",
        ]

    def test_html_is_escaped_and_text_is_not(self) -> None:
        context = sample_context("hold-ready")
        context["hold"]["title"] = "Fish & <Chips>"
        rendered = Renderer().render("hold-ready", "eng", context)
        assert rendered.html is not None
        assert "Fish &amp; &lt;Chips&gt;" in rendered.html
        assert "<Chips>" not in rendered.html
        assert '"Fish & <Chips>"' in rendered.text


class TestAdminTemplates:
    def test_an_admins_template_replaces_the_packaged_one_in_its_language_only(self) -> None:
        own = TemplateText("Come and get {{ hold.title }}", "Hello {{ patron.name }}", None)
        renderer = Renderer({("hold-ready", "eng"): own})
        context = sample_context("hold-ready")
        english = renderer.render("hold-ready", "eng", context)
        assert (english.subject, english.text, english.html) == (
            "Come and get The Analytical Engine", "Hello Ada Lovelace", None,
        )  # fmt: skip
        assert renderer.render("hold-ready", "fre", context).subject.startswith("Disponible")
        # A language without templates falls back to English: the admin's English.
        assert renderer.render("hold-ready", "ger", context).subject.startswith("Come and get")

    def test_an_admins_html_is_escaped_too(self) -> None:
        own = TemplateText("Hi", "Hi", "<b>{{ hold.title }}</b>")
        context = sample_context("hold-ready")
        context["hold"]["title"] = "<script>"
        rendered = Renderer({("hold-ready", "eng"): own}).render("hold-ready", "eng", context)
        assert rendered.html == "<b>&lt;script&gt;</b>"

    def test_a_template_may_extend_the_packaged_layout(self) -> None:
        html = '{% extends "_layout.html" %}{% block content %}<p>Hi</p>{% endblock %}'
        source = TemplateText("Hi", "Hi", html)
        check_template("hold-ready", "eng", source)
        rendered = Renderer({("hold-ready", "eng"): source}).render(
            "hold-ready", "eng", sample_context("hold-ready")
        )
        assert rendered.html is not None
        assert "<p>Hi</p>" in rendered.html
        assert "Main Library" in rendered.html

    @pytest.mark.parametrize(
        ("source", "problem"),
        [
            (TemplateText("{{ hold.title", "x", None), "does not render"),
            (TemplateText("x", "{{ hold.titel }}", None), "titel"),
            (TemplateText("x", "{{ loan.title }}", None), "loan"),
            (TemplateText("x", "{{ ''.__class__.__mro__ }}", None), "unsafe"),
        ],
    )
    def test_a_broken_template_is_refused(self, source: TemplateText, problem: str) -> None:
        with pytest.raises(InvalidNoticeTemplate, match=problem):
            check_template("hold-ready", "eng", source)

    def test_an_unknown_kind_is_refused(self) -> None:
        with pytest.raises(InvalidNoticeTemplate):
            check_template("birthday", "eng", TemplateText("x", "y", None))
