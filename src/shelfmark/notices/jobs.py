"""The notice job kinds: the daily overdue and due-soon runs, and the hourly hold-shelf
expiry (registered in `shelfmark.jobs.kinds`, started by beat: see `worker.SCHEDULED_JOBS`).

Each run first writes the notices of its day, a chunk of loans per transaction (progress:
loans read), then delivers every pending notice, its own and any left by earlier runs
(progress: notices handled of those pending). A run repeated the same day writes nothing
new, and a notice already sent is never sent again, so a run retried after a crash or an SMTP
outage finishes what the first one started. SMTP unreachable: the run raises a transient
error, for the job to be retried with backoff.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from shelfmark.catalog.schemas import Strict
from shelfmark.circulation import holds
from shelfmark.circulation.models import CirculationRule
from shelfmark.db import session_scope, utcnow
from shelfmark.jobs.context import JobContext
from shelfmark.notices import delivery, runs

ChunkWriter = Callable[..., Awaitable[runs.Chunk]]


class NoticeRunParams(Strict):
    """None: a run is for the day (or hour) it runs in."""


async def _deliver(ctx: JobContext) -> delivery.Delivery:
    return await delivery.deliver_pending(
        ctx.sessions, mark_maker=ctx.unreported_sessions, settings=ctx.settings,
        on_progress=ctx.progress,
    )  # fmt: skip


async def _write(ctx: JobContext, chunk_of: ChunkWriter, *, now: datetime) -> tuple[int, int]:
    """(loans read, notices written), a chunk per transaction."""
    async with session_scope(ctx.sessions) as session:
        rules: Sequence[CirculationRule] = await runs.read_rules(session)
    read = written = after_id = 0
    while True:
        async with session_scope(ctx.sessions) as session:
            chunk: runs.Chunk = await chunk_of(session, rules=rules, now=now, after_id=after_id)
            read, written, after_id = read + chunk.read, written + chunk.written, chunk.last_id
            ctx.progress(read)  # written when this transaction commits
        if chunk.read < runs.CHUNK:
            return read, written


async def _notice_run(ctx: JobContext, chunk_of: ChunkWriter) -> dict[str, Any]:
    now = utcnow()
    read, written = await _write(ctx, chunk_of, now=now)
    sent = await _deliver(ctx)
    return {"day": now.date().isoformat(), "loans_read": read, "written": written,
            **sent.as_dict()}  # fmt: skip


async def run_overdue_notices(ctx: JobContext, _params: NoticeRunParams) -> dict[str, Any]:
    return await _notice_run(ctx, runs.overdue_chunk)


async def run_due_soon_notices(ctx: JobContext, _params: NoticeRunParams) -> dict[str, Any]:
    return await _notice_run(ctx, runs.due_soon_chunk)


async def _expire(session: AsyncSession, now: datetime) -> int:
    return len(await holds.expire_holds(session, now=now))


async def run_hold_expiry(ctx: JobContext, _params: NoticeRunParams) -> dict[str, Any]:
    """Expire the holds left on the shelf past their `ready_until` (each copy passes to the
    next in line), writing their hold-expired notices; then deliver."""
    now = utcnow()
    async with session_scope(ctx.sessions) as session:
        expired = await _expire(session, now)
    sent = await _deliver(ctx)
    return {"expired": expired, **sent.as_dict()}
