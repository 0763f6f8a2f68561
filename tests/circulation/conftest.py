"""Circulation fixtures: a desk (branch, category, rule, patron, copy) with known terms."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from factories import make_bib, make_branch, make_category, make_item, make_patron, make_rule
from shelfmark.catalog.models import Bib, Branch, Item
from shelfmark.circulation.models import CirculationRule
from shelfmark.patrons.models import Patron, PatronCategory

# A Monday, mid-morning.
NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


@dataclass
class Desk:
    branch: Branch
    category: PatronCategory
    rule: CirculationRule
    patron: Patron
    bib: Bib
    item: Item


async def make_desk(session: AsyncSession) -> Desk:
    """A branch open every day, with its own rule: 14 days, 1 renewal, 2 loans, 2 holds,
    0.50 a day after 1 grace day, capped at 3.00; a category blocked above 5.00."""
    branch = await make_branch(session)
    category = await make_category(session, fee_block_threshold="5.00")
    rule = await make_rule(
        session, branch=branch, loan_period=14, renewals_allowed=1, max_loans=2, max_holds=2,
        fine_per_day="0.50", fine_cap="3.00", grace_days=1, hold_pickup_days=3,
    )  # fmt: skip
    patron = await make_patron(session, category=category, branch=branch)
    bib = await make_bib(session)
    item = await make_item(session, bib=bib, branch=branch, price="20.00")
    return Desk(branch, category, rule, patron, bib, item)


@pytest.fixture
async def desk(session: AsyncSession) -> Desk:
    desk = await make_desk(session)
    await session.commit()
    return desk
