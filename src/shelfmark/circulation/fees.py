"""Fees: overdue fines, lost items, manual charges; payments (in part or whole) and waivers.

- An overdue fine is charged when the copy comes back (or when an overdue loan is renewed,
  for the time overdue so far): `fine_per_day` for each open day late after the first
  `grace_days` open days late, never more than `fine_cap` per loan in total. The rule is the
  one of the loan (its branch, the patron's category, the item's type), the open days those
  of the loan's branch (see `calendar.days_late`). While the copy stays out, the nightly
  `fee-accrual` job charges the fine so far as one fee per loan and due date and grows it
  each day (`accrue_overdue`); the checkin then charges only the remainder.
- A lost copy costs its price; if it comes back, what is still outstanding is waived.
- A fee's `outstanding` = amount - payments - waived, changed only under the fee's row lock.
  A patron's balance is the sum of what is outstanding; above the category's
  `fee_block_threshold` it refuses checkouts, renewals and holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import joinedload, selectinload
from sqlalchemy.orm.interfaces import ORMOption

from shelfmark import events
from shelfmark.audit import service as audit
from shelfmark.auth.roles import SYSTEM, Actor, require_staff
from shelfmark.catalog.models import Item
from shelfmark.circulation.calendar import Calendar, days_late
from shelfmark.circulation.errors import FeeClosed, FeeNotFound, PaymentTooLarge
from shelfmark.circulation.models import CirculationRule, Fee, Loan, Payment
from shelfmark.db import flush_or_raise
from shelfmark.errors import Conflict, Forbidden
from shelfmark.notices import service as notices
from shelfmark.patrons import service as patrons_service
from shelfmark.patrons.models import Patron

CENT = Decimal("0.01")
ZERO = Decimal("0.00")
FEE_LOAD: tuple[ORMOption, ...] = (
    selectinload(Fee.payments),
    joinedload(Fee.patron, innerjoin=True).joinedload(Patron.home_branch, innerjoin=True),
)


def money(value: Decimal) -> Decimal:
    return value.quantize(CENT)


def overdue_fine(*, rule: CirculationRule, late_days: int, already_charged: Decimal) -> Decimal:
    """`fine_per_day` per late open day past the grace days, capped per loan by `fine_cap`
    (less what earlier renewals of the loan charged)."""
    fine = rule.fine_per_day * max(0, late_days - rule.grace_days)
    if rule.fine_cap is not None:
        fine = min(fine, max(rule.fine_cap - already_charged, ZERO))
    return money(fine)


def balance_column(patron_id: int | ColumnElement[Any]) -> ColumnElement[Any]:
    """What the patron owes, as a scalar subquery (for reading it along with other things)."""
    return (
        select(func.coalesce(func.sum(Fee.outstanding), 0))
        .where(Fee.patron_id == patron_id, Fee.status == "open")
        .scalar_subquery()
    )


async def balance_of(session: AsyncSession, patron_id: int) -> tuple[Decimal, int]:
    """(what the patron owes, how many open fees)."""
    row = (
        await session.execute(
            select(func.coalesce(func.sum(Fee.outstanding), 0), func.count()).where(
                Fee.patron_id == patron_id, Fee.status == "open"
            )
        )
    ).one()
    return money(Decimal(row[0])), int(row[1])


def _event(name: str, fee: Fee, *, branch: str, at: datetime, **extra: Any) -> events.Event:
    payload = {
        "fee_id": fee.id, "patron_id": fee.patron_id, "loan_id": fee.loan_id, "kind": fee.kind,
        "amount": str(fee.amount), "outstanding": str(fee.outstanding), "branch": branch,
    }  # fmt: skip
    return events.Event(name, at=at, payload=payload | extra)


async def charge(
    session: AsyncSession, *, patron_id: int, kind: str, amount: Decimal, branch: str,
    now: datetime, loan_id: int | None = None, item_id: int | None = None,
    due_at: datetime | None = None, description: str | None = None,
) -> Fee:  # fmt: skip
    """A new open fee. The callers audit; this publishes `fee.charged` and writes the
    patron's fee-charged notice."""
    fee = Fee(
        patron_id=patron_id, loan_id=loan_id, item_id=item_id, kind=kind, amount=money(amount),
        outstanding=money(amount), waived=ZERO, status="open", description=description,
        due_at=due_at, created_at=now,
    )  # fmt: skip
    fee.payments = []
    session.add(fee)
    await flush_or_raise(session, Conflict(f"This {kind} fee has already been charged."))
    await notices.announce(
        session, kind="fee-charged", patron_id=patron_id, object_id=fee.id, now=now
    )
    events.publish(session, _event("fee.charged", fee, branch=branch, at=now))
    return fee


