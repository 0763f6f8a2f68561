"""Circulation routes: HTTP in, one service call, HTTP out. The API's clock is `utcnow()`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Query, Response, status

from shelfmark.catalog import service as catalog_service
from shelfmark.circulation import calendar, fees, holds, loans
from shelfmark.circulation.models import ClosedDay, Fee, Hold, Loan
from shelfmark.circulation.schemas import (
    BalanceRead,
    CheckinCreate,
    CheckinRead,
    CheckoutCreate,
    ClosedDayCreate,
    ClosedDayRead,
    FeeCreate,
    FeeKind,
    FeeRead,
    FeeStatus,
    HoldCreate,
    HoldRead,
    HoldStatus,
    ItemState,
    LoanRead,
    PaymentCreate,
    PaymentRead,
    RenewCreate,
    WaiveCreate,
)
from shelfmark.db import utcnow
from shelfmark.deps import ActorDep, SessionDep
from shelfmark.deps import PathId as Id
from shelfmark.pagination import (
    Page,
    PageDep,
    decode_int_cursor,
    next_cursor_of,
)

router = APIRouter(tags=["circulation"])


def loan_read(loan: Loan) -> LoanRead:
    overdue = loan.returned_at is None and loan.due_at < utcnow()
    return LoanRead(
        id=loan.id, item_id=loan.item_id, item_barcode=loan.item.barcode,
        bib_id=loan.item.bib_id, patron_id=loan.patron_id,
        patron_card=loan.patron.card_number if loan.patron else None, branch=loan.branch.code,
        checked_out_at=loan.checked_out_at, due_at=loan.due_at, renewals=loan.renewals,
        returned_at=loan.returned_at, lost_at=loan.lost_at, overdue=overdue,
    )  # fmt: skip


def hold_read(hold: Hold, position: int | None = None) -> HoldRead:
    return HoldRead(
        id=hold.id, level=hold.level, bib_id=hold.bib_id, item_id=hold.item_id,
        patron_id=hold.patron_id, patron_card=hold.patron.card_number,
        pickup_branch=hold.pickup_branch.code, status=hold.status, queue_position=position,
        placed_at=hold.placed_at, ready_at=hold.ready_at, ready_until=hold.ready_until,
        closed_at=hold.closed_at, loan_id=hold.loan_id,
    )  # fmt: skip


def fee_read(fee: Fee) -> FeeRead:
    return FeeRead(
        id=fee.id, patron_id=fee.patron_id, loan_id=fee.loan_id, item_id=fee.item_id,
        kind=fee.kind, amount=fee.amount, outstanding=fee.outstanding,
        paid=fee.amount - fee.outstanding - fee.waived, waived=fee.waived, status=fee.status,
        description=fee.description, due_at=fee.due_at, created_at=fee.created_at,
        closed_at=fee.closed_at, waive_reason=fee.waive_reason,
        payments=[PaymentRead.model_validate(p) for p in fee.payments],
    )  # fmt: skip


def closed_day_read(closed_day: ClosedDay) -> ClosedDayRead:
    return ClosedDayRead(
        id=closed_day.id, branch=closed_day.branch.code if closed_day.branch else None,
        first_day=closed_day.first_day, last_day=closed_day.last_day, yearly=closed_day.yearly,
        description=closed_day.description, created_at=closed_day.created_at,
    )  # fmt: skip


# --- calendar ---------------------------------------------------------------------------


@router.get("/closed-days", response_model=Page[ClosedDayRead])
async def list_closed_days(
    session: SessionDep,
    branch: Annotated[str | None, Query(description="Branch code (with all-branch days)")] = None,
) -> Page[ClosedDayRead]:
    branch_id = None
    if branch is not None:
        branch_id = (await catalog_service.require_branch_by_code(session, branch)).id
    rows = await calendar.list_closed_days(session, branch_id=branch_id)
    return Page(items=[closed_day_read(r) for r in rows])


@router.post("/closed-days", response_model=ClosedDayRead, status_code=status.HTTP_201_CREATED)
async def create_closed_day(
    session: SessionDep, actor: ActorDep, data: ClosedDayCreate
) -> ClosedDayRead:
    """Close a branch (or every branch) for a day or a range, once or every year (staff)."""
    closed_day = await calendar.create_closed_day(session, actor=actor, data=data, now=utcnow())
    return closed_day_read(closed_day)


@router.delete("/closed-days/{closed_day_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_closed_day(session: SessionDep, actor: ActorDep, closed_day_id: Id) -> Response:
    closed_day = await calendar.require_closed_day(session, closed_day_id)
    await calendar.delete_closed_day(session, actor=actor, closed_day=closed_day, now=utcnow())
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# --- checkout, checkin, loans -----------------------------------------------------------


@router.post("/checkouts", response_model=LoanRead, status_code=status.HTTP_201_CREATED)
async def check_out(session: SessionDep, actor: ActorDep, data: CheckoutCreate) -> LoanRead:
    """Lend a copy to a patron (staff). Each refusal has its own problem type; those marked
    `overridable` go through with `override: {reason}`."""
    return loan_read(await loans.check_out(session, actor=actor, data=data, now=utcnow()))


@router.post("/checkins", response_model=CheckinRead)
async def check_in(session: SessionDep, actor: ActorDep, data: CheckinCreate) -> CheckinRead:
    """Take a copy back (staff): the loan closed, any fine, and where the copy goes next."""
    result = await loans.check_in(session, actor=actor, data=data, now=utcnow())
    item, routing = result.item, result.routing
    return CheckinRead(
        item=ItemState(id=item.id, barcode=item.barcode, status=item.status,
                       branch=item.branch.code),
        loan=loan_read(result.loan) if result.loan else None,
        fee=fee_read(result.fee) if result.fee else None,
        next=routing.next,
        hold=hold_read(routing.hold) if routing.hold else None,
        transit_to=routing.transit_to.code if routing.transit_to else None,
    )  # fmt: skip


@router.get("/loans", response_model=Page[LoanRead])
async def list_loans(
    session: SessionDep,
    actor: ActorDep,
    page: PageDep,
    patron_card: Annotated[str | None, Query()] = None,
    item_barcode: Annotated[str | None, Query()] = None,
    open: Annotated[bool | None, Query(description="true: not returned; false: returned")] = None,
    overdue: Annotated[bool | None, Query(description="true: open and past due")] = None,
    branch: Annotated[str | None, Query(description="Lending branch code")] = None,
) -> Page[LoanRead]:
    """Loans by id; a patron sees only their own."""
    filters = loans.LoanFilters(
        patron_card=patron_card, item_barcode=item_barcode, open=open, overdue=overdue,
        branch=branch,
    )  # fmt: skip
    rows = await loans.list_loans(
        session, actor=actor, filters=filters, now=utcnow(), limit=page.limit,
        after_id=decode_int_cursor(page.cursor),
    )  # fmt: skip
    return Page(
        items=[loan_read(r) for r in rows[: page.limit]],
        next_cursor=next_cursor_of(rows, page.limit),
    )


@router.get("/loans/{loan_id}", response_model=LoanRead)
async def get_loan(session: SessionDep, actor: ActorDep, loan_id: Id) -> LoanRead:
    return loan_read(await loans.access_loan(session, actor=actor, loan_id=loan_id))


@router.post("/loans/{loan_id}/renew", response_model=LoanRead)
async def renew(
    session: SessionDep,
    actor: ActorDep,
    loan_id: Id,
    data: Annotated[
        RenewCreate | None, Body(examples=[{}, {"override": {"reason": "Exam week"}}])
    ] = None,
) -> LoanRead:
    """Renew a loan (staff, or the patron for their own)."""
    override = data.override if data else None
    loan = await loans.renew(session, actor=actor, loan_id=loan_id, override=override,
                             now=utcnow())  # fmt: skip
    return loan_read(loan)


@router.post("/loans/{loan_id}/lost", response_model=LoanRead)
async def declare_lost(session: SessionDep, actor: ActorDep, loan_id: Id) -> LoanRead:
    """Declare the copy of an open loan lost (staff): its price is charged as a fee."""
    loan, _ = await loans.declare_lost(session, actor=actor, loan_id=loan_id, now=utcnow())
    return loan_read(loan)


# --- holds ------------------------------------------------------------------------------


@router.get("/holds", response_model=Page[HoldRead])
async def list_holds(
    session: SessionDep,
    actor: ActorDep,
    page: PageDep,
    patron_card: Annotated[str | None, Query()] = None,
    bib_id: Annotated[int | None, Query(ge=1)] = None,
    item_id: Annotated[int | None, Query(ge=1)] = None,
    status: Annotated[HoldStatus | None, Query()] = None,
    pickup_branch: Annotated[str | None, Query(description="Branch code")] = None,
) -> Page[HoldRead]:
    """Holds by id (queue order within a title); a patron sees only their own."""
    filters = holds.HoldFilters(
        patron_card=patron_card, bib_id=bib_id, item_id=item_id, status=status,
        pickup_branch=pickup_branch,
    )  # fmt: skip
    rows = await holds.list_holds(
        session, actor=actor, filters=filters, limit=page.limit,
        after_id=decode_int_cursor(page.cursor),
    )  # fmt: skip
    return Page(
        items=[hold_read(hold, position) for hold, position in rows[: page.limit]],
        next_cursor=next_cursor_of([hold for hold, _ in rows], page.limit),
    )


@router.post("/holds", response_model=HoldRead, status_code=status.HTTP_201_CREATED)
async def place_hold(session: SessionDep, actor: ActorDep, data: HoldCreate) -> HoldRead:
    """Place a hold on a title (`bib_id`) or a copy (`item_id`): staff for anyone, a patron
    for themselves. The answer shows the place in the queue."""
    hold = await holds.place_hold(session, actor=actor, data=data, now=utcnow())
    return hold_read(*await holds.read_hold(session, hold.id))


@router.get("/holds/{hold_id}", response_model=HoldRead)
async def get_hold(session: SessionDep, actor: ActorDep, hold_id: Id) -> HoldRead:
    return hold_read(*await holds.access_hold(session, actor=actor, hold_id=hold_id))


@router.post("/holds/{hold_id}/cancel", response_model=HoldRead)
async def cancel_hold(session: SessionDep, actor: ActorDep, hold_id: Id) -> HoldRead:
    hold = await holds.cancel_hold(session, actor=actor, hold_id=hold_id, now=utcnow())
    return hold_read(hold)


# --- fees -------------------------------------------------------------------------------


@router.get("/fees", response_model=Page[FeeRead])
async def list_fees(
    session: SessionDep,
    actor: ActorDep,
    page: PageDep,
    patron_card: Annotated[str | None, Query()] = None,
    status: Annotated[FeeStatus | None, Query()] = None,
    kind: Annotated[FeeKind | None, Query()] = None,
) -> Page[FeeRead]:
    """Fees by id; a patron sees only their own."""
    filters = fees.FeeFilters(patron_card=patron_card, status=status, kind=kind)
    rows = await fees.list_fees(
        session, actor=actor, filters=filters, limit=page.limit,
        after_id=decode_int_cursor(page.cursor),
    )  # fmt: skip
    return Page(
        items=[fee_read(r) for r in rows[: page.limit]],
        next_cursor=next_cursor_of(rows, page.limit),
    )


@router.post("/fees", response_model=FeeRead, status_code=status.HTTP_201_CREATED)
async def charge_fee(session: SessionDep, actor: ActorDep, data: FeeCreate) -> FeeRead:
    """Charge a patron by hand (staff)."""
    item = None
    if data.item_barcode is not None:
        item = await catalog_service.require_item_by_barcode(session, data.item_barcode)
    fee = await fees.charge_manual(
        session, actor=actor, patron_card=data.patron_card, amount=data.amount,
        description=data.description, item=item, now=utcnow(),
    )  # fmt: skip
    return fee_read(fee)


@router.get("/fees/{fee_id}", response_model=FeeRead)
async def get_fee(session: SessionDep, actor: ActorDep, fee_id: Id) -> FeeRead:
    return fee_read(await fees.access_fee(session, actor=actor, fee_id=fee_id))


@router.post("/fees/{fee_id}/payments", response_model=FeeRead, status_code=status.HTTP_201_CREATED)
async def pay_fee(session: SessionDep, actor: ActorDep, fee_id: Id, data: PaymentCreate) -> FeeRead:
    """Take a payment, in part or in full (staff); the answer is the fee as it now stands."""
    fee = await fees.pay(
        session, actor=actor, fee_id=fee_id, amount=data.amount, method=data.method,
        note=data.note, now=utcnow(),
    )  # fmt: skip
    return fee_read(fee)


@router.post("/fees/{fee_id}/waive", response_model=FeeRead)
async def waive_fee(session: SessionDep, actor: ActorDep, fee_id: Id, data: WaiveCreate) -> FeeRead:
    """Forgive what is outstanding, with a reason (staff)."""
    fee = await fees.waive(session, actor=actor, fee_id=fee_id, reason=data.reason, now=utcnow())
    return fee_read(fee)


@router.get("/patrons/{patron_id}/balance", response_model=BalanceRead)
async def get_balance(session: SessionDep, actor: ActorDep, patron_id: Id) -> BalanceRead:
    """What the patron owes, and whether it is over their category's block threshold."""
    result = await fees.balance(session, actor=actor, patron_id=patron_id)
    return BalanceRead(
        patron_id=result.patron.id, card_number=result.patron.card_number,
        balance=result.balance, open_fees=result.open_fees,
        fee_block_threshold=result.patron.category.fee_block_threshold,
        over_threshold=result.over_threshold,
    )  # fmt: skip
