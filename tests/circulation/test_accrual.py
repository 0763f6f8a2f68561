"""The nightly fee accrual: one fine per loan and due date that grows each day up to the cap,
the same on a second run of the day, and a checkin that charges only the remainder.

The desk's rule: 14 days, 0.50 a day after 1 grace day, capped at 3.00. A loan made at NOW
(Monday 2 March) is due on 16 March at the end of the day.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from circulation.conftest import NOW, Desk
from factories import STAFF, make_item, make_job, make_loan, make_patron
from shelfmark.audit.models import AuditEvent
from shelfmark.circulation import accrual, fees, loans
from shelfmark.circulation.models import Fee, Loan
from shelfmark.circulation.schemas import CheckinCreate
from shelfmark.db import utcnow
from shelfmark.jobs.models import Job
from shelfmark.jobs.runner import execute_job
from shelfmark.settings import Settings

NIGHT = datetime(2026, 3, 19, 0, 20, tzinfo=NOW.tzinfo)  # 3 days late (17, 18, 19 March)


async def accrue(session: AsyncSession, now: datetime) -> int:
    batch = await accrual.accrue_batch(session, now=now, after_id=None)
    return batch.accrued


async def fines_of(session: AsyncSession, loan: Loan) -> list[Fee]:
    query = select(Fee).where(Fee.loan_id == loan.id, Fee.kind == "overdue").order_by(Fee.id)
    return list((await session.scalars(query.execution_options(populate_existing=True))).all())


async def check_in(session: AsyncSession, desk: Desk, now: datetime) -> Fee | None:
    data = CheckinCreate(item_barcode=desk.item.barcode)
    return (await loans.check_in(session, actor=STAFF, data=data, now=now)).fee


class TestAccrueBatch:
    async def test_the_fine_so_far_once_a_day_growing_to_the_cap(
        self, session: AsyncSession, desk: Desk
    ) -> None:
        loan = await make_loan(session, item=desk.item, patron=desk.patron, now=NOW)

        assert await accrue(session, NIGHT) == 1
        [fee] = await fines_of(session, loan)
        assert (fee.amount, fee.outstanding, fee.status) == (
            Decimal("1.00"),
            Decimal("1.00"),
            "open",
        )
        assert fee.due_at == loan.due_at
        assert fee.patron_id == desk.patron.id

        assert await accrue(session, NIGHT + timedelta(hours=5)) == 0  # the same day again
        assert [f.amount for f in await fines_of(session, loan)] == [Decimal("1.00")]

        assert await accrue(session, NIGHT + timedelta(days=1)) == 1
        assert [f.amount for f in await fines_of(session, loan)] == [Decimal("1.50")]

        assert await accrue(session, NIGHT + timedelta(days=30)) == 1
        assert await accrue(session, NIGHT + timedelta(days=31)) == 0  # capped: nothing grows
        [fee] = await fines_of(session, loan)
        assert (fee.amount, fee.description) == (Decimal("3.00"), "33 open day(s) late")
        await session.flush()
        audited = await session.scalar(
            select(func.count()).where(AuditEvent.action == "fee.accrue",
                                       AuditEvent.object_id == str(fee.id))
        )  # fmt: skip
        assert audited == 3

    async def test_loans_not_yet_late_enough_are_left_alone(
        self, session: AsyncSession, desk: Desk
    ) -> None:
        loan = await make_loan(session, item=desk.item, patron=desk.patron, now=NOW)
        one_day_late = loan.due_at + timedelta(hours=2)  # within the grace day
        assert await accrue(session, one_day_late) == 0
        assert await fines_of(session, loan) == []

    async def test_a_paid_fine_opens_again_for_what_accrues_after(
        self, session: AsyncSession, desk: Desk
    ) -> None:
        loan = await make_loan(session, item=desk.item, patron=desk.patron, now=NOW)
        await accrue(session, NIGHT)
        [fee] = await fines_of(session, loan)
        await fees.pay(session, actor=STAFF, fee_id=fee.id, amount=Decimal("1.00"),
                       method="cash", note=None, now=NIGHT)  # fmt: skip
        assert fee.status == "paid"

        await accrue(session, NIGHT + timedelta(days=1))
        [fee] = await fines_of(session, loan)
        assert (fee.amount, fee.outstanding, fee.status, fee.closed_at) == (
            Decimal("1.50"), Decimal("0.50"), "open", None,
        )  # fmt: skip

    async def test_a_waived_fine_stays_waived(self, session: AsyncSession, desk: Desk) -> None:
        loan = await make_loan(session, item=desk.item, patron=desk.patron, now=NOW)
        await accrue(session, NIGHT)
        [fee] = await fines_of(session, loan)
        await fees.waive(session, actor=STAFF, fee_id=fee.id, reason="Flooded road", now=NIGHT)

        assert await accrue(session, NIGHT + timedelta(days=2)) == 0
        assert await check_in(session, desk, NIGHT + timedelta(days=3)) is None
        [fee] = await fines_of(session, loan)
        assert (fee.amount, fee.status, fee.outstanding) == (Decimal("1.00"), "waived", 0)

    async def test_a_lost_copy_accrues_to_the_day_it_was_declared_lost(
        self, session: AsyncSession, desk: Desk
    ) -> None:
        loan = await make_loan(session, item=desk.item, patron=desk.patron, now=NOW)
        await loans.declare_lost(session, actor=STAFF, loan_id=loan.id, now=NIGHT)
        await accrue(session, NIGHT + timedelta(days=10))
        assert [f.amount for f in await fines_of(session, loan)] == [Decimal("1.00")]

    async def test_many_loans_over_several_batches(self, session: AsyncSession, desk: Desk) -> None:
        others = [await make_patron(session, category=desk.category, branch=desk.branch)
                  for _ in range(4)]  # fmt: skip
        lent = [await make_loan(session, item=await make_item(session, branch=desk.branch),
                                patron=patron, now=NOW) for patron in others]  # fmt: skip
        first = await accrual.accrue_batch(session, now=NIGHT, after_id=None, limit=3)
        second = await accrual.accrue_batch(session, now=NIGHT, after_id=first.last_id, limit=3)
        done = await accrual.accrue_batch(session, now=NIGHT, after_id=second.last_id, limit=3)
        assert (first.seen, first.accrued, second.seen, second.accrued) == (3, 3, 1, 1)
        assert (done.last_id, done.seen) == (None, 0)
        for loan in lent:
            assert [f.amount for f in await fines_of(session, loan)] == [Decimal("1.00")]


class TestCheckinAfterAccrual:
    async def test_the_same_day_charges_nothing_more(
        self, session: AsyncSession, desk: Desk
    ) -> None:
        loan = await make_loan(session, item=desk.item, patron=desk.patron, now=NOW)
        await accrue(session, NIGHT)
        fee = await check_in(session, desk, NIGHT + timedelta(hours=9))
        assert fee is not None
        assert [(f.id, f.amount) for f in await fines_of(session, loan)] == [
            (fee.id, Decimal("1.00"))
        ]

    async def test_later_charges_only_the_remainder_on_the_same_fee(
        self, session: AsyncSession, desk: Desk
    ) -> None:
        loan = await make_loan(session, item=desk.item, patron=desk.patron, now=NOW)
        await accrue(session, NIGHT)
        [accrued] = await fines_of(session, loan)
        await fees.pay(session, actor=STAFF, fee_id=accrued.id, amount=Decimal("0.40"),
                       method="cash", note=None, now=NIGHT)  # fmt: skip

        fee = await check_in(session, desk, NIGHT + timedelta(days=2, hours=9))  # 5 days late
        assert fee is not None
        assert fee.id == accrued.id
        [fine] = await fines_of(session, loan)
        assert (fine.amount, fine.outstanding) == (Decimal("2.00"), Decimal("1.60"))
        assert await fees.balance_of(session, desk.patron.id) == (Decimal("1.60"), 1)

    async def test_a_renewal_then_the_next_due_date_keeps_the_cap(
        self, session: AsyncSession, desk: Desk
    ) -> None:
        loan = await make_loan(session, item=desk.item, patron=desk.patron, now=NOW)
        await accrue(session, NIGHT)
        await loans.renew(session, actor=STAFF, loan_id=loan.id, override=None, now=NIGHT)
        late_again = loan.due_at + timedelta(days=20)
        await accrue(session, late_again)
        assert [f.amount for f in await fines_of(session, loan)] == [
            Decimal("1.00"), Decimal("2.00"),  # the cap of 3.00 counts the first fine
        ]  # fmt: skip
        assert await check_in(session, desk, late_again + timedelta(days=5)) is not None
        assert sum(f.amount for f in await fines_of(session, loan)) == Decimal("3.00")


class TestFeeAccrualJob:
    async def test_a_run_accrues_and_a_second_run_changes_nothing(
        self, sessionmaker: async_sessionmaker[AsyncSession], settings: Settings, desk: Desk
    ) -> None:
        async with sessionmaker() as session:
            loan = await make_loan(
                session, item=desk.item, patron=desk.patron, now=utcnow() - timedelta(days=20)
            )  # 6 days late: 5 past grace, 2.50
            jobs = [await make_job(session, kind="fee-accrual", params={}) for _ in range(2)]
            await session.commit()

        results = []
        for job in jobs:
            assert await execute_job(sessionmaker, job.id, settings=settings, last_try=False) == (
                "succeeded"
            )
            async with sessionmaker() as session:
                done = await session.get(Job, job.id, populate_existing=True)
                assert done is not None
                results.append((done.result, done.progress_done, done.progress_total))
        today = utcnow().date().isoformat()
        assert results == [
            ({"day": today, "overdue_loans": 1, "fines_accrued": 1}, 1, 1),
            ({"day": today, "overdue_loans": 1, "fines_accrued": 0}, 1, 1),
        ]
        async with sessionmaker() as session:
            assert [f.amount for f in await fines_of(session, loan)] == [Decimal("2.50")]
