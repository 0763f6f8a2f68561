"""When a branch is open: closed days, due dates and counting open days.

A branch is closed on a day when
- a closed-day row of that branch, or of every branch (`branch_id` NULL), covers it — a
  single day, an inclusive range, or a range repeated every year on the same dates; or
- its opening hours are recorded and name no hours for that weekday. A branch without any
  recorded hours counts as open every day.

Dates are UTC dates (the library's time zone is UTC until a setting says otherwise).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import JSON, ColumnElement, bindparam, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import joinedload

from shelfmark import hotpath
from shelfmark.audit import service as audit
from shelfmark.auth.roles import Actor, require_staff
from shelfmark.catalog import service as catalog_service
from shelfmark.catalog.models import Branch
from shelfmark.circulation.errors import CalendarAlwaysClosed, ClosedDayNotFound
from shelfmark.circulation.models import ClosedDay
from shelfmark.circulation.schemas import ClosedDayCreate

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# How far to look for an open day before deciding the calendar is wrong.
LOOKAHEAD_DAYS = 2 * 366
END_OF_DAY = time(23, 59, 59, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Closure:
    first_day: date
    last_day: date
    yearly: bool

    def covers(self, day: date) -> bool:
        if not self.yearly:
            return self.first_day <= day <= self.last_day
        first = (self.first_day.month, self.first_day.day)
        last = (self.last_day.month, self.last_day.day)
        key = (day.month, day.day)
        if first <= last:
            return first <= key <= last
        return key >= first or key <= last  # wraps over the new year (24 Dec - 2 Jan)


@dataclass(frozen=True, slots=True)
class Calendar:
    closures: tuple[Closure, ...] = ()
    # Weekdays (0 = Monday) with opening hours; None: hours not recorded, open every day.
    open_weekdays: frozenset[int] | None = None

    def is_open(self, day: date) -> bool:
        if self.open_weekdays is not None and day.weekday() not in self.open_weekdays:
            return False
        return not any(c.covers(day) for c in self.closures)

    def next_open_day(self, day: date) -> date:
        """`day` itself if open, else the first open day after it."""
        for offset in range(LOOKAHEAD_DAYS):
            candidate = day + timedelta(days=offset)
            if self.is_open(candidate):
                return candidate
        raise CalendarAlwaysClosed(
            f"The branch has no open day within {LOOKAHEAD_DAYS} days of {day.isoformat()}; "
            "check its closed days and opening hours."
        )

    def open_days_between(self, first: date, last: date) -> int:
        """Open days from `first` to `last`, both included (0 if last < first)."""
        count = 0
        day = first
        while day <= last:
            count += self.is_open(day)
            day += timedelta(days=1)
        return count


def open_weekdays(branch: Branch) -> frozenset[int] | None:
    hours = branch.opening_hours or {}
    if not hours:
        return None
    return frozenset(i for i, name in enumerate(WEEKDAYS) if hours.get(name))


# Built once: every checkout reads it (building costs more CPU than executing).
_OF_BRANCH = or_(ClosedDay.branch_id == bindparam("branch_id"), ClosedDay.branch_id.is_(None))
_CLOSED_DAYS = select(ClosedDay.first_day, ClosedDay.last_day, ClosedDay.yearly).where(_OF_BRANCH)


async def calendar_for(session: AsyncSession, branch: Branch) -> Calendar:
    rows = await hotpath.rows(session, _CLOSED_DAYS, {"branch_id": branch.id})
    closures = tuple(Closure(r["first_day"], r["last_day"], r["yearly"]) for r in rows)
    return Calendar(closures=closures, open_weekdays=open_weekdays(branch))


def closed_days_column(dialect: str) -> ColumnElement[Any]:
    """The closed days of the branch bound as `branch_id` (and of every branch) as one JSON
    array of [first day, last day, yearly], as a scalar subquery: for reading a calendar in
    the statement that reads what else an action needs (`calendar_of` makes it)."""
    if dialect == "postgresql":
        day = func.json_build_array(ClosedDay.first_day, ClosedDay.last_day, ClosedDay.yearly)
        days = func.json_agg(day, type_=JSON)
    else:
        day = func.json_array(ClosedDay.first_day, ClosedDay.last_day, ClosedDay.yearly)
        days = func.json_group_array(day, type_=JSON)
    return select(days).where(_OF_BRANCH).scalar_subquery()


def calendar_of(branch: Branch, closed_days: Sequence[Sequence[Any]] | None) -> Calendar:
    """The branch's calendar from `closed_days_column`'s decoded value (NULL: none, on
    PostgreSQL). Dates are ISO dates in JSON on both databases."""
    closures = tuple(
        Closure(date.fromisoformat(first), date.fromisoformat(last), bool(yearly))
        for first, last, yearly in closed_days or ()
    )
    return Calendar(closures=closures, open_weekdays=open_weekdays(branch))


def due_at_for(*, start: datetime, period: int, unit: str, calendar: Calendar) -> datetime:
    """When a loan made at `start` is due.

    A loan in days is due at the end (23:59:59) of the day `period` days after `start`; a
    loan in hours `period` hours after `start`. Either way a due date that falls on a closed
    day moves to the next open day (an hour loan keeps its time of day).
    """
    if unit == "days":
        day = calendar.next_open_day(start.date() + timedelta(days=period))
        return datetime.combine(day, END_OF_DAY)
    due = start + timedelta(hours=period)
    day = calendar.next_open_day(due.date())
    return due if day == due.date() else datetime.combine(day, due.timetz())


def days_late(*, due_at: datetime, returned_at: datetime, calendar: Calendar) -> int:
    """Open days on which the item was overdue: from the first day after `due_at` began
    (the due day itself for an hour loan returned late on it) to the return day, inclusive."""
    if returned_at <= due_at:
        return 0
    first = (due_at + timedelta(seconds=1)).date()
    return calendar.open_days_between(first, returned_at.date())


def end_of_open_day(*, day: date, calendar: Calendar) -> datetime:
    return datetime.combine(calendar.next_open_day(day), END_OF_DAY)


# --- closed days (staff) ----------------------------------------------------------------


async def list_closed_days(
    session: AsyncSession, *, branch_id: int | None = None
) -> Sequence[ClosedDay]:
    """Closed days of one branch (with those of every branch), or all of them."""
    query = (
        select(ClosedDay)
        .options(joinedload(ClosedDay.branch))
        .order_by(ClosedDay.first_day, ClosedDay.id)
    )
    if branch_id is not None:
        query = query.where(or_(ClosedDay.branch_id == branch_id, ClosedDay.branch_id.is_(None)))
    return (await session.scalars(query)).all()


async def require_closed_day(session: AsyncSession, closed_day_id: int) -> ClosedDay:
    closed_day = await session.get(ClosedDay, closed_day_id, options=[joinedload(ClosedDay.branch)])
    if closed_day is None:
        raise ClosedDayNotFound(f"There is no closed day with id {closed_day_id}.")
    return closed_day


async def create_closed_day(
    session: AsyncSession, *, actor: Actor, data: ClosedDayCreate, now: datetime
) -> ClosedDay:
    require_staff(actor)
    branch = None
    if data.branch is not None:
        branch = await catalog_service.require_branch_by_code(session, data.branch)
    closed_day = ClosedDay(
        branch_id=branch.id if branch else None, first_day=data.first_day,
        last_day=data.last_day or data.first_day, yearly=data.yearly,
        description=data.description, created_at=now,
    )  # fmt: skip
    closed_day.branch = branch
    session.add(closed_day)
    await session.flush()
    await audit.record(
        session, actor=actor, action="closed_day.create", object_type="closed_day",
        object_id=closed_day.id, changes=data.model_dump(), now=now,
    )  # fmt: skip
    return closed_day


async def delete_closed_day(
    session: AsyncSession, *, actor: Actor, closed_day: ClosedDay, now: datetime
) -> None:
    require_staff(actor)
    await audit.record(
        session, actor=actor, action="closed_day.delete", object_type="closed_day",
        object_id=closed_day.id,
        changes={"first_day": closed_day.first_day, "last_day": closed_day.last_day},
        now=now,
    )  # fmt: skip
    await session.delete(closed_day)
    await session.flush()
