"""A desk connected to the events stream sees a checkout made at another desk, at once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from factories import make_branch, make_item, make_patron, make_user
from shelfmark.auth import service as auth_service
from shelfmark.auth.roles import Role
from shelfmark.db import session_scope, utcnow
from web.conftest import LiveServer

LIVE_SECRET = "live-server-secret-key-for-browser-tests"


async def seed(live_server: LiveServer) -> tuple[dict[str, str], str, str, str]:
    async with session_scope(live_server.sessionmaker) as session:
        branch = await make_branch(session)
        item = await make_item(session, branch=branch)
        patron = await make_patron(session, branch=branch)
        librarian = await make_user(session, Role.LIBRARIAN)
    token = auth_service.issue_token(librarian, secret=LIVE_SECRET, now=utcnow(), minutes=5)
    return {"Authorization": f"Bearer {token}"}, branch.code, item.barcode, patron.card_number


async def test_sse_sees_a_checkout_within_a_second(live_server: LiveServer) -> None:
    headers, branch, barcode, card = await seed(live_server)
    async with (
        httpx.AsyncClient(base_url=live_server.url, timeout=5) as http,
        http.stream("GET", "/api/v1/events", params={"branch": branch}, headers=headers) as stream,
    ):
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.aiter_lines()
        assert (await anext(lines)).startswith("retry:")
        started = time.perf_counter()
        checkout = await http.post(
            "/api/v1/checkouts", json={"item_barcode": barcode, "patron_card": card},
            headers=headers,
        )  # fmt: skip
        assert checkout.status_code == 201, checkout.text
        event_line = await asyncio.wait_for(_next_event(lines), 1.0)
        assert event_line == "event: loan.created"
        data = orjson.loads((await anext(lines)).removeprefix("data: "))
        assert data["payload"]["branch"] == branch
        assert time.perf_counter() - started < 1.0


async def _next_event(lines: AsyncIterator[str]) -> str:
    async for line in lines:
        if line.startswith("event:"):
            return line
    raise AssertionError("the stream ended")


async def test_websocket_sees_a_checkout_and_needs_staff(live_server: LiveServer) -> None:
    headers, branch, barcode, card = await seed(live_server)
    token = headers["Authorization"].removeprefix("Bearer ")
    ws_url = live_server.url.replace("http://", "ws://") + "/api/v1/ws"
    async with connect(f"{ws_url}?branch={branch}&token={token}") as socket:
        async with httpx.AsyncClient(base_url=live_server.url) as http:
            response = await http.post(
                "/api/v1/checkouts", json={"item_barcode": barcode, "patron_card": card},
                headers=headers,
            )  # fmt: skip
            assert response.status_code == 201
        message = orjson.loads(await asyncio.wait_for(socket.recv(), 1.0))
        assert message["name"] == "loan.created"
    with pytest.raises(InvalidStatus) as refused:  # closed before the handshake completes
        async with connect(ws_url):
            pass
    assert refused.value.response.status_code == 403
