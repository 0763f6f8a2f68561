"""Celery tasks of the jobs domain: thin — take ids, run the service on the process's loop."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

from celery import Task

from shelfmark.db import session_scope, utcnow
from shelfmark.jobs import runner, service
from shelfmark.worker import (
    MAX_RETRIES,
    RECOVER_JOBS,
    RETRY_BACKOFF,
    RETRY_BACKOFF_MAX,
    RUN_JOB,
    START_SCHEDULED_JOB,
    TRANSIENT_ERRORS,
    celery_app,
    run,
    runtime,
)


@celery_app.task(
    name=RUN_JOB, bind=True, autoretry_for=TRANSIENT_ERRORS, retry_backoff=RETRY_BACKOFF,
    retry_backoff_max=RETRY_BACKOFF_MAX, retry_jitter=True, max_retries=MAX_RETRIES,
)  # fmt: skip
def run_job(self: Task[Any, Any], job_id: int) -> str:
    current = runtime()
    last_try = self.request.retries >= MAX_RETRIES
    return run(
        runner.execute_job(
            current.sessionmaker, job_id, settings=current.settings, last_try=last_try
        )
    )


async def _recover() -> list[int]:
    current = runtime()
    async with session_scope(current.sessionmaker) as session:
        return await service.recover_stalled(
            session, now=utcnow(),
            stale_after=timedelta(seconds=current.settings.job_stale_seconds),
            max_attempts=current.settings.job_max_attempts,
        )  # fmt: skip


@celery_app.task(name=RECOVER_JOBS)
def recover_jobs() -> list[int]:
    return run(_recover())


async def _start_scheduled(kind: str, period: Literal["hour", "day"]) -> int:
    async with session_scope(runtime().sessionmaker) as session:
        job = await service.start_scheduled_job(session, kind=kind, period=period, now=utcnow())
        return job.id


@celery_app.task(name=START_SCHEDULED_JOB)
def start_scheduled_job(kind: str, period: Literal["hour", "day"]) -> int:
    return run(_start_scheduled(kind, period))
