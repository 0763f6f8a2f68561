"""Circulation throughput against the database's own ceiling, on PostgreSQL.

    .venv/bin/python bench/circulation.py [--seconds 8] [--pgbench-seconds 10] [--processes N]

Makes a fresh database (shelfmark_bench_circ), migrates it, seeds one branch, a rule and, for
each of up to 32 desks, its own patron and copies. Then each desk runs checkout + checkin
pairs back to back for a while, with 1, 8 and 32 desks at once. The pairs go through the
service layer (`loans.check_out`, `loans.check_in`), each call in its own committed
transaction through `session_scope`, exactly as the API's request dependency runs them: what
is measured is the circulation rules and the database, not HTTP. A pair is two transactions.

The desks are spread over as many processes as pgbench has threads for the same client
count (`-j`: one per CPU, at most one per client), each with its own engine, as a server
spreads its clients over `shelfmark serve --workers`: one Python process is one CPU, and
pgbench's C client uses every CPU. `--processes 1` runs them all in this process.

The ceiling is pgbench's TPC-B-like script (`pgbench -i -s 10` on a scratch database) with
the same client counts on the same server. The table shows, per desk count: processes,
pairs/s, the latency of a pair (p50, p99), errors, pgbench's tps, and the ratio of
circulation transactions (2 per pair) to pgbench's. Goals (issue 5): ratio >= 30 % at 8
desks, p99 <= 5 x p50, no errors. Runs in under two minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import PG_ADMIN, fresh_database
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shelfmark.auth.roles import SYSTEM
from shelfmark.catalog import service as catalog_service
from shelfmark.catalog.schemas import BibCreate, BranchCreate, ItemCreate
from shelfmark.circulation import loans, rules
from shelfmark.circulation.schemas import CheckinCreate, CheckoutCreate, RuleCreate
from shelfmark.db import create_engine, create_sessionmaker, session_scope, utcnow
from shelfmark.migrate import upgrade
from shelfmark.patrons import service as patrons_service
from shelfmark.patrons.schemas import CategoryCreate, PatronCreate
from shelfmark.settings import Settings

DESKS = (1, 8, 32)
COPIES_PER_DESK = 4
DATABASE = "shelfmark_bench_circ"
PGBENCH_DATABASE = "shelfmark_bench_pgbench"
PGBENCH_SCALE = 10
WARM_SECONDS = 1.0
_SPAWN = multiprocessing.get_context("spawn")


@dataclass(frozen=True)
class Desk:
    patron_card: str
    barcodes: tuple[str, ...]


@dataclass
class Run:
    desks: int
    processes: int = 1
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def pairs_per_second(self) -> float:
        return len(self.latencies) / self.seconds

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000

    def add(self, other: Run) -> None:
        self.seconds = max(self.seconds, other.seconds)
        self.latencies += other.latencies
        for name, count in other.errors.items():
            self.errors[name] = self.errors.get(name, 0) + count


def _settings(url: str) -> Settings:
    home = Path(tempfile.mkdtemp(prefix="shelfmark-bench-"))
    return Settings(shelfmark_home=home, database_url=url, secret_key="bench" * 8)


async def seed(maker: async_sessionmaker[AsyncSession]) -> list[Desk]:
    now = utcnow()
    async with session_scope(maker) as session:
        branch = await catalog_service.create_branch(
            session, actor=SYSTEM, data=BranchCreate(code="BENCH", name="Bench branch")
        )
        category = await patrons_service.create_category(
            session, actor=SYSTEM, data=CategoryCreate(code="BENCH", name="Bench")
        )
        await rules.create_rule(
            session, actor=SYSTEM, now=now,
            data=RuleCreate(branch="BENCH", loan_period=14, max_loans=None, fine_per_day="0.25"),
        )  # fmt: skip
        bib = await catalog_service.create_bib(session, actor=SYSTEM, data=BibCreate(title="B"))
        desks = []
        for d in range(max(DESKS)):
            patron = await patrons_service.create_patron(
                session, actor=SYSTEM,
                data=PatronCreate(card_number=f"P{d:04d}", name=f"Desk patron {d}",
                                  category=category.code, home_branch=branch.code,
                                  expires_on="2099-12-31"),
            )  # fmt: skip
            barcodes = tuple(f"B{d:04d}-{c}" for c in range(COPIES_PER_DESK))
            for barcode in barcodes:
                await catalog_service.create_item(
                    session, actor=SYSTEM,
                    data=ItemCreate(bib_id=bib.id, barcode=barcode, branch=branch.code),
                )  # fmt: skip
            desks.append(Desk(patron.card_number, barcodes))
    return desks


async def pair(maker: async_sessionmaker[AsyncSession], desk: Desk, barcode: str) -> None:
    async with session_scope(maker) as session:
        data = CheckoutCreate(item_barcode=barcode, patron_card=desk.patron_card)
        await loans.check_out(session, actor=SYSTEM, data=data, now=utcnow())
    async with session_scope(maker) as session:
        back = CheckinCreate(item_barcode=barcode)
        await loans.check_in(session, actor=SYSTEM, data=back, now=utcnow())


async def run_desks(
    maker: async_sessionmaker[AsyncSession], desks: list[Desk], seconds: float
) -> Run:
    run = Run(len(desks))
    deadline = time.perf_counter() + seconds

    async def work(desk: Desk) -> None:
        n = 0
        while time.perf_counter() < deadline:
            barcode = desk.barcodes[n % len(desk.barcodes)]
            n += 1
            started = time.perf_counter()
            try:
                await pair(maker, desk, barcode)
            except Exception as exc:
                name = getattr(exc, "code", type(exc).__name__)
                run.errors[name] = run.errors.get(name, 0) + 1
                continue
            run.latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(work(desk) for desk in desks))
    run.seconds = time.perf_counter() - started
    return run


async def _desk_process(
    url: str, desks: list[Desk], seconds: float, start: Any | None = None
) -> Run:
    engine = create_engine(_settings(url), pool_size=len(desks), max_overflow=0)
    try:
        maker = create_sessionmaker(engine)
        await run_desks(maker, desks, WARM_SECONDS)  # the pool and the caches warm
        if start is not None:
            await asyncio.to_thread(start.wait)  # every process starts measuring at once
        return await run_desks(maker, desks, seconds)
    finally:
        await engine.dispose()


def _desk_process_main(url: str, desks: list[Desk], seconds: float, start: Any, out: Any) -> None:
    out.put(asyncio.run(_desk_process(url, desks, seconds, start)))


def run_spread(url: str, desks: list[Desk], processes: int, seconds: float) -> Run:
    """The desks dealt round `processes` processes, measured over the same seconds."""
    if processes == 1:
        return asyncio.run(_desk_process(url, desks, seconds))
    start, out = _SPAWN.Barrier(processes), _SPAWN.Queue()
    children = [
        _SPAWN.Process(
            target=_desk_process_main, args=(url, desks[k::processes], seconds, start, out)
        )
        for k in range(processes)
    ]
    for child in children:
        child.start()
    run = Run(len(desks), processes)
    for _ in children:
        run.add(out.get())
    for child in children:
        child.join()
    return run


async def prepare(url: str) -> list[Desk]:
    engine = create_engine(_settings(url), pool_size=2, max_overflow=0)
    try:
        await upgrade(engine)
        return await seed(create_sessionmaker(engine))
    finally:
        await engine.dispose()


def processes_for(clients: int, limit: int | None) -> int:
    """As pgbench's `-j` here: one per CPU, at most one per client."""
    return min(clients, limit or os.cpu_count() or 1)


