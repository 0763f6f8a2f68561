"""`shelfmark demo`: a small real library to try Shelfmark on.

Real Library of Congress records (a public-domain subset shipped in the package), copies at
three branches, and staff logins. Loading twice changes nothing: a catalog that already has
branches is left alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shelfmark.auth import service as auth_service
from shelfmark.auth.roles import SYSTEM, Role
from shelfmark.cache import SEARCH_CATALOG_KEY, invalidate
from shelfmark.catalog import service as catalog_service
from shelfmark.catalog.models import Bib, Branch, Item
from shelfmark.catalog.schemas import BranchCreate
from shelfmark.db import session_scope, utcnow
from shelfmark.interop.marc_import import ImportSummary, import_file

DEMO_FILE = "loc-demo.mrc"
WEEKDAYS = {day: [["09:00", "18:00"]] for day in ("mon", "tue", "wed", "thu", "fri")}
BRANCHES = (
    BranchCreate(code="MAIN", name="Main Library", address="1 Library Square",
                 opening_hours=WEEKDAYS | {"sat": [["10:00", "16:00"]]}),
    BranchCreate(code="EAST", name="East Branch", address="12 Harbour Road",
                 opening_hours=WEEKDAYS),
    BranchCreate(code="WEST", name="West Branch", address="3 Mill Lane",
                 opening_hours={"tue": [["12:00", "19:00"]], "thu": [["12:00", "19:00"]],
                                "sat": [["09:00", "13:00"]]}),
)  # fmt: skip
USERS = (
    ("admin", "shelfmark-admin", Role.ADMIN),
    ("librarian", "shelfmark-librarian", Role.LIBRARIAN),
)


@dataclass(frozen=True, slots=True)
class DemoSummary:
    catalog: ImportSummary
    copies: int


async def load_demo(maker: async_sessionmaker[AsyncSession]) -> DemoSummary | None:
    """Load the demo library into an empty catalog; None when one is already there."""
    async with session_scope(maker) as session:
        if await session.scalar(select(func.count()).select_from(Branch)):
            return None
        for branch in BRANCHES:
            await catalog_service.create_branch(session, actor=SYSTEM, data=branch)
        for username, password, role in USERS:
            if await auth_service.get_user_by_username(session, username) is None:
                await auth_service.create_user(
                    session, actor=SYSTEM, username=username, password=password, role=role
                )
    source = resources.files("shelfmark.demo").joinpath(DEMO_FILE)
    with resources.as_file(source) as path:
        catalog = await import_file(maker, path, actor=SYSTEM, items_branch="MAIN")
    async with session_scope(maker) as session:
        await _spread_copies(session)
        copies = await session.scalar(select(func.count()).select_from(Item)) or 0
    return DemoSummary(catalog=catalog, copies=copies)


async def _spread_copies(session: AsyncSession) -> None:
    """Second copies at the other branches, so that availability differs by branch."""
    branches = dict((await session.execute(select(Branch.code, Branch.id))).all())
    bib_ids = (await session.scalars(select(Bib.id).order_by(Bib.id))).all()
    now = utcnow()
    rows = [
        {"bib_id": bib_id, "barcode": f"{code}{bib_id:07d}", "branch_id": branches[code],
         "item_type": "book", "status": "available", "created_at": now, "updated_at": now}
        for n, bib_id in enumerate(bib_ids)
        for code, every in (("EAST", 3), ("WEST", 4))
        if n % every == 0
    ]  # fmt: skip
    if rows:
        await session.execute(insert(Item), rows)
        invalidate(session, [SEARCH_CATALOG_KEY])  # Core rows: the ORM's flush hook sees none
