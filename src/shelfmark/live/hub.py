"""Live events for the staff desk: domain events fanned out to SSE and WebSocket clients.

Each API process has a `Hub` of connected clients. Embedded (no REDIS_URL) the hub listens
to the in-process event bus. With Redis, every process publishes its committed events to
one pub/sub channel and every hub listens to that channel, so a desk connected to any API
process sees a checkout made through any other. A client that cannot keep up (its queue
is full) is dropped, so that a slow or dead connection never holds memory; it reconnects
and reloads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from shelfmark import events

log = logging.getLogger(__name__)

CHANNEL = "shelfmark:events"
QUEUE_SIZE = 64
HEARTBEAT_SECONDS = 15.0
RECONNECT_SECONDS = 1.0


@dataclass(eq=False)
class Client:
    branch: str | None
    queue: asyncio.Queue[bytes | None] = field(default_factory=lambda: asyncio.Queue(QUEUE_SIZE))

    def wants(self, event: dict[str, Any]) -> bool:
        return self.branch is None or event.get("payload", {}).get("branch") == self.branch


class Hub:
    def __init__(self) -> None:
        self.clients: set[Client] = set()
        self.dropped = 0

    def connect(self, branch: str | None) -> Client:
        client = Client(branch)
        self.clients.add(client)
        return client

    def disconnect(self, client: Client) -> None:
        self.clients.discard(client)

    def deliver(self, event: dict[str, Any]) -> None:
        data = orjson.dumps(event)
        for client in list(self.clients):
            if not client.wants(event):
                continue
            try:
                client.queue.put_nowait(data)
            except asyncio.QueueFull:
                self._drop(client)

    def _drop(self, client: Client) -> None:
        self.clients.discard(client)
        self.dropped += 1
        while not client.queue.empty():  # free what it held; None tells it to stop
            client.queue.get_nowait()
        client.queue.put_nowait(None)

    async def stream(self, client: Client) -> AsyncIterator[bytes | None]:
        """The client's events as they come; None every HEARTBEAT_SECONDS of silence."""
        while True:
            try:
                data = await asyncio.wait_for(client.queue.get(), HEARTBEAT_SECONDS)
            except TimeoutError:
                yield None
                continue
            if data is None:
                return  # dropped
            yield data


class LiveEvents:
    """Connects the event bus to this process's hub, directly or through Redis."""

    def __init__(self, redis_url: str | None) -> None:
        self.hub = Hub()
        self.redis_url = redis_url
        self._unsubscribe: Any = None
        self._listener: asyncio.Task[None] | None = None
        self._redis: Redis | None = None

    async def start(self) -> None:
        if self.redis_url is None:
            self._unsubscribe = events.subscribe(events.ALL, self._to_hub)
            return
        self._redis = Redis.from_url(self.redis_url)
        self._unsubscribe = events.subscribe(events.ALL, self._to_redis)
        self._listener = asyncio.create_task(self._listen(), name="live-events")

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        if self._redis is not None:
            await self._redis.aclose()
        for client in list(self.hub.clients):
            self.hub._drop(client)

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
                            self.hub.deliver(orjson.loads(message["data"]))
            except (RedisError, OSError) as exc:
                log.warning("live events: Redis subscription lost (%s); retrying", exc)
                await asyncio.sleep(RECONNECT_SECONDS)
