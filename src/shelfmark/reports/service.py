"""Reports: made by a `report` job into SHELFMARK_HOME/reports/<job id>.<csv|xlsx>, and
handed to staff from there.

The rows are streamed from the database (a server-side cursor) a batch at a time, each batch
written to the file in a thread, so that neither a long report nor a large one holds the
event loop or the memory. The file is written under a temporary name and moved into place
once whole: a download never sees half a report, and a job run again replaces its file.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from shelfmark.auth.roles import Actor, require_staff
from shelfmark.catalog import service as catalog_service
from shelfmark.jobs.errors import JobNotFound
from shelfmark.jobs.models import Job
from shelfmark.reports.errors import ReportFileNotFound, ReportNotReady
from shelfmark.reports.queries import REPORTS, Report, Scope
from shelfmark.reports.schemas import REPORT_KIND, ReportParams
from shelfmark.reports.writers import open_writer

REPORTS_DIR = "reports"
BATCH = 1000
MEDIA_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}


def report_path(home: Path, *, job_id: int, format: str) -> Path:
    return home / REPORTS_DIR / f"{job_id}.{format}"


async def build_report(session: AsyncSession, *, params: ReportParams, now: datetime) -> Report:
    branch_id = None
    if params.branch is not None:
        branch_id = (await catalog_service.require_branch_by_code(session, params.branch)).id
    return REPORTS[params.report](Scope(params=params, branch_id=branch_id, now=now))


async def count_rows(session: AsyncSession, report: Report) -> int:
    counted = select(func.count()).select_from(report.statement.subquery())
    return (await session.scalar(counted)) or 0


async def write_report(
    session: AsyncSession, *, report: Report, format: str, path: Path,
    on_rows: Callable[[int], Awaitable[None]],
) -> int:  # fmt: skip
    """Stream the report's rows into `path`; how many. `on_rows` hears the count so far."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".partial-{uuid.uuid4().hex}{path.suffix}")
    written = 0
    try:
        writer = open_writer(partial, format=format, columns=report.columns, title=report.title)
        result = await session.stream(report.statement)
        async for rows in result.partitions(BATCH):
            await asyncio.to_thread(writer.write, [report.shape(row) for row in rows])
            written += len(rows)
            await on_rows(written)
        await asyncio.to_thread(writer.close)
        await asyncio.to_thread(partial.replace, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return written


@dataclass(frozen=True, slots=True)
class ReportFile:
    path: Path
    media_type: str
    filename: str  # what the browser saves it as


async def access_report_file(
    session: AsyncSession, *, actor: Actor, job_id: int, home: Path
) -> ReportFile:
    """The file of a report job that has succeeded (staff)."""
    require_staff(actor)
    job = await session.get(Job, job_id)
    if job is None:
        raise JobNotFound(f"There is no job with id {job_id}.")
    if job.kind != REPORT_KIND:
        raise ReportFileNotFound(f"Job {job_id} is a {job.kind} job: it makes no file.")
    if job.status != "succeeded":
        raise ReportNotReady(
            f"Job {job_id} is {job.status}: its file is there once the job has succeeded."
        )
    format = str(job.params.get("format", "csv"))
    path = report_path(home, job_id=job_id, format=format)
    if format not in MEDIA_TYPES or not path.is_file():
        raise ReportFileNotFound(f"The file of job {job_id} is gone; run the report again.")
    name = f"{job.params.get('report', REPORT_KIND)}-{job_id}.{format}"
    return ReportFile(path=path, media_type=MEDIA_TYPES[format], filename=name)
