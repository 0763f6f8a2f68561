"""What every /admin view shares: refused changes read as form errors, choices labelled by
code and name, filters that survive bad input, and write-only secrets (passwords, PINs).

sqladmin writes the models directly, and the database guards the invariants: what it refuses
comes back as an IntegrityError, whose text (SQL and parameters) sqladmin would show as is.
Each view names its constraints in words instead, and the form shows those words. Checks
that fit a field (a range, a pattern) are also made by the form, beside the field, before
anything reaches the database: as `validate_<field>` attributes of the view's
`form_base_class`, which WTForms runs after the field's own validators. (Not as validators
in `form_args`: sqladmin appends its own to those lists, which would grow on every form.)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

from sqladmin import ModelView
from sqladmin.fields import JSONField
from sqladmin.forms import ModelConverter, converts
from sqlalchemy import Select, false, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import ColumnProperty, InstrumentedAttribute, RelationshipProperty
from starlette.requests import Request
from wtforms import Field, Form, ValidationError
from wtforms.validators import NumberRange

from shelfmark.auth import service as auth_service
from shelfmark.catalog.models import Bib, Branch
from shelfmark.db import IN_USE, NOT_NULL, constraint_of
from shelfmark.errors import Conflict
from shelfmark.patrons.models import Patron, PatronCategory

# What the form shows when a view names no message of its own for a refusal.
_FALLBACK = {
    IN_USE: "Other records still refer to this one, so it cannot be deleted.",
    NOT_NULL: "A required field is empty.",
}
CODE_PATTERN = r"^[A-Za-z0-9_.-]+$"  # as the API's `Code`


class ChangeRefused(Conflict):
    code = "admin-change-refused"
    title = "Change refused"


def refusal_message(name: str, messages: Mapping[str, str]) -> str:
    if name in messages:
        return messages[name]
    if name in _FALLBACK:
        return _FALLBACK[name]
    if name.startswith("uq_"):
        return "Another record already has this value; it must be unique."
    return f"A value is out of its allowed range ({name})."


# --- choices and list cells --------------------------------------------------------------

CHOICE_LABELS: Mapping[type[Any], Callable[[Any], str]] = {
    Branch: lambda branch: f"{branch.code} — {branch.name}",
    PatronCategory: lambda category: f"{category.code} — {category.name}",
    Patron: lambda patron: f"{patron.card_number} — {patron.name}",
    Bib: lambda bib: f"{bib.title} (#{bib.id})",
}


class ExactJSONField(JSONField):
    """sqladmin's JSON field shows any empty value (`[]`, `0`, `""`) as `{}`: a bib saved
    unchanged had its empty lists of ISBNs or series turned into objects, which no reader
    of a bib expects. This one shows what is stored."""

    def _value(self) -> str:
        if self.raw_data:
            return str(self.raw_data[0])
        if self.data is None:
            return ""
        return json.dumps(self.data, ensure_ascii=False)


class LabelledConverter(ModelConverter):
    """Relationship selects list `code — name`, not Python's `<Branch object at 0x…>`; JSON
    columns as they are stored (`ExactJSONField`)."""

    @converts("JSON", "JSONB")  # type: ignore[untyped-decorator]  # sqladmin's, untyped
    def conv_json(self, model: type, prop: ColumnProperty[Any], kwargs: dict[str, Any]) -> Any:
        return ExactJSONField(**kwargs)

    async def _prepare_select_options(
        self, prop: RelationshipProperty[Any], session_maker: Any
    ) -> list[tuple[str, Any]]:
        target = prop.mapper.class_
        label = CHOICE_LABELS.get(target)
        if label is None:
            return await super()._prepare_select_options(prop, session_maker)
        async with session_maker() as session:
            rows = (await session.scalars(select(target).order_by(target.id))).all()
        return [(str(row.id), label(row)) for row in rows]


def code_or(relation: str, open_label: str) -> Callable[[Any, Any], str]:
    """A list cell for a nullable reference: its code, or what leaving it open means."""

    def cell(model: Any, _name: Any) -> str:
        related = getattr(model, relation)
        return str(related.code) if related is not None else open_label

    return cell


def value_or(attribute: str, open_label: str) -> Callable[[Any, Any], str]:
    def cell(model: Any, _name: Any) -> str:
        value = getattr(model, attribute)
        return open_label if value is None else str(value)

    return cell


# --- form checks ------------------------------------------------------------------------

NOT_NEGATIVE = NumberRange(min=0, message="Must be 0 or more.")


def not_before(other: str, message: str) -> Callable[[Form, Field], None]:
    """A date field that may not come before the form's `other` date field."""

    def check(form: Form, field: Field) -> None:
        start = form[other].data
        if field.data is not None and start is not None and field.data < start:
            raise ValidationError(message)

    return check


