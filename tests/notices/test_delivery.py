"""Delivery by e-mail to a real SMTP server: once each, moot notices cancelled, unreachable
patrons skipped, SMTP outages retried, a run that dies halfway finished by the next."""

from __future__ import annotations

import itertools
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from circulation.conftest import NOW, Desk
from circulation.test_holds import check_in, check_out, hold_for
from factories import STAFF, make_patron
from mailsink import MailSink
from notices.conftest import end_of, lend
from notices.test_runs import _barcode, overdue_run
from shelfmark.circulation import loans as loans_service
from shelfmark.db import session_scope
from shelfmark.notices import service
from shelfmark.notices.delivery import NO_SMTP, Delivery, deliver_pending
from shelfmark.notices.models import Notice, NoticeTemplate
from shelfmark.settings import Settings

LATER = NOW + timedelta(hours=1)


async def deliver(
    maker: async_sessionmaker[AsyncSession], settings: Settings, *, now: datetime = LATER,
    **options: Any,
) -> Delivery:  # fmt: skip
    return await deliver_pending(maker, settings=settings, clock=lambda: now, **options)


async def all_notices(maker: async_sessionmaker[AsyncSession]) -> list[Notice]:
    async with maker() as session:
        return list(await session.scalars(select(Notice).order_by(Notice.id)))


async def overdue_notices(
    maker: async_sessionmaker[AsyncSession], desk: Desk, count: int, **patron: Any
) -> list[Notice]:
    """`count` overdue loans, each to a new patron, and their overdue notices (written)."""
    async with maker() as session:
        for index in range(count):
            reader = await make_patron(
                session, category=desk.category, branch=desk.branch,
                email=patron.get("email", f"reader{index}@example.org"),
                **{k: v for k, v in patron.items() if k != "email"},
            )  # fmt: skip
            await lend(session, desk, due_at=end_of(NOW - timedelta(days=2)), patron=reader)
        await overdue_run(session, NOW)
        await session.commit()
    return await all_notices(maker)


class TestDelivery:
    async def test_each_notice_is_sent_once_in_the_patrons_language(
        self, sessionmaker: async_sessionmaker[AsyncSession], mail_settings: Settings,
        smtp: MailSink, desk: Desk,
    ) -> None:  # fmt: skip
        async with sessionmaker() as session:
            for language, name in (("eng", "Ada"), ("fre", "Émile")):
                reader = await make_patron(
                    session, category=desk.category, branch=desk.branch, name=name,
                    email=f"{language}@example.org", language=language,
                )  # fmt: skip
                await lend(session, desk, due_at=end_of(NOW - timedelta(days=2)), patron=reader,
                           title=f"A book for {name}")  # fmt: skip
            await overdue_run(session, NOW)
            await session.commit()

        summary = await deliver(sessionmaker, mail_settings)

        assert (summary.sent, summary.pending, summary.failed) == (2, 0, 0)
        english, french = sorted(smtp.messages(), key=lambda m: m.recipients)
        assert english.recipients == ["eng@example.org"]
        assert english.sender == "library@example.org"
        assert english.message["Subject"] == "Overdue: A book for Ada"
        assert french.message["Subject"] == "En retard : A book for Émile"
        assert "Bonjour Émile" in french.text()
        assert french.message["To"] == "Émile <fre@example.org>"
        html = french.html()
        assert html is not None
        assert "<strong>A book for Émile</strong>" in html
        notices = await all_notices(sessionmaker)
        assert {m.message_id for m in smtp.messages()} == {
            f"<notice-{n.id}@example.org>" for n in notices
        }
        assert [(n.status, n.attempts, n.sent_at) for n in notices] == [("sent", 1, LATER)] * 2

        again = await deliver(sessionmaker, mail_settings, now=LATER + timedelta(hours=1))
        assert again.sent == 0
        assert len(smtp.messages()) == 2

    async def test_an_admins_template_is_used(
        self, sessionmaker: async_sessionmaker[AsyncSession], mail_settings: Settings,
        smtp: MailSink, desk: Desk,
    ) -> None:  # fmt: skip
        async with sessionmaker() as session:
            session.add(NoticeTemplate(
                kind="overdue", language="eng", subject="Late: {{ loan.title }}",
                text_body="Level {{ notice.level }}, {{ loan.days_overdue }} days.",
                html_body=None,
            ))  # fmt: skip
            await session.commit()
        await overdue_notices(sessionmaker, desk, 1)
        await deliver(sessionmaker, mail_settings)
        (received,) = smtp.messages()
        assert received.message["Subject"].startswith("Late: ")
        assert received.text().strip() == "Level 1, 2 days."
        assert received.html() is None

    async def test_only_the_notices_named_are_sent(
        self, sessionmaker: async_sessionmaker[AsyncSession], mail_settings: Settings,
        smtp: MailSink, desk: Desk,
    ) -> None:  # fmt: skip
        _, second, _ = await overdue_notices(sessionmaker, desk, 3)
        summary = await deliver(sessionmaker, mail_settings, only_ids=[second.id])
        assert (summary.sent, summary.pending) == (1, 0)
        assert [m.message_id for m in smtp.messages()] == [f"<notice-{second.id}@example.org>"]
        assert [n.status for n in await all_notices(sessionmaker)] == ["pending", "sent", "pending"]

    async def test_progress_is_reported(
        self, sessionmaker: async_sessionmaker[AsyncSession], mail_settings: Settings,
        smtp: MailSink, desk: Desk,
    ) -> None:  # fmt: skip
        await overdue_notices(sessionmaker, desk, 3)
        seen: list[tuple[int, int]] = []
        await deliver(sessionmaker, mail_settings, on_progress=lambda d, t: seen.append((d, t)))
        assert seen[0] == (0, 3)
        assert seen[-1] == (3, 3)
        assert [d for d, _ in seen] == sorted(d for d, _ in seen)


