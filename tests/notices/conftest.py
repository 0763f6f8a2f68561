"""Notice fixtures: a real SMTP server (aiosmtpd) per test, settings that point at it, a desk
with a patron who takes notices by e-mail, and the test home's broker for what is sent."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from circulation.conftest import Desk, make_desk
from factories import make_bib, make_item, make_loan, make_patron, unique
from mailsink import MailSink
from shelfmark.circulation.models import Loan
from shelfmark.patrons.models import Patron
from shelfmark.settings import Settings
from shelfmark.worker import configure


@pytest.fixture
def own_broker(settings: Settings) -> None:
    """Deliveries queued after a commit go to the test home's embedded broker."""
    configure(settings)


@pytest.fixture
def smtp() -> Iterator[MailSink]:
    sink = MailSink()
    sink.start()
    yield sink
    sink.stop()


@pytest.fixture
def mail_settings(settings: Settings, smtp: MailSink) -> Settings:
    """The test settings, with SMTP_URL pointing at the test's SMTP server."""
    # One SMTP connection: the test's sessions share one database connection, which runs
    # one statement at a time (the worker tests and the bench use several).
    return settings.model_copy(
        update={
            "smtp_url": smtp.url, "notice_from": "Shelfmark Library <library@example.org>",
            "notice_connections": 1,
        }
    )  # fmt: skip


@pytest.fixture
async def desk(session: AsyncSession) -> Desk:
    desk = await make_desk(session)
    desk.patron.email = "reader@example.org"
    await session.flush()
    await session.commit()
    return desk


async def lend(
    session: AsyncSession, desk: Desk, *, due_at: datetime, patron: Patron | None = None,
    title: str | None = None,
) -> Loan:  # fmt: skip
    """A new copy at the desk's branch lent to `patron` (by default a new one, with an
    e-mail address), due at `due_at`."""
    if patron is None:
        patron = await make_patron(
            session, category=desk.category, branch=desk.branch, email=f"{unique('p')}@x.org"
        )
    bib = await make_bib(session, title=title) if title else None
    item = await make_item(session, bib=bib, branch=desk.branch)
    return await make_loan(
        session, item=item, patron=patron, now=due_at - timedelta(days=14), due_at=due_at
    )


def end_of(day: datetime) -> datetime:
    """23:59:59 of `day`'s date, as loans in days are due."""
    return datetime.combine(day.date(), time(23, 59, 59), tzinfo=UTC)
