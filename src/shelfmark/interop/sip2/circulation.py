"""Checkout (11), checkin (09), renew (29), renew all (65) and item information (17).

Each calls the circulation services as the logged-in staff user, in one transaction per
message (one per loan for renew all), and says what they decided in SIP2's terms: a refusal
becomes a negative answer (see `answers`) whose screen message (AF) is the service's reason.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from shelfmark.catalog import service as catalog_service
from shelfmark.catalog.errors import ItemNotFound
from shelfmark.catalog.models import Item
from shelfmark.circulation import holds, loans
from shelfmark.circulation.errors import LoanNotFound
from shelfmark.circulation.holds import HoldFilters, Routing
from shelfmark.circulation.loans import Checkin, LoanFilters
from shelfmark.circulation.models import Loan
from shelfmark.circulation.schemas import CheckinCreate, CheckoutCreate, Override
from shelfmark.errors import Conflict, ShelfmarkError
from shelfmark.interop.sip2.answers import (
    ALERT_HOLD_ELSEWHERE,
    ALERT_HOLD_HERE,
    ALERT_SEND_HOME,
    CIRCULATION_STATUS,
    FEE_TYPE_OTHER,
    MAGNETIC_MEDIA,
    OTHER_STATUS,
    SECURITY_MARKER_OTHER,
    media_type,
)
from shelfmark.interop.sip2.context import (
    PAGE,
    Context,
    branch_code,
    every,
    patron_with_pin,
    required,
)
from shelfmark.interop.sip2.protocol import (
    Message,
    Reply,
    count,
    flag,
    format_datetime,
    parse_datetime,
    repeated,
)

# An SC that lent or took back a copy while the ACS was unreachable reports it with "no
# block": the ACS is to record it whatever it would have said (the copy is gone or back).
OFFLINE = Override(reason="Offline self-check transaction (SIP2 no block)")


def _offline(message: Message, index: int) -> Override | None:
    return OFFLINE if message.flag(index) else None


async def _title(session: AsyncSession, bib_id: int) -> str:
    bib = await catalog_service.get_bib(session, bib_id)
    return bib.title if bib is not None else ""


async def _open_loan(session: AsyncSession, ctx: Context, barcode: str) -> Loan | None:
    found = await loans.list_loans(
        session, actor=ctx.staff, filters=LoanFilters(item_barcode=barcode, open=True),
        now=ctx.now(), limit=1, after_id=None,
    )  # fmt: skip
    return found[0] if found else None


def _magnetic(item: Item) -> str:
    return flag(media_type(item.item_type) in MAGNETIC_MEDIA)


# --- checkout ---------------------------------------------------------------------------


async def checkout(ctx: Context, message: Message) -> Reply:
    """Lend AB to AA at the SC's branch. With the SC's renewal policy (Y), a copy the
    patron already has is renewed instead; with "no block" the refusals a librarian could
    override are overridden and the SC's due date is kept."""
    renewal_policy, now = message.flag(0), ctx.now()
    barcode = required(message, "AB", "item identifier")
    async with ctx.transaction() as session:
        patron = await patron_with_pin(session, ctx, message)
        current = await _open_loan(session, ctx, barcode)
        renewing = renewal_policy and current is not None and current.patron_id == patron.id
        if renewing and current is not None:
            loan = await loans.renew(
                session, actor=ctx.staff, loan_id=current.id, override=_offline(message, 1),
                now=now,
            )  # fmt: skip
        else:
            data = CheckoutCreate(
                item_barcode=barcode, patron_card=patron.card_number, branch=ctx.branch,
                override=_offline(message, 1),
                due_at=parse_datetime(message.fixed[3]) if message.flag(1) else None,
            )  # fmt: skip
            loan = await loans.check_out(session, actor=ctx.staff, data=data, now=now)
        title = await _title(session, loan.item.bib_id)
    return _lent("12", message, ctx, loan=loan, title=title, renewed=renewing)


