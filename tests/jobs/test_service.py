"""The steps of a job's life: each a guarded UPDATE, so that deliveries, deaths and sweeps
can race without a job running twice or a dead run writing over a live one."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from background import Broker
from factories import STAFF, make_job
from shelfmark.catalog.schemas import Strict
from shelfmark.db import session_scope, utcnow
from shelfmark.jobs import service
from shelfmark.jobs.context import JobContext
from shelfmark.jobs.kinds import KINDS, JobKind
from shelfmark.jobs.models import Job
from shelfmark.worker import RUN_JOB

STALE = timedelta(minutes=5)


class NoParams(Strict):
    pass


async def _tidy(_ctx: JobContext, _params: NoParams) -> dict[str, Any]:
    return {"tidied": True}


@pytest.fixture
def tidy(monkeypatch: pytest.MonkeyPatch) -> str:
    """A kind that takes no parameters, as the scheduled ones will."""
    monkeypatch.setitem(KINDS, "tidy", JobKind("tidy", NoParams, _tidy))
    return "tidy"


class TestCreateJob:
    async def test_one_job_per_dedupe_key(self, session: AsyncSession, tidy: str) -> None:
        now = utcnow()
        first = await service.create_job(
            session, actor=STAFF, kind=tidy, params={}, now=now, dedupe_key="tidy@today"
        )
        again = await service.create_job(
            session, actor=STAFF, kind=tidy, params={}, now=now, dedupe_key="tidy@today"
        )
        assert again.id == first.id
        assert await session.scalar(select(func.count()).select_from(Job)) == 1

    async def test_sent_only_once_committed(
        self, sessionmaker: async_sessionmaker[AsyncSession], broker: Broker, tidy: str
    ) -> None:
        async def refused_request() -> None:
            async with session_scope(sessionmaker) as session:
                await service.create_job(session, actor=STAFF, kind=tidy, params={}, now=utcnow())
                raise RuntimeError("the request failed after all")

        with pytest.raises(RuntimeError):
            await refused_request()
        assert broker.take() == []
        async with session_scope(sessionmaker) as session:
            job = await service.create_job(session, actor=STAFF, kind=tidy, params={}, now=utcnow())
        assert broker.take() == [(RUN_JOB, [job.id])]


class TestStartScheduledJob:
    async def test_once_per_period(self, session: AsyncSession, tidy: str) -> None:
        morning = utcnow().replace(hour=6, minute=0)
        first = await service.start_scheduled_job(session, kind=tidy, period="day", now=morning)
        later = morning + timedelta(hours=3)
        again = await service.start_scheduled_job(session, kind=tidy, period="day", now=later)
        hourly = await service.start_scheduled_job(session, kind=tidy, period="hour", now=later)
        tomorrow = morning + timedelta(days=1)
        next_day = await service.start_scheduled_job(session, kind=tidy, period="day", now=tomorrow)
        assert again.id == first.id
        assert len({first.id, hourly.id, next_day.id}) == 3
        assert first.dedupe_key == f"tidy@{morning:%Y-%m-%d}"
        assert first.created_by is None  # the system's


class TestStartRun:
    async def test_a_queued_job_starts_once(self, session: AsyncSession) -> None:
        job = await make_job(session)
        started = await service.start_run(session, job_id=job.id, now=utcnow())
        assert started is not None
        assert (started.status, started.attempts) == ("running", 1)
        assert started.started_at is not None
        # The same message delivered again: nothing starts.
        assert await service.start_run(session, job_id=job.id, now=utcnow()) is None

    @pytest.mark.parametrize("status", ["succeeded", "failed"])
    async def test_a_finished_job_never_starts_again(
        self, session: AsyncSession, status: str
    ) -> None:
        job = await make_job(session, status=status)
        assert await service.start_run(session, job_id=job.id, now=utcnow()) is None
        await session.refresh(job)
        assert (job.status, job.attempts) == (status, 1)

    async def test_an_unknown_job_does_not_start(self, session: AsyncSession) -> None:
        assert await service.start_run(session, job_id=987654, now=utcnow()) is None


class TestRunFencing:
    async def test_a_run_presumed_dead_cannot_write_over_its_successor(
        self, session: AsyncSession
    ) -> None:
        then = utcnow() - timedelta(hours=1)
        job = await make_job(session, now=then)
        first = await service.start_run(session, job_id=job.id, now=then)
        assert first is not None
        await service.recover_stalled(session, now=utcnow(), stale_after=STALE, max_attempts=3)
        second = await service.start_run(session, job_id=job.id, now=utcnow())
        assert second is not None
        assert second.attempts == 2

        late = await service.finish_run(
            session, job_id=job.id, attempt=1, result={"by": "the first"}, done=1, now=utcnow()
        )
        assert late is False
        assert not await service.record_progress(
            session, job_id=job.id, attempt=1, done=5, total=9, now=utcnow()
        )
        assert await service.finish_run(
            session, job_id=job.id, attempt=2, result={"by": "the second"}, done=2, now=utcnow()
        )
        await session.refresh(job)
        assert (job.status, job.result, job.error) == ("succeeded", {"by": "the second"}, None)


class TestRecoverStalled:
    async def test_silent_jobs_are_queued_again_and_sent(
        self, sessionmaker: async_sessionmaker[AsyncSession], broker: Broker
    ) -> None:
        then = utcnow() - timedelta(hours=1)
        async with sessionmaker() as session:  # not a unit of work: sends nothing
            orphan = await make_job(session, now=then)
            await service.start_run(session, job_id=orphan.id, now=then)
            lost_message = await make_job(session, now=then)
            alive = await make_job(session)
            await service.start_run(session, job_id=alive.id, now=utcnow())
            waiting = await make_job(session)
            done = await make_job(session, status="succeeded", now=then)
            await session.commit()
        async with session_scope(sessionmaker) as session:
            sent = await service.recover_stalled(
                session, now=utcnow(), stale_after=STALE, max_attempts=3
            )
        assert sent == sorted([orphan.id, lost_message.id])
        assert sorted(broker.take()) == sorted(
            [(RUN_JOB, [orphan.id]), (RUN_JOB, [lost_message.id])]
        )
        async with sessionmaker() as session:
            statuses = {
                job.id: (job.status, job.error)
                for job in await session.scalars(select(Job).where(Job.id.in_(
                    [orphan.id, lost_message.id, alive.id, waiting.id, done.id]
                )))
            }  # fmt: skip
        assert statuses == {
            orphan.id: ("queued", "Its worker stopped while running it: queued again."),
            lost_message.id: ("queued", None),
            alive.id: ("running", None),
            waiting.id: ("queued", None),
            done.id: ("succeeded", None),
        }

    async def test_a_job_whose_worker_keeps_dying_is_given_up(self, session: AsyncSession) -> None:
        then = utcnow() - timedelta(hours=1)
        job = await make_job(session, now=then)
        for _ in range(3):
            await service.start_run(session, job_id=job.id, now=then)
            await service.recover_stalled(session, now=utcnow(), stale_after=STALE, max_attempts=3)
            # each sweep touches the heartbeat; as if the next run died long ago too
            job.heartbeat_at = then
            await session.flush()
        await session.refresh(job)
        assert job.status == "failed"
        assert job.attempts == 3
        assert job.error == "Its worker stopped while running it, 3 times: given up."
