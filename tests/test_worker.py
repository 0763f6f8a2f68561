"""Real worker processes — `shelfmark worker` — on the embedded broker, Redis and RabbitMQ.

A home is a SHELFMARK_HOME with a copy of a SQLite database built by `shelfmark migrate` and
a queue of its own on the broker. Jobs are queued by the service, as the API does, and sent
when their transaction commits; the tests watch the jobs table, as a librarian would.
"""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import socket
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from background import (
    Broker,
    WorkerProcess,
    delete_queue,
    migrated_database,
    write_marc,
    write_marc_bytes,
)
from conftest import unreachable
from shelfmark.audit.models import AuditEvent
from shelfmark.auth.roles import SYSTEM
from shelfmark.catalog.models import Bib
from shelfmark.db import create_engine, create_sessionmaker, session_scope, utcnow
from shelfmark.jobs import service as jobs_service
from shelfmark.jobs.models import FINISHED_STATUSES, Job
from shelfmark.settings import Settings
from shelfmark.worker import (
    RUN_JOB,
    Runtime,
    celery_app,
    configure,
    embedded_broker_url,
    purge_delivered,
    run,
)

DEMO = Path(__file__).resolve().parents[1] / "src" / "shelfmark" / "demo" / "loc-demo.mrc"
BROKERS = {
    "embedded": None,
    "redis": "redis://127.0.0.1:6379/11",  # a database of its own
    "rabbitmq": "amqp://guest:guest@127.0.0.1:5672//",
}
# Each leg runs its worker on another pool, so that each way a process gets its loop is used:
# prefork children at `worker_process_init` (as `serve` runs it), solo and threads at start.
POOLS = {"embedded": "prefork", "redis": "threads", "rabbitmq": "solo"}
STALE_SECONDS = 2


def _reachable(url: str) -> bool:
    parts = urlsplit(url)
    try:
        socket.create_connection((parts.hostname, parts.port or 0), timeout=2).close()
    except OSError:
        return False
    return True


