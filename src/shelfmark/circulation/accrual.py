"""The nightly fee accrual: every overdue loan's fine brought up to date, a batch at a time.

A batch reads its loans, the fines they already carry, the rules and the branches' calendars
in a handful of queries, and works out in Python which fines are behind. Only those loans
are then locked — the copy first, in the order every desk action takes (see `locking`) — and
read again before `fees.accrue_overdue` charges or grows their fee: a copy checked in or a
loan renewed in between is left alone, its checkin or renewal having charged the fine. A
second run on the same day finds no fine behind and writes nothing.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Row, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from shelfmark.catalog.models import Branch, Item
from shelfmark.circulation import fees, locking
from shelfmark.circulation.calendar import Calendar, calendar_for, days_late
from shelfmark.circulation.models import CirculationRule, Fee, Loan
from shelfmark.circulation.rules import pick_rule
from shelfmark.patrons.models import Patron

ACCRUAL_BATCH = 500
AnyRow = Row[*tuple[Any, ...]]


@dataclass(frozen=True, slots=True)
class AccrualBatch:
    last_id: int | None  # the last loan looked at; None once there are no more
    seen: int
    accrued: int  # fines charged or grown


@dataclass(slots=True)
class _Charged:
    earlier: Decimal = fees.ZERO  # fines of earlier due dates (renewals), toward the cap
    current: Decimal | None = None  # the fine of the current due date, if charged yet
    waived: bool = False


def _overdue(now: datetime) -> list[Any]:
    return [Loan.returned_at.is_(None), Loan.due_at < now]


async def count_overdue(session: AsyncSession, *, now: datetime) -> int:
    return (await session.scalar(select(func.count()).select_from(Loan).where(*_overdue(now)))) or 0


async def _charged(session: AsyncSession, loans: Sequence[AnyRow]) -> dict[int, _Charged]:
    due = {row.id: row.due_at for row in loans}
    rows = await session.execute(
        select(Fee.loan_id, Fee.due_at, Fee.amount, Fee.status).where(
            Fee.loan_id.in_(due), Fee.kind == "overdue"
        )
    )
    charged: defaultdict[int, _Charged] = defaultdict(_Charged)
    for row in rows:
        entry = charged[row.loan_id]
        if row.due_at == due[row.loan_id]:
            entry.current, entry.waived = row.amount, row.status == "waived"
        else:
            entry.earlier += row.amount
    return charged


async def _calendars(
    session: AsyncSession, branch_ids: set[int]
) -> dict[int, tuple[Branch, Calendar]]:
    branches = (await session.scalars(select(Branch).where(Branch.id.in_(branch_ids)))).all()
    return {branch.id: (branch, await calendar_for(session, branch)) for branch in branches}


def _behind(
    row: AnyRow, *, rule: CirculationRule, calendar: Calendar, charged: _Charged, now: datetime
) -> bool:
    """Whether the loan's fine is less than what it has come to by now (see `accrue_overdue`)."""
    until = min(now, row.lost_at) if row.lost_at is not None else now
    late = days_late(due_at=row.due_at, returned_at=until, calendar=calendar)
    fine = fees.overdue_fine(rule=rule, late_days=late, already_charged=charged.earlier)
    if charged.current is None:
        return fine > fees.ZERO
    return not charged.waived and fine > charged.current


async def accrue_batch(
    session: AsyncSession, *, now: datetime, after_id: int | None, limit: int = ACCRUAL_BATCH
) -> AccrualBatch:
    """Accrue the fines of up to `limit` overdue loans after loan `after_id`, by id."""
    query = (
        select(
            Loan.id,
            Loan.item_id,
            Loan.branch_id,
            Loan.due_at,
            Loan.lost_at,
            Patron.category_id,
            Item.item_type,
        )
        .join(Patron, Patron.id == Loan.patron_id)
        .join(Item, Item.id == Loan.item_id)
        .where(*_overdue(now))
        .order_by(Loan.id)
        .limit(limit)
    )
    if after_id is not None:
        query = query.where(Loan.id > after_id)
    loans = (await session.execute(query)).all()
    if not loans:
        return AccrualBatch(last_id=None, seen=0, accrued=0)
    rules = (await session.scalars(select(CirculationRule))).all()
    calendars = await _calendars(session, {row.branch_id for row in loans})
    charged = await _charged(session, loans)
    accrued = 0
    for row in loans:
        rule = pick_rule(
            rules, branch_id=row.branch_id, category_id=row.category_id, item_type=row.item_type
        )
        branch, calendar = calendars[row.branch_id]
        if not _behind(row, rule=rule, calendar=calendar, charged=charged[row.id], now=now):
            continue
        await locking.lock_item(session, row.item_id)
        loan = await locking.lock_loan(session, row.id)
        if loan.returned_at is not None or loan.due_at != row.due_at:
            continue  # checked in or renewed since the batch was read: that charged the fine
        fee = await fees.accrue_overdue(
            session, loan=loan, rule=rule, calendar=calendar, branch=branch.code, now=now
        )
        accrued += fee is not None
    return AccrualBatch(last_id=loans[-1].id, seen=len(loans), accrued=accrued)
