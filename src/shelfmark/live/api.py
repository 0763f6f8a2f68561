"""GET /api/v1/events (server-sent events) and /api/v1/ws (WebSocket), staff only.

Both take `?branch=CODE` to see one branch's events. They accept a bearer token or the web
session cookie (the desk page), and the WebSocket also `?token=` (browsers cannot set
headers on one).
"""

from __future__ import annotations

import asyncio
import contextlib
from functools import lru_cache
from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Query, Request, WebSocket, WebSocketDisconnect
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from shelfmark.auth import service as auth_service
from shelfmark.auth.models import User
from shelfmark.auth.roles import Actor, require_staff
from shelfmark.db import session_scope
from shelfmark.deps import oauth2_scheme
from shelfmark.errors import ShelfmarkError, Unauthenticated
from shelfmark.live.hub import HEARTBEAT, QUEUE_SIZE, Client, Hub

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
    request: Request, token: Annotated[str | None, Depends(oauth2_scheme)]
) -> Actor:
    """The staff member at the other end, by bearer token or session cookie.

    Checked in a unit of work of its own, closed before the stream starts: the request's
    session (`SessionDep`) would stay open for as long as the response runs, each open
    stream then holding a database connection, idle in its transaction, until the pool ran
    dry and every other request waited.
    """
    state = request.app.state
    if token is None:
        actor = await _session_actor(request.session, state.sessionmaker)
    else:
        async with session_scope(state.sessionmaker) as session:
            actor = await auth_service.actor_from_token(
                session, token, secret=state.settings.secret_key
            )
    if actor is None:
        raise Unauthenticated("Log in first: live events are for staff.")
    return require_staff(actor)


@lru_cache(maxsize=QUEUE_SIZE)
def _frame(data: bytes) -> bytes:
    # Cached: the same event goes to every client (and a bytes object keeps its hash).
    name = str(orjson.loads(data).get("name", "message"))
    return b"event: " + name.encode() + b"\ndata: " + data + b"\n\n"


KEEP_ALIVE = b": keep-alive\n\n"
RETRY = b"retry: 2000\n\n"  # how long a browser waits before it reconnects


class EventStreamResponse(Response):
    """Server-sent events from one hub client, until the client goes away.

    Starlette's StreamingResponse would cost two tasks and a task group per connection,
    and the hub a queue and a timer: with thousands of desks on one process that was most
    of the memory. This is one coroutine, which waits on the client's future, plus one
    task that waits for the disconnect and closes the client.
    """

    media_type = "text/event-stream"

    def __init__(self, hub: Hub, branch: str | None) -> None:
        self.hub = hub
        self.branch = branch
        self.status_code = 200
        self.background = None
        self.init_headers({"cache-control": "no-cache", "x-accel-buffering": "no"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = self.hub.connect(self.branch)
        watcher = asyncio.ensure_future(_close_on_disconnect(client, receive))
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            await send({"type": "http.response.body", "body": RETRY, "more_body": True})
            async for data in self.hub.stream(client):
                body = KEEP_ALIVE if data is HEARTBEAT else _frame(data)
                await send({"type": "http.response.body", "body": body, "more_body": True})
        except OSError:
            pass  # the client went away while we wrote (ASGI 2.4 servers say so this way)
        finally:
            watcher.cancel()
            self.hub.disconnect(client)


async def _close_on_disconnect(client: Client, receive: Receive) -> None:
    """Ends the client's stream when the other end hangs up, even while no event comes."""
    with contextlib.suppress(OSError):
        while (await receive())["type"] != "http.disconnect":
            pass
    client.close()


@router.get(
    "/events",
    response_class=EventStreamResponse,
    status_code=200,  # the response class has no default for FastAPI's schema to read
    responses={200: {"content": {"text/event-stream": {}}, "description": "Event stream"}},
)
async def event_stream(
    request: Request, actor: Annotated[Actor, Depends(staff_actor)], branch: Branch = None
) -> EventStreamResponse:
    """Circulation events as they happen (`event: loan.created`, `data: {...}`), and a
    comment (`: keep-alive`) every 15 s of silence."""
    return EventStreamResponse(request.app.state.live.hub, branch)


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
            if data is HEARTBEAT:
                await websocket.send_json({"name": "keep-alive"})
            else:
                await websocket.send_text(data.decode())
    except WebSocketDisconnect:
        pass
    finally:
        hub.disconnect(client)
