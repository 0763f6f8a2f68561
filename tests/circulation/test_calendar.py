from __future__ import annotations

from datetime import UTC, date, datetime

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from factories import STAFF, auth, make_branch, make_user
from shelfmark.auth.roles import Role
from shelfmark.circulation import calendar
from shelfmark.circulation.calendar import Calendar, Closure, days_late, due_at_for
from shelfmark.circulation.errors import CalendarAlwaysClosed
from shelfmark.circulation.schemas import ClosedDayCreate

WEEKDAYS_ONLY = {d: [["09:00", "18:00"]] for d in ("mon", "tue", "wed", "thu", "fri", "sat")}
CHRISTMAS = Closure(date(2000, 12, 24), date(2001, 1, 2), yearly=True)


def at(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def end_of(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, 23, 59, 59, tzinfo=UTC)


class TestCalendar:
    def test_without_hours_or_closures_every_day_is_open(self) -> None:
        assert all(Calendar().is_open(date(2026, 1, d)) for d in range(1, 32))

    def test_weekdays_without_hours_are_closed(self) -> None:
        cal = Calendar(open_weekdays=frozenset(range(6)))  # Sundays closed
        assert not cal.is_open(date(2026, 3, 1))  # a Sunday
        assert cal.next_open_day(date(2026, 3, 1)) == date(2026, 3, 2)

    @pytest.mark.parametrize(
        ("day", "closed"),
        [
            (date(2026, 12, 23), False),
            (date(2026, 12, 24), True),
            (date(2026, 12, 31), True),
            (date(2027, 1, 1), True),
            (date(2027, 1, 2), True),
            (date(2027, 1, 3), False),
            (date(2031, 12, 25), True),
        ],
    )
    def test_a_yearly_range_wraps_over_new_year(self, day: date, closed: bool) -> None:
        assert Calendar(closures=(CHRISTMAS,)).is_open(day) is not closed

    def test_a_one_off_range_is_closed_once(self) -> None:
        works = Closure(date(2026, 4, 6), date(2026, 4, 10), yearly=False)
        cal = Calendar(closures=(works,))
        assert not cal.is_open(date(2026, 4, 8))
        assert cal.is_open(date(2027, 4, 8))
        assert cal.next_open_day(date(2026, 4, 6)) == date(2026, 4, 11)

    def test_a_calendar_without_open_days_is_an_error(self) -> None:
        with pytest.raises(CalendarAlwaysClosed):
            Calendar(open_weekdays=frozenset()).next_open_day(date(2026, 1, 1))

    def test_open_days_between_counts_both_ends(self) -> None:
        cal = Calendar(open_weekdays=frozenset(range(5)))  # Monday to Friday
        assert cal.open_days_between(date(2026, 3, 2), date(2026, 3, 15)) == 10
        assert cal.open_days_between(date(2026, 3, 15), date(2026, 3, 2)) == 0


SUNDAYS_CLOSED = Calendar(open_weekdays=frozenset(range(6)), closures=(CHRISTMAS,))


class TestDueDates:
    @pytest.mark.parametrize(
        ("start", "period", "unit", "due"),
        [
            # 14 days from a Saturday: Saturday 31 January, the month's last day.
            (at(2026, 1, 17, 15, 0), 14, "days", end_of(date(2026, 1, 31))),
            # ... from a Sunday: lands on Sunday 1 February, closed -> Monday 2 February.
            (at(2026, 1, 18, 15, 0), 14, "days", end_of(date(2026, 2, 2))),
            # Over the end of February in a leap year.
            (at(2028, 2, 15, 9, 0), 14, "days", end_of(date(2028, 2, 29))),
            (at(2027, 2, 15, 9, 0), 14, "days", end_of(date(2027, 3, 1))),
            # Into the Christmas closure: 29 December -> 3 January is a Sunday -> 4 January.
            (at(2026, 12, 15, 9, 0), 14, "days", end_of(date(2027, 1, 4))),
            # An hour loan keeps its time, on the next open day.
            (at(2026, 2, 28, 22, 0), 4, "hours", at(2026, 3, 2, 2, 0)),
            (at(2026, 3, 2, 10, 0), 3, "hours", at(2026, 3, 2, 13, 0)),
        ],
    )
    def test_a_due_date_on_a_closed_day_moves_to_the_next_open_day(
        self, start: datetime, period: int, unit: str, due: datetime
    ) -> None:
        assert due_at_for(start=start, period=period, unit=unit, calendar=SUNDAYS_CLOSED) == due

    @pytest.mark.parametrize(
        ("due", "returned", "late"),
        [
            (end_of(date(2026, 3, 2)), at(2026, 3, 2, 23, 0), 0),
            (end_of(date(2026, 3, 2)), at(2026, 3, 3, 9, 0), 1),
            # Saturday due, back on Monday: Sunday is closed and not counted.
            (end_of(date(2026, 3, 7)), at(2026, 3, 9, 9, 0), 1),
            # An hour loan back late on its due day: that day counts.
            (at(2026, 3, 2, 15, 0), at(2026, 3, 2, 16, 0), 1),
            # From Christmas Eve to 4 January: the closure and Sundays do not count.
            (end_of(date(2026, 12, 23)), at(2027, 1, 4, 9, 0), 1),
        ],
    )
    def test_days_late_are_open_days(self, due: datetime, returned: datetime, late: int) -> None:
        assert days_late(due_at=due, returned_at=returned, calendar=SUNDAYS_CLOSED) == late


class TestClosedDays:
    async def test_closed_days_of_the_branch_and_of_all_branches_apply(
        self, session: AsyncSession
    ) -> None:
        branch = await make_branch(session, opening_hours=WEEKDAYS_ONLY)
        other = await make_branch(session)
        single = ClosedDayCreate(branch=branch.code, first_day=date(2026, 3, 16))
        everywhere = ClosedDayCreate(first_day=date(2026, 3, 17), last_day=date(2026, 3, 18))
        elsewhere = ClosedDayCreate(branch=other.code, first_day=date(2026, 3, 19))
        for data in (single, everywhere, elsewhere):
            await calendar.create_closed_day(session, actor=STAFF, data=data, now=at(2026, 1, 1))
        cal = await calendar.calendar_for(session, branch)
        assert [cal.is_open(date(2026, 3, d)) for d in range(14, 21)] == [
            True, False, False, False, False, True, True,  # Sat, Sun..Wed closed, Thu, Fri
        ]  # fmt: skip
        due = due_at_for(start=at(2026, 3, 2, 10, 0), period=14, unit="days", calendar=cal)
        assert due == end_of(date(2026, 3, 19))

    async def test_routes(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        librarian = await make_user(session, Role.LIBRARIAN)
        branch = await make_branch(session)
        await session.commit()
        body = {
            "branch": branch.code, "first_day": "2026-12-24", "last_day": "2026-12-26",
            "yearly": True, "description": "Christmas",
        }  # fmt: skip
        created = await client.post("/api/v1/closed-days", json=body, headers=auth(librarian))
        assert created.status_code == 201, created.text
        assert created.json()["branch"] == branch.code
        listed = await client.get("/api/v1/closed-days", params={"branch": branch.code})
        assert created.json() in listed.json()["items"]
        bad = await client.post(
            "/api/v1/closed-days",
            json={"first_day": "2026-05-02", "last_day": "2026-05-01"},
            headers=auth(librarian),
        )
        assert bad.status_code == 422
        url = f"/api/v1/closed-days/{created.json()['id']}"
        assert (await client.delete(url, headers=auth(librarian))).status_code == 204
        assert (await client.delete(url, headers=auth(librarian))).status_code == 404
