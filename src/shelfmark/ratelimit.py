"""Rate limits: so many attempts per window, per user name or per client address.

Counted in Redis when REDIS_URL is set (every API process shares the counts), else in
process. Fixed windows: simple, and enough to stop password guessing and scraping; a
refused request gets 429 problem+json with `Retry-After`. A Redis outage lets requests
through (logged) rather than locking every user out.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.requests import Request

from shelfmark.errors import RateLimited

log = logging.getLogger(__name__)
TIMEOUT = 0.25


@dataclass(frozen=True, slots=True)
class Limit:
    name: str
    attempts: int
    seconds: int


LOGIN_PER_USER = Limit("login-user", attempts=10, seconds=300)
LOGIN_PER_ADDRESS = Limit("login-ip", attempts=50, seconds=300)
SEARCH_WINDOW_SECONDS = 60  # SEARCH_PER_MINUTE (a setting) searches per address in a window


class Counter(Protocol):
    async def hit(self, key: str, seconds: int) -> tuple[int, int]:
        """Count one hit in the current window: (hits so far, seconds until it ends)."""
        ...

    async def close(self) -> None: ...


class MemoryCounter:
    def __init__(self) -> None:
        self._windows: dict[str, tuple[int, int]] = {}

    async def hit(self, key: str, seconds: int) -> tuple[int, int]:
        now = int(time.monotonic())
        window = now - now % seconds
        count, started = self._windows.get(key, (0, window))
        if started != window:
            count, started = 0, window
            if len(self._windows) > 100_000:  # forget old windows, bounded memory
                self._windows = {k: v for k, v in self._windows.items() if v[1] == window}
        self._windows[key] = (count + 1, started)
        return count + 1, started + seconds - now

    async def close(self) -> None:
        self._windows.clear()


class RedisCounter:
    def __init__(self, url: str) -> None:
        self.client = Redis.from_url(url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT)

    async def hit(self, key: str, seconds: int) -> tuple[int, int]:
        now = int(time.time())
        window = now - now % seconds
        redis_key = f"shelfmark:rl:{key}:{window}"
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.incr(redis_key)
                pipe.expire(redis_key, seconds + 1)
                count, _ = await pipe.execute()
        except (RedisError, OSError) as exc:
            log.warning("rate limit not counted (Redis unavailable): %s", exc)
            return 0, seconds
        return int(count), window + seconds - now

    async def close(self) -> None:
        await self.client.aclose()


def create_counter(redis_url: str | None) -> Counter:
    return RedisCounter(redis_url) if redis_url else MemoryCounter()


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def check(counter: Counter, limit: Limit, subject: str) -> None:
    """Count an attempt of `subject` against `limit`; raise RateLimited past it."""
    count, retry_after = await counter.hit(f"{limit.name}:{subject}", limit.seconds)
    if count > limit.attempts:
        raise RateLimited(
            f"Too many attempts; try again in {max(retry_after, 1)} seconds.",
            retry_after=max(retry_after, 1),
        )


async def check_login(request: Request, username: str) -> None:
    """Password guessing: per user name (whatever the address) and per address."""
    counter: Counter = request.app.state.rate_counter
    await check(counter, LOGIN_PER_ADDRESS, client_address(request))
    await check(counter, LOGIN_PER_USER, username.casefold())


async def check_search(request: Request) -> None:
    """Scraping: searches per address and minute, `SEARCH_PER_MINUTE` (0: no limit)."""
    per_minute: int = request.app.state.settings.search_per_minute
    if per_minute:
        limit = Limit("search-ip", attempts=per_minute, seconds=SEARCH_WINDOW_SECONDS)
        await check(request.app.state.rate_counter, limit, client_address(request))
