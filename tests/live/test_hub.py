"""The hub that fans events out to connected desks: filtering, heartbeats, slow clients."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from conftest import unreachable
from factories import auth, make_user
from shelfmark import events
from shelfmark.auth.roles import Role
from shelfmark.live import hub as hub_module
from shelfmark.live.hub import HEARTBEAT, QUEUE_SIZE, Hub, LiveEvents

REDIS = "redis://127.0.0.1:6379/12"


def event(name: str, branch: str) -> dict[str, object]:
    return {"name": name, "at": "2026-11-24T10:00:00+00:00", "payload": {"branch": branch}}


class TestHub:
    async def test_clients_get_their_branch_only(self) -> None:
        hub = Hub()
        everything, main_only = hub.connect(None), hub.connect("MAIN")
        hub.deliver(event("loan.created", "MAIN"))
        hub.deliver(event("loan.created", "EAST"))
        assert len(everything.pending) == 2
        assert len(main_only.pending) == 1

    async def test_a_slow_client_is_dropped_and_its_memory_freed(self) -> None:
        hub = Hub()
        slow, fast = hub.connect(None), hub.connect(None)
        for n in range(QUEUE_SIZE + 1):
            hub.deliver(event(f"e{n}", "MAIN"))
            assert len(await fast.take()) == 1
        assert slow not in hub.clients
        assert fast in hub.clients
        assert hub.dropped == 1
        assert slow.pending == []  # what it had not read is freed at once
        assert [item async for item in hub.stream(slow)] == []

    async def test_a_stream_yields_what_came_while_it_was_away(self) -> None:
        hub = Hub()
        client = hub.connect(None)
        stream = hub.stream(client)
        hub.deliver(event("e1", "MAIN"))
        hub.deliver(event("e2", "MAIN"))
        assert b'"e1"' in (await anext(stream) or b"")
        assert b'"e2"' in (await anext(stream) or b"")
        waiting = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0)
        assert not waiting.done()  # nothing to send: it waits, without a timer
        hub.disconnect(client)
        with pytest.raises(StopAsyncIteration):
            await waiting

    async def test_heartbeats_go_to_idle_clients_only(self) -> None:
        hub = Hub()
        idle, busy = hub.connect("EAST"), hub.connect("MAIN")
        hub.deliver(event("hold.ready", "MAIN"))
        hub.beat()
        assert idle.pending == [HEARTBEAT]
        assert len(busy.pending) == 1
        assert busy.pending[0] is not HEARTBEAT

    async def test_silence_yields_heartbeats(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(hub_module, "HEARTBEAT_SECONDS", 0.01)
        live = LiveEvents(None)
        await live.start()
        try:
            client = live.hub.connect(None)
            stream = live.hub.stream(client)
            assert await asyncio.wait_for(anext(stream), 5) is HEARTBEAT
            await events.bus.deliver(events.Event("hold.ready", datetime.now(UTC), {}))
            while (data := await asyncio.wait_for(anext(stream), 5)) is HEARTBEAT:
                pass
            assert b"hold.ready" in data
        finally:
            await live.stop()


class TestLiveEvents:
    async def test_committed_events_reach_the_hub_in_process(self) -> None:
        live = LiveEvents(None)
        await live.start()
        client = live.hub.connect(None)
        await events.bus.deliver(events.Event("loan.created", datetime.now(UTC), {"branch": "X"}))
        assert len(client.pending) == 1
        await live.stop()
        assert client not in live.hub.clients

    async def test_through_redis_pubsub(self) -> None:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", 6379)
            writer.close()
        except OSError:
            unreachable("Redis at 127.0.0.1:6379 is unreachable")
        publisher, listener = (
            LiveEvents("redis://127.0.0.1:6379/12"),
            LiveEvents("redis://127.0.0.1:6379/12"),
        )
        await listener.start()
        await asyncio.sleep(0.2)  # let its subscription settle
        client = listener.hub.connect("MAIN")
        publisher._redis = listener._redis  # one connection suffices for publishing here
        await publisher._to_redis(
            events.Event("loan.created", datetime.now(UTC), {"branch": "MAIN"})
        )
        (data,) = await asyncio.wait_for(client.take(), 5)
        assert data is not None
        assert b"loan.created" in data
        await listener.stop()
        await publisher.stop()


class TestEndpoints:
    async def test_anonymous_is_401_and_patron_403(
        self, client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        patron = await make_user(session, Role.PATRON)
        await session.commit()
        assert (await client.get("/api/v1/events")).status_code == 401
        response = await client.get("/api/v1/events", headers=auth(patron))
        assert response.status_code == 403
        assert response.json()["type"] == "/problems/forbidden"
