"""Job routes, and the MARC upload that starts an import job: HTTP in, one service call out.

Starting work answers 202 Accepted with the job; its status, progress and result are then at
`GET /api/v1/jobs/{id}`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Query, UploadFile, status
from fastapi.responses import FileResponse

from shelfmark.catalog.schemas import Code
from shelfmark.db import utcnow
from shelfmark.deps import ActorDep, SessionDep, SettingsDep
from shelfmark.deps import PathId as Id
from shelfmark.jobs import service
from shelfmark.jobs.models import Job
from shelfmark.jobs.schemas import (
    JobCreate,
    JobProgress,
    JobRead,
    JobStatus,
    KindName,
    MarcImportAccepted,
)
from shelfmark.pagination import (
    Page,
    PageDep,
    decode_int_cursor,
    next_cursor_of,
)
from shelfmark.reports import service as reports_service

router = APIRouter(tags=["jobs"])


def job_read(job: Job) -> JobRead:
    return JobRead(
        id=job.id, kind=job.kind, params=job.params, status=job.status,
        progress=JobProgress(done=job.progress_done, total=job.progress_total),
        result=job.result, error=job.error, attempts=job.attempts, created_by=job.created_by,
        created_at=job.created_at, started_at=job.started_at, finished_at=job.finished_at,
    )  # fmt: skip


@router.post("/jobs", response_model=JobRead, status_code=status.HTTP_202_ACCEPTED)
async def create_job(session: SessionDep, actor: ActorDep, data: JobCreate) -> JobRead:
    """Queue a job (librarian). It runs in a worker once this request has committed."""
    job = await service.create_job(
        session, actor=actor, kind=data.kind, params=data.params, now=utcnow()
    )
    return job_read(job)


@router.get("/jobs", response_model=Page[JobRead])
async def list_jobs(
    session: SessionDep,
    actor: ActorDep,
    page: PageDep,
    kind: Annotated[KindName | None, Query()] = None,
    status: Annotated[JobStatus | None, Query()] = None,
) -> Page[JobRead]:
    """Jobs, newest first."""
    rows = await service.list_jobs(
        session, actor=actor, filters=service.JobFilters(kind=kind, status=status),
        limit=page.limit, before_id=decode_int_cursor(page.cursor),
    )  # fmt: skip
    return Page(
        items=[job_read(r) for r in rows[: page.limit]],
        next_cursor=next_cursor_of(rows, page.limit),
    )


@router.get("/jobs/{job_id}", response_model=JobRead)
async def get_job(session: SessionDep, actor: ActorDep, job_id: Id) -> JobRead:
    return job_read(await service.require_job(session, actor=actor, job_id=job_id))


@router.get(
    "/jobs/{job_id}/download",
    response_class=FileResponse,
    responses={
        200: {
            "description": "The report, as an attachment",
            "content": {media: {} for media in reports_service.MEDIA_TYPES.values()},
        },
        404: {"description": "No such job, or no file for it (not a report, or deleted)"},
        409: {"description": "The report job has not succeeded (yet)"},
    },
)
async def download_job_file(
    session: SessionDep, actor: ActorDep, settings: SettingsDep, job_id: Id
) -> FileResponse:
    """The file a report job made (librarian): CSV or XLSX, once the job has succeeded."""
    file = await reports_service.access_report_file(
        session, actor=actor, job_id=job_id, home=settings.shelfmark_home
    )
    return FileResponse(file.path, media_type=file.media_type, filename=file.filename)


@router.post("/jobs/{job_id}/retry", response_model=JobRead, status_code=status.HTTP_202_ACCEPTED)
async def retry_job(session: SessionDep, actor: ActorDep, job_id: Id) -> JobRead:
    """Run a failed job again, from the start (409 for a job that has not failed)."""
    return job_read(await service.retry_job(session, actor=actor, job_id=job_id, now=utcnow()))


@router.post(
    "/imports/marc",
    response_model=MarcImportAccepted,
    status_code=status.HTTP_202_ACCEPTED,
    tags=["marc"],
    responses={413: {"description": "The file is larger than UPLOAD_MAX_BYTES"}},
    openapi_extra={
        "requestBody": {
            "content": {
                "multipart/form-data": {
                    "example": {"file": "(a .mrc or MARCXML file)", "items_branch": "MAIN"}
                }
            }
        }
    },
)
async def import_marc(
    session: SessionDep,
    actor: ActorDep,
    settings: SettingsDep,
    file: Annotated[UploadFile, File(description="Binary MARC21 (UTF-8 or MARC-8) or MARCXML")],
    items_branch: Annotated[
        Code | None, Form(description="Branch code: one copy per record that lists none")
    ] = None,
) -> MarcImportAccepted:
    """Upload a MARC file to import (librarian): re-importing updates, never duplicates."""
    job = await service.start_marc_import(
        session, actor=actor, upload=file.file, filename=file.filename,
        items_branch=items_branch, home=settings.shelfmark_home,
        max_bytes=settings.upload_max_bytes, now=utcnow(),
    )  # fmt: skip
    return MarcImportAccepted(job_id=job.id, **job_read(job).model_dump())
