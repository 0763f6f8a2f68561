"""/admin views of the circulation set-up: patron categories, patrons, the rule matrix
(branch, patron category and item type), closed days, and fees (read-only).

Item types have no table of their own: a rule names the `item_type` string its copies carry
(book, dvd…), so a rule for a type no copy has yet is allowed, and costs nothing.
Money moves only through the circulation services (charge, pay, waive: each with its
payment record and row lock), so fees here can be read, never written.
"""

from __future__ import annotations

from typing import Any, ClassVar

from sqladmin.filters import BooleanFilter, StaticValuesFilter
from sqlalchemy import Select, or_
from sqlalchemy.orm import aliased
from starlette.requests import Request
from wtforms import Form, PasswordField, SelectField
from wtforms.validators import Length, NumberRange, Optional, Regexp

from shelfmark.admin_base import (
    CODE_PATTERN,
    NOT_NEGATIVE,
    KeyFilter,
    ShelfmarkView,
    choices,
    code_or,
    not_before,
    value_or,
)
from shelfmark.catalog.models import Branch
from shelfmark.circulation.errors import DefaultRuleProtected
from shelfmark.circulation.models import (
    FEE_KINDS,
    FEE_STATUSES,
    PERIOD_UNITS,
    RENEW_FROM,
    CirculationRule,
    ClosedDay,
    Fee,
)
from shelfmark.db import IN_USE
from shelfmark.patrons.models import NOTICE_CHANNELS, Patron, PatronCategory

CODE = Regexp(CODE_PATTERN, message="Letters, digits, '.', '_' and '-' only.")


class CategoryForm(Form):
    validate_code = CODE
    validate_fee_block_threshold = NOT_NEGATIVE


class PatronCategoryAdmin(ShelfmarkView, model=PatronCategory):
    name = "Patron category"
    name_plural = "Patron categories"
    icon = "fa-solid fa-id-card"
    column_list: ClassVar = [
        PatronCategory.code, PatronCategory.name, PatronCategory.fee_block_threshold,
    ]  # fmt: skip
    column_labels: ClassVar = {PatronCategory.fee_block_threshold: "Blocked when owing over"}
    column_formatters: ClassVar = {
        PatronCategory.fee_block_threshold: value_or("fee_block_threshold", "never blocked")
    }
    column_searchable_list: ClassVar = [PatronCategory.code, PatronCategory.name]
    column_sortable_list: ClassVar = [PatronCategory.code, PatronCategory.name]
    column_default_sort: ClassVar = "code"
    form_columns: ClassVar = [
        PatronCategory.code, PatronCategory.name, PatronCategory.fee_block_threshold,
    ]  # fmt: skip
    form_args: ClassVar = {
        "fee_block_threshold": {
            "label": "Blocked when owing over",
            "description": "Patrons owing more are refused loans, renewals and holds. "
            "Empty: never blocked.",
        }
    }
    form_base_class = CategoryForm
    constraint_messages: ClassVar = {
        "uq_patron_categories_code": "A patron category with this code exists.",
        "ck_patron_categories_threshold_not_negative": "The threshold cannot be negative.",
        IN_USE: "Patrons belong to this category: move them to another category first.",
    }


class PatronForm(Form):
    """The API's patterns (`PatronCreate`), checked beside each field."""

    validate_card_number = Regexp(r"^[!-~]+$", message="Printable characters, no spaces.")
    validate_email = Regexp(r"^[^@\s]+@[^@\s]+$", message="Not an e-mail address.")
    validate_phone = Length(min=3, max=40)
    validate_language = Regexp(r"^[a-z]{3}$", message="Three lowercase letters (ISO 639-2).")
    pin = PasswordField(
        "New PIN",
        [Optional(), Regexp(r"^\d{4,12}$", message="4 to 12 digits.")],
        description="For the self-check machines. Stored hashed, never shown; "
        "leave empty to keep the current PIN.",
    )