def _lent(command: str, message: Message, ctx: Context, *, loan: Loan, title: str,
          renewed: bool) -> Reply:  # fmt: skip
    item = loan.item
    return Reply(
        command, ("1", flag(renewed), _magnetic(item), "Y", format_datetime(ctx.now())),
        (("AO", message.get("AO") or ctx.config.institution_id),
         ("AA", loan.borrower.card_number), ("AB", item.barcode), ("AJ", title),
         ("AH", format_datetime(loan.due_at)), ("CK", media_type(item.item_type)),
         ("AF", "Renewed." if renewed and command == "12" else None)),
    )  # fmt: skip


# --- checkin ----------------------------------------------------------------------------


async def checkin(ctx: Context, message: Message) -> Reply:
    """Take AB back at the branch of AP (or of the SC's login). A copy that goes to the
    hold shelf or to another branch raises the alert, with its type (CV), destination (CT)
    and, for a hold, the waiting patron (CY). An offline return counts from its return
    date."""
    barcode = required(message, "AB", "item identifier")
    if message.get("BI") == "Y":
        raise Conflict("Cancelling a checkin is not supported; check the item out again.")
    now = ctx.now()
    returned = parse_datetime(message.fixed[2])
    if message.flag(0) and returned is not None and returned < now:
        now = returned
    async with ctx.transaction() as session:
        branch = await branch_code(session, message.get("AP")) or ctx.branch
        data = CheckinCreate(item_barcode=barcode, branch=branch)
        done = await loans.check_in(session, actor=ctx.staff, data=data, now=now)
        title = await _title(session, done.item.bib_id)
    return _returned(message, ctx, done, title)


def _alert(routing: Routing) -> tuple[str | None, str | None]:
    """(alert type, destination branch) of where the copy goes next."""
    if routing.next == "hold_shelf" and routing.hold is not None:
        return ALERT_HOLD_HERE, routing.hold.pickup_branch.code
    if routing.next == "transit" and routing.transit_to is not None:
        kind = ALERT_HOLD_ELSEWHERE if routing.hold is not None else ALERT_SEND_HOME
        return kind, routing.transit_to.code
    return None, None


def _checkin_message(done: Checkin) -> str | None:
    if done.fee is not None:
        return f"Returned late: a fine of {done.fee.amount} was charged."
    if done.loan is None:
        return "The item was not on loan."
    return None


def _returned(message: Message, ctx: Context, done: Checkin, title: str) -> Reply:
    item, routing = done.item, done.routing
    alert, destination = _alert(routing)
    hold_patron = routing.hold.patron.card_number if routing.hold is not None else None
    return Reply(
        "10", ("1", "Y", _magnetic(item), flag(alert is not None), format_datetime(ctx.now())),
        (("AO", message.get("AO") or ctx.config.institution_id), ("AB", item.barcode),
         ("AQ", item.branch.code), ("AJ", title),
         ("AA", done.loan.borrower.card_number if done.loan is not None else None),
         ("CK", media_type(item.item_type)), ("CS", item.shelfmark), ("CT", destination),
         ("CV", alert), ("CY", hold_patron), ("AF", _checkin_message(done))),
    )  # fmt: skip


# --- renew ------------------------------------------------------------------------------


async def renew(ctx: Context, message: Message) -> Reply:
    """Renew AB for AA. Only the patron who has it may renew it, unless the SC allows a
    third party (first fixed field Y)."""
    barcode = required(message, "AB", "item identifier")
    async with ctx.transaction() as session:
        patron = await patron_with_pin(session, ctx, message)
        current = await _open_loan(session, ctx, barcode)
        if current is None:
            raise LoanNotFound(f"Item {barcode} is not on loan.")
        if current.patron_id != patron.id and not message.flag(0):
            raise LoanNotFound(f"Item {barcode} is not on loan to this patron.")
        loan = await loans.renew(
            session, actor=ctx.staff, loan_id=current.id, override=_offline(message, 1),
            now=ctx.now(),
        )  # fmt: skip
        title = await _title(session, loan.item.bib_id)
    return _lent("30", message, ctx, loan=loan, title=title, renewed=True)


