"""Rate limits on logins (per user name and per address) and their 429s."""

from __future__ import annotations

import socket
from types import SimpleNamespace

import httpx
import pytest
from fastapi import FastAPI

from conftest import unreachable
from shelfmark import ratelimit
from shelfmark.ratelimit import Limit, MemoryCounter, RedisCounter

# Mid-window for every limit here (300 s and 60 s windows): with the clock pinned, a window
# never ends halfway through a test's attempts, which would start the count afresh (at the
# real clock, once in a few hundred runs).
PINNED_NOW = 1_700_000_250


@pytest.fixture(autouse=True)
def pinned_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    assert PINNED_NOW % 300 == 150
    assert PINNED_NOW % 60 == 30
    clock = SimpleNamespace(monotonic=lambda: float(PINNED_NOW), time=lambda: float(PINNED_NOW))
    monkeypatch.setattr(ratelimit, "time", clock)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def attempt(client: httpx.AsyncClient, username: str) -> httpx.Response:
    return await client.post(
        "/api/v1/auth/token", data={"username": username, "password": "guess guess"}
    )


async def test_password_guessing_is_stopped_per_user(client: httpx.AsyncClient) -> None:
    attempts = ratelimit.LOGIN_PER_USER.attempts
    for _ in range(attempts):
        assert (await attempt(client, "victim")).status_code == 401
    refused = await attempt(client, "Victim")  # the same name, whatever the case
    assert refused.status_code == 429
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["type"] == "/problems/rate-limited"
    assert 1 <= int(refused.headers["retry-after"]) <= ratelimit.LOGIN_PER_USER.seconds
    assert (await attempt(client, "someone-else")).status_code == 401


async def test_one_address_trying_many_names_is_stopped(
    app: FastAPI, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ratelimit, "LOGIN_PER_ADDRESS", Limit("login-ip", 5, 300))
    statuses = [(await attempt(client, f"user{n}")).status_code for n in range(7)]
    assert statuses == [401] * 5 + [429] * 2


async def test_the_web_login_page_is_limited_too(client: httpx.AsyncClient) -> None:
    html = {"accept": "text/html"}
    page = await client.get("/login", headers=html)
    token = page.text.split('name="csrf_token" value="')[1].split('"')[0]
    form = {"username": "victim", "password": "x", "csrf_token": token}
    for _ in range(ratelimit.LOGIN_PER_USER.attempts):
        assert (await client.post("/login", data=form, headers=html)).status_code == 401
    refused = await client.post("/login", data=form, headers=html)
    assert refused.status_code == 429
    assert "retry-after" in refused.headers


class TestCounters:
    async def test_memory_windows(self) -> None:
        counter = MemoryCounter()
        assert (await counter.hit("k", 60))[0] == 1
        count, retry = await counter.hit("k", 60)
        assert count == 2
        assert 0 < retry <= 60

    async def test_redis_shares_counts_between_processes(self) -> None:
        try:
            socket.create_connection(("127.0.0.1", 6379), timeout=1).close()
        except OSError:
            unreachable("Redis at 127.0.0.1:6379 is unreachable")
        one, two = (
            RedisCounter("redis://127.0.0.1:6379/13"),
            RedisCounter("redis://127.0.0.1:6379/13"),
        )
        await one.client.flushdb()
        assert (await one.hit("shared", 60))[0] == 1
        assert (await two.hit("shared", 60))[0] == 2
        await one.close()
        await two.close()

    async def test_redis_down_lets_requests_through(self) -> None:
        counter = RedisCounter(f"redis://127.0.0.1:{free_port()}/0")
        await ratelimit.check(counter, Limit("x", 0, 60), "anyone")  # no exception
        await counter.close()


async def test_search_is_limited_per_address(
    app: FastAPI, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app.state, "settings", app.state.settings.model_copy(
        update={"search_per_minute": 3}
    ))  # fmt: skip
    statuses = [
        (await client.get("/api/v1/search", params={"q": "anything"})).status_code for _ in range(4)
    ]
    assert statuses == [200, 200, 200, 429]


async def test_search_limit_zero_is_no_limit(
    app: FastAPI, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app.state, "settings", app.state.settings.model_copy(
        update={"search_per_minute": 0}
    ))  # fmt: skip
    for _ in range(5):
        assert (await client.get("/api/v1/search", params={"q": "anything"})).status_code == 200