class PatronAdmin(ShelfmarkView, model=Patron):
    icon = "fa-solid fa-address-card"
    column_list: ClassVar = [
        Patron.card_number, Patron.name, Patron.category, Patron.home_branch,
        Patron.expires_on, Patron.notice_channel,
    ]  # fmt: skip
    column_details_list: ClassVar = [
        Patron.id, Patron.card_number, Patron.name, Patron.email, Patron.phone, Patron.category,
        Patron.home_branch, Patron.expires_on, Patron.notice_channel, Patron.language,
        Patron.active_blocks, Patron.created_at, Patron.updated_at,
    ]  # fmt: skip
    column_export_list: ClassVar = [
        Patron.card_number, Patron.name, Patron.email, Patron.phone, Patron.expires_on,
        Patron.notice_channel, Patron.language,
    ]  # fmt: skip
    column_formatters: ClassVar = {
        Patron.category: code_or("category", ""),
        Patron.home_branch: code_or("home_branch", ""),
        Patron.active_blocks: lambda patron, _: [block.reason for block in patron.active_blocks],
    }
    non_link_related_fields: ClassVar = [Patron.active_blocks]
    column_formatters_detail: ClassVar = column_formatters
    column_searchable_list: ClassVar = [Patron.card_number, Patron.name, Patron.email]
    column_sortable_list: ClassVar = [Patron.card_number, Patron.name, Patron.expires_on]
    column_default_sort: ClassVar = "card_number"
    column_filters: ClassVar = [
        KeyFilter(Patron.category_id, title="Category", label=PatronCategory.code),
        KeyFilter(Patron.home_branch_id, title="Home branch", label=Branch.code),
        StaticValuesFilter(Patron.notice_channel, choices(NOTICE_CHANNELS), title="Notices by"),
    ]
    form_columns: ClassVar = [
        Patron.card_number, Patron.name, Patron.email, Patron.phone, Patron.category,
        Patron.home_branch, Patron.expires_on, Patron.notice_channel, Patron.language,
    ]  # fmt: skip
    form_overrides: ClassVar = {"notice_channel": SelectField}
    form_args: ClassVar = {
        "notice_channel": {"choices": choices(NOTICE_CHANNELS), "label": "Notices by"},
        "home_branch": {"label": "Home branch"},
        "expires_on": {"label": "Card expires on"},
        "language": {"description": "ISO 639-2 code (eng, ger…); empty: the library's"},
    }
    form_base_class = PatronForm
    secret_fields: ClassVar = {"pin": "pin_hash"}
    constraint_messages: ClassVar = {
        "uq_patrons_card_number": "This card number belongs to another patron.",
        IN_USE: "The patron has loans, holds or fees on record, so cannot be deleted.",
    }


# --- the rule matrix --------------------------------------------------------------------

SCOPE = ("branch", "patron_category", "item_type")
TERMS = (
    "loan_period", "period_unit", "renewals_allowed", "renew_from", "max_loans", "max_holds",
    "fine_per_day", "fine_cap", "grace_days", "holdable", "hold_pickup_days",
)  # fmt: skip
COUNT = NumberRange(min=0, max=100_000, message="Between 0 and 100,000.")


class RuleForm(Form):
    """The API's limits (`RuleCreate`), checked beside each field."""

    validate_item_type = CODE
    validate_loan_period = NumberRange(min=1, max=10_000, message="Between 1 and 10,000.")
    validate_renewals_allowed = COUNT
    validate_max_loans = COUNT
    validate_max_holds = COUNT
    validate_grace_days = COUNT
    validate_fine_per_day = NOT_NEGATIVE
    validate_fine_cap = NOT_NEGATIVE
    validate_hold_pickup_days = NumberRange(min=1, max=365, message="Between 1 and 365 days.")


