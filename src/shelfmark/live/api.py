"""GET /api/v1/events (server-sent events) and /api/v1/ws (WebSocket), staff only.

Both take `?branch=CODE` to see one branch's events. They accept a bearer token or the web
session cookie (the desk page), and the WebSocket also `?token=` (browsers cannot set
headers on one).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Query, Request, WebSocket, WebSocketDisconnect
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.responses import StreamingResponse

from shelfmark.auth import service as auth_service
from shelfmark.auth.models import User
from shelfmark.auth.roles import Actor, require_staff
from shelfmark.db import session_scope
from shelfmark.deps import optional_actor
from shelfmark.errors import ShelfmarkError, Unauthenticated
from shelfmark.live.hub import Client, Hub

router = APIRouter(tags=["live events"])
Branch = Annotated[str | None, Query(description="Only events of this branch (code)")]
POLICY_VIOLATION = 1008


async def _session_actor(
    scope_session: dict[str, object], maker: async_sessionmaker[AsyncSession]
) -> Actor | None:
    user_id = scope_session.get("user_id")
    if not isinstance(user_id, int):
        return None
    async with session_scope(maker) as session:
        user = await session.get(User, user_id)
        return auth_service.actor_of(user) if user is not None and user.is_active else None


async def staff_actor(
    request: Request, bearer: Annotated[Actor | None, Depends(optional_actor)]
) -> Actor:
    actor = bearer or await _session_actor(request.session, request.app.state.sessionmaker)
    if actor is None:
        raise Unauthenticated("Log in first: live events are for staff.")
    return require_staff(actor)


def _frame(data: bytes) -> bytes:
    name = str(orjson.loads(data).get("name", "message"))
    return b"event: " + name.encode() + b"\ndata: " + data + b"\n\n"


@router.get(
    "/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "Event stream"}},
)
async def event_stream(
    request: Request, actor: Annotated[Actor, Depends(staff_actor)], branch: Branch = None
) -> StreamingResponse:
    """Circulation events as they happen (`event: loan.created`, `data: {...}`)."""
    hub: Hub = request.app.state.live.hub
    client = hub.connect(branch)
    return StreamingResponse(
        _sse(hub, client),
        media_type="text/event-stream",
        headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
    )


async def _sse(hub: Hub, client: Client) -> AsyncIterator[bytes]:
    try:
        yield b"retry: 2000\n\n"
        async for data in hub.stream(client):
            yield b": keep-alive\n\n" if data is None else _frame(data)
    finally:
        hub.disconnect(client)


@router.websocket("/ws")
async def event_socket(
    websocket: WebSocket, branch: Branch = None, token: str | None = None
) -> None:
    """The same events over a WebSocket, one JSON object per message."""
    actor = None
    state = websocket.app.state
    with contextlib.suppress(ShelfmarkError):
        if token:
            async with session_scope(state.sessionmaker) as session:
                actor = await auth_service.actor_from_token(
                    session, token, secret=state.settings.secret_key
                )
        else:
            actor = await _session_actor(websocket.session, state.sessionmaker)
    if actor is None or not actor.is_staff:
        await websocket.close(code=POLICY_VIOLATION, reason="staff only")
        return
    await websocket.accept()
    hub: Hub = state.live.hub
    client = hub.connect(branch)
    try:
        async for data in hub.stream(client):
            if data is None:
                await websocket.send_json({"name": "keep-alive"})
            else:
                await websocket.send_text(data.decode())
    except WebSocketDisconnect:
        pass
    finally:
        hub.disconnect(client)
