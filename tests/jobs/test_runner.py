"""One run of a job, in process: what the worker's task does, on both databases."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from factories import make_job, make_user
from shelfmark.audit.models import AuditEvent
from shelfmark.auth.roles import Role
from shelfmark.auth.service import actor_of
from shelfmark.catalog.schemas import Strict
from shelfmark.jobs.context import JobContext
from shelfmark.jobs.kinds import KINDS, JobKind
from shelfmark.jobs.models import Job
from shelfmark.jobs.runner import execute_job
from shelfmark.settings import Settings

DEMO = Path(__file__).resolve().parents[2] / "src" / "shelfmark" / "demo" / "loc-demo.mrc"


class NoParams(Strict):
    pass


async def _shelf_falls(_ctx: JobContext, _params: NoParams) -> dict[str, Any]:
    raise ValueError("the shelf fell over")


async def _database_gone(_ctx: JobContext, _params: NoParams) -> dict[str, Any]:
    raise OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))


@pytest.fixture(autouse=True)
def kinds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(KINDS, "shelf-falls", JobKind("shelf-falls", NoParams, _shelf_falls))
    monkeypatch.setitem(KINDS, "db-gone", JobKind("db-gone", NoParams, _database_gone))


async def _job(maker: async_sessionmaker[AsyncSession], job_id: int) -> Job:
    async with maker() as session:
        job = await session.scalar(select(Job).where(Job.id == job_id))
        assert job is not None
        return job


class TestExecuteJob:
    async def test_a_marc_import_reports_progress_and_keeps_its_summary(
        self, sessionmaker: async_sessionmaker[AsyncSession], settings: Settings
    ) -> None:
        name = f"{uuid.uuid4().hex}.mrc"
        uploads = settings.shelfmark_home / "uploads"
        uploads.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(DEMO, uploads / name)
        async with sessionmaker() as session:
            librarian = await make_user(session, Role.LIBRARIAN)
            job = await make_job(session, params={"file": name}, actor=actor_of(librarian))
            await session.commit()

        outcome = await execute_job(sessionmaker, job.id, settings=settings, last_try=False)

        assert outcome == "succeeded"
        done = await _job(sessionmaker, job.id)
        assert (done.status, done.attempts, done.error) == ("succeeded", 1, None)
        assert (done.progress_done, done.progress_total) == (400, 400)
        assert done.result is not None
        assert (done.result["created"], done.result["file"]) == (400, name)
        async with sessionmaker() as session:
            audit = await session.scalar(
                select(AuditEvent).where(AuditEvent.action == "marc.import")
            )
        assert audit is not None
        assert audit.actor_id == librarian.id  # the job acts as the librarian who started it

    async def test_a_second_delivery_is_skipped(
        self, sessionmaker: async_sessionmaker[AsyncSession], settings: Settings
    ) -> None:
        async with sessionmaker() as session:
            job = await make_job(session, kind="shelf-falls", params={})
            await session.commit()
        assert await execute_job(sessionmaker, job.id, settings=settings, last_try=False) == (
            "failed"
        )
        again = await execute_job(sessionmaker, job.id, settings=settings, last_try=False)
        assert again == "skipped"
        assert (await _job(sessionmaker, job.id)).attempts == 1

    async def test_an_error_fails_the_job_with_its_text(
        self, sessionmaker: async_sessionmaker[AsyncSession], settings: Settings
    ) -> None:
        async with sessionmaker() as session:
            job = await make_job(session, kind="shelf-falls", params={})
            await session.commit()
        await execute_job(sessionmaker, job.id, settings=settings, last_try=False)
        failed = await _job(sessionmaker, job.id)
        assert (failed.status, failed.error) == ("failed", "ValueError: the shelf fell over")
        assert failed.finished_at is not None

    async def test_a_missing_upload_fails_with_a_readable_error(
        self, sessionmaker: async_sessionmaker[AsyncSession], settings: Settings
    ) -> None:
        async with sessionmaker() as session:
            job = await make_job(session, params={"file": "gone.mrc"})
            await session.commit()
        await execute_job(sessionmaker, job.id, settings=settings, last_try=False)
        failed = await _job(sessionmaker, job.id)
        assert failed.status == "failed"
        assert failed.error == (
            f"There is no upload gone.mrc to import in {settings.shelfmark_home / 'uploads'}."
        )

    async def test_a_transient_error_gives_the_job_back_for_a_retry(
        self, sessionmaker: async_sessionmaker[AsyncSession], settings: Settings
    ) -> None:
        async with sessionmaker() as session:
            job = await make_job(session, kind="db-gone", params={})
            await session.commit()
        with pytest.raises(OperationalError):
            await execute_job(sessionmaker, job.id, settings=settings, last_try=False)
        released = await _job(sessionmaker, job.id)
        assert (released.status, released.attempts) == ("queued", 1)
        assert "connection refused" in (released.error or "")

        # The last retry fails the job instead.
        outcome = await execute_job(sessionmaker, job.id, settings=settings, last_try=True)
        assert outcome == "failed"
        failed = await _job(sessionmaker, job.id)
        assert (failed.status, failed.attempts) == ("failed", 2)
        assert failed.error is not None
        assert failed.error.startswith("OperationalError:")
