"""What a running job's code is given: sessions, the acting user, settings, and progress."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shelfmark.auth.roles import Actor
from shelfmark.db import after_commit
from shelfmark.settings import Settings


class _ReportingSessionmaker(async_sessionmaker[AsyncSession]):
    """Sessions that write the job's progress once their transaction has committed."""

    def __init__(
        self, base: async_sessionmaker[AsyncSession], report: Callable[[], Awaitable[None]]
    ) -> None:
        super().__init__(class_=base.class_, **base.kw)
        self._report = report

    def __call__(self, **local_kw: Any) -> AsyncSession:
        session = super().__call__(**local_kw)
        after_commit(session, self._report)
        return session


class JobContext:
    """A job's view of its run.

    `progress()` only notes the count; it is written (with the job's heartbeat) after each
    transaction that the job commits through `sessions`, in the same flow as the job's work.
    Writing it from beside the work would break the work's own transactions on SQLite, where
    a transaction that has read cannot start writing once another connection has committed.
    A job must therefore commit, or report, more often than `JOB_STALE_SECONDS`, or the
    recovery sweep will take it for dead.
    """

    def __init__(
        self,
        *,
        job_id: int,
        attempt: int,
        actor: Actor,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        write_progress: Callable[[int, int | None], Awaitable[None]],
    ) -> None:
        self.job_id = job_id
        self.attempt = attempt
        self.actor = actor
        self.settings = settings
        self.done = 0
        self.total: int | None = None
        self._write_progress = write_progress
        self.sessions: async_sessionmaker[AsyncSession] = _ReportingSessionmaker(
            sessions, self.flush
        )
        # For work that commits far more often than progress needs writing (notices are
        # marked sent one transaction each): its commits write nothing more.
        self.unreported_sessions = sessions

    def progress(self, done: int, total: int | None = None) -> None:
        self.done = done
        if total is not None:
            self.total = total

    async def flush(self) -> None:
        """Write the progress now (also the job's sign of life)."""
        await self._write_progress(self.done, self.total)
