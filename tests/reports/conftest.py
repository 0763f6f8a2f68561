"""A small library whose every report is known by heart, and running report jobs in process.

Two branches (A, B); three categories (adults with one expired patron, children, and one
with nobody); four titles, one of them never borrowed and one whose title starts with "="
(it must stay text in a spreadsheet); five loans over three days in March 2026, two of them
still out (so overdue by now) and some fees.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from background import Broker
from factories import (
    STAFF,
    make_bib,
    make_branch,
    make_category,
    make_item,
    make_job,
    make_loan,
    make_patron,
)
from shelfmark.catalog.models import Bib, Branch, Item
from shelfmark.circulation import fees, loans
from shelfmark.circulation.models import Loan
from shelfmark.circulation.schemas import CheckinCreate
from shelfmark.jobs.models import Job
from shelfmark.jobs.runner import execute_job
from shelfmark.patrons.models import Patron, PatronCategory
from shelfmark.settings import Settings
from shelfmark.worker import configure

MARCH_2 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _own_broker(settings: Settings) -> None:
    """Jobs queued here go to the test home's embedded broker, nowhere else."""
    configure(settings)


@pytest.fixture
def broker(settings: Settings) -> Iterator[Broker]:
    broker = Broker(settings.jobs_queue)
    broker.take()
    yield broker
    broker.take()


@dataclass
class Library:
    a: Branch
    b: Branch
    adults: PatronCategory
    children: PatronCategory
    nobody: PatronCategory
    ada: Patron  # adult, home A
    old: Patron  # adult, home B, card expired
    kid: Patron  # child, home A
    alpha: Bib  # book, eng: 2 copies at A
    zoe: Bib  # book, fre: 1 copy at B
    formula: Bib  # video, eng, titled "=1+2 Puzzles": 1 copy at A
    never: Bib  # book, no language: 1 copy at B, 1 withdrawn at A
    open_loans: list[Loan]


async def _lend(
    session: AsyncSession, item: Item, patron: Patron, at: datetime, back: datetime | None
) -> Loan:
    loan = await make_loan(session, item=item, patron=patron, now=at)
    if back is not None:
        data = CheckinCreate(item_barcode=item.barcode)
        await loans.check_in(session, actor=STAFF, data=data, now=back)
    return loan


async def make_library(session: AsyncSession) -> Library:
    a, b = await make_branch(session, name="Alpha Street"), await make_branch(session)
    adults = await make_category(session, name="Adults")
    children = await make_category(session, name="Children")
    nobody = await make_category(session, name="Nobody yet")
    ada = await make_patron(session, category=adults, branch=a, name="Zoë Ångström",
                            email="zoe@example.org", phone="+44 20 7946 0000")  # fmt: skip
    old = await make_patron(session, category=adults, branch=b, expires_on=date(2020, 1, 1))
    kid = await make_patron(session, category=children, branch=a, name="=Kid")
    alpha = await make_bib(session, title="Alpha", language="eng", publication_year=1999)
    zoe = await make_bib(session, title="Zoë's Ångström", language="fre")
    formula = await make_bib(session, title="=1+2 Puzzles", language="eng", material_type="video")
    never = await make_bib(session, title="Never borrowed")
    alpha_1 = await make_item(session, bib=alpha, branch=a)
    alpha_2 = await make_item(session, bib=alpha, branch=a)
    zoe_1 = await make_item(session, bib=zoe, branch=b)
    formula_1 = await make_item(session, bib=formula, branch=a)
    await make_item(session, bib=never, branch=b)
    await make_item(session, bib=never, branch=a, status="withdrawn")
    day = timedelta(days=1)
    await _lend(session, alpha_1, ada, MARCH_2, MARCH_2 + 3 * day)
    await _lend(session, zoe_1, kid, MARCH_2 + timedelta(hours=1), MARCH_2 + 5 * day)
    out_1 = await _lend(session, alpha_2, ada, MARCH_2 + day - timedelta(hours=1), None)
    out_2 = await _lend(session, formula_1, kid, MARCH_2 + day + timedelta(hours=5), None)
    await _lend(session, alpha_1, kid, MARCH_2 + 10 * day, MARCH_2 + 11 * day)
    for amount in ("4.00", "1.50"):
        await fees.charge_manual(
            session, actor=STAFF, patron_card=ada.card_number, amount=Decimal(amount),
            description="Damaged case", item=None, now=MARCH_2,
        )  # fmt: skip
    return Library(a, b, adults, children, nobody, ada, old, kid, alpha, zoe, formula, never,
                   [out_1, out_2])  # fmt: skip


@pytest.fixture
async def library(session: AsyncSession) -> Library:
    library = await make_library(session)
    await session.commit()
    return library


async def run_report(
    sessionmaker: async_sessionmaker[AsyncSession], settings: Settings, **params: Any
) -> tuple[Job, Path]:
    """Queue a report job, run it as the worker would, and give it back finished."""
    async with sessionmaker() as session:
        job = await make_job(session, kind="report", params=params)
        await session.commit()
    outcome = await execute_job(sessionmaker, job.id, settings=settings, last_try=False)
    async with sessionmaker() as session:
        done = await session.get(Job, job.id, populate_existing=True)
    assert done is not None
    assert outcome == "succeeded", done.error
    path = settings.shelfmark_home / "reports" / f"{job.id}.{params.get('format', 'csv')}"
    return done, path