async def _overdue_so_far(session: AsyncSession, loan: Loan) -> tuple[Decimal, Fee | None]:
    """(the fines charged for the loan's earlier due dates, by renewals; the fine of its
    current due date, if the nightly accrual has charged it yet, locked)."""
    rows = await session.execute(
        select(Fee.id, Fee.amount, Fee.due_at).where(Fee.loan_id == loan.id, Fee.kind == "overdue")
    )
    earlier, current = ZERO, None
    for row in rows:
        if row.due_at == loan.due_at:
            current = row.id
        else:
            earlier += row.amount
    return money(earlier), (await _lock_fee(session, current) if current is not None else None)


async def _grow(
    session: AsyncSession, fee: Fee, *, to: Decimal, late: int, branch: str, now: datetime
) -> bool:
    """Raise an overdue fine to `to`, if that is more; whether it grew. A fine paid so far is
    open again for the difference; a waived one stays waived (the library forgave the loan's
    lateness on this due date, the accrual does not undo that)."""
    if fee.status == "waived" or to <= fee.amount:
        return False
    added = money(to - fee.amount)
    fee.amount, fee.outstanding = money(to), money(fee.outstanding + added)
    fee.status, fee.closed_at = "open", None
    fee.description = f"{late} open day(s) late"
    await session.flush()
    events.publish(session, _event("fee.accrued", fee, branch=branch, at=now, added=str(added)))
    return True


async def charge_overdue(
    session: AsyncSession, *, loan: Loan, rule: CirculationRule, calendar: Calendar,
    until: datetime, branch: str, now: datetime,
) -> Fee | None:  # fmt: skip
    """The fine for `loan` being overdue from its due date to `until`, if any.

    Charged once per due date: what the nightly accrual has already charged for this one is
    on its fee, which only grows by the remainder (the partial unique index on (loan, due
    date) makes a second fine impossible anyway).
    """
    late = days_late(due_at=loan.due_at, returned_at=until, calendar=calendar)
    if late == 0:
        return None
    earlier, current = await _overdue_so_far(session, loan)
    amount = overdue_fine(rule=rule, late_days=late, already_charged=earlier)
    if current is not None:
        await _grow(session, current, to=amount, late=late, branch=branch, now=now)
        return None if current.status == "waived" else current
    if amount <= ZERO:
        return None
    return await charge(
        session, patron_id=loan.borrower_id, kind="overdue", amount=amount, branch=branch,
        now=now, loan_id=loan.id, item_id=loan.item_id, due_at=loan.due_at,
        description=f"{late} open day(s) late",
    )  # fmt: skip


async def accrue_overdue(
    session: AsyncSession, *, loan: Loan, rule: CirculationRule, calendar: Calendar,
    branch: str, now: datetime,
) -> Fee | None:  # fmt: skip
    """Bring an overdue loan's fine up to what it has come to by `now` (by the day it was
    declared lost, if it was): one fee per loan and due date, charged on the first night and
    grown on the next, up to the rule's cap. The fee if it changed, else None — so that a
    second run on the same day changes nothing. The check-in charges only the remainder.
    The caller holds the copy's lock (the order every desk action takes)."""
    until = min(now, loan.lost_at) if loan.lost_at is not None else now
    late = days_late(due_at=loan.due_at, returned_at=until, calendar=calendar)
    if late == 0:
        return None
    earlier, fee = await _overdue_so_far(session, loan)
    amount = overdue_fine(rule=rule, late_days=late, already_charged=earlier)
    before = fee.amount if fee is not None else ZERO
    if fee is not None:
        if not await _grow(session, fee, to=amount, late=late, branch=branch, now=now):
            return None
    elif amount > ZERO:
        fee = await charge(
            session, patron_id=loan.borrower_id, kind="overdue", amount=amount, branch=branch,
            now=now, loan_id=loan.id, item_id=loan.item_id, due_at=loan.due_at,
            description=f"{late} open day(s) late",
        )  # fmt: skip
    else:
        return None
    await audit.record(
        session, actor=SYSTEM, action="fee.accrue", object_type="fee", object_id=fee.id,
        changes={"loan_id": loan.id, "amount": [before, fee.amount], "days_late": late},
        now=now,
    )  # fmt: skip
    return fee


