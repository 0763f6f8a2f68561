"""Live events for the staff desk: domain events fanned out to SSE and WebSocket clients.

Each API process has a `Hub` of connected clients. Embedded (no REDIS_URL) the hub listens
to the in-process event bus. With Redis, every process publishes its committed events to
one pub/sub channel and every hub listens to that channel, so a desk connected to any API
process sees a checkout made through any other. A client that cannot keep up (its backlog
is full) is dropped, so that a slow or dead connection never holds memory; it reconnects
and reloads.

One process holds thousands of desks (bench/events.py: 10,000), so a client is as small as
it can be: a list of frames not yet sent and, while its stream waits, one future. There is
no queue and no timer per client: one task of the hub sends every idle client a heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator
from typing import Any, Final

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from shelfmark import events

log = logging.getLogger(__name__)

CHANNEL = "shelfmark:events"
QUEUE_SIZE = 64  # frames a client may have waiting before it is dropped
HEARTBEAT_SECONDS = 15.0
RECONNECT_SECONDS = 1.0
# What a stream yields when a heartbeat is due, rather than an event's JSON.
HEARTBEAT: Final = None


class Client:
    """One connected desk: the frames waiting for its stream, and that stream's waiter."""

    __slots__ = ("branch", "closed", "pending", "waiter")

    def __init__(self, branch: str | None) -> None:
        self.branch = branch
        self.pending: list[bytes | None] = []
        self.waiter: asyncio.Future[None] | None = None
        self.closed = False

    def wants(self, event: dict[str, Any]) -> bool:
        return self.branch is None or event.get("payload", {}).get("branch") == self.branch

    def push(self, data: bytes | None) -> bool:
        """Add a frame (or a heartbeat); False when the backlog is full."""
        if len(self.pending) >= QUEUE_SIZE:
            return False
        self.pending.append(data)
        self._wake()
        return True

    def close(self) -> None:
        """End the stream: what was waiting is freed, and the stream returns."""
        self.closed = True
        self.pending = []
        self._wake()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def wait(self) -> asyncio.Future[None] | None:
        """None when there is something to take (frames, or the end), else a future that is
        done once there is. A plain method, not a coroutine: a stream that awaits it holds
        no frame of the client's while it waits."""
        if self.pending or self.closed:
            return None
        self.waiter = asyncio.get_running_loop().create_future()
        return self.waiter

    def drain(self) -> list[bytes | None]:
        """Every frame waiting, now ([] once the client is closed)."""
        self.waiter = None
        taken, self.pending = self.pending, []
        return taken

    async def take(self) -> list[bytes | None]:
        """Every frame waiting, once there is one; [] once the client is closed."""
        while (waiter := self.wait()) is not None:
            try:
                await waiter
            finally:
                self.waiter = None
        return self.drain()


class Hub:
    def __init__(self) -> None:
        self.clients: set[Client] = set()
        self.dropped = 0

    def connect(self, branch: str | None) -> Client:
        # Interned: thousands of desks of one branch share one string, not one each.
        client = Client(None if branch is None else sys.intern(branch))
        self.clients.add(client)
        return client

    def disconnect(self, client: Client) -> None:
        self.clients.discard(client)
        client.close()

    def deliver(self, event: dict[str, Any], data: bytes | None = None) -> None:
        """To every client that wants it; `data` is the event as JSON, if already made."""
        data = data or orjson.dumps(event)
        for client in list(self.clients):
            if client.wants(event) and not client.push(data):
                self._drop(client)

    def beat(self) -> None:
        """A heartbeat to every client with nothing waiting (proxies close silent streams)."""
        for client in self.clients:
            if not client.pending:
                client.push(HEARTBEAT)

    def _drop(self, client: Client) -> None:
        self.clients.discard(client)
        self.dropped += 1
        client.close()

    async def stream(self, client: Client) -> AsyncIterator[bytes | None]:
        """The client's events as they come, and HEARTBEAT when one is due; it ends when
        the client is dropped or disconnected."""
        while taken := await client.take():
            for data in taken:
                yield data


class LiveEvents:
    """Connects the event bus to this process's hub, directly or through Redis, and beats
    the hub's heartbeat."""

    def __init__(self, redis_url: str | None) -> None:
        self.hub = Hub()
        self.redis_url = redis_url
        self._unsubscribe: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self._redis: Redis | None = None

    async def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._beat(), name="live-heartbeat"))
        if self.redis_url is None:
            self._unsubscribe = events.subscribe(events.ALL, self._to_hub)
            return
        self._redis = Redis.from_url(self.redis_url)
        self._unsubscribe = events.subscribe(events.ALL, self._to_redis)
        self._tasks.append(asyncio.create_task(self._listen(), name="live-events"))

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._redis is not None:
            await self._redis.aclose()
        for client in list(self.hub.clients):
            self.hub._drop(client)

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            self.hub.beat()

    def _to_hub(self, event: events.Event) -> None:
        self.hub.deliver(event.as_dict())

    async def _to_redis(self, event: events.Event) -> None:
        assert self._redis is not None
        try:
            await self._redis.publish(CHANNEL, orjson.dumps(event.as_dict()))
        except (RedisError, OSError) as exc:
            log.warning("live event %s not published: %s", event.name, exc)

    async def _listen(self) -> None:
        assert self._redis is not None
        while True:
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.subscribe(CHANNEL)
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            data = message["data"]
                            self.hub.deliver(orjson.loads(data), data)
            except (RedisError, OSError) as exc:
                log.warning("live events: Redis subscription lost (%s); retrying", exc)
                await asyncio.sleep(RECONNECT_SECONDS)
