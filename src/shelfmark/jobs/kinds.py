"""The kinds of job there are: what parameters each takes and the code that runs it.

A kind's code gets a `JobContext` and its checked parameters, does its work through the
context's sessions (one transaction or many) and returns the result to keep on the job.
Whatever it raises fails the job with that error; a `ShelfmarkError` shows its `detail`.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Generic, TypeVar

from pydantic import BaseModel, Field, ValidationError

from shelfmark.catalog.schemas import Code, Strict
from shelfmark.circulation import jobs as circulation_jobs
from shelfmark.errors import InvalidInput
from shelfmark.interop.marc_import import ImportSummary, import_file
from shelfmark.interop.marc_read import MarcFileError
from shelfmark.jobs.context import JobContext
from shelfmark.jobs.errors import UnknownJobKind, UnreadableMarc, UploadNotFound
from shelfmark.notices import jobs as notice_jobs
from shelfmark.reports import jobs as report_jobs
from shelfmark.reports.schemas import REPORT_KIND, ReportParams

P = TypeVar("P", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class JobKind(Generic[P]):
    name: str
    params: type[P]
    run: Callable[[JobContext, P], Awaitable[dict[str, Any]]]

    def check(self, params: Mapping[str, Any]) -> P:
        try:
            return self.params.model_validate(dict(params))
        except ValidationError as exc:
            errors = [
                {"field": ".".join(["params", *map(str, e["loc"])]), "message": e["msg"]}
                for e in exc.errors()
            ]
            raise InvalidInput(
                f"The parameters do not suit a {self.name} job.", errors=errors
            ) from exc


# --- marc-import ------------------------------------------------------------------------

UPLOADS = "uploads"
KEPT_PROBLEMS = 1000  # per list: a file of broken records must not make a huge job row
_XML_RECORD_END = re.compile(rb"</(?:[A-Za-z_][\w.-]{0,40}:)?record\s{0,8}>")
_CARRY = 64  # longer than any closing tag the pattern matches
_CHUNK = 1 << 20


def uploads_dir(home: Path) -> Path:
    return home / UPLOADS


class MarcImportParams(Strict):
    file: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,100}\.mrc$")] | None = Field(
        default=None,
        description="An upload to import (again), such as `12.mrc`, from SHELFMARK_HOME/uploads; "
        "by default the job's own, which `POST /api/v1/imports/marc` put there",
    )
    filename: Annotated[str, Field(max_length=255)] | None = Field(
        default=None, description="The name the file had where it came from"
    )
    items_branch: Code | None = Field(
        default=None, description="Branch code: one copy per record that lists none"
    )


def count_records(path: Path) -> int:
    """Records in a MARC file, to show progress against: a scan, cheap next to parsing."""
    with path.open("rb") as stream:
        head = stream.read(_CHUNK)
        if not head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<"):
            count = head.count(b"\x1d")
            while chunk := stream.read(_CHUNK):
                count += chunk.count(b"\x1d")
            return count
        # MARCXML: count closing tags, carrying the end of each chunk into the next so that
        # a tag cut in two is counted once (only matches that end in the new bytes count).
        count, carry, chunk = 0, b"", head
        while chunk:
            text = carry + chunk
            count += sum(1 for m in _XML_RECORD_END.finditer(text) if m.end() > len(carry))
            carry = text[-_CARRY:]
            chunk = stream.read(_CHUNK)
        return count


def import_result(summary: ImportSummary, *, file: str) -> dict[str, Any]:
    return {
        "file": file,
        "read": summary.read,
        "created": summary.created,
        "updated": summary.updated,
        "unchanged": summary.unchanged,
        "items_created": summary.items_created,
        "error_count": len(summary.errors),
        "errors": summary.errors[:KEPT_PROBLEMS],
        "warning_count": len(summary.warnings),
        "warnings": summary.warnings[:KEPT_PROBLEMS],
    }


async def run_marc_import(ctx: JobContext, params: MarcImportParams) -> dict[str, Any]:
    path = uploads_dir(ctx.settings.shelfmark_home) / (params.file or f"{ctx.job_id}.mrc")
    name = params.filename or path.name
    if not path.is_file():
        raise UploadNotFound(f"There is no upload {path.name} to import in {path.parent}.")
    total = await asyncio.to_thread(count_records, path)
    ctx.progress(0, total)
    try:
        summary = await import_file(
            ctx.sessions, path, actor=ctx.actor, items_branch=params.items_branch,
            on_progress=lambda s: ctx.progress(s.read), expected=total,
        )  # fmt: skip
    except MarcFileError as exc:
        raise UnreadableMarc(f"{name}: {exc}") from exc
    return import_result(summary, file=name)


MARC_IMPORT: JobKind[MarcImportParams] = JobKind("marc-import", MarcImportParams, run_marc_import)

# --- notices (shelfmark.notices.jobs) ---------------------------------------------------

NoticeRun = notice_jobs.NoticeRunParams
OVERDUE_NOTICES = JobKind("overdue-notices", NoticeRun, notice_jobs.run_overdue_notices)
DUE_SOON_NOTICES = JobKind("due-soon-notices", NoticeRun, notice_jobs.run_due_soon_notices)
HOLD_EXPIRY = JobKind("hold-expiry", NoticeRun, notice_jobs.run_hold_expiry)

# --- reports (shelfmark.reports.jobs); anonymise, fee-accrual (shelfmark.circulation.jobs) --

REPORT = JobKind(REPORT_KIND, ReportParams, report_jobs.run_report)
Nightly = circulation_jobs.NightlyParams
ANONYMISE = JobKind("anonymise", Nightly, circulation_jobs.run_anonymise)
FEE_ACCRUAL = JobKind("fee-accrual", Nightly, circulation_jobs.run_fee_accrual)

# --- the registry -----------------------------------------------------------------------

KINDS: dict[str, JobKind[Any]] = {
    kind.name: kind
    for kind in (
        MARC_IMPORT, OVERDUE_NOTICES, DUE_SOON_NOTICES, HOLD_EXPIRY, REPORT, ANONYMISE,
        FEE_ACCRUAL,
    )
}  # fmt: skip


def require_kind(name: str) -> JobKind[Any]:
    kind = KINDS.get(name)
    if kind is None:
        known = ", ".join(sorted(KINDS))
        raise UnknownJobKind(
            f"There is no job kind {name!r}; the kinds are: {known}.",
            errors=[{"field": "kind", "message": f"one of: {known}"}],
        )
    return kind
