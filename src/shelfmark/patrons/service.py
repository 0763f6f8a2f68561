"""Patrons and their categories.

Staff see and change every patron; a patron user (a user whose `patron_id` is set) sees their
own record only, and may change only the fields in `SELF_SERVICE_FIELDS`. Card numbers and
category codes are unique by index; a violation becomes the domain error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import joinedload, selectinload
from sqlalchemy.orm.interfaces import ORMOption

from shelfmark.audit import service as audit
from shelfmark.auth import service as auth_service
from shelfmark.auth.models import User
from shelfmark.auth.roles import Actor, require_admin, require_staff
from shelfmark.catalog import service as catalog_service
from shelfmark.catalog.errors import StillReferenced
from shelfmark.catalog.models import Branch
from shelfmark.db import flush_or_raise
from shelfmark.errors import Forbidden
from shelfmark.patrons.errors import (
    BlockNotFound,
    CardNumberTaken,
    CategoryCodeTaken,
    CategoryNotFound,
    PatronNotFound,
)
from shelfmark.patrons.models import Patron, PatronBlock, PatronCategory
from shelfmark.patrons.schemas import (
    SELF_SERVICE_FIELDS,
    CategoryCreate,
    CategoryUpdate,
    PatronCreate,
    PatronUpdate,
)

PATRON_LOAD: tuple[ORMOption, ...] = (
    joinedload(Patron.category, innerjoin=True),
    joinedload(Patron.home_branch, innerjoin=True),
    selectinload(Patron.active_blocks),
)
# What circulation's checks need of a patron: the row and its category (rules, threshold).
WITH_CATEGORY: tuple[ORMOption, ...] = (joinedload(Patron.category, innerjoin=True),)


def check_patron_access(actor: Actor, patron_id: int | None) -> None:
    """Staff may act on any patron; a patron user only on their own record (so a record that
    names no patron, such as an anonymised loan, only staff)."""
    if actor.is_staff:
        return
    if actor.patron_id is None or actor.patron_id != patron_id:
        raise Forbidden("You may only see and change your own patron record.")


# --- categories -------------------------------------------------------------------------


async def list_categories(session: AsyncSession) -> Sequence[PatronCategory]:
    return (await session.scalars(select(PatronCategory).order_by(PatronCategory.code))).all()


async def require_category(session: AsyncSession, category_id: int) -> PatronCategory:
    category = await session.get(PatronCategory, category_id)
    if category is None:
        raise CategoryNotFound(f"There is no patron category with id {category_id}.")
    return category


async def get_category_by_code(session: AsyncSession, code: str) -> PatronCategory | None:
    return await session.scalar(select(PatronCategory).where(PatronCategory.code == code))


async def require_category_by_code(session: AsyncSession, code: str) -> PatronCategory:
    category = await get_category_by_code(session, code)
    if category is None:
        raise CategoryNotFound(f"There is no patron category with code {code!r}.")
    return category


async def create_category(
    session: AsyncSession, *, actor: Actor, data: CategoryCreate, now: datetime | None = None
) -> PatronCategory:
    """Categories are library policy: admins only."""
    require_admin(actor)
    category = PatronCategory(**data.model_dump())
    session.add(category)
    await flush_or_raise(session, CategoryCodeTaken(f"Category code {data.code!r} is taken."))
    await audit.record(
        session, actor=actor, action="patron_category.create", object_type="patron_category",
        object_id=category.id, changes=data.model_dump(), now=now,
    )  # fmt: skip
    return category


async def update_category(
    session: AsyncSession, *, actor: Actor, category: PatronCategory, data: CategoryUpdate,
    now: datetime | None = None,
) -> PatronCategory:  # fmt: skip
    require_admin(actor)
    changes = data.model_dump(exclude_unset=True)
    if changes.get("name", "") is None:
        del changes["name"]
    before = {name: getattr(category, name) for name in changes}
    for name, value in changes.items():
        setattr(category, name, value)
    await session.flush()
    await audit.record(
        session, actor=actor, action="patron_category.update", object_type="patron_category",
        object_id=category.id, changes=audit.diff(before, changes), now=now,
    )  # fmt: skip
    return category


# --- patrons ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PatronFilters:
    card_number: str | None = None
    name: str | None = None
    email: str | None = None
    category: str | None = None
    branch: str | None = None


async def list_patrons(
    session: AsyncSession, *, actor: Actor, filters: PatronFilters, limit: int,
    after_id: int | None,
) -> Sequence[Patron]:  # fmt: skip
    """Patrons by id (staff only), up to limit + 1 rows."""
    require_staff(actor)
    query = select(Patron).options(*PATRON_LOAD).order_by(Patron.id).limit(limit + 1)
    if after_id is not None:
        query = query.where(Patron.id > after_id)
    if filters.card_number:
        query = query.where(Patron.card_number == filters.card_number)
    if filters.name:
        query = query.where(func.lower(Patron.name).contains(filters.name.lower(), autoescape=True))
    if filters.email:
        query = query.where(func.lower(Patron.email) == filters.email.lower())
    if filters.category:
        query = query.where(
            Patron.category_id.in_(
                select(PatronCategory.id).where(PatronCategory.code == filters.category)
            )
        )
    if filters.branch:
        query = query.where(
            Patron.home_branch_id.in_(select(Branch.id).where(Branch.code == filters.branch))
        )
    return (await session.scalars(query)).unique().all()


async def get_patron(session: AsyncSession, patron_id: int) -> Patron | None:
    # populate_existing: the category, branch and blocks are reloaded even when the patron is
    # already in the session (after a change to its blocks, say).
    return await session.get(Patron, patron_id, options=PATRON_LOAD, populate_existing=True)


async def require_patron(session: AsyncSession, patron_id: int) -> Patron:
    patron = await get_patron(session, patron_id)
    if patron is None:
        raise PatronNotFound(f"There is no patron with id {patron_id}.")
    return patron


async def access_patron(session: AsyncSession, *, actor: Actor, patron_id: int) -> Patron:
    """The patron, if the actor may see them (staff, or the patron themselves)."""
    check_patron_access(actor, patron_id)
    return await require_patron(session, patron_id)


async def get_patron_by_card(session: AsyncSession, card_number: str) -> Patron | None:
    query = select(Patron).options(*PATRON_LOAD).where(Patron.card_number == card_number)
    return (await session.scalars(query)).unique().one_or_none()


async def require_patron_by_card(session: AsyncSession, card_number: str) -> Patron:
    patron = await get_patron_by_card(session, card_number)
    if patron is None:
        raise PatronNotFound(f"There is no patron with card number {card_number!r}.")
    return patron


async def require_patron_with_category(session: AsyncSession, patron_id: int) -> Patron:
    patron = await session.get(Patron, patron_id, options=WITH_CATEGORY, populate_existing=True)
    if patron is None:
        raise PatronNotFound(f"There is no patron with id {patron_id}.")
    return patron


async def lock_patron(session: AsyncSession, patron_id: int) -> Patron:
    """The patron's row, locked, with its category."""
    query = (
        select(Patron)
        .options(*WITH_CATEGORY)
        .where(Patron.id == patron_id)
        .with_for_update(of=Patron)
        .execution_options(populate_existing=True)
    )
    patron = (await session.scalars(query)).unique().one_or_none()
    if patron is None:
        raise PatronNotFound(f"There is no patron with id {patron_id}.")
    return patron


