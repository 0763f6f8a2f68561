"""Patron routes: HTTP in, one service call, HTTP out."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from shelfmark.db import utcnow
from shelfmark.deps import ActorDep, SessionDep
from shelfmark.deps import PathId as Id
from shelfmark.errors import Forbidden
from shelfmark.pagination import (
    Page,
    PageDep,
    decode_int_cursor,
    next_cursor_of,
)
from shelfmark.patrons import service
from shelfmark.patrons.models import Patron
from shelfmark.patrons.schemas import (
    BlockCreate,
    BlockRead,
    CategoryCreate,
    CategoryRead,
    CategoryUpdate,
    PatronCreate,
    PatronRead,
    PatronUpdate,
)

router = APIRouter(tags=["patrons"])


def patron_read(patron: Patron) -> PatronRead:
    return PatronRead(
        id=patron.id, card_number=patron.card_number, name=patron.name, email=patron.email,
        phone=patron.phone, category=patron.category.code, home_branch=patron.home_branch.code,
        expires_on=patron.expires_on, has_pin=patron.pin_hash is not None,
        notice_channel=patron.notice_channel, language=patron.language,
        keep_reading_history=patron.keep_reading_history,
        blocks=[BlockRead.model_validate(b) for b in patron.active_blocks],
        created_at=patron.created_at, updated_at=patron.updated_at,
    )  # fmt: skip


# --- categories -------------------------------------------------------------------------


@router.get("/patron-categories", response_model=Page[CategoryRead])
async def list_categories(session: SessionDep) -> Page[CategoryRead]:
    """Every patron category, by code (a library has few; one page)."""
    rows = await service.list_categories(session)
    return Page(items=[CategoryRead.model_validate(r) for r in rows])


@router.post("/patron-categories", response_model=CategoryRead, status_code=status.HTTP_201_CREATED)
async def create_category(
    session: SessionDep, actor: ActorDep, data: CategoryCreate
) -> CategoryRead:
    category = await service.create_category(session, actor=actor, data=data, now=utcnow())
    return CategoryRead.model_validate(category)


@router.patch("/patron-categories/{category_id}", response_model=CategoryRead)
async def update_category(
    session: SessionDep, actor: ActorDep, category_id: Id, data: CategoryUpdate
) -> CategoryRead:
    category = await service.require_category(session, category_id)
    category = await service.update_category(
        session, actor=actor, category=category, data=data, now=utcnow()
    )
    return CategoryRead.model_validate(category)


# --- patrons ----------------------------------------------------------------------------


@router.get("/patrons", response_model=Page[PatronRead])
async def list_patrons(
    session: SessionDep,
    actor: ActorDep,
    page: PageDep,
    card_number: Annotated[str | None, Query()] = None,
    name: Annotated[str | None, Query(description="Part of the name")] = None,
    email: Annotated[str | None, Query()] = None,
    category: Annotated[str | None, Query(description="Category code")] = None,
    branch: Annotated[str | None, Query(description="Home branch code")] = None,
) -> Page[PatronRead]:
    """Patrons by id (staff only)."""
    filters = service.PatronFilters(
        card_number=card_number, name=name, email=email, category=category, branch=branch
    )
    rows = await service.list_patrons(
        session, actor=actor, filters=filters, limit=page.limit,
        after_id=decode_int_cursor(page.cursor),
    )  # fmt: skip
    return Page(
        items=[patron_read(r) for r in rows[: page.limit]],
        next_cursor=next_cursor_of(rows, page.limit),
    )


@router.post("/patrons", response_model=PatronRead, status_code=status.HTTP_201_CREATED)
async def create_patron(session: SessionDep, actor: ActorDep, data: PatronCreate) -> PatronRead:
    return patron_read(await service.create_patron(session, actor=actor, data=data, now=utcnow()))


@router.get("/patrons/me", response_model=PatronRead)
async def get_my_patron_record(session: SessionDep, actor: ActorDep) -> PatronRead:
    """The patron record of the logged-in patron user."""
    if actor.patron_id is None:
        raise Forbidden("This user has no patron record.")
    return patron_read(await service.access_patron(session, actor=actor, patron_id=actor.patron_id))


@router.get("/patrons/{patron_id}", response_model=PatronRead)
async def get_patron(session: SessionDep, actor: ActorDep, patron_id: Id) -> PatronRead:
    return patron_read(await service.access_patron(session, actor=actor, patron_id=patron_id))


@router.patch("/patrons/{patron_id}", response_model=PatronRead)
async def update_patron(
    session: SessionDep, actor: ActorDep, patron_id: Id, data: PatronUpdate
) -> PatronRead:
    patron = await service.access_patron(session, actor=actor, patron_id=patron_id)
    patron = await service.update_patron(
        session, actor=actor, patron=patron, data=data, now=utcnow()
    )
    return patron_read(patron)


@router.delete("/patrons/{patron_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_patron(session: SessionDep, actor: ActorDep, patron_id: Id) -> Response:
    patron = await service.access_patron(session, actor=actor, patron_id=patron_id)
    await service.delete_patron(session, actor=actor, patron=patron, now=utcnow())
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/patrons/{patron_id}/blocks", response_model=BlockRead, status_code=status.HTTP_201_CREATED
)
async def block_patron(
    session: SessionDep, actor: ActorDep, patron_id: Id, data: BlockCreate
) -> BlockRead:
    """Block the patron by hand, with a reason (staff)."""
    patron = await service.access_patron(session, actor=actor, patron_id=patron_id)
    block = await service.add_block(
        session, actor=actor, patron=patron, reason=data.reason, now=utcnow()
    )
    return BlockRead.model_validate(block)


@router.delete("/patrons/{patron_id}/blocks/{block_id}", status_code=status.HTTP_204_NO_CONTENT)
async def lift_block(session: SessionDep, actor: ActorDep, patron_id: Id, block_id: Id) -> Response:
    """Lift a manual block (staff); it stays in the patron's history."""
    patron = await service.access_patron(session, actor=actor, patron_id=patron_id)
    await service.lift_block(session, actor=actor, patron=patron, block_id=block_id, now=utcnow())
    return Response(status_code=status.HTTP_204_NO_CONTENT)
