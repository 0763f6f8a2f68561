"""Live events: many concurrent SSE clients on one API process, its memory per connection,
and the time one event takes to reach all of them.

    .venv/bin/python bench/events.py [--clients 10000] [--events 20] [--server granian]
                                     [--port 8768]

Serves Shelfmark (one process, `--no-worker`) on a fresh PostgreSQL database seeded with a
branch, a patron, a librarian and one copy per event. Opens `--clients` connections to
`GET /api/v1/events?branch=...` as the librarian; the clients are raw asyncio protocols
(a few hundred bytes each in this process) that only timestamp the frames they receive.
Measures the serving processes' resident memory (VmRSS of the process tree, from /proc)
once the server is warm and again with every client connected: the difference divided by
the clients is the memory per connection. Then makes `--events` checkouts through the API,
one at a time, each once the last has reached every client, and measures for each client
the time from sending the checkout until its `loan.created` frame arrived: p50, p95, p99 and the
worst (the time to reach all of them), over every delivery, plus how many never arrived.

Goals (issue 7): 10,000 clients on one API process, under 20 KB per connection.
The fd limit is raised to its hard limit here; `shelfmark serve` raises its own.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from _common import fresh_database, served
from sqlalchemy.ext.asyncio import AsyncEngine

from shelfmark.auth import service as auth_service
from shelfmark.auth.roles import SYSTEM, Role
from shelfmark.catalog import service as catalog_service
from shelfmark.catalog.schemas import BibCreate, BranchCreate, ItemCreate
from shelfmark.circulation import rules
from shelfmark.circulation.schemas import RuleCreate
from shelfmark.db import create_engine, create_sessionmaker, session_scope, utcnow
from shelfmark.migrate import upgrade
from shelfmark.patrons import service as patrons_service
from shelfmark.patrons.schemas import CategoryCreate, PatronCreate
from shelfmark.settings import Settings

DATABASE = "shelfmark_bench_events"
PORT = 8768  # bench/search.py serves on 8766: the two can run at once
BRANCH = "BENCH"
CARD = "P0001"
USERNAME, PASSWORD = "bench-librarian", "bench librarian password"
CONNECT_BATCH = 250  # connections opened at once (the listen backlog is larger)
EVENT_TIMEOUT = 30.0  # seconds to wait for an event to reach every client
CONNECT_TIMEOUT = 60.0  # seconds for a batch of streams to start


async def seed(engine: AsyncEngine, events: int) -> None:
    await upgrade(engine)
    async with session_scope(create_sessionmaker(engine)) as session:
        await catalog_service.create_branch(
            session, actor=SYSTEM, data=BranchCreate(code=BRANCH, name="Bench branch")
        )
        await patrons_service.create_category(
            session, actor=SYSTEM, data=CategoryCreate(code="BENCH", name="Bench")
        )
        await rules.create_rule(
            session, actor=SYSTEM, now=utcnow(),
            data=RuleCreate(branch=BRANCH, loan_period=14, max_loans=None),
        )  # fmt: skip
        await patrons_service.create_patron(
            session, actor=SYSTEM,
            data=PatronCreate(card_number=CARD, name="Bench patron", category="BENCH",
                              home_branch=BRANCH, expires_on="2099-12-31"),
        )  # fmt: skip
        await auth_service.create_user(
            session, actor=SYSTEM, username=USERNAME, password=PASSWORD, role=Role.LIBRARIAN
        )
        bib = await catalog_service.create_bib(session, actor=SYSTEM, data=BibCreate(title="B"))
        for n in range(events + 1):  # one more for the warm-up
            await catalog_service.create_item(
                session, actor=SYSTEM,
                data=ItemCreate(bib_id=bib.id, barcode=barcode(n), branch=BRANCH),
            )  # fmt: skip
    await engine.dispose()


def barcode(n: int) -> str:
    return f"EV{n:06d}"


# --- the clients ----------------------------------------------------------------------------


@dataclass
class Deliveries:
    """When each client received each event (perf_counter), and when each was sent."""

    clients: int
    sent: list[float] = field(default_factory=list)
    arrived: list[list[float]] = field(default_factory=list)
    complete: asyncio.Event = field(default_factory=asyncio.Event)

    def expect(self) -> None:
        self.arrived.append([])
        self.complete.clear()
        self.sent.append(time.perf_counter())

    def record(self, index: int, at: float) -> None:
        if index < len(self.arrived):
            self.arrived[index].append(at)
            if len(self.arrived[index]) == self.clients:
                self.complete.set()


MARK = b"event: loan.created"


class SseClient(asyncio.Protocol):
    """One SSE connection, as light as a client can be: it counts `loan.created` frames."""

    def __init__(self, request: bytes, deliveries: Deliveries) -> None:
        self.request = request
        self.deliveries = deliveries
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.seen = 0
        self.tail = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        if not self.ready.done():
            if not data.startswith(b"HTTP/1.1 200"):
                self.ready.set_exception(RuntimeError(data[:200].decode(errors="replace")))
                return
            self.ready.set_result(None)
        # A mark split across two reads is found in the tail of the last one plus this.
        chunk = self.tail + data
        found = chunk.count(MARK)
        self.tail = chunk[-(len(MARK) - 1) :]
        for _ in range(found):
            self.deliveries.record(self.seen, now)
            self.seen += 1

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(exc or ConnectionError("closed before the stream began"))


async def connect_all(
    count: int, token: str, deliveries: Deliveries, port: int
) -> tuple[list[SseClient], float]:
    loop = asyncio.get_running_loop()
    request = (
        f"GET /api/v1/events?branch={BRANCH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
    ).encode()
    clients: list[SseClient] = []
    started = time.perf_counter()
    for first in range(0, count, CONNECT_BATCH):
        batch = [SseClient(request, deliveries) for _ in range(min(CONNECT_BATCH, count - first))]
        await asyncio.gather(
            *(loop.create_connection(lambda c=c: c, "127.0.0.1", port) for c in batch)
        )
        try:
            await asyncio.wait_for(asyncio.gather(*(c.ready for c in batch)), CONNECT_TIMEOUT)
        except TimeoutError:
            raise RuntimeError(f"the server stopped answering after {first} streams") from None
        clients.extend(batch)
    return clients, time.perf_counter() - started


# --- the server's memory ------------------------------------------------------------------------


def descendants(pid: int) -> set[int]:
    found: set[int] = set()
    todo = [pid]
    while todo:
        for task in Path(f"/proc/{todo.pop()}/task").glob("*"):
            try:
                listed = (task / "children").read_text().split()
            except OSError:
                continue
            for child in map(int, listed):
                if child not in found:
                    found.add(child)
                    todo.append(child)
    return found


def rss_bytes(pids: set[int]) -> int:
    total = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
    return total


def server_rss() -> int:
    """The serving processes: every descendant of this one (the bench starts no other)."""
    return rss_bytes(descendants(os.getpid()))


async def settled_rss(seconds: float = 2.0) -> int:
    await asyncio.sleep(seconds)
    return server_rss()


# --- the run ----------------------------------------------------------------------------------


def percentile(ordered: list[float], p: float) -> float:
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


async def measure(base: str, clients_wanted: int, events: int, port: int) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        login = await http.post(
            "/api/v1/auth/token", data={"username": USERNAME, "password": PASSWORD}
        )
        login.raise_for_status()
        token = login.json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}

        async def checkout(n: int) -> None:
            response = await http.post(
                "/api/v1/checkouts", json={"item_barcode": barcode(n), "patron_card": CARD},
                headers=headers,
            )  # fmt: skip
            response.raise_for_status()

        # Warm up: the stream's code paths and a checkout, with one client that then leaves.
        warm = Deliveries(clients=1)
        (client,), _ = await connect_all(1, token, warm, port)
        warm.expect()
        await checkout(events)
        await asyncio.wait_for(warm.complete.wait(), EVENT_TIMEOUT)
        assert client.transport is not None
        client.transport.close()

        before = await settled_rss()
        deliveries = Deliveries(clients=clients_wanted)
        clients, connect_seconds = await connect_all(clients_wanted, token, deliveries, port)
        after = await settled_rss()

        lost = 0
        for n in range(events):
            deliveries.expect()
            await checkout(n)
            try:
                await asyncio.wait_for(deliveries.complete.wait(), EVENT_TIMEOUT)
            except TimeoutError:
                lost += clients_wanted - len(deliveries.arrived[n])
        for client in clients:
            if client.transport is not None:
                client.transport.close()

    latencies = sorted(
        (at - sent) * 1000
        for sent, arrivals in zip(deliveries.sent, deliveries.arrived, strict=True)
        for at in arrivals
    )
    to_all = [
        (max(arrivals) - sent) * 1000
        for sent, arrivals in zip(deliveries.sent, deliveries.arrived, strict=True)
        if arrivals
    ]
    return {
        "clients": clients_wanted,
        "connect_seconds": connect_seconds,
        "rss_before": before,
        "rss_after": after,
        "per_connection": (after - before) / clients_wanted,
        "p50": percentile(latencies, 0.50),
        "p95": percentile(latencies, 0.95),
        "p99": percentile(latencies, 0.99),
        "worst": latencies[-1],
        "to_all_median": statistics.median(to_all),
        "deliveries": len(latencies),
        "lost": lost,
    }


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=20)
    parser.add_argument("--server", default="granian", choices=["granian", "uvicorn"])
    parser.add_argument("--port", type=int, default=PORT)
    args = parser.parse_args()

    limit = raise_fd_limit()  # the server inherits it
    if args.clients + 100 > limit:
        parser.error(f"{args.clients} clients need more than this machine's {limit} open files")
    home = Path(tempfile.mkdtemp(prefix="shelfmark-bench-"))
    url = fresh_database(DATABASE)
    engine = create_engine(
        Settings(shelfmark_home=home, database_url=url, secret_key="unused-by-the-seed")
    )
    asyncio.run(seed(engine, args.events))
    with served(url, server=args.server, port=args.port, home=home) as base:
        result = asyncio.run(measure(base, args.clients, args.events, args.port))

    print(f"server: {args.server}, one process; {result['clients']} SSE clients connected in "
          f"{result['connect_seconds']:.1f} s")  # fmt: skip
    print(
        f"memory: {result['rss_before'] / 2**20:.1f} MiB before, "
        f"{result['rss_after'] / 2**20:.1f} MiB with the clients: "
        f"{result['per_connection'] / 1024:.1f} KiB ({result['per_connection'] / 1000:.1f} KB) "
        "per connection (goal < 20 KB)"
    )
    print(
        f"delivery of {args.events} checkouts' events ({result['deliveries']} deliveries, "
        f"{result['lost']} lost), from the checkout request: p50 {result['p50']:.0f} ms, "
        f"p95 {result['p95']:.0f} ms, p99 {result['p99']:.0f} ms, worst {result['worst']:.0f} ms; "
        f"to every client (median over events) {result['to_all_median']:.0f} ms"
    )


if __name__ == "__main__":
    main()
