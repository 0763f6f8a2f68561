from __future__ import annotations

import itertools
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    model_validator,
)

from shelfmark.catalog.schemas import Barcode, Code, Strict
from shelfmark.patrons.schemas import CardNumber

PeriodUnit = Literal["days", "hours"]
RenewFrom = Literal["due_date", "today"]
HoldStatus = Literal["waiting", "in_transit", "ready", "fulfilled", "cancelled", "expired"]
FeeKind = Literal["overdue", "lost", "manual"]
FeeStatus = Literal["open", "paid", "waived"]
PaymentMethod = Literal["cash", "card", "online", "other"]
NextStep = Literal["reshelve", "hold_shelf", "transit"]
Money = Annotated[Decimal, Field(ge=0, max_digits=10, decimal_places=2)]
PositiveMoney = Annotated[Decimal, Field(gt=0, max_digits=10, decimal_places=2)]
Count = Annotated[int, Field(ge=0, le=100_000)]
Reason = Annotated[str, Field(min_length=1, max_length=2000)]
DueSoonDays = Annotated[int, Field(ge=1, le=60)]


def _increasing(days: list[int]) -> list[int]:
    if any(later <= earlier for earlier, later in itertools.pairwise(days)):
        raise ValueError("each overdue notice comes later than the one before it")
    return days


OverdueNoticeDays = Annotated[
    list[Annotated[int, Field(ge=1, le=365)]], Field(max_length=3), AfterValidator(_increasing)
]


class Override(Strict):
    """A librarian's decision to lend (renew, hold) despite a refusal that allows it."""

    reason: Reason


# --- rules ------------------------------------------------------------------------------


class RuleCreate(Strict):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "branch": "MAIN",
                    "category": "CHILD",
                    "item_type": "dvd",
                    "loan_period": 7,
                    "period_unit": "days",
                    "renewals_allowed": 1,
                    "max_loans": 5,
                    "fine_per_day": "0.50",
                    "fine_cap": "5.00",
                    "grace_days": 1,
                }
            ]
        }
    )

    branch: Code | None = Field(default=None, description="Branch code; null matches any")
    category: Code | None = Field(default=None, description="Patron category; null: any")
    item_type: Code | None = Field(default=None, description="Item type; null matches any")
    loan_period: Annotated[int, Field(ge=1, le=10_000)]
    period_unit: PeriodUnit = "days"
    renewals_allowed: Count = 2
    max_loans: Count | None = Field(default=None, description="null: no limit")
    max_holds: Count | None = Field(default=None, description="null: no limit")
    fine_per_day: Money = Decimal("0.00")
    fine_cap: Money | None = Field(default=None, description="null: no cap")
    grace_days: Count = 0
    holdable: bool = True
    renew_from: RenewFrom = "due_date"
    hold_pickup_days: Annotated[int, Field(ge=1, le=365)] = 7
    due_soon_days: DueSoonDays | None = Field(
        default=2, description="Days before the due date of the due-soon notice; null: none"
    )
    overdue_notice_days: OverdueNoticeDays = Field(
        default_factory=lambda: [1, 7, 14],
        description="Days after the due date of the 1st, 2nd and 3rd overdue notices, "
        "increasing (up to three; [] sends none)",
    )


