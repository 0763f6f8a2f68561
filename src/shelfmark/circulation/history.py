"""Reading history, and the privacy of those who want none.

What a patron borrowed is theirs to keep or to let go. By default a returned loan forgets
its patron `loan_retention_days` after its return (the nightly `anonymise` job): the loan
stays, for the statistics, naming its copy and branch but no one. A patron who opts in
(`patrons.keep_reading_history`) keeps their closed loans as a reading history they can page
through; opting out again lets the next run forget them like everyone else's.

Fees keep their patron whatever happens to the loan: money owed is not history.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import joinedload

from shelfmark.audit import service as audit
from shelfmark.auth.roles import SYSTEM, Actor
from shelfmark.circulation.models import Loan
from shelfmark.errors import Forbidden
from shelfmark.patrons import service as patrons_service
from shelfmark.patrons.models import Patron

ANONYMISE_BATCH = 1000


def _forgettable(before: datetime) -> list[ColumnElement[bool]]:
    """Returned before `before`, still naming a patron who keeps no reading history."""
    keeps = select(Patron.id).where(Patron.keep_reading_history.is_(True))
    return [
        Loan.returned_at < before,
        Loan.patron_id.is_not(None),
        Loan.patron_id.not_in(keeps),
    ]


async def count_forgettable(session: AsyncSession, *, before: datetime) -> int:
    query = select(func.count()).select_from(Loan).where(*_forgettable(before))
    return (await session.scalar(query)) or 0


async def anonymise_loans(
    session: AsyncSession, *, before: datetime, now: datetime, actor: Actor = SYSTEM,
    limit: int = ANONYMISE_BATCH,
) -> int:  # fmt: skip
    """Make up to `limit` loans returned before `before` forget their patron; how many did.

    The UPDATE repeats the conditions of the SELECT, so that a patron who opts in while a run
    goes on keeps what the run has not reached yet. Batches keep each transaction short (the
    first run over years of loans would otherwise be one huge one).
    """
    ids = (
        await session.scalars(
            select(Loan.id).where(*_forgettable(before)).order_by(Loan.id).limit(limit)
        )
    ).all()
    if not ids:
        return 0
    result = await session.execute(
        update(Loan)
        .where(Loan.id.in_(ids), *_forgettable(before))
        .values(patron_id=None)
        .execution_options(synchronize_session=False)
    )
    count = int(result.rowcount)  # type: ignore[attr-defined]
    await audit.record(
        session, actor=actor, action="loan.anonymise", object_type="loan", object_id=None,
        changes={"loans": count, "returned_before": before}, now=now,
    )  # fmt: skip
    return count


@dataclass(frozen=True, slots=True)
class ReadingHistory:
    kept: bool  # the patron's choice; nothing is listed while it is off
    loans: Sequence[Loan]  # newest first, up to limit + 1 (the extra one: a next page)


async def reading_history(
    session: AsyncSession, *, actor: Actor, limit: int, before_id: int | None
) -> ReadingHistory:
    """The actor's own returned loans, newest first, if they keep a reading history.

    Only the patron sees it: it is theirs, not the library's (staff have the loans API).
    """
    if actor.patron_id is None:
        raise Forbidden("Only a patron has a reading history.")
    patron = await patrons_service.access_patron(session, actor=actor, patron_id=actor.patron_id)
    if not patron.keep_reading_history:
        return ReadingHistory(kept=False, loans=())
    query = (
        select(Loan)
        .options(joinedload(Loan.item, innerjoin=True), joinedload(Loan.branch, innerjoin=True))
        .where(Loan.patron_id == patron.id, Loan.returned_at.is_not(None))
        .order_by(Loan.id.desc())
        .limit(limit + 1)
    )
    if before_id is not None:
        query = query.where(Loan.id < before_id)
    return ReadingHistory(kept=True, loans=(await session.scalars(query)).unique().all())