class Home:
    """A SHELFMARK_HOME with its database, its queue, and the workers started on it."""

    def __init__(self, path: Path, broker_url: str | None, database: Path) -> None:
        self.path = path
        shutil.copyfile(database, path / "shelfmark.db")
        queue = f"shelfmark-test-{uuid.uuid4().hex[:10]}"
        self.env = {
            name: value
            for name, value in os.environ.items()
            if name not in {"DATABASE_URL", "BROKER_URL", "REDIS_URL"}
        } | {
            "SHELFMARK_HOME": str(path),
            "JOBS_QUEUE": queue,
            "JOB_STALE_SECONDS": str(STALE_SECONDS),
        }
        if broker_url:
            self.env["BROKER_URL"] = broker_url
        self.settings = Settings(
            shelfmark_home=path, database_url="", broker_url=broker_url, jobs_queue=queue,
            job_stale_seconds=STALE_SECONDS, secret_key="test-secret-key-of-at-least-32-bytes!",
        )  # fmt: skip
        self.engine: AsyncEngine = create_engine(self.settings)
        self.sessions: async_sessionmaker[AsyncSession] = create_sessionmaker(self.engine)
        self.workers: list[WorkerProcess] = []

    def start_worker(self, pool: str = "prefork") -> WorkerProcess:
        log = self.path / f"worker-{len(self.workers)}.log"
        worker = WorkerProcess(self.env, log, "--pool", pool)
        self.workers.append(worker)
        return worker

    def logs(self) -> str:
        return "\n".join(worker.output()[-3000:] for worker in self.workers)

    async def import_marc(self, data: bytes, filename: str = "upload.mrc") -> int:
        """Queue an import as `POST /api/v1/imports/marc` does; sent when it commits."""
        async with session_scope(self.sessions) as session:
            job = await jobs_service.start_marc_import(
                session, actor=SYSTEM, upload=io.BytesIO(data), filename=filename,
                items_branch=None, home=self.path, max_bytes=self.settings.upload_max_bytes,
                now=utcnow(),
            )  # fmt: skip
        return job.id

    async def job(self, job_id: int) -> Job:
        async with self.sessions() as session:
            job = await session.get(Job, job_id)
            assert job is not None
            return job

    async def wait(self, job_id: int, *, within: float = 30) -> Job:
        """The job once it has finished."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            job = await self.job(job_id)
            if job.status in FINISHED_STATUSES:
                return job
            await asyncio.sleep(0.1)
        raise AssertionError(f"job {job_id} did not finish in {within} s:\n{self.logs()}")

    async def count(self, model: type[Bib] | type[AuditEvent], *where: object) -> int:
        async with self.sessions() as session:
            query = select(func.count()).select_from(model).where(*where)  # type: ignore[arg-type]
            return int(await session.scalar(query) or 0)


@pytest.fixture(scope="session")
def database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return migrated_database(tmp_path_factory.mktemp("migrated"))


@asynccontextmanager
async def _home(name: str, path: Path, database: Path) -> AsyncIterator[Home]:
    broker_url = BROKERS[name]
    if broker_url and not _reachable(broker_url):
        unreachable(f"{name} at {broker_url} is unreachable")
    home = Home(path, broker_url, database)
    configure(home.settings)  # what this process sends goes to the home's broker and queue
    try:
        yield home
    finally:
        for worker in home.workers:
            worker.kill()  # a graceful stop is `serve`'s tests' business; this one is quick
        if broker_url:
            delete_queue(broker_url, home.settings.jobs_queue)
        await home.engine.dispose()


# The two ways a dead worker's unacknowledged message comes back: not at all (the embedded
# broker; Redis not before its visibility timeout, an hour) or at once (RabbitMQ).
@pytest.fixture(params=["embedded", "rabbitmq"])
async def home(
    request: pytest.FixtureRequest, tmp_path: Path, database: Path
) -> AsyncIterator[Home]:
    async with _home(request.param, tmp_path, database) as home:
        yield home


@pytest.fixture(scope="class", params=list(BROKERS))
async def working_home(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, database: Path
) -> AsyncIterator[Home]:
    """A home with a worker running, shared by the tests of a class (a start costs seconds)."""
    async with _home(request.param, tmp_path_factory.mktemp("home"), database) as home:
        home.start_worker(POOLS[request.param])
        yield home


class TestWorker:
    async def test_a_marc_import_job_runs_to_its_summary(self, working_home: Home) -> None:
        home = working_home
        job_id = await home.import_marc(DEMO.read_bytes(), "loc-demo.mrc")

        job = await home.wait(job_id)
        assert job.status == "succeeded", home.logs()
        assert job.result is not None
        assert job.result["file"] == "loc-demo.mrc"
        counts = {key: job.result[key] for key in ("read", "created", "updated", "unchanged")}
        assert counts == {"read": 400, "created": 400, "updated": 0, "unchanged": 0}
        assert job.result["error_count"] == 0
        assert (job.progress_done, job.progress_total, job.attempts) == (400, 400, 1)
        assert job.started_at is not None
        assert job.finished_at is not None
        assert await home.count(Bib) == 400

    async def test_a_job_that_raises_fails_with_its_error_and_can_be_retried(
        self, working_home: Home
    ) -> None:
        home = working_home
        job_id = await home.import_marc(b"Dear library, please find my books attached.", "x.txt")

        job = await home.wait(job_id)
        assert job.status == "failed", home.logs()
        assert (job.error or "").startswith("x.txt: not a MARC21 file"), job.error
        assert job.result is None

        # The librarian puts the right file in place and retries: the same job succeeds.
        (home.path / "uploads" / f"{job_id}.mrc").write_bytes(write_marc_bytes(3))
        async with session_scope(home.sessions) as session:
            await jobs_service.retry_job(session, actor=SYSTEM, job_id=job_id, now=utcnow())
        job = await home.wait(job_id)
        assert (job.status, job.error, job.attempts) == ("succeeded", None, 1), home.logs()
        assert job.result is not None
        assert job.result["created"] == 3


class TestWorkerDeath:
    async def test_a_worker_killed_mid_job_then_restarted_finishes_it_exactly_once(
        self, home: Home
    ) -> None:
        records = 4000
        data = write_marc(home.path / "big.mrc", records).read_bytes()
        worker = home.start_worker()
        job_id = await home.import_marc(data, "big.mrc")

        deadline = time.monotonic() + 60
        while not 0 < (await home.job(job_id)).progress_done < records // 2:
            assert time.monotonic() < deadline, home.logs()
            await asyncio.sleep(0.02)
        worker.kill()
        stopped = await home.job(job_id)
        assert stopped.status == "running"
        assert 0 < await home.count(Bib) < records  # some batches were committed

        # Its heartbeat goes stale; the restarted worker's sweep queues the job again.
        silent_for = utcnow() - stopped.heartbeat_at
        await asyncio.sleep(max(0.0, STALE_SECONDS + 0.3 - silent_for.total_seconds()))
        home.start_worker()
        job = await home.wait(job_id, within=60)

        assert job.status == "succeeded", home.logs()
        assert job.attempts == 2
        assert job.result is not None
        assert job.result["read"] == records
        assert job.result["created"] + job.result["unchanged"] == records
        assert job.result["created"] < records
        assert await home.count(Bib) == records  # nothing imported twice
        # The import's closing audit record is written once: only the second run got there.
        assert await home.count(AuditEvent, AuditEvent.action == "marc.import") == 1


class TestRuntime:
    def test_one_loop_runs_the_coroutines_of_every_thread(self, tmp_path: Path) -> None:
        settings = Settings(shelfmark_home=tmp_path, database_url="", secret_key="x" * 32)
        runtime = Runtime(settings)
        try:

            async def loop_id() -> int:
                await asyncio.sleep(0)
                return id(asyncio.get_running_loop())

            first = runtime.run(loop_id())
            from_threads = asyncio.run(_in_threads(runtime, loop_id, 3))
            assert set(from_threads) == {first} == {id(runtime.loop)}
        finally:
            runtime.close()
        assert runtime.loop.is_closed()

    def test_a_process_that_is_not_a_worker_has_no_loop(self) -> None:
        async def nothing() -> None:
            return None

        with pytest.raises(RuntimeError, match="not started as a worker"):
            run(nothing())


async def _in_threads(runtime: Runtime, make: object, count: int) -> list[int]:
    assert callable(make)
    return list(
        await asyncio.gather(*(asyncio.to_thread(runtime.run, make()) for _ in range(count)))
    )


class TestEmbeddedBroker:
    def test_delivered_messages_are_purged_and_waiting_ones_kept(self, tmp_path: Path) -> None:
        settings = Settings(
            shelfmark_home=tmp_path, database_url="", jobs_queue="purge-test",
            secret_key="test-secret-key-of-at-least-32-bytes!",
        )  # fmt: skip
        configure(settings)
        for job_id in (1, 2):
            celery_app.send_task(RUN_JOB, args=(job_id,))
        with celery_app.connection_for_read() as connection:
            queue = connection.SimpleQueue("purge-test")
            queue.get(block=False).ack()
            queue.close()

        assert purge_delivered(embedded_broker_url(tmp_path)) == 1
        assert Broker("purge-test").take() == [(RUN_JOB, [2])]