class TestMootAndUnreachable:
    async def test_a_loan_returned_before_sending_gets_nothing(
        self, sessionmaker: async_sessionmaker[AsyncSession], mail_settings: Settings,
        smtp: MailSink, desk: Desk,
    ) -> None:  # fmt: skip
        async with sessionmaker() as session:
            loan = await lend(session, desk, due_at=end_of(NOW - timedelta(days=2)))
            kept = await lend(session, desk, due_at=end_of(NOW - timedelta(days=2)))
            await overdue_run(session, NOW)
            await session.commit()
        async with sessionmaker() as session:
            data = loans_service.CheckinCreate(item_barcode=await _barcode(session, loan))
            await loans_service.check_in(session, actor=STAFF, data=data, now=NOW)
            await session.commit()

        summary = await deliver(sessionmaker, mail_settings)

        # The return charged a fine: its notice goes out, the overdue one does not.
        assert (summary.sent, summary.cancelled) == (2, 1)
        notices = await all_notices(sessionmaker)
        by_loan = {n.object_id: n for n in notices if n.kind == "overdue"}
        (fine,) = [n for n in notices if n.kind == "fee-charged"]
        assert by_loan[loan.id].status == "cancelled"
        assert by_loan[loan.id].reason == "The loan was returned before the notice went out."
        assert by_loan[kept.id].status == "sent"
        assert sorted(m.message_id for m in smtp.messages()) == sorted(
            f"<notice-{n.id}@example.org>" for n in (by_loan[kept.id], fine)
        )

    async def test_a_renewed_loan_and_a_collected_hold_get_nothing(
        self, sessionmaker: async_sessionmaker[AsyncSession], mail_settings: Settings,
        smtp: MailSink, desk: Desk,
    ) -> None:  # fmt: skip
        async with sessionmaker() as session:
            reader = await make_patron(session, category=desk.category, branch=desk.branch,
                                       email="r@example.org")  # fmt: skip
            await hold_for(session, desk, reader)
            await check_in(session, desk)  # ready: a hold-ready notice
            await check_out(session, desk, reader)  # collected at once
            loan = await lend(session, desk, due_at=end_of(NOW + timedelta(days=1)))
            await service.write_notices(session, [service.NewNotice(
                "due-soon", loan.patron_id, loan.id, "email", due_at=loan.due_at,
            )], now=NOW)  # fmt: skip
            await session.execute(
                update(type(loan)).where(type(loan).id == loan.id)
                .values(due_at=end_of(NOW + timedelta(days=15)))
            )  # fmt: skip
            await session.commit()

        summary = await deliver(sessionmaker, mail_settings)

        assert (summary.sent, summary.cancelled) == (0, 2)
        reasons = {n.kind: n.reason for n in await all_notices(sessionmaker)}
        assert reasons == {
            "hold-ready": "The hold is fulfilled now.",
            "due-soon": "The loan was renewed before the notice went out.",
        }
        assert smtp.messages() == []

    async def test_patrons_without_e_mail_are_skipped_with_the_reason(
        self, sessionmaker: async_sessionmaker[AsyncSession], mail_settings: Settings,
        smtp: MailSink, desk: Desk,
    ) -> None:  # fmt: skip
        async with sessionmaker() as session:
            for channel, email in (("sms", "s@example.org"), ("none", "n@example.org"),
                                   ("email", None), ("print", "p@example.org")):  # fmt: skip
                reader = await make_patron(session, category=desk.category, branch=desk.branch,
                                           notice_channel=channel, email=email)  # fmt: skip
                await lend(session, desk, due_at=end_of(NOW - timedelta(days=2)), patron=reader)
            await overdue_run(session, NOW)
            await session.commit()

        summary = await deliver(sessionmaker, mail_settings)

        assert (summary.sent, summary.skipped) == (0, 4)
        notices = await all_notices(sessionmaker)
        assert [(n.channel, n.status, n.reason) for n in notices] == [
            ("sms", "skipped", "The patron takes notices by sms, not e-mail."),
            ("none", "skipped", "The patron asked for no notices."),
            ("email", "skipped", "The patron has no e-mail address."),
            ("print", "skipped", "The patron takes notices by print, not e-mail."),
        ]
        assert smtp.messages() == []


