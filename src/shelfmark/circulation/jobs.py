"""The nightly circulation job kinds: `anonymise` and `fee-accrual` (registered in
`shelfmark.jobs.kinds`, started by beat: see `worker.SCHEDULED_JOBS`).

Both work a batch per transaction, so that progress shows and a run stopped halfway is simply
finished by the next one: each batch does only what is still to do.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from shelfmark.catalog.schemas import Strict
from shelfmark.circulation import accrual, history
from shelfmark.db import session_scope, utcnow
from shelfmark.jobs.context import JobContext


class NightlyParams(Strict):
    """None: a run is for the moment it runs."""


async def run_anonymise(ctx: JobContext, _params: NightlyParams) -> dict[str, Any]:
    """Make the loans returned more than `loan_retention_days` ago forget their patron,
    except those of patrons who keep a reading history."""
    now = utcnow()
    before = now - timedelta(days=ctx.settings.loan_retention_days)
    async with session_scope(ctx.sessions) as session:
        ctx.progress(0, await history.count_forgettable(session, before=before))
    done = 0
    while True:
        async with session_scope(ctx.sessions) as session:
            count = await history.anonymise_loans(session, before=before, now=now, actor=ctx.actor)
            done += count
            ctx.progress(done)  # written when this transaction commits
        if count < history.ANONYMISE_BATCH:
            break
    return {
        "anonymised": done, "returned_before": before.isoformat(),
        "retention_days": ctx.settings.loan_retention_days,
    }  # fmt: skip


async def run_fee_accrual(ctx: JobContext, _params: NightlyParams) -> dict[str, Any]:
    """Bring every overdue loan's fine up to what it has come to today."""
    now = utcnow()
    async with session_scope(ctx.sessions) as session:
        ctx.progress(0, await accrual.count_overdue(session, now=now))
    seen = accrued = 0
    after_id: int | None = None
    while True:
        async with session_scope(ctx.sessions) as session:
            batch = await accrual.accrue_batch(session, now=now, after_id=after_id)
            seen, accrued, after_id = seen + batch.seen, accrued + batch.accrued, batch.last_id
            ctx.progress(seen)
        if batch.last_id is None or batch.seen < accrual.ACCRUAL_BATCH:
            break
    return {"day": now.date().isoformat(), "overdue_loans": seen, "fines_accrued": accrued}
