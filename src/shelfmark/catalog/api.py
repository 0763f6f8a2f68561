"""Catalog routes: HTTP in, one service call, HTTP out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request, Response, status
from pydantic import BaseModel, Field

from shelfmark.cache import Cache, bib_key, cached
from shelfmark.catalog import service
from shelfmark.catalog.models import Item
from shelfmark.catalog.schemas import (
    BibCreate,
    BibRead,
    BibUpdate,
    BranchCreate,
    BranchRead,
    BranchUpdate,
    ItemCreate,
    ItemRead,
    ItemStatus,
    ItemUpdate,
    MaterialType,
)
from shelfmark.deps import (
    ActorDep,
    ReadSessionDep,
    SessionDep,
    query_of,
    query_parameters,
    reads_of,
)
from shelfmark.deps import PathId as Id
from shelfmark.pagination import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    Page,
    PageDep,
    decode_int_cursor,
    next_cursor_of,
    next_cursor_of_rows,
    page_json,
)
from shelfmark.responses import etagged

router = APIRouter(tags=["catalog"])


def bib_json(row: Mapping[str, Any]) -> bytes:
    """A bib record's row (`service.read_bib`) as the JSON of `BibRead`, sent as it is read.

    Not checked again on the way out: every writer checks what it stores (the API's schemas,
    the MARC mapping, the admin's `checked_bib_fields`), and the database types the rest.
    Checking and serialising through the schema cost 60 % of a page of 50's CPU
    (bench/api_read.py). The rows' keys come in the schema's order, UTC times end in "Z":
    the bytes are those `BibRead` gives (tests/catalog/test_bib_json.py holds them to it).
    """
    return orjson.dumps(dict(row), option=orjson.OPT_UTC_Z)


def bib_page_json(rows: Sequence[Mapping[str, Any]], limit: int) -> bytes:
    """A page of rows (`service.list_bibs`: up to limit + 1) as the JSON of `Page[BibRead]`."""
    # The keys once, zipped with each row's values: dict(row) looks each key up again
    # (asyncpg's records), 48 -> 35 us for a page of 50.
    keys = list(rows[0].keys()) if rows else []
    items = [dict(zip(keys, row.values(), strict=True)) for row in rows[:limit]]
    body = orjson.dumps(items, option=orjson.OPT_UTC_Z)
    return page_json(body, next_cursor_of_rows(rows, limit))


def item_read(item: Item) -> ItemRead:
    return ItemRead(
        id=item.id, bib_id=item.bib_id, barcode=item.barcode, branch=item.branch.code,
        shelfmark=item.shelfmark, item_type=item.item_type, status=item.status, price=item.price,
        last_seen_at=item.last_seen_at, created_at=item.created_at, updated_at=item.updated_at,
    )  # fmt: skip


# --- branches ---------------------------------------------------------------------------


@router.get("/branches", response_model=Page[BranchRead])
async def list_branches(session: ReadSessionDep) -> Page[BranchRead]:
    """Every branch, by code (a library has few; one page)."""
    rows = await service.list_branches(session)
    return Page(items=[BranchRead.model_validate(r) for r in rows])


@router.post("/branches", response_model=BranchRead, status_code=status.HTTP_201_CREATED)
async def create_branch(session: SessionDep, actor: ActorDep, data: BranchCreate) -> BranchRead:
    branch = await service.create_branch(session, actor=actor, data=data)
    return BranchRead.model_validate(branch)


@router.get("/branches/{branch_id}", response_model=BranchRead)
async def get_branch(session: ReadSessionDep, branch_id: Id) -> BranchRead:
    return BranchRead.model_validate(await service.require_branch(session, branch_id))


@router.patch("/branches/{branch_id}", response_model=BranchRead)
async def update_branch(
    session: SessionDep, actor: ActorDep, branch_id: Id, data: BranchUpdate
) -> BranchRead:
    branch = await service.require_branch(session, branch_id)
    branch = await service.update_branch(session, actor=actor, branch=branch, data=data)
    return BranchRead.model_validate(branch)


@router.delete("/branches/{branch_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_branch(session: SessionDep, actor: ActorDep, branch_id: Id) -> Response:
    branch = await service.require_branch(session, branch_id)
    await service.delete_branch(session, actor=actor, branch=branch)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# --- bibs -------------------------------------------------------------------------------


class BibQuery(BaseModel):
    """A page of bibs and its filters, read from the query string as one model: one
    validation rather than one per parameter, and no second dependency for the page (FastAPI
    solving dependencies was a tenth of a page's CPU, bench/api_read.py)."""

    limit: int = Field(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description="Rows per page")
    cursor: str | None = Field(None, description="`next_cursor` of the previous page")
    title: str | None = Field(None, description="Words in the title")
    contributor: str | None = Field(None, description="Part of a contributor's name")
    isbn: str | None = Field(None, description="ISBN-10 or ISBN-13, any hyphenation")
    year_from: int | None = Field(None, ge=0, le=2200)
    year_to: int | None = Field(None, ge=0, le=2200)
    language: str | None = Field(None, pattern=r"^[a-z]{3}$")
    material_type: MaterialType | None = None
    branch: str | None = Field(None, description="Branch code holding a copy")
    control_number: str | None = None


@router.get("/bibs", response_model=Page[BibRead], openapi_extra=query_parameters(BibQuery))
async def list_bibs(request: Request) -> Response:
    """Bib records by id, a page at a time, with filters."""
    query = query_of(BibQuery, request)
    filters = service.BibFilters(**query.model_dump(exclude={"limit", "cursor"}))
    rows = await service.list_bibs(
        reads_of(request), filters=filters, limit=query.limit,
        after_id=decode_int_cursor(query.cursor),
    )  # fmt: skip
    return Response(bib_page_json(rows, query.limit), media_type="application/json")


@router.post("/bibs", response_model=BibRead, status_code=status.HTTP_201_CREATED)
async def create_bib(session: SessionDep, actor: ActorDep, data: BibCreate) -> BibRead:
    return BibRead.model_validate(await service.create_bib(session, actor=actor, data=data))


@router.get(
    "/bibs/{bib_id}",
    response_model=BibRead,
    responses={304: {"description": "Not modified (If-None-Match)"}},
)
async def get_bib(request: Request, bib_id: Id) -> Response:
    """A bib record; cached, with an ETag (send If-None-Match to get 304 when unchanged)."""
    cache: Cache = request.app.state.cache
    key, body = await cached(cache, bib_key(bib_id))
    if body is None:
        # Read only on a miss: a cache hit touches no database at all.
        body = bib_json(await service.read_bib(reads_of(request), bib_id))
        await cache.set(key, body)
    return etagged(request, body)


@router.patch("/bibs/{bib_id}", response_model=BibRead)
async def update_bib(session: SessionDep, actor: ActorDep, bib_id: Id, data: BibUpdate) -> BibRead:
    bib = await service.require_bib(session, bib_id)
    return BibRead.model_validate(
        await service.update_bib(session, actor=actor, bib=bib, data=data)
    )


@router.delete("/bibs/{bib_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_bib(session: SessionDep, actor: ActorDep, bib_id: Id) -> Response:
    bib = await service.require_bib(session, bib_id)
    await service.delete_bib(session, actor=actor, bib=bib)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# --- items ------------------------------------------------------------------------------


@router.get("/items", response_model=Page[ItemRead])
async def list_items(
    session: ReadSessionDep,
    page: PageDep,
    bib_id: Annotated[int | None, Query(ge=1)] = None,
    barcode: Annotated[str | None, Query()] = None,
    branch: Annotated[str | None, Query(description="Branch code")] = None,
    status: Annotated[ItemStatus | None, Query()] = None,
    item_type: Annotated[str | None, Query()] = None,
) -> Page[ItemRead]:
    filters = service.ItemFilters(
        bib_id=bib_id, barcode=barcode, branch=branch, status=status, item_type=item_type
    )
    rows = await service.list_items(
        session, filters=filters, limit=page.limit, after_id=decode_int_cursor(page.cursor)
    )
    return Page(
        items=[item_read(r) for r in rows[: page.limit]],
        next_cursor=next_cursor_of(rows, page.limit),
    )


@router.post("/items", response_model=ItemRead, status_code=status.HTTP_201_CREATED)
async def create_item(session: SessionDep, actor: ActorDep, data: ItemCreate) -> ItemRead:
    return item_read(await service.create_item(session, actor=actor, data=data))


@router.get(
    "/items/{item_id}",
    response_model=ItemRead,
    responses={304: {"description": "Not modified (If-None-Match)"}},
)
async def get_item(request: Request, session: ReadSessionDep, item_id: Id) -> Response:
    """An item, with an ETag (send If-None-Match to get 304 when unchanged)."""
    item = item_read(await service.require_item(session, item_id))
    return etagged(request, item.model_dump_json().encode())


@router.patch("/items/{item_id}", response_model=ItemRead)
async def update_item(
    session: SessionDep, actor: ActorDep, item_id: Id, data: ItemUpdate
) -> ItemRead:
    item = await service.require_item(session, item_id)
    return item_read(await service.update_item(session, actor=actor, item=item, data=data))


@router.delete("/items/{item_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_item(session: SessionDep, actor: ActorDep, item_id: Id) -> Response:
    item = await service.require_item(session, item_id)
    await service.delete_item(session, actor=actor, item=item)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
