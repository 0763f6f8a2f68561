"""Overdue notices delivered per second by one worker to a local SMTP sink; the overdue job's
end-to-end time.

    .venv/bin/python bench/notices.py [--loans 10000] [--databases sqlite,postgresql]

Per database: a fresh database built by the migrations, `--loans` loans three days overdue
(each to its own patron, half of them French), one `shelfmark worker` (prefork, concurrency
1, embedded broker) and an aiosmtpd sink in this process. The `overdue-notices` job is queued
as beat queues it; the figures are the sink's (first to last message: delivered/s) and the
job's (queued to finished; the writing of the notices is part of it). Every notice must
arrive exactly once. Goal (issue 6): ≥ 500 notices/s with one worker.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from types import ModuleType

from _common import ROOT, fresh_database

from shelfmark.db import create_engine, create_sessionmaker, session_scope, utcnow
from shelfmark.jobs import service as jobs_service
from shelfmark.jobs.models import FINISHED_STATUSES, Job
from shelfmark.migrate import upgrade
from shelfmark.settings import Settings
from shelfmark.worker import configure


def _from_tests(name: str, path: str) -> ModuleType:
    """A helper module of the tests (this script's own name hides their `notices` folder)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "tests" / path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


MailSink = _from_tests("mailsink", "mailsink.py").MailSink
overdue_loans = _from_tests("notices_bulk", "notices/bulk.py").overdue_loans


async def bench(database: str, loans: int) -> dict[str, float]:
    home = Path(tempfile.mkdtemp(prefix="shelfmark-bench-notices-"))
    if database == "sqlite":
        url = f"sqlite+aiosqlite:///{home / 'shelfmark.db'}"
    else:
        url = fresh_database("shelfmark_bench_notices")
    sink = MailSink()
    sink.start()
    settings = Settings(
        shelfmark_home=home, database_url=url, smtp_url=sink.url, secret_key="bench" * 8,
        jobs_queue="bench-notices",
    )  # fmt: skip
    configure(settings)
    engine = create_engine(settings)
    await upgrade(engine)
    sessions = create_sessionmaker(engine)
    async with session_scope(sessions) as session:
        await overdue_loans(session, loans)
    env = os.environ | {
        "SHELFMARK_HOME": str(home), "DATABASE_URL": url, "SMTP_URL": sink.url,
        "JOBS_QUEUE": settings.jobs_queue, "NOTICE_FROM": "library@example.org",
    }  # fmt: skip
    worker = _start_worker(env, home / "worker.log")
    try:
        await asyncio.sleep(3)  # let the worker start before the clock does
        queued = time.perf_counter()
        async with session_scope(sessions) as session:
            job = await jobs_service.start_scheduled_job(
                session, kind="overdue-notices", period="day", now=utcnow()
            )
        while True:
            async with sessions() as session:
                current = await session.get(Job, job.id)
            assert current is not None
            if current.status in FINISHED_STATUSES:
                break
            await asyncio.sleep(0.05)
        finished = time.perf_counter()
        messages = sink.messages()
        arrivals = [m.arrived for m in messages]
        counts = Counter(m.message_id for m in messages)
        assert current.status == "succeeded", (home / "worker.log").read_text()[-3000:]
        assert len(counts) == loans, "a notice was not delivered"
        assert set(counts.values()) == {1}, "a notice was delivered twice"
        span = max(arrivals) - min(arrivals)
        return {
            "sent": len(messages), "rate": (len(messages) - 1) / span,
            "end_to_end": finished - queued,
        }  # fmt: skip
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        sink.stop()
        await engine.dispose()


def _start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "shelfmark", "worker", "--concurrency", "1"],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loans", type=int, default=10_000)
    parser.add_argument("--databases", default="sqlite,postgresql")
    args = parser.parse_args()
    print(f"{args.loans} overdue loans, one worker, a local aiosmtpd sink")
    print(f"{'database':11} {'delivered':>9} {'notices/s':>10} {'job end-to-end s':>17}")
    for database in args.databases.split(","):
        figures = asyncio.run(bench(database, args.loans))
        print(
            f"{database:11} {figures['sent']:9.0f} {figures['rate']:10,.0f} "
            f"{figures['end_to_end']:17.1f}"
        )


if __name__ == "__main__":
    main()
