"""The `report` job kind (registered in `shelfmark.jobs.kinds`): a librarian asks for a report
with `POST /api/v1/jobs {"kind": "report", "params": {...}}` and downloads the file at
`GET /api/v1/jobs/{id}/download` once the job has succeeded."""

from __future__ import annotations

import time
from typing import Any

from shelfmark.db import session_scope, utcnow
from shelfmark.jobs.context import JobContext
from shelfmark.reports import service
from shelfmark.reports.schemas import ReportParams

# A long report writes its progress (the job's sign of life) this often, well within
# JOB_STALE_SECONDS. Its own transaction only reads, so writing beside it is harmless.
PROGRESS_EVERY = 10.0


async def run_report(ctx: JobContext, params: ReportParams) -> dict[str, Any]:
    path = service.report_path(ctx.settings.shelfmark_home, job_id=ctx.job_id, format=params.format)
    last = time.monotonic()

    async def on_rows(count: int) -> None:
        nonlocal last
        ctx.progress(count)
        if time.monotonic() - last >= PROGRESS_EVERY:
            last = time.monotonic()
            await ctx.flush()

    async with session_scope(ctx.unreported_sessions) as session:
        report = await service.build_report(session, params=params, now=utcnow())
        ctx.progress(0, await service.count_rows(session, report))
        await ctx.flush()
        rows = await service.write_report(
            session, report=report, format=params.format, path=path, on_rows=on_rows
        )
    return {
        "report": params.report, "title": report.title, "format": params.format, "rows": rows,
        "file": path.name, "bytes": path.stat().st_size,
    }  # fmt: skip