async def renew_all(ctx: Context, message: Message) -> Reply:
    """Renew each of AA's loans in a transaction of its own: one refused leaves the others
    renewed. BM lists what was renewed, BN what was not."""
    async with ctx.transaction() as session:
        patron = await patron_with_pin(session, ctx, message)
        filters = LoanFilters(patron_card=patron.card_number, open=True)
        current = await every(
            lambda after: loans.list_loans(
                session,
                actor=ctx.staff,
                filters=filters,
                now=ctx.now(),
                limit=PAGE,
                after_id=after,
            ),
            lambda loan: loan.id,
        )
    renewed: list[str] = []
    refused: list[str] = []
    for loan in current:
        try:
            async with ctx.transaction() as session:
                await loans.renew(
                    session, actor=ctx.staff, loan_id=loan.id, override=None, now=ctx.now()
                )
        except ShelfmarkError:
            refused.append(loan.item.barcode)
        else:
            renewed.append(loan.item.barcode)
    return Reply(
        "66", ("1", count(len(renewed)), count(len(refused)), format_datetime(ctx.now())),
        (("AO", message.get("AO") or ctx.config.institution_id), *repeated("BM", renewed),
         *repeated("BN", refused),
         ("AF", f"{len(renewed)} renewed, {len(refused)} not renewed.")),
    )  # fmt: skip


# --- item information -------------------------------------------------------------------


async def _hold_queue(session: AsyncSession, ctx: Context, item: Item) -> int:
    """Waiting holds this copy could serve: on its title, or on the copy itself."""
    filters = HoldFilters(bib_id=item.bib_id, status="waiting")
    waiting = await every(
        lambda after: holds.list_holds(
            session, actor=ctx.staff, filters=filters, limit=PAGE, after_id=after
        ),
        lambda row: row[0].id,
    )
    return sum(1 for hold, _ in waiting if hold.level == "title" or hold.item_id == item.id)


async def _pickup_by(session: AsyncSession, ctx: Context, item: Item) -> datetime | None:
    """Until when the copy waits on the hold shelf."""
    filters = HoldFilters(item_id=item.id, status="ready")
    ready = await holds.list_holds(session, actor=ctx.staff, filters=filters, limit=1,
                                   after_id=None)  # fmt: skip
    return ready[0][0].ready_until if ready else None


async def item_information(ctx: Context, message: Message) -> Reply:
    """AB's circulation status, due date, hold queue, hold shelf date, title, location."""
    barcode = required(message, "AB", "item identifier")
    async with ctx.transaction() as session:
        item = await catalog_service.get_item_by_barcode(session, barcode)
        if item is None:
            raise ItemNotFound(f"There is no item with barcode {barcode!r}.")
        title = await _title(session, item.bib_id)
        loan = await _open_loan(session, ctx, barcode) if item.status == "on_loan" else None
        queue = await _hold_queue(session, ctx, item)
        pickup_by = await _pickup_by(session, ctx, item) if item.status == "on_hold_shelf" else None
    status = CIRCULATION_STATUS.get(item.status, OTHER_STATUS)
    return Reply(
        "18", (status, SECURITY_MARKER_OTHER, FEE_TYPE_OTHER, format_datetime(ctx.now())),
        (("CF", str(queue)), ("AH", format_datetime(loan.due_at) if loan else None),
         ("CM", format_datetime(pickup_by) if pickup_by else None), ("AB", item.barcode),
         ("AJ", title), ("CK", media_type(item.item_type)), ("AQ", item.branch.code),
         ("CS", item.shelfmark)),
    )  # fmt: skip