async def charge_lost(
    session: AsyncSession, *, loan: Loan, item: Item, branch: str, now: datetime
) -> Fee | None:
    """The copy's price; nothing if it has none."""
    if item.price is None or item.price <= ZERO:
        return None
    return await charge(
        session, patron_id=loan.borrower_id, kind="lost", amount=item.price, branch=branch,
        now=now, loan_id=loan.id, item_id=item.id, description=f"Lost item {item.barcode}",
    )  # fmt: skip


async def waive_lost_on_return(
    session: AsyncSession, *, loan: Loan, branch: str, now: datetime
) -> Fee | None:
    """The copy is back: what is still owed for it as lost is waived (payments stay)."""
    fee_id = await session.scalar(
        select(Fee.id).where(Fee.loan_id == loan.id, Fee.kind == "lost", Fee.status == "open")
    )
    if fee_id is None:
        return None
    fee = await _lock_fee(session, fee_id)
    _waive(fee, reason="Lost item returned", now=now)
    await session.flush()
    await audit.record(
        session, actor=SYSTEM, action="fee.waive", object_type="fee", object_id=fee.id,
        changes={"reason": fee.waive_reason, "waived": fee.waived}, now=now,
    )  # fmt: skip
    events.publish(session, _event("fee.waived", fee, branch=branch, at=now))
    return fee


async def _lock_fee(session: AsyncSession, fee_id: int) -> Fee:
    query = (
        select(Fee)
        .options(*FEE_LOAD)
        .where(Fee.id == fee_id)
        .with_for_update(of=Fee)
        .execution_options(populate_existing=True)
    )
    fee = (await session.scalars(query)).unique().one_or_none()
    if fee is None:
        raise FeeNotFound(f"There is no fee with id {fee_id}.")
    return fee


def _waive(fee: Fee, *, reason: str, now: datetime) -> None:
    fee.waived = money(fee.waived + fee.outstanding)
    fee.outstanding = ZERO
    fee.status, fee.closed_at, fee.waive_reason = "waived", now, reason


# --- staff actions ----------------------------------------------------------------------


async def charge_manual(
    session: AsyncSession, *, actor: Actor, patron_card: str, amount: Decimal,
    description: str, item: Item | None, now: datetime,
) -> Fee:  # fmt: skip
    require_staff(actor)
    patron = await patrons_service.require_patron_by_card(session, patron_card)
    fee = await charge(
        session, patron_id=patron.id, kind="manual", amount=amount, now=now,
        branch=patron.home_branch.code, item_id=item.id if item else None,
        description=description,
    )  # fmt: skip
    await audit.record(
        session, actor=actor, action="fee.charge", object_type="fee", object_id=fee.id,
        changes={"patron_card": patron_card, "amount": fee.amount, "description": description},
        now=now,
    )  # fmt: skip
    return await require_fee(session, fee.id)


