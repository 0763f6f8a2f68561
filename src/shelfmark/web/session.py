"""Who is using the web pages: the user id in the signed session cookie, checked each time."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from shelfmark.auth import service as auth_service
from shelfmark.auth.models import User
from shelfmark.auth.roles import Actor
from shelfmark.deps import SessionDep
from shelfmark.errors import Unauthenticated

USER_KEY = "user_id"


class LoginRequired(Unauthenticated):
    code = "login-required"
    title = "Log in to see this page"


async def web_actor(request: Request, session: SessionDep) -> Actor | None:
    """The logged-in user of this browser, or None; a disabled user is logged out."""
    actor: Actor | None = None
    user_id = request.session.get(USER_KEY)
    if isinstance(user_id, int):
        user = await session.get(User, user_id)
        if user is not None and user.is_active:
            actor = auth_service.actor_of(user)
        else:
            request.session.clear()
    request.state.web_actor = actor
    return actor


WebActorDep = Annotated[Actor | None, Depends(web_actor)]


async def require_web_actor(actor: WebActorDep) -> Actor:
    if actor is None:
        raise LoginRequired("Log in to see this page.")
    return actor


LoggedInDep = Annotated[Actor, Depends(require_web_actor)]


def log_in(request: Request, user: User) -> None:
    """Start a fresh session (a new CSRF token too) for this user."""
    request.session.clear()
    request.session[USER_KEY] = user.id


def log_out(request: Request) -> None:
    request.session.clear()