def circulation(url: str, seconds: float, processes: int | None) -> list[Run]:
    desks = asyncio.run(prepare(url))
    return [
        run_spread(url, desks[:count], processes_for(count, processes), seconds) for count in DESKS
    ]


def pgbench(seconds: int) -> dict[int, float]:
    """TPC-B-like tps per client count on a scratch database of the same server."""
    url = fresh_database(PGBENCH_DATABASE).replace("postgresql+asyncpg://", "postgresql://")
    subprocess.run(
        ["pgbench", "-i", "-q", "-s", str(PGBENCH_SCALE), url],
        check=True, capture_output=True,
    )  # fmt: skip
    result = {}
    for clients in DESKS:
        out = subprocess.run(
            ["pgbench", "-n", "-c", str(clients), "-j", str(processes_for(clients, None)),
             "-T", str(seconds), url],
            check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        match = re.search(r"tps = ([\d.]+) \(without initial connection time\)", out)
        assert match, out
        result[clients] = float(match.group(1))
    return result


def report(runs: list[Run], ceiling: dict[int, float]) -> None:
    print()
    print(f"{'desks':>5} {'procs':>5} {'pairs/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} "
          f"{'pgbench tps':>12} {'ratio':>7}")  # fmt: skip
    for run in runs:
        ratio = 2 * run.pairs_per_second / ceiling[run.desks]
        errors = sum(run.errors.values())
        print(
            f"{run.desks:>5} {run.processes:>5} {run.pairs_per_second:>9.1f} "
            f"{run.percentile(0.5):>8.1f} "
            f"{run.percentile(0.99):>8.1f} {errors:>7} {ceiling[run.desks]:>12.0f} "
            f"{ratio:>6.0%}"
        )
        if run.errors:
            print(f"      errors: {run.errors}")
    print("\nratio = circulation transactions/s (2 per pair) / pgbench tps")
    eight = next(run for run in runs if run.desks == 8)
    verdicts = {
        "ratio >= 30 % at 8 desks": 2 * eight.pairs_per_second / ceiling[8] >= 0.30,
        "p99 <= 5 x p50 (every run)": all(
            r.percentile(0.99) <= 5 * r.percentile(0.5) for r in runs
        ),
        "no errors": not any(r.errors for r in runs),
    }
    for goal, met in verdicts.items():
        print(f"  {'met' if met else 'MISSED':>6}: {goal}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="per desk count")
    parser.add_argument("--pgbench-seconds", type=int, default=10, help="per client count")
    parser.add_argument(
        "--processes", type=int, default=None,
        help="desk processes at most (default: one per CPU, as pgbench's threads)",
    )  # fmt: skip
    args = parser.parse_args()
    started = time.perf_counter()
    print(f"PostgreSQL at {PG_ADMIN.rsplit('/', 1)[0]}; circulation via the service layer")
    runs = circulation(fresh_database(DATABASE), args.seconds, args.processes)
    ceiling = pgbench(args.pgbench_seconds)
    report(runs, ceiling)
    print(f"\n(total {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
