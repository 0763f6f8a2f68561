"""Jobs: start, read and retry them; and the steps of a run, each one guarded UPDATE.

A job moves queued → running → succeeded | failed. Every move is a single UPDATE whose WHERE
names the state it leaves (and, once running, the attempt it belongs to), so the database
decides under the row's lock: of two deliveries of one message only one starts the work, a
finished job is never started again, and a run presumed dead cannot write over the run that
replaced it. A job is sent to the broker only once the transaction that queued it commits.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, Literal

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from shelfmark.audit import service as audit
from shelfmark.auth import service as auth_service
from shelfmark.auth.models import User
from shelfmark.auth.roles import SYSTEM, Actor, require_staff
from shelfmark.catalog import service as catalog_service
from shelfmark.db import after_commit
from shelfmark.errors import InvalidInput, PayloadTooLarge
from shelfmark.jobs.errors import JobNotFound, JobNotRetryable
from shelfmark.jobs.kinds import MARC_IMPORT, require_kind, uploads_dir
from shelfmark.jobs.models import Job
from shelfmark.worker import RUN_JOB, celery_app

log = logging.getLogger(__name__)

# --- sending ------------------------------------------------------------------------------


def send_after_commit(session: AsyncSession, job_id: int) -> None:
    after_commit(session, lambda: _send(job_id))


async def _send(job_id: int) -> None:
    # Publishing is blocking I/O (a socket, or the embedded broker's SQLite file).
    try:
        await asyncio.to_thread(celery_app.send_task, RUN_JOB, args=(job_id,))
    except Exception:
        # The job is committed and stays queued: the recovery sweep sends it again later.
        log.warning("job %s could not be sent to the broker; the sweep will", job_id, exc_info=True)


# --- starting and reading ---------------------------------------------------------------


async def create_job(
    session: AsyncSession,
    *,
    actor: Actor,
    kind: str,
    params: Mapping[str, Any],
    now: datetime,
    dedupe_key: str | None = None,
) -> Job:
    """Queue a job of `kind`. With a `dedupe_key`, the job already queued under that key (by
    anyone, at any time) is returned instead of a new one."""
    require_staff(actor)
    checked = require_kind(kind).check(params).model_dump(mode="json", exclude_none=True)
    if dedupe_key is not None:
        existing = await session.scalar(select(Job).where(Job.dedupe_key == dedupe_key))
        if existing is not None:
            return existing
    job = Job(
        kind=kind, params=checked, status="queued", progress_done=0, created_by=actor.user_id,
        created_at=now, heartbeat_at=now, attempts=0, dedupe_key=dedupe_key,
    )  # fmt: skip
    try:
        async with session.begin_nested():
            session.add(job)
            await session.flush()
    except IntegrityError:
        if dedupe_key is None:
            raise
        # Queued by another process between our read and our insert: theirs is the one.
        existing = await session.scalar(select(Job).where(Job.dedupe_key == dedupe_key))
        if existing is None:
            raise
        return existing
    await audit.record(
        session, actor=actor, action="job.create", object_type="job", object_id=job.id,
        changes={"kind": kind, "params": checked}, now=now,
    )  # fmt: skip
    send_after_commit(session, job.id)
    return job


def period_key(kind: str, period: Literal["hour", "day"], now: datetime) -> str:
    return f"{kind}@{now:%Y-%m-%dT%H}" if period == "hour" else f"{kind}@{now:%Y-%m-%d}"


async def start_scheduled_job(
    session: AsyncSession, *, kind: str, period: Literal["hour", "day"], now: datetime
) -> Job:
    """The job of `kind` for the current period: queued once, however often beat asks."""
    return await create_job(
        session, actor=SYSTEM, kind=kind, params={}, now=now,
        dedupe_key=period_key(kind, period, now),
    )  # fmt: skip


async def require_job(session: AsyncSession, *, actor: Actor, job_id: int) -> Job:
    require_staff(actor)
    job = await session.get(Job, job_id)
    if job is None:
        raise JobNotFound(f"There is no job with id {job_id}.")
    return job


@dataclass(frozen=True, slots=True)
class JobFilters:
    kind: str | None = None
    status: str | None = None


async def list_jobs(
    session: AsyncSession, *, actor: Actor, filters: JobFilters, limit: int, before_id: int | None
) -> Sequence[Job]:
    """Jobs newest first, up to limit + 1 rows (the extra one tells that another page exists)."""
    require_staff(actor)
    query = select(Job).order_by(Job.id.desc()).limit(limit + 1)
    if before_id is not None:
        query = query.where(Job.id < before_id)
    if filters.kind:
        query = query.where(Job.kind == filters.kind)
    if filters.status:
        query = query.where(Job.status == filters.status)
    return (await session.scalars(query)).all()


async def retry_job(session: AsyncSession, *, actor: Actor, job_id: int, now: datetime) -> Job:
    """Queue a failed job again, from the start."""
    require_staff(actor)
    fresh = {
        "status": "queued", "error": None, "result": None, "progress_done": 0,
        "progress_total": None, "started_at": None, "finished_at": None, "attempts": 0,
        "heartbeat_at": now,
    }  # fmt: skip
    job = await session.scalar(
        update(Job)
        .where(Job.id == job_id, Job.status == "failed")
        .values(fresh)
        .returning(Job)
        .execution_options(populate_existing=True)
    )
    if job is None:
        current = await require_job(session, actor=actor, job_id=job_id)
        raise JobNotRetryable(f"Job {job_id} is {current.status}; only a failed job is retried.")
    await audit.record(
        session, actor=actor, action="job.retry", object_type="job", object_id=job.id, now=now
    )
    send_after_commit(session, job.id)
    return job


# --- uploads ------------------------------------------------------------------------------


async def start_marc_import(
    session: AsyncSession,
    *,
    actor: Actor,
    upload: BinaryIO,
    filename: str | None,
    items_branch: str | None,
    home: Path,
    max_bytes: int,
    now: datetime,
) -> Job:
    """Keep the upload as SHELFMARK_HOME/uploads/<job id>.mrc and queue its import.

    The file is in place before the transaction commits, hence before the job is sent.
    (Should the commit itself fail, the file stays behind, unreferenced.)
    """
    require_staff(actor)
    if items_branch:
        await catalog_service.require_branch_by_code(session, items_branch)
    directory = uploads_dir(home)
    directory.mkdir(parents=True, exist_ok=True)
    partial = directory / f".incoming-{uuid.uuid4().hex}"
    try:
        await asyncio.to_thread(_copy_limited, upload, partial, max_bytes)
        params = {"filename": filename and filename[-255:], "items_branch": items_branch}
        job = await create_job(session, actor=actor, kind=MARC_IMPORT.name, params=params, now=now)
        await asyncio.to_thread(partial.replace, directory / f"{job.id}.mrc")
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return job


def _copy_limited(source: BinaryIO, target: Path, max_bytes: int) -> None:
    size = 0
    with target.open("wb") as out:
        while chunk := source.read(1 << 20):
            size += len(chunk)
            if size > max_bytes:
                raise PayloadTooLarge(
                    f"The file is larger than the {max_bytes:,} bytes an upload may have."
                )
            out.write(chunk)
    if size == 0:
        raise InvalidInput("The file is empty.", errors=[{"field": "file", "message": "empty"}])


# --- the steps of a run (the runner calls these, each in its own transaction) -------------


async def start_run(session: AsyncSession, *, job_id: int, now: datetime) -> Job | None:
    """Mark the job running if it is queued; None if it is not (running or finished)."""
    return await session.scalar(
        update(Job)
        .where(Job.id == job_id, Job.status == "queued")
        .values(status="running", attempts=Job.attempts + 1, started_at=now, heartbeat_at=now)
        .returning(Job)
        .execution_options(populate_existing=True)
    )


async def actor_of_job(session: AsyncSession, job: Job) -> Actor:
    """A job acts as the user who started it, with the role they have now; SYSTEM's jobs
    (and those whose user is gone) as SYSTEM."""
    user = await session.get(User, job.created_by) if job.created_by is not None else None
    return auth_service.actor_of(user) if user is not None else SYSTEM


async def _move(
    session: AsyncSession, *, job_id: int, attempt: int, values: Mapping[str, Any]
) -> bool:
    """Update the running job if `attempt` is still its current run; False if not."""
    result = await session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == "running", Job.attempts == attempt)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def record_progress(
    session: AsyncSession, *, job_id: int, attempt: int, done: int, total: int | None,
    now: datetime,
) -> bool:  # fmt: skip
    values: dict[str, Any] = {"progress_done": done, "heartbeat_at": now}
    if total is not None:
        values["progress_total"] = total
    return await _move(session, job_id=job_id, attempt=attempt, values=values)


async def finish_run(
    session: AsyncSession, *, job_id: int, attempt: int, result: dict[str, Any],
    done: int, now: datetime,
) -> bool:  # fmt: skip
    values = {
        "status": "succeeded", "result": result, "error": None, "progress_done": done,
        "finished_at": now, "heartbeat_at": now,
    }  # fmt: skip
    return await _move(session, job_id=job_id, attempt=attempt, values=values)


async def fail_run(
    session: AsyncSession, *, job_id: int, attempt: int, error: str, now: datetime
) -> bool:
    values = {"status": "failed", "error": error, "finished_at": now, "heartbeat_at": now}
    return await _move(session, job_id=job_id, attempt=attempt, values=values)


async def release_run(
    session: AsyncSession, *, job_id: int, attempt: int, error: str, now: datetime
) -> bool:
    """Give the job back to the queue (a transient failure), noting why."""
    values = {"status": "queued", "error": error, "heartbeat_at": now}
    return await _move(session, job_id=job_id, attempt=attempt, values=values)


# --- recovery -----------------------------------------------------------------------------


async def recover_stalled(
    session: AsyncSession, *, now: datetime, stale_after: timedelta, max_attempts: int
) -> list[int]:
    """Send again the jobs that have been silent longer than `stale_after`.

    A running job that stopped reporting lost its worker (killed, or its machine gone): it is
    queued again, or failed once it has been started `max_attempts` times. A queued job that
    long unclaimed may have lost its message (the embedded broker keeps no unacknowledged
    messages across a worker's death): it is sent again. Sending twice is harmless, since
    only a queued job starts.
    """
    silent = Job.heartbeat_at < now - stale_after
    given_up = f"Its worker stopped while running it, {max_attempts} times: given up."
    await session.execute(
        update(Job)
        .where(Job.status == "running", silent, Job.attempts >= max_attempts)
        .values(status="failed", error=given_up, finished_at=now, heartbeat_at=now)
        .execution_options(synchronize_session=False)
    )
    requeued = "Its worker stopped while running it: queued again."
    orphaned = await session.scalars(
        update(Job)
        .where(Job.status == "running", silent)
        .values(status="queued", error=requeued, heartbeat_at=now)
        .returning(Job.id)
    )
    unclaimed = await session.scalars(
        update(Job).where(Job.status == "queued", silent).values(heartbeat_at=now).returning(Job.id)
    )
    job_ids = sorted({*orphaned.all(), *unclaimed.all()})
    for job_id in job_ids:
        send_after_commit(session, job_id)
    return job_ids
