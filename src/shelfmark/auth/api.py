from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, status
from fastapi.security import OAuth2PasswordRequestForm

from shelfmark import ratelimit
from shelfmark.auth import service
from shelfmark.auth.roles import Role
from shelfmark.auth.schemas import Token, UserCreate, UserRead
from shelfmark.db import utcnow
from shelfmark.deps import ActorDep, SessionDep, SettingsDep

router = APIRouter(tags=["auth"])


_LOGIN_EXAMPLE = {
    "requestBody": {
        "content": {
            "application/x-www-form-urlencoded": {
                "example": {"username": "librarian", "password": "correct horse battery"}
            }
        }
    }
}


@router.post("/auth/token", response_model=Token, openapi_extra=_LOGIN_EXAMPLE)
async def login(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
) -> Token:
    """Exchange a user name and password for a bearer token (OAuth2 password flow).

    Attempts are rate-limited per user name and per address (429 with Retry-After)."""
    await ratelimit.check_login(request, form.username)
    user = await service.authenticate(session, username=form.username, password=form.password)
    minutes = settings.access_token_minutes
    token = service.issue_token(user, secret=settings.secret_key, now=utcnow(), minutes=minutes)
    return Token(access_token=token, expires_in=minutes * 60)


@router.get("/auth/me", response_model=UserRead)
async def me(session: SessionDep, actor: ActorDep) -> UserRead:
    user = await service.get_user_by_username(session, actor.username)
    return UserRead.model_validate(user)


@router.post("/users", response_model=UserRead, status_code=status.HTTP_201_CREATED)
async def create_user(session: SessionDep, actor: ActorDep, data: UserCreate) -> UserRead:
    user = await service.create_user(
        session, actor=actor, username=data.username, password=data.password,
        role=Role(data.role), full_name=data.full_name, email=data.email,
    )  # fmt: skip
    return UserRead.model_validate(user)
