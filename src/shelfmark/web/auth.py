"""Log in and out of the web pages (staff and patrons alike; the role decides what they see)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from starlette.responses import RedirectResponse, Response

from shelfmark import ratelimit
from shelfmark.deps import SessionDep
from shelfmark.errors import InvalidCredentials
from shelfmark.patrons import service as patrons_service
from shelfmark.web.security import check_csrf
from shelfmark.web.session import WebActorDep, log_in, log_out
from shelfmark.web.templating import render

router = APIRouter(include_in_schema=False)


def safe_next(target: str | None) -> str:
    """Only a path on this site: never an open redirect to another host."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


@router.get("/login")
async def login_page(request: Request, actor: WebActorDep, next: str | None = None) -> Response:
    return render(request, "login.html", {"next": safe_next(next), "error": None})


@router.post("/login", dependencies=[Depends(check_csrf)])
async def login(
    request: Request,
    session: SessionDep,
    actor: WebActorDep,
    username: Annotated[str, Form()],
    password: Annotated[str, Form()],
    next: Annotated[str, Form()] = "/",
) -> Response:
    await ratelimit.check_login(request, username)
    try:
        user = await patrons_service.authenticate_by_name_or_card(
            session, login=username, password=password
        )
    except InvalidCredentials as error:
        context = {"next": safe_next(next), "error": error.detail, "username": username}
        return render(request, "login.html", context, status_code=401)
    log_in(request, user)
    return RedirectResponse(safe_next(next), status_code=303)


@router.post("/logout", dependencies=[Depends(check_csrf)])
async def logout(request: Request, actor: WebActorDep) -> Response:
    log_out(request)
    return RedirectResponse("/", status_code=303)
