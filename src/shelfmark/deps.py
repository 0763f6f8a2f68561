"""FastAPI dependencies shared by every router: the unit of work and the acting user."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.security import OAuth2PasswordBearer
from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from shelfmark.auth import service as auth_service
from shelfmark.auth.roles import Actor
from shelfmark.db import Reads, SessionReads, session_scope
from shelfmark.errors import Unauthenticated
from shelfmark.settings import Settings

Q = TypeVar("Q", bound=BaseModel)
oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token", auto_error=False)


async def get_app_settings(request: Request) -> Settings:
    # async: a plain function dependency would be run on the thread pool, per request
    settings: Settings = request.app.state.settings
    return settings


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One transaction per request: committed when the handler returns, rolled back if not."""
    async with session_scope(request.app.state.sessionmaker) as session:
        yield session


async def get_read_session(request: Request) -> AsyncIterator[AsyncSession]:
    """A session for handlers that only read (see `create_read_sessionmaker`)."""
    async with request.app.state.read_sessionmaker() as session:
        yield session


def query_of(model: type[Q], request: Request) -> Q:
    """The request's query string read into `model` by the handler itself, for the hottest
    routes: FastAPI reads a query model one field at a time, with checks repeated on every
    request (a tenth of a page of bibs' CPU, bench/api_read.py). Invalid, it is the same 422
    problem as FastAPI's; `query_parameters` documents the model."""
    try:
        return model.model_validate(dict(request.query_params))
    except ValidationError as exc:
        errors = [{**error, "loc": ("query", *error["loc"])} for error in exc.errors()]
        raise RequestValidationError(errors) from exc


def query_parameters(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` for a route that reads `model` with `query_of`: its fields as query
    parameters, as FastAPI would have documented them."""
    schema = model.model_json_schema()
    if "$defs" in schema:  # a field whose schema is a reference: not written for here
        raise ValueError(f"{model.__name__} has nested schemas")
    parameters = []
    for name, field in schema["properties"].items():
        parameter = {"name": name, "in": "query", "required": name in schema.get("required", ())}
        parameter["schema"] = field
        if "description" in field:
            parameter["description"] = field["description"]
        parameters.append(parameter)
    return {"parameters": parameters}


def reads_of(request: Request) -> Reads:
    """The app's hot reads (`Reads`): the pool's when it serves; when a caller put its own
    sessions on the app (the tests, bound to their connection), reads through those."""
    reads: Reads | None = getattr(request.app.state, "reads", None)
    return reads if reads is not None else SessionReads(request.app.state.read_sessionmaker)


# scope="function": the transaction commits (and its after-commit work runs: cache
# invalidation, live events, queued jobs) before the response is sent. With FastAPI's default
# ("request") the 201 went out first: a client that read again at once, through another
# replica, could miss what it had just written, or see a cached copy not yet invalidated;
# and a commit that then failed had already been answered with success.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
ReadSessionDep = Annotated[AsyncSession, Depends(get_read_session, scope="function")]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]


async def optional_actor(
    session: SessionDep,
    settings: SettingsDep,
    token: Annotated[str | None, Depends(oauth2_scheme)],
) -> Actor | None:
    if token is None:
        return None
    return await auth_service.actor_from_token(session, token, secret=settings.secret_key)


async def current_actor(actor: Annotated[Actor | None, Depends(optional_actor)]) -> Actor:
    if actor is None:
        raise Unauthenticated("Log in first: this route needs a bearer token.")
    return actor


ActorDep = Annotated[Actor, Depends(current_actor)]
OptionalActorDep = Annotated[Actor | None, Depends(optional_actor)]

# An id in a path: a positive integer (0 or less is a 422, never a lookup).
PathId = Annotated[int, Path(ge=1)]