class TestNoSmtp:
    async def test_without_smtp_url_notices_wait_and_say_why(
        self, sessionmaker: async_sessionmaker[AsyncSession], settings: Settings,
        smtp: MailSink, desk: Desk,
    ) -> None:  # fmt: skip
        assert settings.smtp_url is None
        await overdue_notices(sessionmaker, desk, 2)

        summary = await deliver(sessionmaker, settings)

        assert (summary.sent, summary.pending, summary.note) == (0, 2, NO_SMTP)
        notices = await all_notices(sessionmaker)
        assert [(n.status, n.attempts, n.reason) for n in notices] == [("pending", 0, NO_SMTP)] * 2

        # SMTP_URL set: they go out.
        with_smtp = settings.model_copy(update={"smtp_url": smtp.url})
        assert (await deliver(sessionmaker, with_smtp)).sent == 2
        assert [n.reason for n in await all_notices(sessionmaker)] == [None, None]


class TestSmtpTrouble:
    async def test_smtp_down_keeps_them_pending_and_they_go_out_once_it_is_back(
        self, sessionmaker: async_sessionmaker[AsyncSession], mail_settings: Settings,
        smtp: MailSink, desk: Desk,
    ) -> None:  # fmt: skip
        await overdue_notices(sessionmaker, desk, 3)
        smtp.stop()

        with pytest.raises(ConnectionError):
            await deliver(sessionmaker, mail_settings)
        notices = await all_notices(sessionmaker)
        assert [(n.status, n.attempts) for n in notices] == [("pending", 1)] * 3
        assert all("SMTP server 127.0.0.1" in (n.last_error or "") for n in notices)

        smtp.start()
        summary = await deliver(sessionmaker, mail_settings, now=LATER + timedelta(minutes=5))
        assert (summary.sent, summary.pending) == (3, 0)
        assert Counter(m.message_id for m in smtp.messages()) == {
            f"<notice-{n.id}@example.org>": 1 for n in notices
        }
        assert [(n.status, n.attempts) for n in await all_notices(sessionmaker)] == [
            ("sent", 2)
        ] * 3

    async def test_a_permanent_refusal_fails_the_notice_with_the_error(
        self, sessionmaker: async_sessionmaker[AsyncSession], mail_settings: Settings,
        smtp: MailSink, desk: Desk,
    ) -> None:  # fmt: skip
        await overdue_notices(sessionmaker, desk, 2)
        smtp.refuse["reader0@example.org"] = "550 5.1.1 No such mailbox"
        summary = await deliver(sessionmaker, mail_settings)
        assert (summary.sent, summary.failed) == (1, 1)
        gone, fine = await all_notices(sessionmaker)
        assert (gone.status, gone.last_error) == (
            "failed", "SMTP server refused it: 550 5.1.1 No such mailbox",
        )  # fmt: skip
        assert fine.status == "sent"

    async def test_a_temporary_refusal_is_retried_until_the_tries_run_out(
        self, sessionmaker: async_sessionmaker[AsyncSession], mail_settings: Settings,
        smtp: MailSink, desk: Desk,
    ) -> None:  # fmt: skip
        await overdue_notices(sessionmaker, desk, 1)
        smtp.refuse["reader0@example.org"] = "451 4.3.0 Mailbox busy, try later"
        settings = mail_settings.model_copy(update={"notice_max_attempts": 3})
        statuses = []
        for hour in range(4):
            summary = await deliver(sessionmaker, settings, now=LATER + timedelta(hours=hour))
            (notice,) = await all_notices(sessionmaker)
            statuses.append((notice.status, notice.attempts, summary.retrying, summary.failed))
        assert statuses == [
            ("pending", 1, 1, 0), ("pending", 2, 1, 0), ("failed", 3, 0, 1), ("failed", 3, 0, 0),
        ]  # fmt: skip
        assert notice.reason == "Failed after 3 tries."
        assert notice.last_error == "SMTP server refused it: 451 4.3.0 Mailbox busy, try later"


