"""Two API replicas on one PostgreSQL database and one Redis, as on Kubernetes: what a desk
does through one is seen at once through the other, on its live events and in its reads (no
process keeps a cached copy the other cannot invalidate), and a token signed by one is good on
the other (they share SECRET_KEY)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis

from background import shelfmark
from conftest import postgres_database, unreachable

REDIS_URL = "redis://127.0.0.1:6379/11"
SECRET = "replicas-share-this-secret-key-of-48-characters!"
HOST_SETTINGS = ("DATABASE_URL", "REDIS_URL", "BROKER_URL", "SMTP_URL", "SECRET_KEY", "LOG_FORMAT")


@pytest.fixture(scope="module")
def pg_url(request: pytest.FixtureRequest) -> Iterator[str]:
    yield from postgres_database(request)


@pytest.fixture(scope="module")
def env(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=2).flushdb()
    except redis.RedisError as exc:
        unreachable(f"Redis at {REDIS_URL} is unreachable: {exc}")
    env = {name: value for name, value in os.environ.items() if name not in HOST_SETTINGS}
    env |= {
        "SHELFMARK_HOME": str(tmp_path_factory.mktemp("replicas")),
        "DATABASE_URL": pg_url.replace("+asyncpg", ""),  # as an operator writes it
        "REDIS_URL": REDIS_URL,
        "SECRET_KEY": SECRET,
    }
    shelfmark("migrate", env=env)
    shelfmark("createsuperuser", "--username", "boss", "--password", "boss-password", env=env)
    return env


class Replica:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "shelfmark", "serve", "--no-worker",
                 "--server", "uvicorn", "--port", str(self.port)],
                env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        while True:
            assert self.process.poll() is None, self.log.read_text()
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"never ready:\n{self.log.read_text()}"
            time.sleep(0.2)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="module")
def replicas(env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    logs = tmp_path_factory.mktemp("replica-logs")
    both = (Replica(env, logs / "a.log"), Replica(env, logs / "b.log"))
    try:
        for replica in both:
            replica.wait_ready()
        yield both
    finally:
        for replica in both:
            replica.stop()


def _token(url: str) -> dict[str, str]:
    response = httpx.post(
        f"{url}/api/v1/auth/token", data={"username": "boss", "password": "boss-password"}
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def _created(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 201, response.text
    return dict(response.json())


def test_a_checkout_on_one_replica_is_seen_at_once_on_the_other(
    replicas: tuple[Replica, Replica],
) -> None:
    one, other = replicas
    headers = _token(one.url)  # signed by one, used on both
    with (
        httpx.Client(base_url=one.url, headers=headers, timeout=10) as a,
        httpx.Client(base_url=other.url, headers=headers, timeout=10) as b,
    ):
        _created(a.post("/api/v1/branches", json={"code": "NORTH", "name": "North"}))
        _created(a.post("/api/v1/patron-categories", json={"code": "ADULT", "name": "Adult"}))
        bib = _created(a.post("/api/v1/bibs", json={"title": "Two replicas, one library"}))
        new_item = {"bib_id": bib["id"], "barcode": "R0001", "branch": "NORTH"}
        item = _created(a.post("/api/v1/items", json=new_item))
        _created(
            a.post(
                "/api/v1/patrons",
                json={"card_number": "P0001", "name": "Ada", "category": "ADULT",
                      "home_branch": "NORTH", "expires_on": "2099-12-31"},
            )
        )  # fmt: skip

        # The other replica reads the item (and so caches it) before the checkout.
        before = b.get(f"/api/v1/items/{item['id']}")
        assert before.status_code == 200
        assert before.json()["status"] == "available"
        etag = before.headers.get("etag")

        with b.stream("GET", "/api/v1/events", params={"branch": "NORTH"}) as stream:
            assert stream.status_code == 200, stream.read()
            lines = stream.iter_lines()
            assert next(lines).startswith("retry:")
            started = time.monotonic()
            _created(a.post("/api/v1/checkouts", json={"item_barcode": "R0001",
                                                       "patron_card": "P0001"}))  # fmt: skip
            event = _next_event(lines)
            waited = time.monotonic() - started
        assert event["name"] == "loan.created"
        assert event["payload"]["branch"] == "NORTH"
        assert waited < 2.0

        after = b.get(f"/api/v1/items/{item['id']}")
        assert after.json()["status"] == "on_loan"
        if etag is not None:
            assert after.headers.get("etag") != etag
            revalidated = b.get(f"/api/v1/items/{item['id']}", headers={"If-None-Match": etag})
            assert revalidated.status_code == 200
        loans = b.get("/api/v1/loans", params={"patron_card": "P0001"}).json()
        assert [loan["item_barcode"] for loan in loans["items"]] == ["R0001"]


def _next_event(lines: Iterator[str]) -> dict[str, Any]:
    name = None
    for line in lines:
        if line.startswith("event:"):
            name = line.removeprefix("event:").strip()
        elif line.startswith("data:") and name is not None:
            data = dict(orjson.loads(line.removeprefix("data:").strip()))
            return {"name": name, **data}
    raise AssertionError("the stream ended")
