"""Search route: public, read-only, one service call (through the cache)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from shelfmark import ratelimit
from shelfmark.catalog.schemas import MaterialType
from shelfmark.deps import ReadSessionDep
from shelfmark.search import service
from shelfmark.search.schemas import SearchPage

router = APIRouter(tags=["search"])


@router.get("/search", response_model=SearchPage)
async def search(
    request: Request,
    session: ReadSessionDep,
    q: Annotated[
        str | None,
        Query(max_length=500, description="Words of a title, name, subject; or an ISBN"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=service.MAX_LIMIT)] = service.DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(description="`next_cursor` of the previous page")] = None,
    material_type: Annotated[MaterialType | None, Query()] = None,
    language: Annotated[str | None, Query(pattern=r"^[a-z]{3}$")] = None,
    year_from: Annotated[int | None, Query(ge=0, le=2200)] = None,
    year_to: Annotated[int | None, Query(ge=0, le=2200)] = None,
    subject: Annotated[str | None, Query(max_length=500, description="A main heading")] = None,
    branch: Annotated[str | None, Query(max_length=32, description="Branch code")] = None,
    available: Annotated[
        bool, Query(description="Only titles with a copy on the shelf (at `branch` if given)")
    ] = False,
) -> Response:
    """Ranked catalog search with facet counts; an empty `q` with filters browses.

    Exact and near-exact titles come first, an ISBN (10 or 13, any hyphenation) finds its
    book first, words match in any order across title and names, diacritics and case are
    ignored, the last word matches as a prefix, and a word with one typo still matches.
    """
    await ratelimit.check_search(request)
    filters = service.SearchFilters(
        material_type=material_type, language=language, year_from=year_from, year_to=year_to,
        subject=subject, branch=branch, available=available,
    )  # fmt: skip
    body = await service.cached_search(
        session, request.app.state.cache, q=q, filters=filters, limit=limit, cursor=cursor
    )
    # Sent as it is: returning a model would have FastAPI validate it again.
    return Response(body, media_type="application/json")
