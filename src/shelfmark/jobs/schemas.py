from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shelfmark.catalog.schemas import Strict

JobStatus = Literal["queued", "running", "succeeded", "failed"]
KindName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9-]*$")]


class JobCreate(Strict):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"kind": "marc-import", "params": {"file": "12.mrc"}},
                {
                    "kind": "report",
                    "params": {
                        "report": "loans-per-branch-day",
                        "format": "xlsx",
                        "from_date": "2026-01-01",
                        "to_date": "2026-03-31",
                    },
                },
            ],
        }
    )

    kind: KindName = Field(
        description="What to run: `marc-import`, `report` (its file at "
        "`GET /api/v1/jobs/{id}/download`), the scheduled `overdue-notices`, "
        "`due-soon-notices`, `hold-expiry`, `fee-accrual`, `anonymise`"
    )
    params: dict[str, Any] = Field(default_factory=dict, description="As the kind needs")


class JobProgress(BaseModel):
    done: int
    total: int | None = Field(description="Null while unknown")


class JobRead(BaseModel):
    id: int
    kind: str
    params: dict[str, Any]
    status: JobStatus
    progress: JobProgress
    result: dict[str, Any] | None = Field(description="What the job made, once it succeeded")
    error: str | None = Field(description="Why it failed (or why it is being retried)")
    attempts: int
    created_by: int | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class MarcImportAccepted(JobRead):
    """The import job: follow it at `GET /api/v1/jobs/{job_id}`."""

    job_id: int