async def pay(
    session: AsyncSession, *, actor: Actor, fee_id: int, amount: Decimal, method: str,
    note: str | None, now: datetime,
) -> Fee:  # fmt: skip
    """Take money against an open fee; at most what is outstanding."""
    require_staff(actor)
    fee = await _lock_fee(session, fee_id)
    if fee.status != "open":
        raise FeeClosed(f"Fee {fee.id} is {fee.status}; nothing is owed on it.")
    amount = money(amount)
    if amount > fee.outstanding:
        raise PaymentTooLarge(
            f"Fee {fee.id} has {fee.outstanding} outstanding; {amount} is more than that.",
            errors=[{"field": "amount", "message": f"at most {fee.outstanding}"}],
        )
    payment = Payment(
        fee_id=fee.id, amount=amount, method=method, note=note, paid_at=now,
        received_by=actor.username,
    )  # fmt: skip
    session.add(payment)
    fee.payments.append(payment)
    fee.outstanding = money(fee.outstanding - amount)
    if fee.outstanding == ZERO:
        fee.status, fee.closed_at = "paid", now
    await session.flush()
    await audit.record(
        session, actor=actor, action="fee.pay", object_type="fee", object_id=fee.id,
        changes={"amount": amount, "method": method, "outstanding": fee.outstanding}, now=now,
    )  # fmt: skip
    events.publish(
        session,
        _event("fee.paid", fee, branch=fee.patron.home_branch.code, at=now, paid=str(amount)),
    )
    return fee


async def waive(
    session: AsyncSession, *, actor: Actor, fee_id: int, reason: str, now: datetime
) -> Fee:
    """Forgive what is outstanding on an open fee (payments already taken stay)."""
    require_staff(actor)
    fee = await _lock_fee(session, fee_id)
    if fee.status != "open":
        raise FeeClosed(f"Fee {fee.id} is {fee.status}; nothing is owed on it.")
    _waive(fee, reason=reason, now=now)
    await session.flush()
    await audit.record(
        session, actor=actor, action="fee.waive", object_type="fee", object_id=fee.id,
        changes={"reason": reason, "waived": fee.waived}, now=now,
    )  # fmt: skip
    events.publish(session, _event("fee.waived", fee, branch=fee.patron.home_branch.code, at=now))
    return fee


# --- reads ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FeeFilters:
    patron_card: str | None = None
    status: str | None = None
    kind: str | None = None


async def list_fees(
    session: AsyncSession, *, actor: Actor, filters: FeeFilters, limit: int,
    after_id: int | None,
) -> Sequence[Fee]:  # fmt: skip
    """Fees by id; a patron sees only their own."""
    query = select(Fee).options(*FEE_LOAD).order_by(Fee.id).limit(limit + 1)
    if not actor.is_staff:
        if actor.patron_id is None:
            raise Forbidden("Only staff and patrons see fees.")
        query = query.where(Fee.patron_id == actor.patron_id)
    if filters.patron_card:
        card = select(Patron.id).where(Patron.card_number == filters.patron_card)
        query = query.where(Fee.patron_id == card.scalar_subquery())
    if after_id is not None:
        query = query.where(Fee.id > after_id)
    if filters.status:
        query = query.where(Fee.status == filters.status)
    if filters.kind:
        query = query.where(Fee.kind == filters.kind)
    return (await session.scalars(query)).unique().all()


async def require_fee(session: AsyncSession, fee_id: int) -> Fee:
    query = select(Fee).options(*FEE_LOAD).where(Fee.id == fee_id)
    fee = (await session.scalars(query.execution_options(populate_existing=True))).unique().first()
    if fee is None:
        raise FeeNotFound(f"There is no fee with id {fee_id}.")
    return fee


async def access_fee(session: AsyncSession, *, actor: Actor, fee_id: int) -> Fee:
    fee = await require_fee(session, fee_id)
    patrons_service.check_patron_access(actor, fee.patron_id)
    return fee


@dataclass(frozen=True, slots=True)
class Balance:
    patron: Patron
    balance: Decimal
    open_fees: int

    @property
    def over_threshold(self) -> bool:
        threshold = self.patron.category.fee_block_threshold
        return threshold is not None and self.balance > threshold


async def balance(session: AsyncSession, *, actor: Actor, patron_id: int) -> Balance:
    patron = await patrons_service.access_patron(session, actor=actor, patron_id=patron_id)
    owed, count = await balance_of(session, patron.id)
    return Balance(patron=patron, balance=owed, open_fees=count)
