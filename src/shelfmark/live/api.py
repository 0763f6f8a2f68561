"""GET /api/v1/events (server-sent events) and /api/v1/ws (WebSocket), staff only.

Both take `?branch=CODE` to see one branch's events. They accept a bearer token or the web
session cookie (the desk page), and the WebSocket also `?token=` (browsers cannot set
headers on one).

An event stream is answered in two parts (see `EventStreamHandoff`): the handshake goes
through the whole app like any request (middleware, routing, authentication, headers), and
the stream itself, which lasts for hours, is then run by the outermost middleware alone, so
that an open stream holds none of the request's frames, wrappers and exit stacks.
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
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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
EVENTS_PATH = "/events"
HANDOFF = "shelfmark.live.handoff"  # the scope key of a stream's `_Handoff`


class _Handoff:
    """Where a handshake leaves its client for `EventStreamHandoff` to stream to."""

    __slots__ = ("client", "hub")

    def __init__(self) -> None:
        self.hub: Hub | None = None
        self.client: Client | None = None


class EventStreamHandoff:
    """Wraps the app (`app.with_event_streams`): an event stream leaves the app, its
    middleware, the router and FastAPI's request handler once it has begun.

    A request runs inside every middleware, the router, FastAPI's request handler and its
    exit stacks, each a coroutine frame (most with a send wrapper, some with a Request or an
    AsyncExitStack) that lives as long as the response. For a page that is milliseconds;
    for an event stream it is hours, and with 10,000 desks on one process those frames were
    half of the memory: 13.5 KiB of 27.9 per stream under uvicorn (bench/events.py).

    So a request to `path` runs through the app as usual, on a copy of its scope that
    carries a `_Handoff`: sessions, authentication (`staff_actor`), problems for the
    refused, security headers, metrics and the access log all see it as they see any
    request. `EventStreamResponse` sends the head and the first chunk down that stack (the
    headers the middleware add are in it), leaves its hub client in the handoff and
    returns; the stack unwinds, and what it put in its scope goes with it. This wrapper
    then sends the events itself, straight to the server.

    What follows from it: the metrics and the access log time the handshake, not the
    stream; a middleware that rewrote response bodies would see the first chunk only (none
    does); an error while streaming goes to the server, as it would from FastAPI's error
    middleware once a response has begun. Without it, `EventStreamResponse` streams in
    place, as it used to.
    """

    def __init__(self, app: ASGIApp, path: str) -> None:
        self.app = app
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        handoff = _Handoff()
        try:
            await self.app({**scope, HANDOFF: handoff}, receive, send)
            if handoff.client is not None:
                # The server keeps its scope for as long as the request runs: hours, here.
                # Its headers (the largest part, the credentials among them) were for the
                # handshake only.
                scope["headers"] = ()
                await _stream(handoff.client, receive, send)
        finally:
            if handoff.hub is not None and handoff.client is not None:
                handoff.hub.disconnect(handoff.client)


class EventStreamResponse(Response):
    """Server-sent events from one hub client, until the client goes away.

    Starlette's StreamingResponse would cost two tasks and a task group per connection,
    and the hub a queue and a timer: with thousands of desks on one process that was most
    of the memory. This sends the head and the `retry:` line, then hands the client over to
    `EventStreamHandoff` (or, without it, streams here): one coroutine, which waits on the
    client's future, plus a callback that closes the client on a disconnect (`_Hangup`).
    """

    media_type = "text/event-stream"

    def __init__(self, hub: Hub, branch: str | None) -> None:
        self.hub = hub
        self.branch = branch
        self.status_code = 200
        self.background = None
        self.init_headers({"cache-control": "no-cache", "x-accel-buffering": "no"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Connected before the head goes out: no event after it can be missed.
        client = self.hub.connect(self.branch)
        handoff: _Handoff | None = scope.get(HANDOFF)
        if handoff is not None:
            handoff.hub, handoff.client = self.hub, client  # its middleware disconnects it
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            await send({"type": "http.response.body", "body": RETRY, "more_body": True})
            if handoff is None:
                await _stream(client, receive, send)
        except OSError:
            client.close()  # gone already (ASGI 2.4 servers say so this way): nothing to stream
        finally:
            if handoff is None:
                self.hub.disconnect(client)


async def _stream(client: Client, receive: Receive, send: Send) -> None:
    """Sends the client's events and heartbeats until it is dropped or goes away.

    Takes the client's frames itself rather than through `Hub.stream` or `Client.take`: an
    async generator or a coroutine would be one more frame per open stream."""
    hangup = _Hangup(client, receive)
    try:
        while True:
            if (waiter := client.wait()) is not None:
                await waiter
                continue
            if not (taken := client.drain()):
                break  # closed: dropped, disconnected or gone
            for data in taken:
                body = KEEP_ALIVE if data is HEARTBEAT else _frame(data)
                await send({"type": "http.response.body", "body": body, "more_body": True})
    except OSError:
        pass  # the client went away while we wrote
    finally:
        hangup.cancel()


class _Hangup:
    """Closes the client when the other end hangs up, even while no event comes.

    From a callback on what `receive` returns rather than from a task of ours: granian's
    `receive` gives a future, which needs no task at all (uvicorn's is a coroutine, which
    `ensure_future` runs as one). The messages before the disconnect are the request's body
    (a GET's is empty): each is followed by a wait for the next.
    """

    __slots__ = ("client", "receive", "waiting")

    def __init__(self, client: Client, receive: Receive) -> None:
        self.client = client
        self.receive = receive
        self._listen()

    def _listen(self) -> None:
        self.waiting = asyncio.ensure_future(self.receive())
        self.waiting.add_done_callback(self)  # itself, not a bound method made for it

    def __call__(self, waiting: asyncio.Future[Message]) -> None:
        if waiting.cancelled():
            return  # the stream ended first
        if waiting.exception() is None and waiting.result()["type"] == "http.request":
            self._listen()
        else:
            self.client.close()  # disconnected, or the server could not say (gone too)

    def cancel(self) -> None:
        self.waiting.cancel()


@router.get(
    EVENTS_PATH,
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
