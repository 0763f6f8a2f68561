"""Shared by the bench scripts: scratch PostgreSQL databases, a served Shelfmark, wrk."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg

PG_ADMIN = os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
ROOT = Path(__file__).resolve().parents[1]
SHELFMARK = str(ROOT / ".venv" / "bin" / "shelfmark")
BENCH_SECRET_KEY = "bench-secret-key-not-for-production-use"


async def _admin(sql: str) -> None:
    connection = await asyncpg.connect(PG_ADMIN)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


def _run_admin(sql: str) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(_admin(sql))
        return
    # Called from a coroutine (a bench's own event loop): on a loop of its own, in a thread.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, _admin(sql)).result()


def bench_database(kind: str, *, name: str, home: str | Path) -> str:
    """An empty database of `kind` ("sqlite": a file in `home`; "postgresql": `name`, made
    afresh) as an async SQLAlchemy URL."""
    if kind == "sqlite":
        return f"sqlite+aiosqlite:///{home}/bench.db"
    return fresh_database(name).replace("postgresql://", "postgresql+asyncpg://")


def fresh_database(name: str) -> str:
    """Drop and create `name`; return its SQLAlchemy URL."""
    _run_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    _run_admin(f'CREATE DATABASE "{name}"')
    return PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"


@contextmanager
def served(database_url: str, *, server: str, port: int, home: Path) -> Iterator[str]:
    """Run `shelfmark serve` in a child process until the block ends."""
    # Off SQLite the API refuses to start without a SECRET_KEY (replicas must share one).
    env = os.environ | {
        "DATABASE_URL": database_url,
        "SHELFMARK_HOME": str(home),
        "SECRET_KEY": os.environ.get("SECRET_KEY") or BENCH_SECRET_KEY,
        # Every request of a bench comes from one address: the scraper brake would answer
        # most of them 429 (measured would be the refusal, not the search).
        "SEARCH_PER_MINUTE": "0",
    }
    process = subprocess.Popen(
        [SHELFMARK, "serve", "--no-worker", "--server", server, "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                with urllib.request.urlopen(base + "/healthz", timeout=1):
                    break
            except OSError:
                if process.poll() is not None:
                    raise RuntimeError(
                        process.stderr.read().decode() if process.stderr else ""
                    ) from None
                time.sleep(0.1)
        yield base
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    return float(match.group(1)) * _UNITS[match.group(2)] if match else float("nan")


def wrk(
    url: str, *, seconds: int = 10, connections: int = 32, script: Path | None = None
) -> WrkResult:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    if script:
        command[1:1] = ["-s", str(script)]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    rps_match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50_match = re.search(r"^\s*50%\s+(\S+)", out, re.MULTILINE)
    p99_match = re.search(r"^\s*99%\s+(\S+)", out, re.MULTILINE)
    if not (rps_match and p50_match and p99_match):
        print(f"wrk printed no figures for {url}:\n{out}", file=sys.stderr)
        return WrkResult(float("nan"), float("nan"), float("nan"), -1)
    rps = float(rps_match.group(1))
    p50, p99 = _ms(p50_match.group(1)), _ms(p99_match.group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    errors = int(bad.group(1)) if bad else 0
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    return WrkResult(rps, p50, p99, errors)


def python() -> str:
    return sys.executable
