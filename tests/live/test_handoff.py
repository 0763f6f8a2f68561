"""An event stream's handshake goes through the whole app; the stream then leaves it.

Driven through the app's ASGI interface, as a server drives it, to see what a server sees:
the messages sent, when the request's middleware have finished, and when the app returns.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.types import Message

from factories import auth, make_user
from shelfmark.app import with_event_streams
from shelfmark.auth.roles import Role
from shelfmark.live.api import RETRY
from shelfmark.live.hub import QUEUE_SIZE, Hub
from web.test_pages import log_in

WITHIN = 5.0


def event(name: str, branch: str) -> dict[str, object]:
    return {"name": name, "at": "2026-11-24T10:00:00+00:00", "payload": {"branch": branch}}


class Desk:
    """One `GET /api/v1/events` on the app, with a server's receive and send."""

    def __init__(self, app: FastAPI, headers: dict[str, str], branch: str = "MAIN") -> None:
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": "GET", "scheme": "http", "path": "/api/v1/events",
            "raw_path": b"/api/v1/events", "root_path": "",
            "query_string": f"branch={branch}".encode(),
            "headers": [(b"host", b"testserver")]
            + [(name.lower().encode(), value.encode()) for name, value in headers.items()],
            "client": ("127.0.0.1", 50000), "server": ("testserver", 80),
        }  # fmt: skip
        self.head: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self.chunks: asyncio.Queue[bytes] = asyncio.Queue()
        self.writable = asyncio.Event()
        self.writable.set()
        self.gone = asyncio.Event()
        self._body_read = False
        self.scope = scope
        served = with_event_streams(app)  # as `shelfmark.asgi:app` is
        self.task = asyncio.create_task(served(scope, self.receive, self.send))

    async def receive(self) -> Message:
        if not self._body_read:
            self._body_read = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        await self.writable.wait()  # cleared: a client that does not read
        if message["type"] == "http.response.start":
            self.head.set_result(message)
        else:
            self.chunks.put_nowait(message.get("body", b""))

    async def status(self) -> int:
        return int((await asyncio.wait_for(self.head, WITHIN))["status"])

    def headers(self) -> dict[bytes, bytes]:
        return dict(self.head.result()["headers"])

    async def chunk(self) -> bytes:
        return await asyncio.wait_for(self.chunks.get(), WITHIN)

    async def hang_up(self) -> None:
        self.gone.set()
        await asyncio.wait_for(self.task, WITHIN)


def streams_counted(app: FastAPI) -> float:
    """Event streams the metrics middleware has seen finish (their handshakes, that is)."""
    labels = {"method": "GET", "route": "/api/v1/events", "status": "200"}
    value = app.state.metrics.registry.get_sample_value("shelfmark_http_requests_total", labels)
    return value or 0.0


@pytest.fixture
async def headers(session: AsyncSession) -> dict[str, str]:
    librarian = await make_user(session, Role.LIBRARIAN)
    await session.commit()
    return auth(librarian)


async def test_the_stream_runs_on_after_the_middleware_have_finished(
    app: FastAPI, headers: dict[str, str]
) -> None:
    hub: Hub = app.state.live.hub
    desk = Desk(app, headers, branch="MAIN")
    assert await desk.status() == 200
    head = desk.headers()
    assert head[b"content-type"].startswith(b"text/event-stream")
    assert head[b"cache-control"] == b"no-cache"
    # What SecurityHeadersMiddleware adds to every response is in the head.
    assert b"content-security-policy" in head
    assert head[b"x-content-type-options"] == b"nosniff"
    assert await desk.chunk() == RETRY
    # The handshake is over for every middleware (metrics count a request when it ends),
    # and the stream goes on.
    assert streams_counted(app) == 1
    assert not desk.task.done()
    assert len(hub.clients) == 1
    # The server's scope outlives the handshake; its headers (credentials too) do not.
    assert not desk.scope["headers"]

    hub.deliver(event("loan.created", "EAST"))  # another branch's: not for this desk
    hub.deliver(event("loan.created", "MAIN"))
    frame = await desk.chunk()
    assert frame.startswith(b"event: loan.created\ndata: ")
    assert b'"MAIN"' in frame
    hub.beat()
    assert await desk.chunk() == b": keep-alive\n\n"

    await desk.hang_up()  # the app returns, and the hub forgets the desk
    assert not hub.clients


async def test_the_desk_page_session_may_stream(
    app: FastAPI, client: httpx.AsyncClient, session: AsyncSession
) -> None:
    librarian = await make_user(session, Role.LIBRARIAN)
    await session.commit()
    await log_in(client, librarian.username)
    cookie = "; ".join(f"{name}={value}" for name, value in client.cookies.items())
    desk = Desk(app, {"Cookie": cookie})
    assert await desk.status() == 200
    assert await desk.chunk() == RETRY
    await desk.hang_up()
    assert not app.state.live.hub.clients


async def test_a_refused_handshake_streams_nothing(app: FastAPI, session: AsyncSession) -> None:
    patron = await make_user(session, Role.PATRON)
    await session.commit()
    for headers, status in (({}, 401), (auth(patron), 403)):
        desk = Desk(app, headers)
        assert await desk.status() == status
        assert desk.headers()[b"content-type"] == b"application/problem+json"
        await asyncio.wait_for(desk.task, WITHIN)  # over, without waiting for a hang-up
        assert not app.state.live.hub.clients


async def test_a_desk_that_stops_reading_is_dropped_and_its_stream_ends(
    app: FastAPI, headers: dict[str, str]
) -> None:
    hub: Hub = app.state.live.hub
    desk = Desk(app, headers)
    assert await desk.status() == 200
    assert await desk.chunk() == RETRY
    desk.writable.clear()
    for n in range(QUEUE_SIZE + 2):  # the first is being written; then the backlog fills
        hub.deliver(event(f"e{n}", "MAIN"))
        await asyncio.sleep(0)
    assert hub.dropped == 1
    assert not hub.clients
    desk.writable.set()  # the write under way ends, and with it the stream
    await asyncio.wait_for(desk.task, WITHIN)
