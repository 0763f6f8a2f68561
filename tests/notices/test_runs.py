"""The daily runs: due-soon and overdue notices by each loan's rule, batched, once a day."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from sqlalchemy import event, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from circulation.conftest import NOW, Desk
from factories import STAFF, make_branch, make_category, make_patron, make_rule
from notices.conftest import end_of, lend
from shelfmark.catalog.models import Item
from shelfmark.circulation import loans as loans_service
from shelfmark.circulation import rules as rules_service
from shelfmark.circulation.models import CirculationRule, Loan
from shelfmark.circulation.schemas import CheckinCreate
from shelfmark.notices import runs
from shelfmark.notices.models import Notice


async def run(session: AsyncSession, chunk_of: object, now: datetime) -> int:
    """A whole run, chunk after chunk, as the job does it: notices written."""
    assert callable(chunk_of)
    rules = await runs.read_rules(session)
    written, after_id = 0, 0
    while True:
        chunk: runs.Chunk = await chunk_of(session, rules=rules, now=now, after_id=after_id)
        written, after_id = written + chunk.written, chunk.last_id
        if chunk.read < runs.CHUNK:
            return written


async def overdue_run(session: AsyncSession, now: datetime) -> int:
    return await run(session, runs.overdue_chunk, now)


async def due_soon_run(session: AsyncSession, now: datetime) -> int:
    return await run(session, runs.due_soon_chunk, now)


async def notices(session: AsyncSession, kind: str) -> list[tuple[int, int | None, str]]:
    """(loan id, level, day written) of each notice of `kind`."""
    rows = await session.execute(
        select(Notice.object_id, Notice.level, Notice.dedupe_key)
        .where(Notice.kind == kind)
        .order_by(Notice.id)
    )
    return [(loan_id, level, key.rsplit(":", 1)[1]) for loan_id, level, key in rows]


def days(n: int) -> timedelta:
    return timedelta(days=n)


class TestOverdueRun:
    async def test_the_first_level_comes_a_day_late(
        self, session: AsyncSession, desk: Desk
    ) -> None:
        loan = await lend(session, desk, due_at=end_of(NOW - days(1)))
        not_yet = await lend(session, desk, due_at=end_of(NOW))

        assert await overdue_run(session, NOW) == 1
        assert await notices(session, "overdue") == [(loan.id, 1, "2026-03-02")]
        assert not_yet.id not in [n[0] for n in await notices(session, "overdue")]

    async def test_a_second_run_the_same_day_writes_nothing(
        self, session: AsyncSession, desk: Desk
    ) -> None:
        for late in (1, 3, 9):
            await lend(session, desk, due_at=end_of(NOW - days(late)))
        assert await overdue_run(session, NOW) == 3
        assert await overdue_run(session, NOW + timedelta(hours=6)) == 0
        assert len(await notices(session, "overdue")) == 3

    async def test_several_levels_due_make_one_notice_of_the_highest(
        self, session: AsyncSession, desk: Desk
    ) -> None:
        loan = await lend(session, desk, due_at=end_of(NOW - days(20)))  # 1, 7 and 14 passed
        assert await overdue_run(session, NOW) == 1
        assert await notices(session, "overdue") == [(loan.id, 3, "2026-03-02")]

    async def test_levels_follow_the_rules_intervals(
        self, session: AsyncSession, desk: Desk
    ) -> None:
        loan = await lend(session, desk, due_at=end_of(NOW - days(1)))
        written = {}
        for day in range(16):
            written[day] = await overdue_run(session, NOW + days(day))
        assert [day for day, count in written.items() if count] == [0, 6, 13]
        assert await notices(session, "overdue") == [
            (loan.id, 1, "2026-03-02"), (loan.id, 2, "2026-03-08"), (loan.id, 3, "2026-03-15"),
        ]  # fmt: skip

    async def test_a_renewal_starts_the_levels_over(
        self, session: AsyncSession, desk: Desk
    ) -> None:
        loan = await lend(session, desk, due_at=end_of(NOW - days(8)))
        await overdue_run(session, NOW)  # level 2
        await session.execute(
            update(Loan).where(Loan.id == loan.id).values(due_at=end_of(NOW + days(1)))
        )
        assert await overdue_run(session, NOW + days(3)) == 1
        assert [n[1] for n in await notices(session, "overdue")] == [2, 1]

    async def test_returned_and_lost_loans_get_none(
        self, session: AsyncSession, desk: Desk
    ) -> None:
        returned = await lend(session, desk, due_at=end_of(NOW - days(5)))
        lost = await lend(session, desk, due_at=end_of(NOW - days(5)))
        data = CheckinCreate(item_barcode=await _barcode(session, returned))
        await loans_service.check_in(session, actor=STAFF, data=data, now=NOW)
        await loans_service.declare_lost(session, actor=STAFF, loan_id=lost.id, now=NOW)
        assert await overdue_run(session, NOW) == 0

    async def test_each_loan_follows_its_own_rule(self, session: AsyncSession, desk: Desk) -> None:
        # The desk's branch rule keeps the defaults (1, 7, 14); this category's rule warns
        # later, once only.
        late_category = await make_category(session)
        await make_rule(session, category=late_category, overdue_notice_days=[5])
        silent_branch = await make_branch(session)
        await make_rule(session, branch=silent_branch, overdue_notice_days=[])
        default = await lend(session, desk, due_at=end_of(NOW - days(3)))
        patron = await make_patron(session, category=late_category, branch=desk.branch)
        # The desk's branch rule names the branch: it outranks the category's rule.
        outranked = await lend(session, desk, due_at=end_of(NOW - days(3)), patron=patron)
        assert await overdue_run(session, NOW) == 2
        assert {n[0] for n in await notices(session, "overdue")} == {default.id, outranked.id}

    async def test_queries_do_not_grow_with_the_loans(
        self, session: AsyncSession, desk: Desk
    ) -> None:
        for _ in range(3):
            await lend(session, desk, due_at=end_of(NOW - days(2)))
        with _counted(session) as few:
            assert await overdue_run(session, NOW) == 3
        for _ in range(30):
            await lend(session, desk, due_at=end_of(NOW - days(2)))
        with _counted(session) as many:
            assert await overdue_run(session, NOW + days(6)) == 33  # level 2 for all 33
        assert len(many) == len(few)


class TestDueSoonRun:
    async def test_a_loan_due_within_the_rules_days_gets_one(
        self, session: AsyncSession, desk: Desk
    ) -> None:
        today = await lend(session, desk, due_at=end_of(NOW))
        in_two = await lend(session, desk, due_at=end_of(NOW + days(2)))
        in_three = await lend(session, desk, due_at=end_of(NOW + days(3)))
        late = await lend(session, desk, due_at=end_of(NOW - days(1)))

        assert await due_soon_run(session, NOW) == 2
        written = [n[0] for n in await notices(session, "due-soon")]
        assert written == [today.id, in_two.id]
        assert in_three.id not in written
        assert late.id not in written

    async def test_once_per_due_date_however_many_days_it_is_due_soon(
        self, session: AsyncSession, desk: Desk
    ) -> None:
        await lend(session, desk, due_at=end_of(NOW + days(2)))
        assert await due_soon_run(session, NOW) == 1
        assert await due_soon_run(session, NOW) == 0
        assert await due_soon_run(session, NOW + days(1)) == 0
        assert await due_soon_run(session, NOW + days(2)) == 0

    async def test_a_rule_without_due_soon_days_sends_none(
        self, session: AsyncSession, desk: Desk
    ) -> None:
        rule = await session.get(CirculationRule, desk.rule.id)
        assert rule is not None
        rule.due_soon_days = None
        await session.flush()
        await lend(session, desk, due_at=end_of(NOW + days(1)))
        assert await due_soon_run(session, NOW) == 0


class TestPickRule:
    async def test_it_picks_what_resolve_rule_picks(
        self, session: AsyncSession, desk: Desk
    ) -> None:
        category = await make_category(session)
        await make_rule(session, category=category, loan_period=3)
        await make_rule(session, item_type="dvd", loan_period=2)
        await make_rule(session, branch=desk.branch, item_type="dvd", loan_period=1)
        every = await runs.read_rules(session)
        for branch_id in (desk.branch.id, None, 999_999):
            for category_id in (category.id, desk.category.id, None):
                for item_type in ("dvd", "book", None):
                    scope = {"branch_id": branch_id, "category_id": category_id,
                             "item_type": item_type}  # fmt: skip
                    resolved = await rules_service.rule_for(session, **scope)
                    assert rules_service.pick_rule(every, **scope).id == resolved.id, scope


async def _barcode(session: AsyncSession, loan: Loan) -> str:
    item = await session.get(Item, loan.item_id)
    assert item is not None
    return item.barcode


@contextmanager
def _counted(session: AsyncSession) -> Iterator[list[str]]:
    statements: list[str] = []
    engine = session.bind.sync_engine if session.bind is not None else None
    assert engine is not None

    def note(*args: object) -> None:
        statements.append(str(args[2]))

    event.listen(engine, "before_cursor_execute", note)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", note)