class CirculationRuleAdmin(ShelfmarkView, model=CirculationRule):
    """The terms of each (branch?, patron category?, item type?) scope; see
    `circulation.rules` for which rule wins. A rule's scope is fixed once made (as in the
    API), and the default rule (no scope) can be changed, never deleted."""

    icon = "fa-solid fa-scale-balanced"
    column_list: ClassVar = [
        CirculationRule.id, CirculationRule.branch, CirculationRule.patron_category,
        CirculationRule.item_type, CirculationRule.loan_period, CirculationRule.period_unit,
        CirculationRule.renewals_allowed, CirculationRule.max_loans, CirculationRule.max_holds,
        CirculationRule.fine_per_day, CirculationRule.fine_cap, CirculationRule.holdable,
    ]  # fmt: skip
    column_details_exclude_list: ClassVar = [
        CirculationRule.branch_id, CirculationRule.patron_category_id,
    ]  # fmt: skip
    column_labels: ClassVar = {
        CirculationRule.patron_category: "Patron category",
        CirculationRule.renewals_allowed: "Renewals",
        CirculationRule.period_unit: "Unit",
    }
    column_formatters: ClassVar = {
        CirculationRule.branch: code_or("branch", "any"),
        CirculationRule.patron_category: code_or("patron_category", "any"),
        CirculationRule.item_type: value_or("item_type", "any"),
        CirculationRule.max_loans: value_or("max_loans", "no limit"),
        CirculationRule.max_holds: value_or("max_holds", "no limit"),
        CirculationRule.fine_cap: value_or("fine_cap", "no cap"),
    }
    column_formatters_detail: ClassVar = column_formatters
    column_filters: ClassVar = [
        KeyFilter(CirculationRule.branch_id, title="Branch", label=Branch.code,
                  open_label="Any branch"),
        KeyFilter(CirculationRule.patron_category_id, title="Patron category",
                  label=PatronCategory.code, open_label="Any category"),
        KeyFilter(CirculationRule.item_type, title="Item type", open_label="Any item type"),
        BooleanFilter(CirculationRule.holdable, title="Holdable"),
    ]  # fmt: skip
    # Searched by `search_query` below; listed here so that the search box shows.
    column_searchable_list: ClassVar = [CirculationRule.item_type]
    column_sortable_list: ClassVar = [
        CirculationRule.id, CirculationRule.item_type, CirculationRule.loan_period,
        CirculationRule.fine_per_day,
    ]  # fmt: skip
    column_default_sort: ClassVar = "id"
    form_columns: ClassVar = [*SCOPE, *TERMS]
    form_create_rules: ClassVar = [*SCOPE, *TERMS]
    form_edit_rules: ClassVar = list(TERMS)
    form_overrides: ClassVar = {"period_unit": SelectField, "renew_from": SelectField}
    form_args: ClassVar = {
        "branch": {"blank_text": "Any branch"},
        "patron_category": {"blank_text": "Any category", "label": "Patron category"},
        "item_type": {"description": "As on the copies (book, dvd…); empty: any item type."},
        "loan_period": {"description": "In the unit below."},
        "period_unit": {"choices": choices(PERIOD_UNITS), "label": "Unit"},
        "renewals_allowed": {"label": "Renewals allowed"},
        "renew_from": {
            "choices": choices(RENEW_FROM),
            "description": "A renewal's new due date counts from the old one, or from today.",
        },
        "max_loans": {"description": "Empty: no limit."},
        "max_holds": {"description": "Empty: no limit."},
        "fine_cap": {"description": "Per loan. Empty: no cap."},
        "grace_days": {"description": "Days late before a fine starts."},
        "hold_pickup_days": {"label": "Days to pick up a hold"},
    }
    form_base_class = RuleForm
    constraint_messages: ClassVar = {
        "uq_circulation_rules_scope": "A rule for this branch, patron category and item type "
        "exists; change that one instead.",
        "ck_circulation_rules_loan_period_positive": "The loan period must be at least 1.",
        "ck_circulation_rules_counts_not_negative": "Renewals and grace days cannot be "
        "negative; the days to pick up a hold must be at least 1.",
        "ck_circulation_rules_fines_not_negative": "Fines and fine caps cannot be negative.",
        "ck_circulation_rules_period_unit": "The unit must be days or hours.",
        "ck_circulation_rules_renew_from": "Renewals count from the due date or from today.",
    }

    def search_placeholder(self) -> str:
        return "Branch, patron category or item type"

    def search_query(self, stmt: Select[Any], term: str) -> Select[Any]:
        """Scope keys by code or name; outer joins, so that rules open on a key still match
        on the others (sqladmin's own relationship search joins inner)."""
        branch, category = aliased(Branch), aliased(PatronCategory)
        return (
            stmt.outerjoin(branch, CirculationRule.branch_id == branch.id)
            .outerjoin(category, CirculationRule.patron_category_id == category.id)
            .where(
                or_(
                    CirculationRule.item_type.icontains(term, autoescape=True),
                    branch.code.icontains(term, autoescape=True),
                    branch.name.icontains(term, autoescape=True),
                    category.code.icontains(term, autoescape=True),
                    category.name.icontains(term, autoescape=True),
                )
            )
        )

    async def on_model_delete(self, model: Any, request: Request) -> None:
        if model.is_default:
            raise DefaultRuleProtected("The default rule always exists; change its terms instead.")


