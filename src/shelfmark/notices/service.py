"""Notices: the outbox, its state steps, and reading it.

- `announce` writes a notice in the transaction of what it announces (a hold made ready, a
  fee charged) and sends it for delivery once that transaction commits; `write_notices` is
  the same for the daily runs, many at a time. A notice whose (kind, object, day) exists is
  not written again: the unique `dedupe_key` decides, not a prior SELECT.
- A notice moves pending → sending (claimed by a delivery run) → sent, or to cancelled,
  skipped or failed, or back to pending, only through guarded UPDATEs: each names the state
  it leaves and, once claimed, the claim (`attempts`) it belongs to, so that a run whose claim
  was taken over can change nothing. `shelfmark.notices.delivery` drives them.
- Staff read every notice; a patron reads their own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import func, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from shelfmark.auth.roles import Actor
from shelfmark.db import after_commit
from shelfmark.errors import Forbidden
from shelfmark.notices.errors import NoticeNotFound
from shelfmark.notices.models import Notice, dedupe_key
from shelfmark.patrons import service as patrons_service
from shelfmark.patrons.models import Patron
from shelfmark.worker import DELIVER_NOTICES, celery_app

log = logging.getLogger(__name__)

# --- writing ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewNotice:
    kind: str
    patron_id: int
    object_id: int
    channel: str
    level: int | None = None
    due_at: datetime | None = None


def _row(notice: NewNotice, now: datetime) -> dict[str, Any]:
    return {
        "kind": notice.kind, "patron_id": notice.patron_id, "object_id": notice.object_id,
        "level": notice.level, "due_at": notice.due_at, "channel": notice.channel,
        "dedupe_key": dedupe_key(notice.kind, notice.object_id, now.date()),
        "status": "pending", "attempts": 0, "created_at": now,
    }  # fmt: skip


async def write_notices(
    session: AsyncSession, notices: Sequence[NewNotice], *, now: datetime
) -> list[int]:
    """Insert `notices` as pending, for the day of `now`, leaving out any whose (kind,
    object, day) already has one; the ids of those written."""
    if not notices:
        return []
    rows = [_row(n, now) for n in notices]
    connection = await session.connection()
    insert = postgresql_insert if connection.dialect.name == "postgresql" else sqlite_insert
    statement = (
        insert(Notice)
        .on_conflict_do_nothing(index_elements=[Notice.dedupe_key])
        .returning(Notice.id)
    )
    return list(await session.scalars(statement, rows))


async def announce(
    session: AsyncSession, *, kind: str, patron_id: int, object_id: int, now: datetime,
    due_at: datetime | None = None,
) -> None:  # fmt: skip
    """A notice of `kind` about `object_id`, written in the caller's transaction and sent
    for delivery once it commits (the daily and hourly runs send whatever is left)."""
    channel = await session.scalar(select(Patron.notice_channel).where(Patron.id == patron_id))
    new = NewNotice(kind, patron_id, object_id, channel or "none", due_at=due_at)
    written = await write_notices(session, [new], now=now)
    if written:
        after_commit(session, partial(_send, written))


async def _send(notice_ids: list[int]) -> None:
    # Publishing is blocking I/O (a socket, or the embedded broker's SQLite file).
    try:
        await asyncio.to_thread(celery_app.send_task, DELIVER_NOTICES, args=(notice_ids,))
    except Exception:
        # The notices are committed and stay pending: the next scheduled run sends them.
        log.warning("notices %s could not be sent to the broker", notice_ids, exc_info=True)


# --- the steps of a delivery (see shelfmark.notices.delivery) --------------------------------


async def reclaim_stale(session: AsyncSession, *, now: datetime, stale_after: timedelta) -> int:
    """Put back to pending the notices claimed by a run that has been silent too long (its
    worker died): a claimed notice was not handed over, or it would be marked sent."""
    result = await session.execute(
        update(Notice)
        .where(Notice.status == "sending", Notice.claimed_at < now - stale_after)
        .values(status="pending", reason="Its delivery run stopped: claimed again.")
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def claim(
    session: AsyncSession, *, now: datetime, after_id: int, limit: int,
    only_ids: Sequence[int] | None = None,
) -> list[tuple[int, int]]:  # fmt: skip
    """Claim up to `limit` pending notices with ids above `after_id`, oldest first: (id,
    attempt) each. Concurrent runs claim different notices (rows locked by another run are
    skipped on PostgreSQL; SQLite runs one writer at a time)."""
    pending = (
        select(Notice.id)
        .where(Notice.status == "pending", Notice.id > after_id)
        .order_by(Notice.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    if only_ids is not None:
        pending = pending.where(Notice.id.in_(only_ids))
    claimed = await session.execute(
        update(Notice)
        .where(Notice.id.in_(pending.scalar_subquery()))
        .values(status="sending", claimed_at=now, attempts=Notice.attempts + 1)
        .returning(Notice.id, Notice.attempts)
        .execution_options(synchronize_session=False)
    )
    return sorted((row.id, row.attempts) for row in claimed)


async def _move(
    session: AsyncSession, *, notice_id: int, attempt: int, status: str, values: dict[str, Any]
) -> bool:
    """Update the notice if it is in `status` under claim `attempt`; False if not.

    Run on the session's connection, as Core: this runs once per message sent, and the
    ORM's bulk-update layer (nothing to synchronise here) cost more than the statement."""
    connection = await session.connection()
    result = await connection.execute(
        update(Notice)
        .where(Notice.id == notice_id, Notice.status == status, Notice.attempts == attempt)
        .values(**values)
    )
    return bool(result.rowcount)


