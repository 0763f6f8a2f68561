"""Row locks for check-then-act, always taken in one order: item → title → patron → hold.

Every desk action that decides on a copy's state first locks the copy's row
(`SELECT … FOR UPDATE`; SQLAlchemy leaves it out on SQLite, whose writers are serialised by
the database lock anyway). Taking locks in one order means two actions can wait for each
other but never deadlock. The unique indexes stay the last word should a path forget a lock.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Select, bindparam, exists, select
from sqlalchemy.ext.asyncio import AsyncSession

from shelfmark import hotpath
from shelfmark.catalog.errors import BibNotFound, ItemNotFound
from shelfmark.catalog.models import Bib, Branch, Item
from shelfmark.circulation.errors import HoldNotFound, LoanNotFound
from shelfmark.circulation.models import Hold, Loan
from shelfmark.errors import Conflict
from shelfmark.patrons.errors import PatronNotFound
from shelfmark.patrons.models import Patron, PatronCategory

# Built once: every desk action runs one of these (on the hot path: see `hotpath`).
_ITEM = hotpath.Loader(Item)
_ITEM_BRANCH = hotpath.Loader(Branch, prefix="branch__")
_LOCK_ITEM: Select[Any] = (
    select(*_ITEM.columns, *_ITEM_BRANCH.columns)
    .join_from(Item, Branch, Item.branch_id == Branch.id)
    .with_for_update(of=Item)
)
_LOCK_ITEM_BY_BARCODE = _LOCK_ITEM.where(Item.barcode == bindparam("barcode"))
_LOCK_ITEM_BY_ID = _LOCK_ITEM.where(Item.id == bindparam("item_id"))
_PATRON = hotpath.Loader(Patron, prefix="patron__")
_CATEGORY = hotpath.Loader(PatronCategory, prefix="category__")
# A row only if both exist. FOR UPDATE OF locks each row in the order named (PostgreSQL
# takes a result row's marks in the order of the OF list), so the item before the patron.
_LOCK_ITEM_AND_PATRON: Select[Any] = (
    select(*_ITEM.columns, *_ITEM_BRANCH.columns, *_PATRON.columns, *_CATEGORY.columns)
    .join_from(Item, Branch, Item.branch_id == Branch.id)
    .join(Patron, Patron.card_number == bindparam("card_number"))
    .join(PatronCategory, Patron.category_id == PatronCategory.id)
    .where(Item.barcode == bindparam("barcode"))
    .with_for_update(of=[Item, Patron])
)
_ITEM_EXISTS = select(exists().where(Item.barcode == bindparam("barcode")).label("found"))


def _item_of(session: AsyncSession, row: Mapping[str, Any]) -> Item:
    """The copy of a row holding `_ITEM` and `_ITEM_BRANCH`'s columns, with its branch."""
    branch = _ITEM_BRANCH.instance(session, row)
    return _ITEM.instance(session, row, branch=branch)


async def lock_item_by_barcode(session: AsyncSession, barcode: str) -> Item:
    found = await hotpath.rows(session, _LOCK_ITEM_BY_BARCODE, {"barcode": barcode})
    if not found:
        raise ItemNotFound(f"There is no item with barcode {barcode!r}.")
    return _item_of(session, found[0])


async def lock_item_and_patron(
    session: AsyncSession, *, barcode: str, card_number: str
) -> tuple[Item, Patron]:
    """The copy (with its branch) and the patron (with their category), locked in that
    order, in one statement: a checkout's first."""
    params = {"barcode": barcode, "card_number": card_number}
    found = await hotpath.rows(session, _LOCK_ITEM_AND_PATRON, params)
    if not found:  # which one is missing: the copy is reported first
        (row,) = await hotpath.rows(session, _ITEM_EXISTS, params)
        if not row["found"]:
            raise ItemNotFound(f"There is no item with barcode {barcode!r}.")
        raise PatronNotFound(f"There is no patron with card number {card_number!r}.")
    category = _CATEGORY.instance(session, found[0])
    return _item_of(session, found[0]), _PATRON.instance(session, found[0], category=category)


async def lock_item(session: AsyncSession, item_id: int) -> Item:
    found = await hotpath.rows(session, _LOCK_ITEM_BY_ID, {"item_id": item_id})
    if not found:
        raise ItemNotFound(f"There is no item with id {item_id}.")
    return _item_of(session, found[0])


async def lock_bib(session: AsyncSession, bib_id: int) -> None:
    """Serialises hold placement on one title, so that queue order is placement order."""
    locked = await session.scalar(select(Bib.id).where(Bib.id == bib_id).with_for_update())
    if locked is None:
        raise BibNotFound(f"There is no bib record with id {bib_id}.")


async def lock_loan(session: AsyncSession, loan_id: int) -> Loan:
    query = (
        select(Loan)
        .where(Loan.id == loan_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    loan = await session.scalar(query)
    if loan is None:
        raise LoanNotFound(f"There is no loan with id {loan_id}.")
    return loan


async def lock_hold(session: AsyncSession, hold_id: int) -> Hold:
    query = (
        select(Hold)
        .where(Hold.id == hold_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    hold = await session.scalar(query)
    if hold is None:
        raise HoldNotFound(f"There is no hold with id {hold_id}.")
    return hold


async def lock_hold_and_item(session: AsyncSession, hold_id: int) -> tuple[Hold, Item | None]:
    """A hold and the copy it has trapped, if any, locked item first.

    The copy is known only from the hold row; should a checkin trap another copy between the
    read and the lock, the savepoint is rolled back (dropping the locks it took) and the read
    repeated.
    """
    for _ in range(5):
        item_id = await session.scalar(select(Hold.item_id).where(Hold.id == hold_id))
        savepoint = await session.begin_nested()
        item = await lock_item(session, item_id) if item_id is not None else None
        hold = await lock_hold(session, hold_id)
        if hold.item_id == item_id:
            await savepoint.commit()
            return hold, item
        await savepoint.rollback()
    raise Conflict("The hold kept changing under this request; try again.")
