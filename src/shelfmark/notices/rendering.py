"""What a notice says: Jinja2 templates, text and HTML, per kind and language.

The packaged templates (`templates/<language>/<kind>.subject.txt`, `.txt`, `.html`) need no
database; an admin's `notice_templates` row for a kind and language is used instead of the
packaged one. The patron's language (`patrons.language`, ISO 639-2) picks the template, in
this order: the admin's, the packaged one, then the same two in English. HTML is rendered with
autoescape on; the subject is one line. Templates run sandboxed (an admin writes them) and
with strict undefined variables, so that a misspelt name fails loudly, at save time (see
`check_template`), rather than mailing a blank.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from jinja2 import PackageLoader, StrictUndefined, Template, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from shelfmark.notices.errors import InvalidNoticeTemplate
from shelfmark.notices.models import NOTICE_KINDS

DEFAULT_LANGUAGE = "eng"
# ISO 639-2 has two codes for a few languages (bibliographic and terminology); the packaged
# templates are filed under the bibliographic one, as MARC records and patrons use it.
ALIASES = {"fra": "fre", "deu": "ger", "nld": "dut"}
PARTS = ("subject", "text", "html")
_MONTHS = {
    "eng": ("January", "February", "March", "April", "May", "June", "July", "August",
            "September", "October", "November", "December"),
    "fre": ("janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août",
            "septembre", "octobre", "novembre", "décembre"),
}  # fmt: skip
_DECIMAL_COMMA = frozenset({"fre", "ger", "dut", "spa", "ita", "por"})


@dataclass(frozen=True, slots=True)
class TemplateText:
    """One kind's wording in one language (an admin's row, or the packaged files)."""

    subject: str
    text_body: str
    html_body: str | None


@dataclass(frozen=True, slots=True)
class Rendered:
    subject: str
    text: str
    html: str | None
    language: str  # the template's (the patron's, or English)


def language_of(code: str | None) -> str:
    code = (code or DEFAULT_LANGUAGE).strip().lower()
    return ALIASES.get(code, code)


def format_date(value: date | datetime | None, language: str) -> str:
    if value is None:
        return ""
    day = value.date() if isinstance(value, datetime) else value
    months = _MONTHS.get(language)
    if months is None:
        return day.isoformat()
    return f"{day.day} {months[day.month - 1]} {day.year}"


def format_money(value: Decimal | None, language: str) -> str:
    if value is None:
        return ""
    text = f"{value:.2f}"
    return text.replace(".", ",") if language in _DECIMAL_COMMA else text


def _environment(*, autoescape: bool) -> SandboxedEnvironment:
    return SandboxedEnvironment(
        loader=PackageLoader("shelfmark.notices", "templates"),
        autoescape=autoescape, undefined=StrictUndefined, trim_blocks=True,
        lstrip_blocks=True, keep_trailing_newline=True, auto_reload=False,
    )  # fmt: skip


_TEXT = _environment(autoescape=False)
_HTML = _environment(autoescape=True)
_PACKAGED: frozenset[tuple[str, str]] = frozenset(
    (name.split("/")[0], name.split("/")[1].removesuffix(".txt"))
    for name in _TEXT.list_templates()
    if name.count("/") == 1 and name.endswith(".txt") and not name.endswith(".subject.txt")
)


@dataclass(frozen=True, slots=True)
class _Compiled:
    subject: Template
    text: Template
    html: Template | None


def _compile(source: TemplateText) -> _Compiled:
    return _Compiled(
        subject=_TEXT.from_string(source.subject),
        text=_TEXT.from_string(source.text_body),
        html=_HTML.from_string(source.html_body) if source.html_body else None,
    )


def _packaged(kind: str, language: str) -> _Compiled:
    return _Compiled(
        subject=_TEXT.get_template(f"{language}/{kind}.subject.txt"),
        text=_TEXT.get_template(f"{language}/{kind}.txt"),
        html=_HTML.get_template(f"{language}/{kind}.html"),
    )


def packaged_languages() -> frozenset[str]:
    return frozenset(language for language, _ in _PACKAGED)


class Renderer:
    """Renders notices for one delivery run: each template compiled once for the run."""

    def __init__(self, overrides: Mapping[tuple[str, str], TemplateText] | None = None) -> None:
        self._overrides = dict(overrides or {})
        self._compiled: dict[tuple[str, str], tuple[_Compiled, str]] = {}

    def _template(self, kind: str, language: str) -> tuple[_Compiled, str]:
        """The template for `kind` in `language`, or in English; and the language it is in."""
        key = (kind, language)
        found = self._compiled.get(key)
        if found is not None:
            return found
        for candidate in dict.fromkeys((language, DEFAULT_LANGUAGE)):
            override = self._overrides.get((kind, candidate))
            if override is not None:
                found = (_compile(override), candidate)
                break
            if (candidate, kind) in _PACKAGED:
                found = (_packaged(kind, candidate), candidate)
                break
        if found is None:
            raise InvalidNoticeTemplate(f"There is no template for {kind} notices.")
        self._compiled[key] = found
        return found

    def render(self, kind: str, language: str | None, context: Mapping[str, Any]) -> Rendered:
        """The notice in the patron's `language` where there is a template in it; dates and
        amounts are written the way of the language the template is in."""
        compiled, used = self._template(kind, language_of(language))
        values = {**context, **helpers(used)}
        subject = " ".join(compiled.subject.render(values).split())
        text = compiled.text.render(values)
        html = compiled.html.render(values) if compiled.html is not None else None
        return Rendered(subject=subject, text=text, html=html, language=used)


def helpers(language: str) -> dict[str, Callable[[Any], str] | str]:
    """Formatting in the patron's language, for the templates: `date(x)`, `money(x)`."""
    return {
        "language": language,
        "date": lambda value: format_date(value, language),
        "money": lambda value: format_money(value, language),
    }


def sample_context(kind: str) -> dict[str, Any]:
    """What a notice of `kind` gives its template, with made-up values (for checking)."""
    today = date(2026, 3, 16)
    context: dict[str, Any] = {
        "kind": kind,
        "patron": {"name": "Ada Lovelace", "card_number": "21234000056789"},
        "library": {"name": "Main Library"},
        "notice": {"id": 1, "level": 1 if kind == "overdue" else None},
    }
    if kind in {"due-soon", "overdue"}:
        context["loan"] = {
            "title": "The Analytical Engine", "barcode": "31234000012345", "due_date": today,
            "days_left": 2, "days_overdue": 3,
        }  # fmt: skip
    elif kind in {"hold-ready", "hold-expired"}:
        context["hold"] = {
            "title": "The Analytical Engine", "pickup_branch": "Main Library",
            "ready_until": today,
        }  # fmt: skip
    else:
        context["fee"] = {
            "amount": Decimal("2.50"), "kind": "overdue", "description": "5 open day(s) late",
            "title": "The Analytical Engine",
        }  # fmt: skip
    return context


def check_template(kind: str, language: str, source: TemplateText) -> None:
    """Raise `InvalidNoticeTemplate` unless `source` compiles and renders a sample notice."""
    if kind not in NOTICE_KINDS:
        raise InvalidNoticeTemplate(f"There are no {kind!r} notices.")
    try:
        Renderer({(kind, language_of(language)): source}).render(
            kind, language, sample_context(kind)
        )
    except TemplateError as exc:
        raise InvalidNoticeTemplate(f"The {kind} template does not render: {exc}") from exc
