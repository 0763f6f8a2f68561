"""Circulation tables: rules, closed days, loans, holds, fees and payments.

The invariants that concurrent desks could otherwise break are the database's to keep:
one open loan per item, one active hold per (patron, title), one hold trapping a copy, one
overdue fine per loan and due date, one lost fee per loan (partial unique indexes below).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from shelfmark.catalog.models import Bib, Branch, Item
from shelfmark.circulation.errors import LoanAnonymised
from shelfmark.db import Base, BigId, UTCDateTime, utcnow
from shelfmark.patrons.models import Patron, PatronCategory

PERIOD_UNITS = ("days", "hours")
RENEW_FROM = ("due_date", "today")
HOLD_STATUSES = ("waiting", "in_transit", "ready", "fulfilled", "cancelled", "expired")
ACTIVE_HOLD_STATUSES = ("waiting", "in_transit", "ready")
TRAPPED_HOLD_STATUSES = ("in_transit", "ready")
HOLD_LEVELS = ("title", "item")
FEE_KINDS = ("overdue", "lost", "manual")
FEE_STATUSES = ("open", "paid", "waived")
PAYMENT_METHODS = ("cash", "card", "online", "other")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN (" + ", ".join(f"'{v}'" for v in values) + ")"


_ACTIVE_HOLD = _in("status", ACTIVE_HOLD_STATUSES)
_TRAPPED_HOLD = _in("status", TRAPPED_HOLD_STATUSES)

OVERDUE_NOTICE_LEVELS = 3
MAX_NOTICE_DAYS = 365
# A level of overdue notice needs the level before it, and comes later than it.
NOTICE_DAYS_CHECKS = (
    CheckConstraint(
        "due_soon_days IS NULL OR due_soon_days BETWEEN 1 AND 60", name="due_soon_days_in_range"
    ),
    CheckConstraint(
        f"overdue_notice_1 IS NULL OR overdue_notice_1 BETWEEN 1 AND {MAX_NOTICE_DAYS}",
        name="overdue_notice_1_in_range",
    ),
    CheckConstraint(
        "overdue_notice_2 IS NULL OR (overdue_notice_1 IS NOT NULL"
        f" AND overdue_notice_2 > overdue_notice_1 AND overdue_notice_2 <= {MAX_NOTICE_DAYS})",
        name="overdue_notice_2_in_order",
    ),
    CheckConstraint(
        "overdue_notice_3 IS NULL OR (overdue_notice_2 IS NOT NULL"
        f" AND overdue_notice_3 > overdue_notice_2 AND overdue_notice_3 <= {MAX_NOTICE_DAYS})",
        name="overdue_notice_3_in_order",
    ),
)


class CirculationRule(Base):
    """Loan terms for a scope (branch?, patron category?, item type?); NULL matches anything.

    The rule whose scope is all NULL is the default: it always exists (the migration seeds
    it) and cannot be deleted, so every checkout finds a rule. See `rules.resolve_rule` for
    which rule wins when several match.
    """

    __tablename__ = "circulation_rules"
    __table_args__ = (
        CheckConstraint(_in("period_unit", PERIOD_UNITS), name="period_unit"),
        CheckConstraint(_in("renew_from", RENEW_FROM), name="renew_from"),
        CheckConstraint("loan_period > 0", name="loan_period_positive"),
        CheckConstraint(
            "renewals_allowed >= 0 AND grace_days >= 0 AND hold_pickup_days > 0",
            name="counts_not_negative",
        ),
        CheckConstraint(
            "fine_per_day >= 0 AND (fine_cap IS NULL OR fine_cap >= 0)", name="fines_not_negative"
        ),
        *NOTICE_DAYS_CHECKS,
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    branch_id: Mapped[int | None] = mapped_column(ForeignKey("branches.id", ondelete="CASCADE"))
    patron_category_id: Mapped[int | None] = mapped_column(
        ForeignKey("patron_categories.id", ondelete="CASCADE")
    )
    item_type: Mapped[str | None] = mapped_column(String(32))
    loan_period: Mapped[int] = mapped_column(Integer)
    period_unit: Mapped[str] = mapped_column(String(8), default="days")
    renewals_allowed: Mapped[int] = mapped_column(Integer)
    max_loans: Mapped[int | None] = mapped_column(Integer)  # NULL: no limit
    max_holds: Mapped[int | None] = mapped_column(Integer)  # NULL: no limit
    fine_per_day: Mapped[Decimal] = mapped_column(Numeric(10, 2))
    fine_cap: Mapped[Decimal | None] = mapped_column(Numeric(10, 2))  # NULL: no cap
    grace_days: Mapped[int] = mapped_column(Integer, default=0)
    holdable: Mapped[bool] = mapped_column(Boolean, default=True)
    renew_from: Mapped[str] = mapped_column(String(16), default="due_date")
    hold_pickup_days: Mapped[int] = mapped_column(Integer, default=7)
    # Notices (shelfmark.notices): due soon this many days before the due date (NULL: none);
    # overdue levels 1, 2 and 3 this many days after it (NULL: no such level). No column
    # default: the ORM would put it in place of a NULL set on purpose; `RuleCreate` has them.
    due_soon_days: Mapped[int | None] = mapped_column(Integer)
    overdue_notice_1: Mapped[int | None] = mapped_column(Integer)
    overdue_notice_2: Mapped[int | None] = mapped_column(Integer)
    overdue_notice_3: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    branch: Mapped[Branch | None] = relationship(lazy="raise")
    patron_category: Mapped[PatronCategory | None] = relationship(lazy="raise")

    @property
    def is_default(self) -> bool:
        return self.branch_id is None and self.patron_category_id is None and self.item_type is None

    @property
    def overdue_notice_days(self) -> list[int]:
        """Days after the due date of the 1st, 2nd and 3rd overdue notices (as many as set)."""
        levels = (self.overdue_notice_1, self.overdue_notice_2, self.overdue_notice_3)
        return [days for days in levels if days is not None]

    @overdue_notice_days.setter
    def overdue_notice_days(self, days: Sequence[int]) -> None:
        first, second, third = [*days, None, None, None][:OVERDUE_NOTICE_LEVELS]
        self.overdue_notice_1, self.overdue_notice_2, self.overdue_notice_3 = first, second, third


# One rule per scope. NULLs are distinct in a plain unique index, so the index is on
# COALESCE()d keys (the same expression on PostgreSQL and SQLite).
Index(
    "uq_circulation_rules_scope",
    func.coalesce(CirculationRule.branch_id, 0),
    func.coalesce(CirculationRule.patron_category_id, 0),
    func.coalesce(CirculationRule.item_type, ""),
    unique=True,
)


class ClosedDay(Base):
    """A day or a range of days (inclusive) when a branch is closed; `branch_id` NULL closes
    every branch. `yearly` repeats the range on the same month and day every year."""

    __tablename__ = "closed_days"
    __table_args__ = (
        CheckConstraint("last_day >= first_day", name="range_in_order"),
        Index(None, "branch_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    branch_id: Mapped[int | None] = mapped_column(ForeignKey("branches.id", ondelete="CASCADE"))
    first_day: Mapped[date] = mapped_column(Date)
    last_day: Mapped[date] = mapped_column(Date)
    yearly: Mapped[bool] = mapped_column(Boolean, default=False)
    description: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    branch: Mapped[Branch | None] = relationship(lazy="raise")


class Loan(Base):
    """A copy lent to a patron. Open while `returned_at` is NULL; a lost copy's loan stays
    open (the patron still owes it) with `lost_at` set.

    A closed loan forgets its patron (`patron_id` NULL) once the retention period has passed,
    unless the patron keeps a reading history (see `circulation.history`); an open loan always
    names its patron (`open_has_patron`).
    """

    __tablename__ = "loans"
    __table_args__ = (
        Index(
            "uq_loans_item_id_open",
            "item_id",
            unique=True,
            postgresql_where=text("returned_at IS NULL"),
            sqlite_where=text("returned_at IS NULL"),
        ),
        Index(None, "patron_id", "returned_at"),
        Index(
            "ix_loans_due_at_open",
            "due_at",
            postgresql_where=text("returned_at IS NULL"),
            sqlite_where=text("returned_at IS NULL"),
        ),
        CheckConstraint("renewals >= 0", name="renewals_not_negative"),
        CheckConstraint("patron_id IS NOT NULL OR returned_at IS NOT NULL", name="open_has_patron"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="RESTRICT"))
    patron_id: Mapped[int | None] = mapped_column(ForeignKey("patrons.id", ondelete="RESTRICT"))
    branch_id: Mapped[int] = mapped_column(ForeignKey("branches.id", ondelete="RESTRICT"))
    checked_out_at: Mapped[datetime] = mapped_column(UTCDateTime)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    renewals: Mapped[int] = mapped_column(Integer, default=0)
    returned_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lost_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    item: Mapped[Item] = relationship(lazy="raise")
    patron: Mapped[Patron | None] = relationship(lazy="raise")
    branch: Mapped[Branch] = relationship(lazy="raise")

    @property
    def is_open(self) -> bool:
        return self.returned_at is None

    @property
    def borrower_id(self) -> int:
        """`patron_id` where the loan must still name its patron (an open loan always does)."""
        if self.patron_id is None:
            raise LoanAnonymised(f"Loan {self.id} no longer records who borrowed the copy.")
        return self.patron_id

    @property
    def borrower(self) -> Patron:
        """The loaded `patron`, where the loan must still name one (see `borrower_id`)."""
        if self.patron is None:
            raise LoanAnonymised(f"Loan {self.id} no longer records who borrowed the copy.")
        return self.patron


class Hold(Base):
    """A patron's request for a title (any copy) or for one copy.

    waiting → in_transit → ready → fulfilled, or cancelled / expired. While in transit or
    ready, `item_id` is the trapped copy (for a title-level hold it is set when trapped).
    The queue of a title is its waiting holds by id: placement locks the title, so ids are
    handed out in queue order.
    """

    __tablename__ = "holds"
    __table_args__ = (
        CheckConstraint(_in("status", HOLD_STATUSES), name="status"),
        CheckConstraint(_in("level", HOLD_LEVELS), name="level"),
        CheckConstraint("level = 'title' OR item_id IS NOT NULL", name="item_level_has_item"),
        CheckConstraint(
            "status NOT IN ('in_transit', 'ready') OR item_id IS NOT NULL", name="trapped_has_item"
        ),
        Index(
            "uq_holds_patron_id_bib_id_active",
            "patron_id",
            "bib_id",
            unique=True,
            postgresql_where=text(_ACTIVE_HOLD),
            sqlite_where=text(_ACTIVE_HOLD),
        ),
        Index(
            "uq_holds_item_id_trapped",
            "item_id",
            unique=True,
            postgresql_where=text(_TRAPPED_HOLD),
            sqlite_where=text(_TRAPPED_HOLD),
        ),
        Index(None, "bib_id", "status"),
        Index(None, "patron_id", "status"),
        Index(None, "status", "ready_until"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    level: Mapped[str] = mapped_column(String(8))
    bib_id: Mapped[int] = mapped_column(ForeignKey("bibs.id", ondelete="RESTRICT"))
    item_id: Mapped[int | None] = mapped_column(ForeignKey("items.id", ondelete="RESTRICT"))
    patron_id: Mapped[int] = mapped_column(ForeignKey("patrons.id", ondelete="RESTRICT"))
    pickup_branch_id: Mapped[int] = mapped_column(ForeignKey("branches.id", ondelete="RESTRICT"))
    status: Mapped[str] = mapped_column(String(16), default="waiting")
    placed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ready_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ready_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The loan that fulfilled the hold: unique, so a loan fulfils at most one hold.
    loan_id: Mapped[int | None] = mapped_column(
        ForeignKey("loans.id", ondelete="RESTRICT"), unique=True
    )

    bib: Mapped[Bib] = relationship(lazy="raise")
    item: Mapped[Item | None] = relationship(lazy="raise")
    patron: Mapped[Patron] = relationship(lazy="raise")
    pickup_branch: Mapped[Branch] = relationship(lazy="raise")


class Fee(Base):
    """Money a patron owes. `outstanding` = amount - payments - `waived`, kept on the row
    (under its row lock) so that a balance is one SUM."""

    __tablename__ = "fees"
    __table_args__ = (
        CheckConstraint(_in("kind", FEE_KINDS), name="kind"),
        CheckConstraint(_in("status", FEE_STATUSES), name="status"),
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint(
            "outstanding >= 0 AND waived >= 0 AND outstanding + waived <= amount",
            name="outstanding_in_range",
        ),
        # One overdue fine per loan and due date (a renewal charges what accrued so far, the
        # checkin what accrued since), one lost fee per loan: a retried checkin can't double it.
        Index(
            "uq_fees_loan_id_due_at_overdue",
            "loan_id",
            "due_at",
            unique=True,
            postgresql_where=text("kind = 'overdue'"),
            sqlite_where=text("kind = 'overdue'"),
        ),
        Index(
            "uq_fees_loan_id_lost",
            "loan_id",
            unique=True,
            postgresql_where=text("kind = 'lost'"),
            sqlite_where=text("kind = 'lost'"),
        ),
        Index(None, "patron_id", "status"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    patron_id: Mapped[int] = mapped_column(ForeignKey("patrons.id", ondelete="RESTRICT"))
    loan_id: Mapped[int | None] = mapped_column(ForeignKey("loans.id", ondelete="RESTRICT"))
    item_id: Mapped[int | None] = mapped_column(ForeignKey("items.id", ondelete="SET NULL"))
    kind: Mapped[str] = mapped_column(String(16))
    amount: Mapped[Decimal] = mapped_column(Numeric(10, 2))
    outstanding: Mapped[Decimal] = mapped_column(Numeric(10, 2))
    waived: Mapped[Decimal] = mapped_column(Numeric(10, 2), default=Decimal("0.00"))
    status: Mapped[str] = mapped_column(String(8), default="open")
    description: Mapped[str | None] = mapped_column(Text)
    # For an overdue fine: the due date it was charged for.
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    waive_reason: Mapped[str | None] = mapped_column(Text)

    patron: Mapped[Patron] = relationship(lazy="raise")
    payments: Mapped[list[Payment]] = relationship(lazy="raise", order_by="Payment.id")


class Payment(Base):
    """Money received against one fee (a part or all of what is outstanding)."""

    __tablename__ = "payments"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint(_in("method", PAYMENT_METHODS), name="method"),
        Index(None, "fee_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    fee_id: Mapped[int] = mapped_column(ForeignKey("fees.id", ondelete="RESTRICT"))
    amount: Mapped[Decimal] = mapped_column(Numeric(10, 2))
    method: Mapped[str] = mapped_column(String(16))
    note: Mapped[str | None] = mapped_column(Text)
    paid_at: Mapped[datetime] = mapped_column(UTCDateTime)
    received_by: Mapped[str] = mapped_column(String(150))
