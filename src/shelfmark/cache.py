"""A cache for hot reads: Redis when REDIS_URL is set, else in-process; the same interface.

Keys are versioned. A reader looks up the current version of a key and reads and fills
`key@version`; a writer, once its transaction commits, bumps the version (`invalidate`). So
a rolled-back write leaves the cache alone, and a reader that fetched the old row just
before a write can only fill a version nobody will read again. With Redis every process
shares the versions; the in-process cache (one process, the embedded default) also expires
entries after `MEMORY_TTL`. A cache that fails (Redis down) is a cache that misses: reads go
to the database and nothing raises.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Iterable
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from shelfmark.db import after_commit

log = logging.getLogger(__name__)

MEMORY_TTL = 30.0
MEMORY_ENTRIES = 20_000
REDIS_TTL = 3600
REDIS_TIMEOUT = 0.25
KEY_PREFIX = "shelfmark:"
SESSION_KEY = "cache"


class Cache(Protocol):
    async def get(self, key: str) -> bytes | None: ...
    async def set(self, key: str, value: bytes) -> None: ...
    async def version(self, key: str) -> int: ...
    async def bump(self, *keys: str) -> None: ...
    async def close(self) -> None: ...


async def cached(cache: Cache, key: str) -> tuple[str, bytes | None]:
    """The versioned key to fill, and its value if cached."""
    versioned = f"{key}@{await cache.version(key)}"
    return versioned, await cache.get(versioned)


class MemoryCache:
    """An LRU of bytes with a time to live; for one process."""

    def __init__(self, *, ttl: float = MEMORY_TTL, entries: int = MEMORY_ENTRIES) -> None:
        self.ttl = ttl
        self.entries = entries
        self._data: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._versions: dict[str, int] = {}

    async def get(self, key: str) -> bytes | None:
        found = self._data.get(key)
        if found is None:
            return None
        expires, value = found
        if expires < time.monotonic():
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return value

    async def set(self, key: str, value: bytes) -> None:
        self._data[key] = (time.monotonic() + self.ttl, value)
        self._data.move_to_end(key)
        while len(self._data) > self.entries:
            self._data.popitem(last=False)

    async def version(self, key: str) -> int:
        return self._versions.get(key, 0)

    async def bump(self, *keys: str) -> None:
        for key in keys:
            self._versions[key] = self._versions.get(key, 0) + 1

    async def close(self) -> None:
        self._data.clear()


class RedisCache:
    """Redis, shared by every process; its failures are logged and treated as misses."""

    def __init__(self, url: str, *, ttl: int = REDIS_TTL) -> None:
        self.ttl = ttl
        self.client = Redis.from_url(
            url, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT
        )

    async def get(self, key: str) -> bytes | None:
        try:
            value = await self.client.get(KEY_PREFIX + key)
        except (RedisError, OSError) as exc:
            log.warning("cache read failed, reading through: %s", exc)
            return None
        return value if isinstance(value, bytes) else None

    async def set(self, key: str, value: bytes) -> None:
        if "@-1" in key:
            return  # read while Redis was failing: not a version to fill
        try:
            await self.client.set(KEY_PREFIX + key, value, ex=self.ttl)
        except (RedisError, OSError) as exc:
            log.warning("cache write failed: %s", exc)

    async def version(self, key: str) -> int:
        try:
            value = await self.client.get(f"{KEY_PREFIX}v:{key}")
        except (RedisError, OSError) as exc:
            log.warning("cache read failed, reading through: %s", exc)
            return -1  # a version never filled, so a miss
        return int(value) if value else 0

    async def bump(self, *keys: str) -> None:
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.incr(f"{KEY_PREFIX}v:{key}")
                await pipe.execute()
        except (RedisError, OSError) as exc:
            # A missed invalidation serves stale data until the entry expires: say so loudly.
            log.error("cache invalidation of %s failed: %s", keys, exc)

    async def close(self) -> None:
        await self.client.aclose()


def create_cache(redis_url: str | None) -> Cache:
    return RedisCache(redis_url) if redis_url else MemoryCache()


def invalidate(session: AsyncSession | Session, keys: Iterable[str]) -> None:
    """Make cached values of `keys` unreachable once the session's transaction commits.

    The session's factory carries the cache in `info` (see `create_sessionmaker`); a
    session without one (a script, a test) has nothing to invalidate.
    """
    cache: Cache | None = session.info.get(SESSION_KEY)
    wanted = tuple(keys)
    if cache is not None and wanted:
        after_commit(session, lambda: cache.bump(*wanted))


# Versions that every cached search page is read under (see `search.service.cached_search`):
# the catalog's (bibs, and copies other than their circulation status) and the copies'
# statuses (bumped by every checkout and checkin; only searches filtered on availability
# depend on it, the others refresh the availability of their page's bibs on every read).
SEARCH_CATALOG_KEY = "search:catalog"
SEARCH_AVAILABILITY_KEY = "search:availability"


def bib_key(bib_id: int) -> str:
    return f"bib:{bib_id}"


def item_key(item_id: int) -> str:
    return f"item:{item_id}"
