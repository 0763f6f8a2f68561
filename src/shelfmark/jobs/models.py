"""The jobs table: long work started from the API or by beat, run by a Celery worker.

A job row is the truth about its work, whatever the broker does with the message: the
status moves queued → running → succeeded | failed only through guarded UPDATEs (see
`service`), so that a message delivered twice starts the work once.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from shelfmark.db import Base, BigId, JSONType, UTCDateTime

JOB_STATUSES = ("queued", "running", "succeeded", "failed")
FINISHED_STATUSES = ("succeeded", "failed")


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint(
            "status IN (" + ", ".join(f"'{s}'" for s in JOB_STATUSES) + ")", name="status"
        ),
        Index(None, "kind", "id"),
        Index(None, "status", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    progress_done: Mapped[int] = mapped_column(Integer, default=0)
    progress_total: Mapped[int | None] = mapped_column(Integer)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    error: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The last sign of life: set when the job is sent to the broker and each time a running
    # job reports progress. The recovery sweep sends again what has been silent too long.
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Times the job was started; also the fencing token of the current run, so that a run
    # presumed dead cannot write over the one that replaced it.
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # One job per key (e.g. "overdue-notices@2026-11-24"), whoever asks and however often.
    dedupe_key: Mapped[str | None] = mapped_column(String(200), unique=True)
