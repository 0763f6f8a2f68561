"""The OPAC results page: the same search service as GET /api/v1/search, rendered."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from shelfmark import ratelimit
from shelfmark.deps import ReadSessionDep
from shelfmark.errors import InvalidInput
from shelfmark.search import service as search_service
from shelfmark.search.schemas import SearchPage
from shelfmark.web.session import WebActorDep
from shelfmark.web.templating import render

router = APIRouter(include_in_schema=False)
PAGE_SIZE = 20
FACET_LABELS = {
    "language": "Language", "material_type": "Format", "subject": "Subject", "year": "Year",
    "branch": "Library",
}  # fmt: skip


@router.get("/search")
async def results(
    request: Request,
    session: ReadSessionDep,
    actor: WebActorDep,
    q: Annotated[str | None, Query(max_length=500)] = None,
    cursor: str | None = None,
    material_type: str | None = None,
    language: str | None = None,
    year_from: Annotated[int | None, Query(ge=0, le=2200)] = None,
    year_to: Annotated[int | None, Query(ge=0, le=2200)] = None,
    subject: Annotated[str | None, Query(max_length=500)] = None,
    branch: Annotated[str | None, Query(max_length=32)] = None,
    available: bool = False,
) -> Response:
    await ratelimit.check_search(request)
    chosen: dict[str, object] = {
        "material_type": material_type, "language": language, "year_from": year_from,
        "year_to": year_to, "subject": subject, "branch": branch,
        "available": True if available else None,
    }  # fmt: skip
    filters = search_service.SearchFilters(
        material_type=material_type, language=language, year_from=year_from, year_to=year_to,
        subject=subject, branch=branch, available=available,
    )  # fmt: skip
    context: dict[str, object] = {"q": q or "", "chosen": chosen, "labels": FACET_LABELS}
    try:
        body = await search_service.cached_search(
            session, request.app.state.cache, q=q, filters=filters, limit=PAGE_SIZE,
            cursor=cursor,
        )  # fmt: skip
        page = SearchPage.model_validate_json(body)
    except InvalidInput as error:
        context |= {"error": error.detail, "page": None}
        blank = not (q or "").strip()  # an empty search box is not an error, only a hint
        return render(request, "opac/results.html", context, status_code=200 if blank else 422)
    context |= {
        "page": page,
        "error": None,
        "next_url": _url(q, chosen, cursor=page.next_cursor) if page.next_cursor else None,
        "facet_url": lambda name, value: _url(q, chosen | {_param(name): value}),
        "clear_url": lambda name: _url(q, chosen | {name: None}),
    }
    return render(request, "opac/results.html", context)


def _param(facet: str) -> str:
    return {"year": "year_from"}.get(facet, facet)


def _url(q: str | None, chosen: Mapping[str, object], cursor: str | None = None) -> str:
    params: dict[str, object] = {"q": q or None, **chosen}
    if params.get("year_from") is not None and chosen.get("year_to") is None:
        params["year_to"] = params["year_from"]  # a year facet is one year
    if cursor:
        params["cursor"] = cursor
    return "/search?" + urlencode({k: v for k, v in params.items() if v not in (None, "")})