# --- calendars --------------------------------------------------------------------------


class ClosedDayForm(Form):
    validate_last_day = not_before("first_day", "The last day cannot be before the first day.")


class ClosedDayAdmin(ShelfmarkView, model=ClosedDay):
    """Closed days (or ranges) per branch, or for every branch; due dates skip them."""

    name = "Closed day"
    icon = "fa-solid fa-calendar-xmark"
    column_list: ClassVar = [
        ClosedDay.branch, ClosedDay.first_day, ClosedDay.last_day, ClosedDay.yearly,
        ClosedDay.description,
    ]  # fmt: skip
    column_details_exclude_list: ClassVar = [ClosedDay.branch_id]
    column_formatters: ClassVar = {ClosedDay.branch: code_or("branch", "every branch")}
    column_formatters_detail: ClassVar = column_formatters
    column_filters: ClassVar = [
        KeyFilter(ClosedDay.branch_id, title="Branch", label=Branch.code,
                  open_label="Every branch"),
        BooleanFilter(ClosedDay.yearly, title="Every year"),
    ]  # fmt: skip
    column_searchable_list: ClassVar = [ClosedDay.description]
    column_sortable_list: ClassVar = [ClosedDay.first_day, ClosedDay.last_day]
    column_default_sort: ClassVar = "first_day"
    form_columns: ClassVar = [
        ClosedDay.branch, ClosedDay.first_day, ClosedDay.last_day, ClosedDay.yearly,
        ClosedDay.description,
    ]  # fmt: skip
    form_args: ClassVar = {
        "branch": {"blank_text": "Every branch"},
        "last_day": {"description": "The same as the first day for a single day."},
        "yearly": {"label": "Every year", "description": "On the same dates each year."},
    }
    form_base_class = ClosedDayForm
    constraint_messages: ClassVar = {
        "ck_closed_days_range_in_order": "The last day cannot be before the first day.",
    }


# --- fees -------------------------------------------------------------------------------


class FeeAdmin(ShelfmarkView, model=Fee):
    """Read-only: charges, payments and waivers go through the circulation services."""

    icon = "fa-solid fa-coins"
    can_create = False
    can_edit = False
    can_delete = False
    column_list: ClassVar = [
        Fee.id, Fee.patron, Fee.kind, Fee.amount, Fee.outstanding, Fee.waived, Fee.status,
        Fee.created_at,
    ]  # fmt: skip
    column_details_list: ClassVar = [
        Fee.id, Fee.patron, Fee.kind, Fee.description, Fee.amount, Fee.outstanding,
        Fee.waived, Fee.waive_reason, Fee.status, Fee.loan_id, Fee.item_id, Fee.due_at,
        Fee.created_at, Fee.closed_at, Fee.payments,
    ]  # fmt: skip
    column_formatters: ClassVar = {
        Fee.patron: lambda fee, _: f"{fee.patron.card_number} — {fee.patron.name}",
        Fee.payments: lambda fee, _: [
            f"{p.amount} by {p.method} on {p.paid_at:%Y-%m-%d} ({p.received_by})"
            for p in fee.payments
        ],
    }
    non_link_related_fields: ClassVar = [Fee.payments]
    column_formatters_detail: ClassVar = column_formatters
    column_searchable_list: ClassVar = ["patron.card_number", "patron.name", Fee.description]
    column_sortable_list: ClassVar = [Fee.id, Fee.amount, Fee.outstanding, Fee.created_at]
    column_default_sort: ClassVar = [(Fee.id, True)]
    column_filters: ClassVar = [
        StaticValuesFilter(Fee.status, choices(FEE_STATUSES), title="Status"),
        StaticValuesFilter(Fee.kind, choices(FEE_KINDS), title="Kind"),
    ]


CIRCULATION_VIEWS: tuple[type[ShelfmarkView], ...] = (
    PatronCategoryAdmin, PatronAdmin, CirculationRuleAdmin, ClosedDayAdmin, FeeAdmin,
)  # fmt: skip
