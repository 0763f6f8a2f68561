"""Catalog rules: branches, bib records and items.

Reads are public; every write needs a librarian and is audited in the same transaction.
Uniqueness (barcodes, branch codes, control numbers) is the database's word: a violated
unique index becomes the domain error, so two concurrent writers cannot both win.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Integer,
    Select,
    String,
    bindparam,
    cast,
    delete,
    exists,
    func,
    select,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import joinedload

from shelfmark.audit import service as audit
from shelfmark.auth.roles import Actor, require_staff
from shelfmark.cache import bib_key, invalidate
from shelfmark.catalog import isbn as isbn_rules
from shelfmark.catalog.errors import (
    BarcodeTaken,
    BibNotFound,
    BranchCodeTaken,
    BranchNotFound,
    ControlNumberTaken,
    InvalidISBNQuery,
    ItemInCirculation,
    ItemNotFound,
    StillReferenced,
)
from shelfmark.catalog.models import Bib, BibIsbn, Branch, Item
from shelfmark.catalog.schemas import (
    BibCreate,
    BibRead,
    BibUpdate,
    BranchCreate,
    BranchUpdate,
    ItemCreate,
    ItemUpdate,
)
from shelfmark.db import Reads, flush_or_raise
from shelfmark.search.index import index_bibs

BIB_FIELDS = (
    "title", "subtitle", "contributors", "isbns", "publisher", "publication_year", "edition",
    "language", "subjects", "series", "description", "material_type", "control_number",
)  # fmt: skip


def _snapshot(obj: Any, fields: Sequence[str]) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in fields}


def _contains(column: Any, text: str) -> Any:
    return func.lower(column).contains(text.lower(), autoescape=True)


# --- branches ---------------------------------------------------------------------------


async def list_branches(session: AsyncSession) -> Sequence[Branch]:
    return (await session.scalars(select(Branch).order_by(Branch.code))).all()


async def get_branch_by_code(session: AsyncSession, code: str) -> Branch | None:
    return await session.scalar(select(Branch).where(Branch.code == code))


async def require_branch(session: AsyncSession, branch_id: int) -> Branch:
    branch = await session.get(Branch, branch_id)
    if branch is None:
        raise BranchNotFound(f"There is no branch with id {branch_id}.")
    return branch


async def require_branch_by_code(session: AsyncSession, code: str) -> Branch:
    branch = await get_branch_by_code(session, code)
    if branch is None:
        raise BranchNotFound(f"There is no branch with code {code!r}.")
    return branch


async def create_branch(session: AsyncSession, *, actor: Actor, data: BranchCreate) -> Branch:
    require_staff(actor)
    branch = Branch(**data.model_dump())
    session.add(branch)
    await flush_or_raise(session, BranchCodeTaken(f"Branch code {data.code!r} is already in use."))
    await audit.record(
        session, actor=actor, action="branch.create", object_type="branch",
        object_id=branch.id, changes=data.model_dump(),
    )  # fmt: skip
    return branch


async def update_branch(
    session: AsyncSession, *, actor: Actor, branch: Branch, data: BranchUpdate
) -> Branch:
    require_staff(actor)
    changes = data.model_dump(exclude_unset=True)
    before = _snapshot(branch, list(changes))
    for name, value in changes.items():
        setattr(branch, name, value)
    await flush_or_raise(session, BranchCodeTaken(f"Branch code {data.code!r} is already in use."))
    await audit.record(
        session, actor=actor, action="branch.update", object_type="branch",
        object_id=branch.id, changes=audit.diff(before, changes),
    )  # fmt: skip
    return branch


async def delete_branch(session: AsyncSession, *, actor: Actor, branch: Branch) -> None:
    require_staff(actor)
    if await session.scalar(select(exists().where(Item.branch_id == branch.id))):
        raise StillReferenced(f"Branch {branch.code!r} still holds items; move them first.")
    await audit.record(
        session, actor=actor, action="branch.delete", object_type="branch",
        object_id=branch.id, changes=_snapshot(branch, ("code", "name")),
    )  # fmt: skip
    await session.delete(branch)
    await flush_or_raise(session, StillReferenced(f"Branch {branch.code!r} is still referenced."))


# --- bibs -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BibFilters:
    title: str | None = None
    contributor: str | None = None
    isbn: str | None = None
    year_from: int | None = None
    year_to: int | None = None
    language: str | None = None
    material_type: str | None = None
    branch: str | None = None
    control_number: str | None = None


# The public fields, in the order of `BibRead`: a row is sent as it is read (see
# `catalog.api.bib_json`), so its keys come in the order the schema documents.
_BIB_READ_COLUMNS = [Bib.__table__.c[name] for name in BibRead.model_fields]
_BIB_BY_ID = select(*_BIB_READ_COLUMNS).where(Bib.id == bindparam("bib_id"))
# The unfiltered page (the most common list read) as one module-level statement, so that it
# takes the hot path; ids start at 1, so "after 0" is the first page.
_BIB_PAGE = (
    select(*_BIB_READ_COLUMNS)
    .where(Bib.id > bindparam("after_id", type_=BigInteger))
    .order_by(Bib.id)
    .limit(bindparam("rows", type_=Integer))
)
NO_FILTERS = BibFilters()


def _bib_query(filters: BibFilters) -> Select[Any]:
    query = select(*_BIB_READ_COLUMNS)
    if filters.title:
        query = query.where(_contains(Bib.title, filters.title))
    if filters.contributor:
        query = query.where(_contains(cast(Bib.contributors, String), filters.contributor))
    if filters.isbn:
        try:
            wanted = isbn_rules.normalize(filters.isbn)
        except isbn_rules.InvalidISBN as exc:
            raise InvalidISBNQuery(
                str(exc), errors=[{"field": "isbn", "message": str(exc)}]
            ) from exc
        query = query.where(exists().where(BibIsbn.bib_id == Bib.id, BibIsbn.isbn == wanted))
    if filters.year_from is not None:
        query = query.where(Bib.publication_year >= filters.year_from)
    if filters.year_to is not None:
        query = query.where(Bib.publication_year <= filters.year_to)
    if filters.language:
        query = query.where(Bib.language == filters.language)
    if filters.material_type:
        query = query.where(Bib.material_type == filters.material_type)
    if filters.control_number:
        query = query.where(Bib.control_number == filters.control_number)
    if filters.branch:
        query = query.where(
            exists().where(
                Item.bib_id == Bib.id, Item.branch_id == Branch.id, Branch.code == filters.branch
            )
        )
    return query


async def list_bibs(
    reads: Reads, *, filters: BibFilters, limit: int, after_id: int | None
) -> Sequence[Mapping[str, Any]]:
    """The public fields of bibs by id, up to limit + 1 rows (the extra one tells that another
    page exists). Rows, not objects: a page of 50 ORM objects (with their MARC) cost more
    than the rest of the request. The unfiltered pages (the most read) take the hot path."""
    if filters == NO_FILTERS:
        return await reads.fetch(_BIB_PAGE, {"after_id": after_id or 0, "rows": limit + 1})
    query = _bib_query(filters).order_by(Bib.id).limit(limit + 1)
    if after_id is not None:
        query = query.where(Bib.id > after_id)
    return await reads.rows(query)


async def read_bib(reads: Reads, bib_id: int) -> Mapping[str, Any]:
    """The public fields of a bib record, by the hot-read path (the OPAC's busiest query)."""
    rows = await reads.fetch(_BIB_BY_ID, {"bib_id": bib_id})
    if not rows:
        raise BibNotFound(f"There is no bib record with id {bib_id}.")
    return rows[0]


async def get_bib(session: AsyncSession, bib_id: int) -> Bib | None:
    return await session.get(Bib, bib_id)


async def require_bib(session: AsyncSession, bib_id: int) -> Bib:
    bib = await session.get(Bib, bib_id)
    if bib is None:
        raise BibNotFound(f"There is no bib record with id {bib_id}.")
    return bib


def bib_values(data: BibCreate | BibUpdate, *, partial: bool) -> dict[str, Any]:
    """The columns a checked bib sets (given lists left empty are stored as []). Partial: the
    fields given, each whole (`exclude_unset` would also drop a contributor's default role)."""
    values = data.model_dump(include=set(data.model_fields_set) if partial else None)
    for name in ("contributors", "isbns", "subjects", "series"):
        if name in values and values[name] is None:
            values[name] = []
    if "material_type" in values and values["material_type"] is None:
        values["material_type"] = "book"
    return values


async def index_isbns(session: AsyncSession, bib: Bib) -> None:
    """The bib's ISBNs into the lookup table the `isbn` filter reads."""
    await session.execute(delete(BibIsbn).where(BibIsbn.bib_id == bib.id))
    session.add_all(BibIsbn(bib_id=bib.id, isbn=value) for value in bib.isbns)


async def create_bib(
    session: AsyncSession, *, actor: Actor, data: BibCreate, now: datetime | None = None
) -> Bib:
    require_staff(actor)
    values = bib_values(data, partial=False)
    bib = Bib(**values)
    session.add(bib)
    await flush_or_raise(session, _control_number_taken(data.control_number))
    await index_isbns(session, bib)
    await session.flush()
    await index_bibs(session, [bib.id])
    await audit.record(
        session, actor=actor, action="bib.create", object_type="bib", object_id=bib.id,
        changes=values, now=now,
    )  # fmt: skip
    return bib


def _control_number_taken(value: str | None) -> ControlNumberTaken:
    return ControlNumberTaken(f"Control number {value!r} belongs to another bib record.")


async def update_bib(
    session: AsyncSession, *, actor: Actor, bib: Bib, data: BibUpdate, now: datetime | None = None
) -> Bib:
    require_staff(actor)
    values = bib_values(data, partial=True)
    if values.get("title") is None:
        values.pop("title", None)  # a title can change, never vanish
    before = _snapshot(bib, list(values))
    for name, value in values.items():
        setattr(bib, name, value)
    await flush_or_raise(session, _control_number_taken(values.get("control_number")))
    if "isbns" in values:
        await index_isbns(session, bib)
        await session.flush()
    await index_bibs(session, [bib.id])
    invalidate(session, [bib_key(bib.id)])
    await audit.record(
        session, actor=actor, action="bib.update", object_type="bib", object_id=bib.id,
        changes=audit.diff(before, values), now=now,
    )  # fmt: skip
    return bib


async def delete_bib(session: AsyncSession, *, actor: Actor, bib: Bib) -> None:
    require_staff(actor)
    if await session.scalar(select(exists().where(Item.bib_id == bib.id))):
        raise StillReferenced(f"Bib record {bib.id} still has items; delete or move them first.")
    invalidate(session, [bib_key(bib.id)])
    await audit.record(
        session, actor=actor, action="bib.delete", object_type="bib", object_id=bib.id,
        changes=_snapshot(bib, ("title", "control_number")),
    )  # fmt: skip
    await session.delete(bib)
    await flush_or_raise(session, StillReferenced(f"Bib record {bib.id} is still referenced."))


# --- items ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ItemFilters:
    bib_id: int | None = None
    barcode: str | None = None
    branch: str | None = None
    status: str | None = None
    item_type: str | None = None


async def list_items(
    session: AsyncSession, *, filters: ItemFilters, limit: int, after_id: int | None
) -> Sequence[Item]:
    query = select(Item).options(joinedload(Item.branch)).order_by(Item.id).limit(limit + 1)
    if after_id is not None:
        query = query.where(Item.id > after_id)
    if filters.bib_id is not None:
        query = query.where(Item.bib_id == filters.bib_id)
    if filters.barcode:
        query = query.where(Item.barcode == filters.barcode)
    if filters.branch:
        query = query.join(Item.branch).where(Branch.code == filters.branch)
    if filters.status:
        query = query.where(Item.status == filters.status)
    if filters.item_type:
        query = query.where(Item.item_type == filters.item_type)
    return (await session.scalars(query)).all()


async def require_item(session: AsyncSession, item_id: int) -> Item:
    item = await session.get(Item, item_id, options=[joinedload(Item.branch)])
    if item is None:
        raise ItemNotFound(f"There is no item with id {item_id}.")
    return item


async def get_item_by_barcode(session: AsyncSession, barcode: str) -> Item | None:
    query = select(Item).options(joinedload(Item.branch)).where(Item.barcode == barcode)
    return await session.scalar(query)


async def require_item_by_barcode(session: AsyncSession, barcode: str) -> Item:
    item = await get_item_by_barcode(session, barcode)
    if item is None:
        raise ItemNotFound(f"There is no item with barcode {barcode!r}.")
    return item


# Statuses that circulation sets and clears (a loan, the hold shelf, a transit): staff
# cannot set or clear them by editing the item, or loans and holds would disagree with it.
CIRCULATION_STATUSES = frozenset({"on_loan", "on_hold_shelf", "in_transit"})


def check_manual_status(item: Item, status: str) -> None:
    """An edited status may only move between shelf states (available, missing, lost,
    withdrawn), never into or out of one that circulation owns."""
    if item.status in CIRCULATION_STATUSES or status in CIRCULATION_STATUSES:
        raise ItemInCirculation(
            f"Item {item.barcode!r} is {item.status.replace('_', ' ')}; "
            f"{status.replace('_', ' ')!r} is set by checkouts, checkins and holds, not by editing."
        )


def check_initial_status(status: str) -> None:
    """A new copy starts in a shelf state, never in one that circulation owns."""
    if status in CIRCULATION_STATUSES:
        raise ItemInCirculation(f"A new item cannot start {status.replace('_', ' ')}.")


async def create_item(
    session: AsyncSession, *, actor: Actor, data: ItemCreate, now: datetime | None = None
) -> Item:
    require_staff(actor)
    check_initial_status(data.status)
    await require_bib(session, data.bib_id)
    branch = await require_branch_by_code(session, data.branch)
    values = data.model_dump(exclude={"branch"})
    item = Item(**values, branch_id=branch.id)
    item.branch = branch
    session.add(item)
    await flush_or_raise(session, BarcodeTaken(f"Barcode {data.barcode!r} is already in use."))
    await audit.record(
        session, actor=actor, action="item.create", object_type="item", object_id=item.id,
        changes=data.model_dump(), now=now,
    )  # fmt: skip
    return item


async def update_item(
    session: AsyncSession, *, actor: Actor, item: Item, data: ItemUpdate,
    now: datetime | None = None,
) -> Item:  # fmt: skip
    require_staff(actor)
    changes = data.model_dump(exclude_unset=True)
    if changes.get("status") not in (None, item.status):
        check_manual_status(item, changes["status"])
    for name in ("barcode", "bib_id", "branch", "item_type", "status"):
        if name in changes and changes[name] is None:
            del changes[name]  # these can change, never vanish
    before = _snapshot(item, [name for name in changes if name != "branch"])
    if "branch" in changes:
        before["branch"] = item.branch.code
    if "bib_id" in changes:
        await require_bib(session, changes["bib_id"])
    for name, value in changes.items():
        if name == "branch":
            branch = await require_branch_by_code(session, value)
            item.branch_id, item.branch = branch.id, branch
        else:
            setattr(item, name, value)
    await flush_or_raise(session, BarcodeTaken(f"Barcode {data.barcode!r} is already in use."))
    await audit.record(
        session, actor=actor, action="item.update", object_type="item", object_id=item.id,
        changes=audit.diff(before, changes), now=now,
    )  # fmt: skip
    return item


async def delete_item(session: AsyncSession, *, actor: Actor, item: Item) -> None:
    require_staff(actor)
    await audit.record(
        session, actor=actor, action="item.delete", object_type="item", object_id=item.id,
        changes=_snapshot(item, ("barcode", "bib_id")),
    )  # fmt: skip
    await session.delete(item)
    await flush_or_raise(
        session, StillReferenced(f"Item {item.barcode!r} has circulation history.")
    )
