"""The daily notice runs: which open loans are due soon, which overdue, and at what level.

The terms are those of each loan's circulation rule (its branch, the patron's category, the
item's type; see `circulation.rules`): a due-soon notice `due_soon_days` or fewer days before
the due date, and overdue notices `overdue_notice_days` (e.g. 1, 7, 14) after it. Days are
calendar days of UTC dates: a loan due on the 16th is due in 2 days on the 14th and 1 day
overdue on the 17th. A lost copy's loan gets neither.

A run reads the open loans in chunks of `CHUNK` (one query each, which also reads what the
loan has had for its current due date), picks the rules in memory (the rules table is small
and read once), and writes the chunk's notices with one INSERT that leaves out those whose
(kind, loan, day) exists. The overdue level written is the highest one due that the loan has
not had, so a loan whose 1st and 2nd levels are both due (a run was missed, a rule changed)
gets one notice, of the 2nd level; a renewal starts the levels over. A second run the same
day writes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from shelfmark.catalog.models import Item
from shelfmark.circulation.models import CirculationRule, Loan
from shelfmark.circulation.rules import pick_rule
from shelfmark.notices import service
from shelfmark.notices.models import Notice
from shelfmark.patrons.models import Patron

CHUNK = 1000


@dataclass(frozen=True, slots=True)
class Chunk:
    """One chunk of a run: loans read, notices written, and the last loan id (the cursor)."""

    read: int
    written: int
    last_id: int


async def read_rules(session: AsyncSession) -> list[CirculationRule]:
    return list(await session.scalars(select(CirculationRule)))


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


def _open_loans(after_id: int) -> tuple[ColumnElement[bool], ...]:
    return (
        Loan.returned_at.is_(None),
        Loan.lost_at.is_(None),
        Loan.id > after_id,
    )


def _rule(rules: Sequence[CirculationRule], row: Any) -> CirculationRule:
    return pick_rule(
        rules, branch_id=row.branch_id, category_id=row.category_id, item_type=row.item_type
    )


def overdue_level(days_overdue: int, levels: Sequence[int]) -> int:
    """The highest level whose day has come (0: none yet)."""
    return sum(1 for days in levels if days_overdue >= days)


async def overdue_chunk(
    session: AsyncSession, *, rules: Sequence[CirculationRule], now: datetime, after_id: int
) -> Chunk:
    """Write today's overdue notices for the next `CHUNK` overdue loans after `after_id`."""
    today = now.date()
    noticed = (
        select(func.max(Notice.level))
        .where(Notice.kind == "overdue", Notice.object_id == Loan.id, Notice.due_at == Loan.due_at)
        .correlate(Loan)
        .scalar_subquery()
    )
    query = (
        select(
            Loan.id, Loan.patron_id, Loan.branch_id, Loan.due_at, Patron.category_id,
            Patron.notice_channel, Item.item_type, noticed.label("noticed"),
        )
        .join(Patron, Patron.id == Loan.patron_id)
        .join(Item, Item.id == Loan.item_id)
        .where(*_open_loans(after_id), Loan.due_at < _midnight(today))  # a day late or more
        .order_by(Loan.id)
        .limit(CHUNK)
    )  # fmt: skip
    rows = (await session.execute(query)).all()
    new: list[service.NewNotice] = []
    for row in rows:
        levels = _rule(rules, row).overdue_notice_days
        level = overdue_level((today - row.due_at.date()).days, levels)
        if level > (row.noticed or 0):
            notice = service.NewNotice(
                "overdue", row.patron_id, row.id, row.notice_channel, level=level,
                due_at=row.due_at,
            )  # fmt: skip
            new.append(notice)
    written = await service.write_notices(session, new, now=now)
    return Chunk(read=len(rows), written=len(written), last_id=rows[-1].id if rows else after_id)


async def due_soon_chunk(
    session: AsyncSession, *, rules: Sequence[CirculationRule], now: datetime, after_id: int
) -> Chunk:
    """Write today's due-soon notices for the next `CHUNK` loans due soon after `after_id`."""
    today = now.date()
    horizon = max((r.due_soon_days or 0 for r in rules), default=0)
    had_one = exists().where(
        and_(Notice.kind == "due-soon", Notice.object_id == Loan.id, Notice.due_at == Loan.due_at)
    )
    query = (
        select(
            Loan.id, Loan.patron_id, Loan.branch_id, Loan.due_at, Patron.category_id,
            Patron.notice_channel, Item.item_type,
        )
        .join(Patron, Patron.id == Loan.patron_id)
        .join(Item, Item.id == Loan.item_id)
        .where(
            *_open_loans(after_id),
            Loan.due_at >= now,
            Loan.due_at < _midnight(today + timedelta(days=horizon + 1)),
            ~had_one,
        )
        .order_by(Loan.id)
        .limit(CHUNK)
    )  # fmt: skip
    rows = (await session.execute(query)).all()
    new = [
        service.NewNotice("due-soon", row.patron_id, row.id, row.notice_channel, due_at=row.due_at)
        for row in rows
        if _due_soon(_rule(rules, row), (row.due_at.date() - today).days)
    ]
    written = await service.write_notices(session, new, now=now)
    return Chunk(read=len(rows), written=len(written), last_id=rows[-1].id if rows else after_id)


def _due_soon(rule: CirculationRule, days_left: int) -> bool:
    return rule.due_soon_days is not None and 0 <= days_left <= rule.due_soon_days
