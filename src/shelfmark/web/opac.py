"""The public catalog: search and read without logging in (and without JavaScript)."""

from __future__ import annotations

from collections import defaultdict
from typing import Annotated

from fastapi import APIRouter, Path, Request
from starlette.responses import Response

from shelfmark.catalog import service as catalog_service
from shelfmark.deps import ReadSessionDep
from shelfmark.web.account import hold_form
from shelfmark.web.session import WebActorDep
from shelfmark.web.templating import render

router = APIRouter(include_in_schema=False)
COPIES_SHOWN = 500


@router.get("/")
async def home(request: Request, actor: WebActorDep) -> Response:
    return render(request, "opac/home.html")


@router.get("/bibs/{bib_id}")
async def record(
    request: Request, session: ReadSessionDep, actor: WebActorDep,
    bib_id: Annotated[int, Path(ge=1)],
) -> Response:  # fmt: skip
    bib = await catalog_service.require_bib(session, bib_id)
    items = await catalog_service.list_items(
        session, filters=catalog_service.ItemFilters(bib_id=bib_id), limit=COPIES_SHOWN,
        after_id=None,
    )  # fmt: skip
    by_branch = defaultdict(list)
    for item in items:
        by_branch[item.branch.name].append(item)
    context = {"bib": bib, "copies": dict(sorted(by_branch.items()))}
    context["hold_form"] = await hold_form(session, actor)
    return render(request, "opac/record.html", context)