async def mark_sent(
    session: AsyncSession, *, claims: Sequence[tuple[int, int]], now: datetime
) -> set[int]:
    """Mark sent the notices of `claims` (id, attempt) still claimed so; the ids marked.
    One statement for several (see the group commit in `delivery`)."""
    connection = await session.connection()
    marked = await connection.execute(
        update(Notice)
        .where(Notice.status == "sending", tuple_(Notice.id, Notice.attempts).in_(claims))
        .values(status="sent", sent_at=now, last_error=None, reason=None)
        .returning(Notice.id)
    )
    return set(marked.scalars())


async def close(
    session: AsyncSession, *, notice_id: int, attempt: int, status: str, reason: str
) -> bool:
    """End a claimed notice unsent: cancelled (moot), skipped (not by e-mail) or failed."""
    values: dict[str, Any] = {"status": status, "reason": reason}
    if status == "failed":
        values["last_error"] = reason
    return await _move(
        session, notice_id=notice_id, attempt=attempt, status="sending", values=values
    )


async def release(
    session: AsyncSession, *, notice_id: int, attempt: int, error: str, permanent: bool,
    max_attempts: int, was_sent: bool = False,
) -> str | None:  # fmt: skip
    """A try failed: back to pending for the next run, or failed if the error is permanent or
    the tries are used up. `was_sent` undoes a `mark_sent` whose message the server then
    refused. The status it ends in; None if the claim was not this run's."""
    status = "failed" if permanent or attempt >= max_attempts else "pending"
    values: dict[str, Any] = {"status": status, "last_error": error, "sent_at": None}
    values["reason"] = (
        f"Failed after {attempt} tries." if status == "failed" and not permanent else None
    )
    moved = await _move(
        session, notice_id=notice_id, attempt=attempt, values=values,
        status="sent" if was_sent else "sending",
    )  # fmt: skip
    return status if moved else None


async def note_waiting(session: AsyncSession, *, reason: str) -> int:
    """Say on every pending notice why it waits (no SMTP server is set); how many wait."""
    await session.execute(
        update(Notice)
        .where(Notice.status == "pending", Notice.reason.is_distinct_from(reason))
        .values(reason=reason)
        .execution_options(synchronize_session=False)
    )
    return await count_pending(session)


async def count_pending(session: AsyncSession, *, only_ids: Sequence[int] | None = None) -> int:
    query = select(func.count()).select_from(Notice).where(Notice.status == "pending")
    if only_ids is not None:
        query = query.where(Notice.id.in_(only_ids))
    return int(await session.scalar(query) or 0)


# --- reads ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NoticeFilters:
    patron_card: str | None = None
    status: str | None = None
    kind: str | None = None


async def list_notices(
    session: AsyncSession, *, actor: Actor, filters: NoticeFilters, limit: int,
    before_id: int | None,
) -> Sequence[tuple[Notice, str]]:  # fmt: skip
    """(notice, patron card), newest first, up to limit + 1; a patron sees only their own."""
    query = (
        select(Notice, Patron.card_number)
        .join(Patron, Patron.id == Notice.patron_id)
        .order_by(Notice.id.desc())
        .limit(limit + 1)
    )
    if not actor.is_staff:
        if actor.patron_id is None:
            raise Forbidden("Only staff and patrons see notices.")
        query = query.where(Notice.patron_id == actor.patron_id)
    if filters.patron_card:
        query = query.where(Patron.card_number == filters.patron_card)
    if before_id is not None:
        query = query.where(Notice.id < before_id)
    if filters.status:
        query = query.where(Notice.status == filters.status)
    if filters.kind:
        query = query.where(Notice.kind == filters.kind)
    return [(notice, card) for notice, card in (await session.execute(query)).all()]


async def access_notice(
    session: AsyncSession, *, actor: Actor, notice_id: int
) -> tuple[Notice, str]:
    row = (
        await session.execute(
            select(Notice, Patron.card_number)
            .join(Patron, Patron.id == Notice.patron_id)
            .where(Notice.id == notice_id)
        )
    ).first()
    if row is None:
        raise NoticeNotFound(f"There is no notice with id {notice_id}.")
    notice, card = row
    patrons_service.check_patron_access(actor, notice.patron_id)
    return notice, card
