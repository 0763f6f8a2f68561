"""Many overdue loans, fast: what a worker test and bench/notices.py need by the thousand.

The branch, category and title are made through the services; the copies, patrons and
loans in bulk INSERTs (the services would take minutes for ten thousand checkouts).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from shelfmark.auth.roles import SYSTEM
from shelfmark.catalog import service as catalog_service
from shelfmark.catalog.models import Item
from shelfmark.catalog.schemas import BibCreate, BranchCreate
from shelfmark.circulation.models import Loan
from shelfmark.patrons import service as patrons_service
from shelfmark.patrons.models import Patron
from shelfmark.patrons.schemas import CategoryCreate

CHUNK = 1000


async def overdue_loans(
    session: AsyncSession, count: int, *, days_late: int = 3, now: datetime | None = None,
    prefix: str = "BULK",
) -> None:  # fmt: skip
    """`count` loans `days_late` days overdue, each to its own patron (e-mail, half of them
    French): flushed, not committed."""
    now = now or datetime.now(UTC)
    branch = await catalog_service.create_branch(
        session, actor=SYSTEM, data=BranchCreate(code=prefix, name="Bulk Library")
    )
    category = await patrons_service.create_category(
        session, actor=SYSTEM, data=CategoryCreate(code=prefix, name="Bulk readers")
    )
    bib = await catalog_service.create_bib(
        session, actor=SYSTEM, data=BibCreate(title="A Much Borrowed Book")
    )
    due = datetime.combine(now.date() - timedelta(days=days_late), time(23, 59, 59), tzinfo=UTC)
    for start in range(0, count, CHUNK):
        numbers = range(start, min(start + CHUNK, count))
        await session.execute(
            insert(Item),
            [{"bib_id": bib.id, "barcode": f"{prefix}-I{n:07d}", "branch_id": branch.id,
              "status": "on_loan"} for n in numbers],
        )  # fmt: skip
        await session.execute(
            insert(Patron),
            [{"card_number": f"{prefix}-P{n:07d}", "name": f"Reader {n}",
              "email": f"reader{n}@example.org", "category_id": category.id,
              "home_branch_id": branch.id, "expires_on": date(2099, 12, 31),
              "notice_channel": "email", "language": "fre" if n % 2 else "eng"}
             for n in numbers],
        )  # fmt: skip
    items = dict(
        (await session.execute(
            select(Item.barcode, Item.id).where(Item.barcode.startswith(f"{prefix}-I"))
        )).all()
    )  # fmt: skip
    patrons = dict(
        (await session.execute(
            select(Patron.card_number, Patron.id)
            .where(Patron.card_number.startswith(f"{prefix}-P"))
        )).all()
    )  # fmt: skip
    for start in range(0, count, CHUNK):
        await session.execute(
            insert(Loan),
            [{"item_id": items[f"{prefix}-I{n:07d}"], "patron_id": patrons[f"{prefix}-P{n:07d}"],
              "branch_id": branch.id, "checked_out_at": due - timedelta(days=14), "due_at": due,
              "renewals": 0} for n in range(start, min(start + CHUNK, count))],
        )  # fmt: skip
    await session.flush()