# --- filters ----------------------------------------------------------------------------

ALL = "__all"
OPEN = "__open"


class KeyFilter:
    """Filter a list on one key: each of its values, or (with `open_label`) the rows that
    leave the key open (NULL: a rule or a closed day that applies to any).

    Unlike sqladmin's ForeignKeyFilter, a value that is not a key (typed into the URL)
    filters everything out instead of failing the page.
    """

    has_operator = False
    template = "sqladmin/filters/lookup_filter.html"
    default_value: Any = None  # no default: all rows

    def __init__(
        self,
        column: InstrumentedAttribute[Any],
        *,
        title: str,
        label: InstrumentedAttribute[Any] | None = None,
        open_label: str | None = None,
    ) -> None:
        self.column = column
        self.label = label
        self.title = title
        self.parameter_name = column.key
        self.open_label = open_label

    def _choices(self) -> Select[Any]:
        if self.label is None:
            return (
                select(self.column, self.column)
                .where(self.column.is_not(None))
                .distinct()
                .order_by(self.column)
            )
        (foreign_key,) = self.column.property.columns[0].foreign_keys
        return select(foreign_key.column, self.label).order_by(self.label)

    async def lookups(
        self, request: Request, model: Any, run_query: Callable[[Select[Any]], Any]
    ) -> list[tuple[str, str]]:
        lookups = [(ALL, "All")]
        if self.open_label is not None:
            lookups.append((OPEN, self.open_label))
        return lookups + [(str(key), str(label)) for key, label in await run_query(self._choices())]

    async def get_filtered_query(self, query: Select[Any], value: Any, model: Any) -> Select[Any]:
        if value in (None, "", ALL):
            return query
        if value == OPEN:
            return query.where(self.column.is_(None))
        if self.label is not None:
            if not str(value).isdigit():
                return query.where(false())
            value = int(value)
        return query.where(self.column == value)


# --- the base view ----------------------------------------------------------------------


class ShelfmarkView(ModelView):
    """A model view whose refused writes are readable, and whose secrets are write-only.

    `constraint_messages`: constraint name (or `IN_USE`, `NOT_NULL`) → what the form says.
    `secret_fields`: form field → column for its argon2 hash (the auth service's). The
    field is never shown filled in, an empty one keeps the secret, and the audit trail
    records that it changed, never its value.
    """

    form_converter = LabelledConverter
    constraint_messages: ClassVar[Mapping[str, str]] = {}
    secret_fields: ClassVar[Mapping[str, str]] = {}

    @contextmanager
    def _refusals_read(self) -> Iterator[None]:
        try:
            yield
        except IntegrityError as exc:
            message = refusal_message(constraint_of(exc), self.constraint_messages)
            raise ChangeRefused(message) from exc

    async def insert_model(self, request: Request, data: dict[str, Any]) -> Any:
        with self._refusals_read():
            return await super().insert_model(request, data)

    async def update_model(self, request: Request, pk: str, data: dict[str, Any]) -> Any:
        with self._refusals_read():
            return await super().update_model(request, pk, data)

    async def delete_model(self, request: Request, pk: Any) -> None:
        with self._refusals_read():
            await super().delete_model(request, pk)

    async def on_model_change(
        self, data: dict[str, Any], model: Any, is_created: bool, request: Request
    ) -> None:
        changed: list[str] = []
        for field, column in self.secret_fields.items():
            value = data.pop(field, None)  # not a column: sqladmin must not set it
            if value:
                setattr(model, column, auth_service.hash_password(value))
                changed.append(field)
        request.state.admin_secrets_changed = changed

    async def after_model_change(
        self, data: dict[str, Any], model: Any, is_created: bool, request: Request
    ) -> None:
        # Runs before sqladmin hands `data` to the audit backend.
        for field in getattr(request.state, "admin_secrets_changed", ()):
            data[field] = "(changed)"


def choices(values: Sequence[str]) -> list[tuple[str, str]]:
    return [(value, value.replace("_", " ")) for value in values]
