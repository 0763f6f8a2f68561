"""One run of a job, as the worker's task makes it: start, work, finish — each step its own
transaction, so that progress shows while the work goes on.

The kind's code may commit many transactions (an import commits per batch). What a run that
dies halfway leaves behind is the kind's to make harmless on the next run; the import's
matching does (a record imported twice is `unchanged` the second time).
"""

from __future__ import annotations

import logging
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shelfmark.db import session_scope, utcnow
from shelfmark.errors import ShelfmarkError
from shelfmark.jobs import service
from shelfmark.jobs.context import JobContext
from shelfmark.jobs.kinds import require_kind
from shelfmark.settings import Settings
from shelfmark.worker import TRANSIENT_ERRORS

log = logging.getLogger(__name__)

Outcome = Literal["skipped", "succeeded", "failed", "superseded"]


def describe(error: BaseException) -> str:
    """The error as a librarian should read it on the job."""
    if isinstance(error, ShelfmarkError):
        return error.detail
    text = str(error).strip()
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


async def execute_job(
    maker: async_sessionmaker[AsyncSession], job_id: int, *, settings: Settings, last_try: bool
) -> Outcome:
    """Run job `job_id` if it is queued.

    An error that a retry may cure (see `TRANSIENT_ERRORS`) gives the job back to the queue
    and is raised again, for the task to retry with backoff, unless this is the `last_try`;
    any other error fails the job with its description.
    """
    async with session_scope(maker) as session:
        job = await service.start_run(session, job_id=job_id, now=utcnow())
        if job is None:
            return "skipped"  # a second delivery, or a job already finished
        actor = await service.actor_of_job(session, job)
    attempt = job.attempts

    async def write_progress(done: int, total: int | None) -> None:
        async with session_scope(maker) as session:
            await service.record_progress(
                session, job_id=job_id, attempt=attempt, done=done, total=total, now=utcnow()
            )

    ctx = JobContext(
        job_id=job_id, attempt=attempt, actor=actor, settings=settings, sessions=maker,
        write_progress=write_progress,
    )  # fmt: skip
    try:
        kind = require_kind(job.kind)
        result = await kind.run(ctx, kind.check(job.params))
    except TRANSIENT_ERRORS as exc:
        if last_try:
            return await _fail(maker, ctx, exc)
        async with session_scope(maker) as session:
            await service.release_run(
                session, job_id=job_id, attempt=attempt, error=describe(exc), now=utcnow()
            )
        raise
    except Exception as exc:
        return await _fail(maker, ctx, exc)
    async with session_scope(maker) as session:
        finished = await service.finish_run(
            session, job_id=job_id, attempt=attempt, result=result, done=ctx.done, now=utcnow()
        )
    return "succeeded" if finished else "superseded"


async def _fail(
    maker: async_sessionmaker[AsyncSession], ctx: JobContext, error: Exception
) -> Outcome:
    # A domain error is the job's answer, not a bug: no traceback for those.
    expected = isinstance(error, ShelfmarkError)
    log.warning(
        "job %s (attempt %s) failed: %s", ctx.job_id, ctx.attempt, describe(error),
        exc_info=None if expected else error,
    )  # fmt: skip
    async with session_scope(maker) as session:
        failed = await service.fail_run(
            session, job_id=ctx.job_id, attempt=ctx.attempt, error=describe(error), now=utcnow()
        )
    return "failed" if failed else "superseded"