class WorkerDied(Exception):
    pass


def dies_at_commit(base: async_sessionmaker[AsyncSession], fatal: int) -> Any:
    """Sessions like `base`'s, of a worker that dies at the `fatal`th commit marking notices
    sent (the run's first commits on them are those)."""
    commits = itertools.count(1)

    class Dying(AsyncSession):
        async def commit(self) -> None:
            if next(commits) == fatal:
                raise WorkerDied("the worker died")
            await super().commit()

    return async_sessionmaker(class_=Dying, **base.kw)


class TestDeath:
    async def test_a_run_that_dies_mid_send_is_finished_by_the_next_each_sent_once(
        self, sessionmaker: async_sessionmaker[AsyncSession], mail_settings: Settings,
        smtp: MailSink, desk: Desk,
    ) -> None:  # fmt: skip
        notices = await overdue_notices(sessionmaker, desk, 5)

        with pytest.raises(WorkerDied):
            await deliver(sessionmaker, mail_settings, mark_maker=dies_at_commit(sessionmaker, 3))

        # Two were handed over; the third's message was cut off before its final line.
        assert len(smtp.messages()) == 2
        assert [n.status for n in await all_notices(sessionmaker)] == [
            "sent", "sent", "sending", "sending", "sending",
        ]  # fmt: skip
        # Too soon: the dead run's claim still holds.
        assert (await deliver(sessionmaker, mail_settings)).sent == 0

        stale = LATER + timedelta(seconds=mail_settings.notice_claim_seconds + 1)
        summary = await deliver(sessionmaker, mail_settings, now=stale)

        assert (summary.sent, summary.pending) == (3, 0)
        assert Counter(m.message_id for m in smtp.messages()) == {
            f"<notice-{n.id}@example.org>": 1 for n in notices
        }
        assert [(n.status, n.attempts) for n in await all_notices(sessionmaker)] == [
            ("sent", 1), ("sent", 1), ("sent", 2), ("sent", 2), ("sent", 2),
        ]  # fmt: skip

    async def test_a_run_whose_claim_was_taken_over_cannot_mark_it_sent(
        self, sessionmaker: async_sessionmaker[AsyncSession], desk: Desk
    ) -> None:
        await overdue_notices(sessionmaker, desk, 1)
        async with session_scope(sessionmaker) as session:
            ((notice_id, slow),) = await service.claim(session, now=NOW, after_id=0, limit=10)
        async with session_scope(sessionmaker) as session:
            stale = timedelta(seconds=60)
            assert await service.reclaim_stale(session, now=NOW + 2 * stale, stale_after=stale)
            ((_, fresh),) = await service.claim(session, now=NOW + 2 * stale, after_id=0, limit=10)
        async with session_scope(sessionmaker) as session:
            assert await service.mark_sent(session, claims=[(notice_id, slow)], now=NOW) == set()
            marked = await service.mark_sent(session, claims=[(notice_id, fresh)], now=NOW)
            assert marked == {notice_id}
        assert (slow, fresh) == (1, 2)
