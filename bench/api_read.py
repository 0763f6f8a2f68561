"""Read throughput of the API against its own ceiling, on PostgreSQL.

    .venv/bin/python bench/api_read.py [--seconds 10] [--servers granian,uvicorn]

Serves Shelfmark (one process) on a fresh PostgreSQL database with 20,000 bibs and measures,
with wrk on loopback, requests/s and latency for GET /healthz (the ceiling: the same server
doing no database work), GET /api/v1/bibs/{id} (random ids) and GET /api/v1/bibs?limit=50.
Prints each as a ratio of the ceiling. A bib by id is measured twice: "cold", each request
for a bib not yet cached (the database read), and "warm", after every bib has been read
once (the cache, in-process here). Goals (issue 3): a bib by id ≥ 30 % of the ceiling, a
page of 50 ≥ 15 %, p99 ≤ 5 x p50. Also printed, the CPU time the server's processes spent
per request ("cpu us", PostgreSQL's not counted): steadier than requests/s on a machine that
does other work meanwhile, so the figure to compare before and after a change.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import urllib.request
from collections.abc import Callable
from pathlib import Path

from _common import WrkResult, fresh_database, served, wrk
from sqlalchemy import insert

from shelfmark.catalog.models import Bib
from shelfmark.db import create_engine
from shelfmark.migrate import upgrade
from shelfmark.settings import Settings

BIBS = 20_000
PORT = 8765


async def seed(url: str, home: Path) -> None:
    engine = create_engine(Settings(shelfmark_home=home, database_url=url, secret_key="bench"))
    await upgrade(engine)
    rows = [
        {
            "title": f"Benchmark title {n}",
            "subtitle": "a study in throughput",
            "contributors": [{"name": f"Author {n % 97}", "role": "author"}],
            "isbns": [],
            "subjects": ["Benchmarks", f"Topic {n % 13}"],
            "series": [],
            "publication_year": 1900 + n % 120,
            "language": "eng",
            "material_type": "book",
            "description": "Lorem ipsum " * 10,
        }
        for n in range(BIBS)
    ]
    async with engine.begin() as connection:
        await connection.execute(insert(Bib), rows)
    await engine.dispose()


def warm_up(base: str) -> None:
    """Read every bib once, so that the measured reads are cache hits."""
    for bib_id in range(1, BIBS + 1):
        with urllib.request.urlopen(f"{base}/api/v1/bibs/{bib_id}") as response:
            response.read()


def _stat(pid: str) -> list[str]:
    # The fields after the command's name (which may hold spaces): state, ppid, pgrp, session...
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()


def server_session(port: int) -> str:
    """The session of the process listening on `port` (`served` starts the server, and so its
    workers, in a session of its own)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                if fields[1].endswith(f":{port:04X}") and fields[3] == "0A":  # LISTEN
                    inodes.add(f"socket:[{fields[9]}]")
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") in inodes
                   for fd in os.listdir(f"/proc/{pid}/fd")):  # fmt: skip
                return _stat(pid)[3]
        except OSError:
            continue  # gone, or not ours
    raise RuntimeError(f"no process of ours listens on port {port}")


def session_cpu(session: str) -> float:
    """CPU seconds (user and system) of the processes of `session`, all their threads."""
    total = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = _stat(pid)
        except OSError:
            continue
        if fields[3] == session:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def measured(session: str, seconds: int, run: Callable[[], WrkResult]) -> tuple[WrkResult, float]:
    """A wrk run and the server's CPU time per request during it, in µs."""
    before = session_cpu(session)
    result = run()
    spent = session_cpu(session) - before
    return result, spent / (result.rps * seconds) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--servers", default="granian,uvicorn")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="shelfmark-bench-"))
    url = fresh_database("shelfmark_bench_api")
    asyncio.run(seed(url.replace("postgresql://", "postgresql+asyncpg://"), home))
    script = home / "random_bib.lua"
    script.write_text(
        f"math.randomseed(42)\nrequest = function()\n"
        f'  return wrk.format("GET", "/api/v1/bibs/" .. math.random(1, {BIBS}))\nend\n'
    )
    # Cold: every request a bib not read before in this server (ids go up, never repeat).
    cold = home / "cold_bib.lua"
    cold.write_text(
        "local n = 0\nrequest = function()\n  n = n + 1\n"
        f'  return wrk.format("GET", "/api/v1/bibs/" .. (n % {BIBS} + 1))\nend\n'
    )

    print(
        f"{'server':8} {'route':30} {'req/s':>9} {'ratio':>7} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'p99/p50':>8} {'errors':>6} {'cpu us':>7}"
    )
    # At most 5 s: the cold ids must not wrap round to bibs already read (20,000).
    cold_seconds = min(args.seconds, 5)
    for server in args.servers.split(","):
        with served(url, server=server, port=PORT, home=home) as base:
            session = server_session(PORT)

            def run(path: str, seconds: int, script: Path | None = None) -> WrkResult:
                return wrk(base + path, seconds=seconds, connections=args.connections,
                           script=script)  # fmt: skip

            run("/healthz", 2)  # warm up
            ceiling = measured(session, args.seconds, lambda: run("/healthz", args.seconds))
            # The database pool opened, as in a server that has been up a while (a list
            # page reads no bib by id, so the cold run below stays cold).
            run("/api/v1/bibs?limit=5", 2)
            cold_run = measured(session, cold_seconds, lambda: run("", cold_seconds, cold))
            warm_up(base)
            cases = [
                ("GET /healthz (ceiling)", ceiling),
                ("GET /api/v1/bibs/{id} cold", cold_run),
                ("GET /api/v1/bibs/{id} warm",
                 measured(session, args.seconds, lambda: run("", args.seconds, script))),
                ("GET /api/v1/bibs?limit=50",
                 measured(session, args.seconds, lambda: run("/api/v1/bibs?limit=50",
                                                             args.seconds))),
            ]  # fmt: skip
            for route, (result, cpu_us) in cases:
                print(
                    f"{server:8} {route:30} {result.rps:9.0f} {result.rps / ceiling[0].rps:7.1%} "
                    f"{result.p50_ms:8.2f} {result.p99_ms:8.2f} "
                    f"{result.p99_ms / result.p50_ms:8.1f} {result.errors:6d} {cpu_us:7.0f}"
                )


if __name__ == "__main__":
    main()
