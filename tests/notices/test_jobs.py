"""The notice job kinds, run as the worker runs them (in process): write, then deliver."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from circulation.conftest import Desk
from circulation.test_holds import check_in, hold_for
from factories import make_job, make_patron
from mailsink import MailSink
from notices.conftest import end_of, lend
from shelfmark.circulation.models import Hold
from shelfmark.db import utcnow
from shelfmark.jobs.models import Job
from shelfmark.jobs.runner import execute_job
from shelfmark.notices.models import Notice
from shelfmark.settings import Settings

pytestmark = pytest.mark.usefixtures("own_broker")


async def run_job(maker: async_sessionmaker[AsyncSession], settings: Settings, kind: str) -> Job:
    async with maker() as session:
        job = await make_job(session, kind=kind, params={})
        await session.commit()
    await execute_job(maker, job.id, settings=settings, last_try=False)
    async with maker() as session:
        done = await session.get(Job, job.id, populate_existing=True)
        assert done is not None
        return done


class TestOverdueNoticesJob:
    async def test_it_writes_and_delivers_and_a_second_run_sends_nothing(
        self, sessionmaker: async_sessionmaker[AsyncSession], mail_settings: Settings,
        smtp: MailSink, desk: Desk,
    ) -> None:  # fmt: skip
        today = utcnow()
        async with sessionmaker() as session:
            for late in (1, 8, 30):
                await lend(session, desk, due_at=end_of(today - timedelta(days=late)))
            await lend(session, desk, due_at=end_of(today + timedelta(days=5)))
            await session.commit()

        job = await run_job(sessionmaker, mail_settings, "overdue-notices")

        assert job.status == "succeeded", job.error
        assert job.result is not None
        assert {k: job.result[k] for k in ("loans_read", "written", "sent", "pending")} == {
            "loans_read": 3, "written": 3, "sent": 3, "pending": 0,
        }  # fmt: skip
        assert job.result["day"] == today.date().isoformat()
        assert (job.progress_done, job.progress_total) == (3, 3)
        assert len(smtp.messages()) == 3
        levels = sorted(s for (s,) in (await _levels(sessionmaker)))
        assert levels == [1, 2, 3]

        again = await run_job(sessionmaker, mail_settings, "overdue-notices")
        assert again.status == "succeeded", again.error
        assert again.result is not None
        assert (again.result["written"], again.result["sent"]) == (0, 0)
        assert len(smtp.messages()) == 3

    async def test_smtp_down_gives_the_job_back_for_a_retry(
        self, sessionmaker: async_sessionmaker[AsyncSession], mail_settings: Settings,
        smtp: MailSink, desk: Desk,
    ) -> None:  # fmt: skip
        async with sessionmaker() as session:
            await lend(session, desk, due_at=end_of(utcnow() - timedelta(days=2)))
            await session.commit()
        smtp.stop()
        async with sessionmaker() as session:
            job = await make_job(session, kind="overdue-notices", params={})
            await session.commit()
        with pytest.raises(ConnectionError):
            await execute_job(sessionmaker, job.id, settings=mail_settings, last_try=False)
        async with sessionmaker() as session:
            released = await session.get(Job, job.id, populate_existing=True)
            notice = await session.scalar(select(Notice))
        assert released is not None
        assert notice is not None
        assert released.status == "queued"
        assert "Error connecting to 127.0.0.1" in (released.error or "")
        assert (notice.status, notice.attempts) == ("pending", 1)

        smtp.start()
        await execute_job(sessionmaker, job.id, settings=mail_settings, last_try=False)
        async with sessionmaker() as session:
            finished = await session.get(Job, job.id, populate_existing=True)
        assert finished is not None
        assert finished.status == "succeeded"
        assert finished.result is not None
        assert (finished.result["written"], finished.result["sent"]) == (0, 1)
        assert len(smtp.messages()) == 1


class TestDueSoonNoticesJob:
    async def test_it_writes_and_delivers(
        self, sessionmaker: async_sessionmaker[AsyncSession], mail_settings: Settings,
        smtp: MailSink, desk: Desk,
    ) -> None:  # fmt: skip
        async with sessionmaker() as session:
            await lend(session, desk, due_at=end_of(utcnow() + timedelta(days=1)))
            await session.commit()
        job = await run_job(sessionmaker, mail_settings, "due-soon-notices")
        assert job.result is not None
        assert (job.result["written"], job.result["sent"]) == (1, 1)
        assert smtp.messages()[0].message["Subject"].startswith("Due soon: ")


class TestHoldExpiryJob:
    async def test_it_expires_holds_and_tells_both_patrons(
        self, sessionmaker: async_sessionmaker[AsyncSession], mail_settings: Settings,
        smtp: MailSink, desk: Desk,
    ) -> None:  # fmt: skip
        async with sessionmaker() as session:
            first = await make_patron(session, category=desk.category, branch=desk.branch,
                                      email="first@example.org")  # fmt: skip
            second = await make_patron(session, category=desk.category, branch=desk.branch,
                                       email="second@example.org")  # fmt: skip
            one = await hold_for(session, desk, first, now=utcnow() - timedelta(days=10))
            await hold_for(session, desk, second, now=utcnow() - timedelta(days=10))
            await check_in(session, desk, now=utcnow() - timedelta(days=10))
            await session.execute(
                update(Hold).where(Hold.id == one.id)
                .values(ready_until=utcnow() - timedelta(hours=1))
            )  # fmt: skip
            await session.commit()

        job = await run_job(sessionmaker, mail_settings, "hold-expiry")

        assert job.status == "succeeded", job.error
        assert job.result is not None
        # The first patron's ready notice went out long ago in real life; here it is still
        # pending and moot (their hold expired): cancelled, not sent.
        assert (job.result["expired"], job.result["sent"], job.result["cancelled"]) == (1, 2, 1)
        subjects = sorted((m.recipients[0], m.message["Subject"]) for m in smtp.messages())
        assert subjects == [
            ("first@example.org", f"Hold expired: {desk.bib.title}"),
            ("second@example.org", f"Ready for you: {desk.bib.title}"),
        ]


async def _levels(maker: async_sessionmaker[AsyncSession]) -> list[tuple[int]]:
    async with maker() as session:
        rows = await session.execute(select(Notice.level).where(Notice.kind == "overdue"))
        return [(int(level),) for (level,) in rows]