def verify_pin(patron: Patron, pin: str) -> bool:
    """For the self-check machines: a patron without a PIN never verifies."""
    return patron.pin_hash is not None and auth_service.verify_password(patron.pin_hash, pin)


async def authenticate_by_name_or_card(session: AsyncSession, *, login: str, password: str) -> User:
    """Log in with a user name or, if no user has that name, a library card number: the
    user linked to the card's patron (`users.patron_id`; a card linked to several users
    logs in none). Every failure is the same `InvalidCredentials`, so that the answer never
    tells whether a name or a card exists."""
    if await auth_service.get_user_by_username(session, login) is None:
        query = select(User.username).join(Patron, User.patron_id == Patron.id)
        names = (await session.scalars(query.where(Patron.card_number == login).limit(2))).all()
        if len(names) == 1:
            login = names[0]
    return await auth_service.authenticate(session, username=login, password=password)


def _card_taken(card_number: str | None) -> CardNumberTaken:
    return CardNumberTaken(f"Card number {card_number!r} belongs to another patron.")


async def create_patron(
    session: AsyncSession, *, actor: Actor, data: PatronCreate, now: datetime | None = None
) -> Patron:
    require_staff(actor)
    category = await require_category_by_code(session, data.category)
    branch = await catalog_service.require_branch_by_code(session, data.home_branch)
    values = data.model_dump(exclude={"category", "home_branch", "pin"})
    patron = Patron(**values, category_id=category.id, home_branch_id=branch.id)
    if data.pin is not None:
        patron.pin_hash = auth_service.hash_password(data.pin)
    session.add(patron)
    await flush_or_raise(session, _card_taken(data.card_number))
    await audit.record(
        session, actor=actor, action="patron.create", object_type="patron", object_id=patron.id,
        changes=data.model_dump(exclude={"pin"}) | {"pin": data.pin is not None}, now=now,
    )  # fmt: skip
    return await require_patron(session, patron.id)


