"""The outbox: a notice is written in the transaction of what it announces, once a day."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from background import Broker
from circulation.conftest import NOW, Desk
from circulation.test_holds import check_in, check_out, hold_for
from factories import make_patron
from notices.conftest import end_of, lend
from shelfmark.circulation import holds
from shelfmark.db import session_scope
from shelfmark.notices import service
from shelfmark.notices.models import Notice
from shelfmark.settings import Settings
from shelfmark.worker import DELIVER_NOTICES


async def notices_of(session: AsyncSession, kind: str | None = None) -> list[Notice]:
    query = select(Notice).order_by(Notice.id)
    if kind is not None:
        query = query.where(Notice.kind == kind)
    return list(await session.scalars(query))


class TestWhatIsAnnounced:
    async def test_a_hold_made_ready_writes_a_hold_ready_notice(
        self, session: AsyncSession, desk: Desk
    ) -> None:
        reader = await make_patron(session, category=desk.category, branch=desk.branch)
        hold = await hold_for(session, desk, reader)
        await check_in(session, desk)  # the copy in hand is trapped for the hold

        (notice,) = await notices_of(session, "hold-ready")
        assert (notice.patron_id, notice.object_id, notice.object_type) == (
            reader.id, hold.id, "hold",
        )  # fmt: skip
        assert (notice.status, notice.channel, notice.attempts) == ("pending", "email", 0)
        assert notice.dedupe_key == f"hold-ready:{hold.id}:{NOW.date().isoformat()}"

    async def test_a_fine_charged_at_checkin_writes_a_fee_charged_notice(
        self, session: AsyncSession, desk: Desk
    ) -> None:
        await check_out(session, desk, desk.patron, now=NOW - timedelta(days=20))
        result = await check_in(session, desk)
        assert result.fee is not None

        (notice,) = await notices_of(session, "fee-charged")
        assert (notice.patron_id, notice.object_id) == (desk.patron.id, result.fee.id)

    async def test_a_hold_expiring_on_the_shelf_writes_a_hold_expired_notice(
        self, session: AsyncSession, desk: Desk
    ) -> None:
        first = await make_patron(session, category=desk.category, branch=desk.branch)
        second = await make_patron(session, category=desk.category, branch=desk.branch)
        one = await hold_for(session, desk, first)
        two = await hold_for(session, desk, second)
        await check_in(session, desk)

        expired = await holds.expire_holds(session, now=NOW + timedelta(days=10))

        assert [h.id for h in expired] == [one.id]
        kinds = [(n.kind, n.object_id) for n in await notices_of(session)]
        assert kinds == [("hold-ready", one.id), ("hold-expired", one.id), ("hold-ready", two.id)]

    async def test_nothing_is_written_when_the_transaction_rolls_back(
        self, session: AsyncSession, desk: Desk
    ) -> None:
        reader = await make_patron(session, category=desk.category, branch=desk.branch)
        await hold_for(session, desk, reader)
        nested = await session.begin_nested()
        await check_in(session, desk)
        assert len(await notices_of(session, "hold-ready")) == 1
        await nested.rollback()
        assert await notices_of(session) == []


class TestDedupe:
    async def test_one_notice_per_kind_object_and_day(
        self, session: AsyncSession, desk: Desk
    ) -> None:
        loan = await lend(session, desk, due_at=end_of(NOW - timedelta(days=3)))
        new = service.NewNotice("overdue", loan.patron_id, loan.id, "email", level=1,
                                due_at=loan.due_at)  # fmt: skip
        first = await service.write_notices(session, [new], now=NOW)
        again = await service.write_notices(session, [new, new], now=NOW + timedelta(hours=5))
        tomorrow = await service.write_notices(session, [new], now=NOW + timedelta(days=1))

        assert len(first) == 1
        assert again == []
        assert len(tomorrow) == 1
        assert len(await notices_of(session)) == 2

    async def test_the_database_refuses_a_second_row_with_the_same_key(
        self, session: AsyncSession, desk: Desk
    ) -> None:
        loan = await lend(session, desk, due_at=end_of(NOW))
        row = {"kind": "due-soon", "patron_id": loan.patron_id, "object_id": loan.id,
               "channel": "email", "dedupe_key": "due-soon:1:2026-03-02", "status": "pending",
               "attempts": 0, "created_at": NOW}  # fmt: skip
        session.add(Notice(**row))
        await session.flush()
        session.add(Notice(**row))
        with pytest.raises(IntegrityError):
            async with session.begin_nested():
                await session.flush()


class TestSentAfterCommit:
    async def test_a_delivery_is_queued_once_the_transaction_commits(
        self, sessionmaker: async_sessionmaker[AsyncSession], settings: Settings,
        own_broker: None, desk: Desk,
    ) -> None:  # fmt: skip
        broker = Broker(settings.jobs_queue)
        broker.take()
        async with sessionmaker() as session:
            reader = await make_patron(session, category=desk.category, branch=desk.branch)
            await hold_for(session, desk, reader)
            await session.commit()
        with pytest.raises(RuntimeError):  # noqa: PT012 - the crash inside the unit of work
            async with session_scope(sessionmaker) as session:
                await check_in(session, desk)
                raise RuntimeError("the desk crashed")
        assert broker.take() == []  # rolled back: nothing written, nothing sent

        async with session_scope(sessionmaker) as session:
            await check_in(session, desk)
        async with sessionmaker() as session:
            (notice,) = await notices_of(session, "hold-ready")
        assert broker.take() == [(DELIVER_NOTICES, [[notice.id]])]
