"""The cache of hot reads: invalidated on write, versioned, degrading to no cache."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.types import Message, Receive, Scope, Send

from conftest import unreachable
from factories import auth, make_bib, make_item, make_user
from shelfmark.auth.roles import Role
from shelfmark.cache import Cache, MemoryCache, RedisCache, bib_key, cached


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
async def redis_cache() -> RedisCache:
    return await _redis_cache()


async def _redis_cache() -> RedisCache:
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=1).close()
    except OSError:
        unreachable("Redis at 127.0.0.1:6379 is unreachable")
    cache = RedisCache("redis://127.0.0.1:6379/14")
    await cache.client.flushdb()
    return cache


@pytest.fixture(params=["memory", "redis"])
async def any_cache(request: pytest.FixtureRequest) -> Cache:
    if request.param == "memory":
        return MemoryCache()
    return await _redis_cache()


class TestBibReads:
    async def test_an_edit_is_seen_by_the_next_read(
        self, client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        librarian = await make_user(session, Role.LIBRARIAN)
        bib = await make_bib(session, title="Before")
        await session.commit()
        assert (await client.get(f"/api/v1/bibs/{bib.id}")).json()["title"] == "Before"
        assert (await client.get(f"/api/v1/bibs/{bib.id}")).json()["title"] == "Before"
        patched = await client.patch(
            f"/api/v1/bibs/{bib.id}", json={"title": "After"}, headers=auth(librarian)
        )
        assert patched.status_code == 200
        assert (await client.get(f"/api/v1/bibs/{bib.id}")).json()["title"] == "After"

    async def test_etag_gives_304(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        bib = await make_bib(session)
        await session.commit()
        first = await client.get(f"/api/v1/bibs/{bib.id}")
        etag = first.headers["etag"]
        again = await client.get(f"/api/v1/bibs/{bib.id}", headers={"If-None-Match": etag})
        assert again.status_code == 304
        assert again.content == b""
        assert again.headers["etag"] == etag
        other = await client.get(f"/api/v1/bibs/{bib.id}", headers={"If-None-Match": '"x"'})
        assert other.status_code == 200

    async def test_items_have_etags(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        item = await make_item(session)
        await session.commit()
        first = await client.get(f"/api/v1/items/{item.id}")
        again = await client.get(
            f"/api/v1/items/{item.id}", headers={"If-None-Match": first.headers["etag"]}
        )
        assert again.status_code == 304

    async def test_a_rolled_back_write_keeps_the_cache(
        self, client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        librarian = await make_user(session, Role.LIBRARIAN)
        bib = await make_bib(session, title="Kept", control_number="CN-1")
        await make_bib(session, title="Other", control_number="CN-2")
        await session.commit()
        await client.get(f"/api/v1/bibs/{bib.id}")
        refused = await client.patch(
            f"/api/v1/bibs/{bib.id}", json={"control_number": "CN-2"}, headers=auth(librarian)
        )
        assert refused.status_code == 409
        assert (await client.get(f"/api/v1/bibs/{bib.id}")).json()["control_number"] == "CN-1"

    async def test_redis_down_means_no_cache_not_errors(
        self, app: FastAPI, client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        app.state.cache = RedisCache(f"redis://127.0.0.1:{free_port()}/0")
        bib = await make_bib(session, title="Still served")
        await session.commit()
        response = await client.get(f"/api/v1/bibs/{bib.id}")
        assert response.status_code == 200
        assert response.json()["title"] == "Still served"


class TestVersions:
    async def test_a_stale_fill_is_never_read(self, any_cache: Cache) -> None:
        cache = any_cache
        key = bib_key(1)
        stale_key, value = await cached(cache, key)
        assert value is None
        await cache.bump(key)  # a writer commits between the reader's lookup and its fill
        await cache.set(stale_key, b"old")
        fresh_key, value = await cached(cache, key)
        assert value is None
        assert fresh_key != stale_key
        await cache.set(fresh_key, b"new")
        assert (await cached(cache, key))[1] == b"new"
        await cache.close()

    async def test_memory_entries_expire(self) -> None:
        cache = MemoryCache(ttl=0.05)
        await cache.set("k@0", b"v")
        assert await cache.get("k@0") == b"v"
        await asyncio.sleep(0.06)
        assert await cache.get("k@0") is None

    async def test_memory_is_bounded(self) -> None:
        cache = MemoryCache(entries=3)
        for n in range(5):
            await cache.set(f"k{n}", b"v")
        assert await cache.get("k0") is None
        assert await cache.get("k4") == b"v"

    async def test_redis_stopped_mid_use(self, redis_cache: RedisCache) -> None:
        await redis_cache.set("k@0", b"v")
        assert await redis_cache.get("k@0") == b"v"
        await redis_cache.client.aclose()
        broken = RedisCache(f"redis://127.0.0.1:{free_port()}/0")
        assert await broken.get("k@0") is None
        assert await broken.version("k") == -1
        await broken.set("k@-1", b"v")  # ignored, no error
        await broken.bump("k")  # logged, no error


class TestCommittedBeforeTheResponse:
    async def test_an_edit_is_committed_and_invalidated_before_its_answer_starts(
        self, app: FastAPI, session: AsyncSession
    ) -> None:
        """A client that reads again the moment its write is answered (through another
        replica, say) must see the write: the transaction commits, and the cache hears of
        it, before the first byte of the response."""
        librarian = await make_user(session, Role.LIBRARIAN)
        bib = await make_bib(session, title="Before")
        await session.commit()
        cache: Cache = app.state.cache
        versions_at_start: list[int] = []

        async def watched(scope: Scope, receive: Receive, send: Send) -> None:
            async def watching(message: Message) -> None:
                if message["type"] == "http.response.start":
                    versions_at_start.append(await cache.version(bib_key(bib.id)))
                await send(message)

            await app(scope, receive, watching)

        transport = httpx.ASGITransport(app=watched)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            before = await cache.version(bib_key(bib.id))
            patched = await client.patch(
                f"/api/v1/bibs/{bib.id}", json={"title": "After"}, headers=auth(librarian)
            )
        assert patched.status_code == 200, patched.text
        assert versions_at_start == [before + 1]