async def update_patron(
    session: AsyncSession, *, actor: Actor, patron: Patron, data: PatronUpdate,
    now: datetime | None = None,
) -> Patron:  # fmt: skip
    """Staff change anything; a patron changes their own contact details, PIN, notices and
    whether their reading history is kept."""
    check_patron_access(actor, patron.id)
    changes = data.model_dump(exclude_unset=True)
    if not actor.is_staff and (denied := sorted(set(changes) - SELF_SERVICE_FIELDS)):
        raise Forbidden(f"Only library staff may change: {', '.join(denied)}.")
    for name in ("card_number", "name", "category", "home_branch", "expires_on", "pin",
                 "keep_reading_history"):  # fmt: skip
        if name in changes and changes[name] is None:
            del changes[name]  # these can change, never vanish
    record: dict[str, Any] = {}
    before: dict[str, Any] = {}
    for name, new in changes.items():
        value = new
        if name == "category":
            category = await require_category_by_code(session, value)
            before[name] = patron.category.code
            patron.category_id, patron.category = category.id, category
        elif name == "home_branch":
            branch = await catalog_service.require_branch_by_code(session, value)
            before[name] = patron.home_branch.code
            patron.home_branch_id, patron.home_branch = branch.id, branch
        elif name == "pin":
            patron.pin_hash = auth_service.hash_password(value)
            before[name], value = "…", "(changed)"  # never a PIN in the audit trail
        else:
            before[name] = getattr(patron, name)
            setattr(patron, name, value)
        record[name] = value
    await flush_or_raise(session, _card_taken(changes.get("card_number")))
    await audit.record(
        session, actor=actor, action="patron.update", object_type="patron", object_id=patron.id,
        changes=audit.diff(before, record), now=now,
    )  # fmt: skip
    return patron


async def delete_patron(
    session: AsyncSession, *, actor: Actor, patron: Patron, now: datetime | None = None
) -> None:
    """Only a patron without circulation history can go (the foreign keys say so)."""
    require_staff(actor)
    await audit.record(
        session, actor=actor, action="patron.delete", object_type="patron", object_id=patron.id,
        changes={"card_number": patron.card_number, "name": patron.name}, now=now,
    )  # fmt: skip
    await session.delete(patron)
    await flush_or_raise(
        session, StillReferenced(f"Patron {patron.card_number!r} has circulation history.")
    )


# --- blocks -----------------------------------------------------------------------------


async def add_block(
    session: AsyncSession, *, actor: Actor, patron: Patron, reason: str, now: datetime
) -> PatronBlock:
    require_staff(actor)
    block = PatronBlock(
        patron_id=patron.id, reason=reason, created_at=now, created_by=actor.username
    )
    session.add(block)
    await session.flush()
    await audit.record(
        session, actor=actor, action="patron.block", object_type="patron", object_id=patron.id,
        changes={"block_id": block.id, "reason": reason}, now=now,
    )  # fmt: skip
    return block


async def lift_block(
    session: AsyncSession, *, actor: Actor, patron: Patron, block_id: int, now: datetime
) -> PatronBlock:
    require_staff(actor)
    block = await session.get(PatronBlock, block_id)
    if block is None or block.patron_id != patron.id or block.lifted_at is not None:
        raise BlockNotFound(f"Patron {patron.card_number!r} has no active block {block_id}.")
    block.lifted_at, block.lifted_by = now, actor.username
    await session.flush()
    await audit.record(
        session, actor=actor, action="patron.unblock", object_type="patron", object_id=patron.id,
        changes={"block_id": block.id, "reason": block.reason}, now=now,
    )  # fmt: skip
    return block


async def active_blocks(session: AsyncSession, patron_id: int) -> Sequence[PatronBlock]:
    query = select(PatronBlock).where(
        PatronBlock.patron_id == patron_id, PatronBlock.lifted_at.is_(None)
    )
    return (await session.scalars(query.order_by(PatronBlock.id))).all()