class RuleUpdate(Strict):
    """The terms of a rule; its scope (branch, category, item type) is fixed."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"loan_period": 28}, {"fine_cap": None}]}
    )

    loan_period: Annotated[int, Field(ge=1, le=10_000)] | None = None
    period_unit: PeriodUnit | None = None
    renewals_allowed: Count | None = None
    max_loans: Count | None = None
    max_holds: Count | None = None
    fine_per_day: Money | None = None
    fine_cap: Money | None = None
    grace_days: Count | None = None
    holdable: bool | None = None
    renew_from: RenewFrom | None = None
    hold_pickup_days: Annotated[int, Field(ge=1, le=365)] | None = None
    due_soon_days: DueSoonDays | None = Field(default=None, description="null: none")
    overdue_notice_days: OverdueNoticeDays | None = None


class RuleRead(BaseModel):
    id: int
    branch: str | None
    category: str | None
    item_type: str | None
    is_default: bool
    loan_period: int
    period_unit: str
    renewals_allowed: int
    max_loans: int | None
    max_holds: int | None
    fine_per_day: Decimal
    fine_cap: Decimal | None
    grace_days: int
    holdable: bool
    renew_from: str
    hold_pickup_days: int
    due_soon_days: int | None
    overdue_notice_days: list[int]
    created_at: datetime
    updated_at: datetime


class RuleCandidate(BaseModel):
    rule: RuleRead
    matched_on: list[str] = Field(description="The scope keys the rule names (all matched)")
    rank: list[int] = Field(
        description="[keys named, names branch, names item type, names category]; "
        "the highest rank wins"
    )
    chosen: bool


class RuleResolution(BaseModel):
    branch: str | None
    category: str | None
    item_type: str | None
    rule: RuleRead
    precedence: str
    candidates: list[RuleCandidate]


# --- calendar ---------------------------------------------------------------------------


class ClosedDayCreate(Strict):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "branch": "MAIN",
                    "first_day": "2026-12-24",
                    "last_day": "2026-12-26",
                    "yearly": True,
                    "description": "Christmas",
                },
                {"first_day": "2026-05-01", "description": "Staff training, all branches"},
            ]
        }
    )

    branch: Code | None = Field(default=None, description="Branch code; null: every branch")
    first_day: date
    last_day: date | None = Field(default=None, description="Inclusive; null: one day")
    yearly: bool = False
    description: str | None = None

    @model_validator(mode="after")
    def _valid_range(self) -> ClosedDayCreate:
        last = self.last_day or self.first_day
        if last < self.first_day:
            raise ValueError("last_day is before first_day")
        if self.yearly and last - self.first_day >= timedelta(days=365):
            raise ValueError("a yearly closure must be shorter than a year")
        return self


class ClosedDayRead(BaseModel):
    id: int
    branch: str | None
    first_day: date
    last_day: date
    yearly: bool
    description: str | None
    created_at: datetime


# --- loans ------------------------------------------------------------------------------


class CheckoutCreate(Strict):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"item_barcode": "31234000012345", "patron_card": "21234000056789"},
                {
                    "item_barcode": "31234000012345",
                    "patron_card": "21234000056789",
                    "override": {"reason": "Card renewal in progress"},
                },
            ]
        }
    )

    item_barcode: Barcode
    patron_card: CardNumber
    branch: Code | None = Field(
        default=None, description="Code of the lending desk's branch; default: the item's"
    )
    override: Override | None = None
    due_at: AwareDatetime | None = Field(
        default=None, description="Staff only: set the due date instead of the rule's"
    )


class CheckinCreate(Strict):
    model_config = ConfigDict(json_schema_extra={"examples": [{"item_barcode": "31234000012345"}]})

    item_barcode: Barcode
    branch: Code | None = Field(
        default=None, description="Code of the returning desk's branch; default: the item's"
    )


class RenewCreate(Strict):
    override: Override | None = None


class LoanRead(BaseModel):
    id: int
    item_id: int
    item_barcode: str
    bib_id: int
    patron_id: int | None = Field(
        description="Null once the loan is anonymised (returned, and past the retention period)"
    )
    patron_card: str | None = Field(description="Null once the loan is anonymised")
    branch: str
    checked_out_at: datetime
    due_at: datetime
    renewals: int
    returned_at: datetime | None
    lost_at: datetime | None
    overdue: bool


# --- holds ------------------------------------------------------------------------------


class HoldCreate(Strict):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"bib_id": 1, "patron_card": "21234000056789", "pickup_branch": "MAIN"},
                {"item_id": 7, "patron_card": "21234000056789", "pickup_branch": "EAST"},
            ]
        }
    )

    bib_id: Annotated[int, Field(ge=1)] | None = Field(
        default=None, description="A title-level hold: any copy will do"
    )
    item_id: Annotated[int, Field(ge=1)] | None = Field(
        default=None, description="An item-level hold: this copy"
    )
    patron_card: CardNumber
    pickup_branch: Code
    override: Override | None = None

    @model_validator(mode="after")
    def _one_target(self) -> HoldCreate:
        if (self.bib_id is None) == (self.item_id is None):
            raise ValueError("give exactly one of bib_id (any copy) and item_id (this copy)")
        return self


class HoldRead(BaseModel):
    id: int
    level: str
    bib_id: int
    item_id: int | None
    patron_id: int
    patron_card: str
    pickup_branch: str
    status: str
    queue_position: int | None = Field(description="1 = next in line; null unless waiting")
    placed_at: datetime
    ready_at: datetime | None
    ready_until: datetime | None
    closed_at: datetime | None
    loan_id: int | None


# --- fees -------------------------------------------------------------------------------


class FeeCreate(Strict):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"patron_card": "21234000056789", "amount": "2.50", "description": "Damaged case"}
            ]
        }
    )

    patron_card: CardNumber
    amount: PositiveMoney
    description: Reason
    item_barcode: Barcode | None = None


class PaymentCreate(Strict):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"amount": "1.00", "method": "cash"}]}
    )

    amount: PositiveMoney
    method: PaymentMethod = "cash"
    note: str | None = None


class WaiveCreate(Strict):
    model_config = ConfigDict(json_schema_extra={"examples": [{"reason": "First offence"}]})

    reason: Reason


class PaymentRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    amount: Decimal
    method: str
    note: str | None
    paid_at: datetime
    received_by: str


class FeeRead(BaseModel):
    id: int
    patron_id: int
    loan_id: int | None
    item_id: int | None
    kind: str
    amount: Decimal
    outstanding: Decimal
    paid: Decimal
    waived: Decimal
    status: str
    description: str | None
    due_at: datetime | None
    created_at: datetime
    closed_at: datetime | None
    waive_reason: str | None
    payments: list[PaymentRead]


class BalanceRead(BaseModel):
    patron_id: int
    card_number: str
    balance: Decimal = Field(description="Sum of what is outstanding on open fees")
    open_fees: int
    fee_block_threshold: Decimal | None
    over_threshold: bool


# --- checkin ----------------------------------------------------------------------------


class ItemState(BaseModel):
    id: int
    barcode: str
    status: str
    branch: str


class CheckinRead(BaseModel):
    item: ItemState
    loan: LoanRead | None = Field(description="The loan this checkin closed, if any")
    fee: FeeRead | None = Field(description="The overdue fine charged, if any")
    next: NextStep
    hold: HoldRead | None = Field(description="The hold the copy is now trapped for, if any")
    transit_to: str | None = Field(description="Branch code to send the copy to, if in transit")
