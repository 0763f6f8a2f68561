"""/admin views of notices: the wording of each kind of notice per language (editable), and
the notices themselves (read-only: they are written by circulation and the daily runs, and
moved only by their delivery).

A template row replaces the packaged wording of its kind in its language (see
`shelfmark.notices.rendering`). It is checked before it is saved: it must compile and render
a sample notice of its kind, so that a misspelt variable is a form error, not a blank mail.
"""

from __future__ import annotations

from typing import Any, ClassVar

from sqladmin.filters import StaticValuesFilter
from starlette.requests import Request
from wtforms import Form, SelectField
from wtforms.validators import Regexp

from shelfmark.admin_base import ShelfmarkView, choices
from shelfmark.notices.models import NOTICE_KINDS, NOTICE_STATUSES, Notice, NoticeTemplate
from shelfmark.notices.rendering import TemplateText, check_template


class NoticeTemplateForm(Form):
    validate_language = Regexp(
        r"^[a-z]{3}$", message="An ISO 639-2 code: three lowercase letters (eng, fre)."
    )


class NoticeTemplateAdmin(ShelfmarkView, model=NoticeTemplate):
    """Each kind of notice, in a language, in an admin's words (Jinja2; HTML autoescaped).
    The variables are those of the packaged templates in src/shelfmark/notices/templates."""

    name = "Notice template"
    name_plural = "Notice templates"
    icon = "fa-solid fa-envelope-open-text"
    column_list: ClassVar = [
        NoticeTemplate.kind, NoticeTemplate.language, NoticeTemplate.subject,
        NoticeTemplate.updated_at,
    ]  # fmt: skip
    column_labels: ClassVar = {
        NoticeTemplate.text_body: "Text", NoticeTemplate.html_body: "HTML (empty: text only)",
    }  # fmt: skip
    column_searchable_list: ClassVar = [NoticeTemplate.kind, NoticeTemplate.language]
    column_default_sort: ClassVar = [(NoticeTemplate.kind, False)]
    form_columns: ClassVar = [
        NoticeTemplate.kind, NoticeTemplate.language, NoticeTemplate.subject,
        NoticeTemplate.text_body, NoticeTemplate.html_body,
    ]  # fmt: skip
    form_base_class = NoticeTemplateForm
    form_overrides: ClassVar = {"kind": SelectField}
    form_args: ClassVar = {"kind": {"choices": choices(NOTICE_KINDS)}}
    form_widget_args: ClassVar = {"text_body": {"rows": 14}, "html_body": {"rows": 14}}
    constraint_messages: ClassVar = {
        "uq_notice_templates_kind_language": (
            "This kind of notice has a template in this language already: change that one."
        ),
        "ck_notice_templates_kind": "There is no such kind of notice.",
    }

    async def on_model_change(
        self, data: dict[str, Any], model: Any, is_created: bool, request: Request
    ) -> None:
        await super().on_model_change(data, model, is_created, request)
        if not data.get("html_body"):
            data["html_body"] = None

        def value(name: str) -> Any:
            return data[name] if name in data else getattr(model, name, None)

        source = TemplateText(value("subject") or "", value("text_body") or "", value("html_body"))
        check_template(value("kind") or "", value("language") or "", source)


class NoticeAdmin(ShelfmarkView, model=Notice):
    """Read-only: the outbox, as delivery left it."""

    icon = "fa-solid fa-envelope"
    can_create = False
    can_edit = False
    can_delete = False
    column_list: ClassVar = [
        Notice.id, Notice.kind, Notice.patron_id, Notice.object_id, Notice.level,
        Notice.status, Notice.attempts, Notice.created_at, Notice.sent_at,
    ]  # fmt: skip
    column_details_list: ClassVar = [
        Notice.id, Notice.kind, Notice.patron_id, Notice.object_id, Notice.level,
        Notice.due_at, Notice.channel, Notice.dedupe_key, Notice.status, Notice.attempts,
        Notice.last_error, Notice.reason, Notice.created_at, Notice.claimed_at, Notice.sent_at,
    ]  # fmt: skip
    column_sortable_list: ClassVar = [Notice.id, Notice.created_at, Notice.sent_at]
    column_default_sort: ClassVar = [(Notice.id, True)]
    column_searchable_list: ClassVar = [Notice.dedupe_key]
    column_filters: ClassVar = [
        StaticValuesFilter(Notice.status, choices(NOTICE_STATUSES), title="Status"),
        StaticValuesFilter(Notice.kind, choices(NOTICE_KINDS), title="Kind"),
    ]


NOTICE_VIEWS: tuple[type[ShelfmarkView], ...] = (NoticeTemplateAdmin, NoticeAdmin)
