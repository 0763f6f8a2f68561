"""Delivering pending notices by e-mail: each one exactly once, as far as SMTP allows.

A delivery run
1. puts back to pending the notices claimed by a run that fell silent (its worker died)
   more than `NOTICE_CLAIM_SECONDS` ago;
2. claims a batch of pending notices, oldest first (one transaction: `sending`, attempts + 1)
   and, in that transaction, reads what each is about as it is now. A notice whose loan was
   returned, renewed or declared lost, whose hold was collected, cancelled or requeued, or
   whose fee was paid or waived is cancelled; one for a patron who takes notices by another
   channel, or has no e-mail address, is skipped; each with the reason;
3. hands the others to the SMTP server one by one over one connection, each marked sent in a
   transaction of its own, committed just before the message's final line (see
   `shelfmark.notices.mail.Mailer.transmit`);
4. goes on to the next batch until no pending notice is left; a run tries each notice once.

What this guarantees, and where SMTP leaves a doubt:
- A worker that dies before a notice's commit leaves it `sending`: the server never received
  the message's final line, so it discarded the message, and the next run sends it. Nothing
  lost, nothing doubled.
- A worker that dies after the commit leaves it `sent`, and the server has the message: its
  body had left the process before the commit, and its final line is written by the very next
  call. The one death this cannot cover falls in the microseconds between the commit returning
  and that write: the notice is then marked sent but was not delivered. No death doubles one.
- A server that answers the final line with a refusal has the commit undone by the living
  worker (5xx: failed; 4xx: pending again). A connection lost after the final line and before
  the reply is SMTP's own doubt (RFC 5321 §4.1.1.4, RFC 1047): the server may have taken the
  message, and the notice goes back to pending, so this is the one case that may deliver a
  notice twice. Every try of a notice carries the same Message-ID, `<notice-ID@domain>`, so
  that the receiving side can tell a retransmission (RFC 5322 §3.6.4).
- Runs side by side (a kick after a checkin, a scheduled run, several workers) claim different
  notices. A run whose claim expired and was taken over has its commit refused (the claim is
  fenced by `attempts`), cuts its unfinished message off, and moves on.
- "Moot" is judged when a batch is claimed: a loan returned after that and before its notice
  goes out (a fraction of a second at the rates of bench/notices.py) is not seen.
- No SMTP server (SMTP_URL unset): nothing is claimed; pending notices say why they wait.
  SMTP down: the batch in hand goes back to pending with the error, its tries counted, and the
  run raises for its task or job to retry with backoff; a notice out of tries is failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any, TypeVar

from aiosmtplib import SMTPResponseException
from jinja2 import TemplateError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shelfmark.catalog.models import Bib, Branch, Item
from shelfmark.circulation.models import Fee, Hold, Loan
from shelfmark.db import session_scope, utcnow
from shelfmark.notices import service
from shelfmark.notices.errors import InvalidNoticeTemplate
from shelfmark.notices.mail import Mailer, compose, is_permanent, parse_smtp_url, sender_address
from shelfmark.notices.models import OBJECT_TYPES, Notice, NoticeTemplate
from shelfmark.notices.rendering import Renderer, TemplateText
from shelfmark.patrons.models import Patron
from shelfmark.settings import Settings

log = logging.getLogger(__name__)

BATCH = 100
NO_SMTP = "SMTP_URL is not set: the notice waits until it is."
CONNECTION_ERRORS = (ConnectionError, TimeoutError, OSError)

T = TypeVar("T")
Clock = Callable[[], datetime]
Progress = Callable[[int, int], None]


@dataclass
class Delivery:
    """What a run did: how many notices it sent, cancelled, skipped, failed, and put back
    to pending for a later run (`retrying`); how many are left pending; and why, if it
    stopped early."""

    sent: int = 0
    cancelled: int = 0
    skipped: int = 0
    failed: int = 0
    retrying: int = 0
    pending: int = 0
    note: str | None = None

    @property
    def done(self) -> int:
        return self.sent + self.cancelled + self.skipped + self.failed + self.retrying

    def as_dict(self) -> dict[str, Any]:
        return {
            "sent": self.sent, "cancelled": self.cancelled, "skipped": self.skipped,
            "failed": self.failed, "retrying": self.retrying, "pending": self.pending,
            "note": self.note,
        }  # fmt: skip


@dataclass
class _Letter:
    """A claimed notice on its way: who to, and what to say."""

    notice_id: int
    attempt: int
    kind: str
    address: str | None
    name: str
    language: str | None
    created_at: datetime
    context: dict[str, Any]
    message: bytes = b""
    committed: bool = False


@dataclass
class _Batch:
    letters: list[_Letter] = field(default_factory=list)
    closed: dict[str, int] = field(default_factory=dict)  # status -> count
    last_id: int = 0


# --- what a notice is about, now ------------------------------------------------------------


def _loan_problem(notice: Any, loan: Any, now: datetime) -> str | None:
    if loan is None:
        return "The loan no longer exists."
    if loan.returned_at is not None:
        return "The loan was returned before the notice went out."
    if loan.lost_at is not None:
        return "The item was declared lost before the notice went out."
    if notice.due_at is not None and loan.due_at != notice.due_at:
        return "The loan was renewed before the notice went out."
    if notice.kind == "due-soon" and loan.due_at < now:
        return "The loan fell overdue before the due-soon notice went out."
    return None


def _moot(notice: Any, subject: Any, now: datetime) -> str | None:
    """Why the notice no longer needs sending, or None."""
    kind = notice.kind
    if kind in {"due-soon", "overdue"}:
        return _loan_problem(notice, subject, now)
    if kind in {"hold-ready", "hold-expired"}:
        wanted = "ready" if kind == "hold-ready" else "expired"
        if subject is None:
            return "The hold no longer exists."
        if subject.status != wanted:
            return f"The hold is {subject.status.replace('_', ' ')} now."
        return None
    if subject is None:
        return "The fee no longer exists."
    if subject.status != "open":
        return f"The fee was {subject.status} before the notice went out."
    return None


def _unreachable(patron: Any) -> str | None:
    """Why the patron cannot get the notice by e-mail, or None."""
    if patron.notice_channel == "none":
        return "The patron asked for no notices."
    if patron.notice_channel != "email":
        return f"The patron takes notices by {patron.notice_channel}, not e-mail."
    if not patron.email:
        return "The patron has no e-mail address."
    return None


def _context(notice: Any, subject: Any, today: Any) -> dict[str, Any]:
    context: dict[str, Any] = {
        "kind": notice.kind,
        "patron": {"name": notice.name, "card_number": notice.card_number},
        "library": {"name": notice.home_branch},
        "notice": {"id": notice.id, "level": notice.level},
    }
    if notice.kind in {"due-soon", "overdue"}:
        due = subject.due_at.date()
        context["library"] = {"name": subject.branch}
        context["loan"] = {
            "title": subject.title, "barcode": subject.barcode, "due_date": due,
            "days_left": (due - today).days, "days_overdue": (today - due).days,
        }  # fmt: skip
    elif notice.kind in {"hold-ready", "hold-expired"}:
        context["library"] = {"name": subject.pickup_branch}
        context["hold"] = {
            "title": subject.title, "pickup_branch": subject.pickup_branch,
            "ready_until": subject.ready_until,
        }  # fmt: skip
    else:
        context["fee"] = {
            "amount": subject.amount, "kind": subject.kind, "description": subject.description,
            "title": subject.title,
        }  # fmt: skip
    return context


async def _subjects(session: AsyncSession, notices: Sequence[Any]) -> dict[tuple[str, int], Any]:
    """The loans, holds and fees the notices are about, as they are now: one query each."""
    ids: dict[str, set[int]] = {"loan": set(), "hold": set(), "fee": set()}
    for notice in notices:
        ids[OBJECT_TYPES[notice.kind]].add(notice.object_id)
    found: dict[tuple[str, int], Any] = {}
    if ids["loan"]:
        loans = (
            select(
                Loan.id, Loan.due_at, Loan.returned_at, Loan.lost_at, Item.barcode, Bib.title,
                Branch.name.label("branch"),
            )
            .join(Item, Item.id == Loan.item_id)
            .join(Bib, Bib.id == Item.bib_id)
            .join(Branch, Branch.id == Loan.branch_id)
            .where(Loan.id.in_(ids["loan"]))
        )  # fmt: skip
        found |= {("loan", row.id): row for row in await session.execute(loans)}
    if ids["hold"]:
        holds = (
            select(
                Hold.id, Hold.status, Hold.ready_until, Bib.title,
                Branch.name.label("pickup_branch"),
            )
            .join(Bib, Bib.id == Hold.bib_id)
            .join(Branch, Branch.id == Hold.pickup_branch_id)
            .where(Hold.id.in_(ids["hold"]))
        )  # fmt: skip
        found |= {("hold", row.id): row for row in await session.execute(holds)}
    if ids["fee"]:
        fees = (
            select(Fee.id, Fee.status, Fee.amount, Fee.kind, Fee.description, Bib.title)
            .outerjoin(Item, Item.id == Fee.item_id)
            .outerjoin(Bib, Bib.id == Item.bib_id)
            .where(Fee.id.in_(ids["fee"]))
        )
        found |= {("fee", row.id): row for row in await session.execute(fees)}
    return found


async def _claim_batch(
    session: AsyncSession, *, now: datetime, after_id: int,
    only_ids: Sequence[int] | None,
) -> _Batch:  # fmt: skip
    """Claim the next batch and sort it: moot notices cancelled, unreachable patrons
    skipped, the rest to send."""
    batch = _Batch(last_id=after_id)
    claimed = dict(
        await service.claim(session, now=now, after_id=after_id, limit=BATCH, only_ids=only_ids)
    )
    if not claimed:
        return batch
    batch.last_id = max(claimed)
    query = (
        select(
            Notice.id, Notice.kind, Notice.object_id, Notice.level, Notice.due_at,
            Notice.created_at, Patron.name, Patron.card_number, Patron.email,
            Patron.notice_channel, Patron.language, Branch.name.label("home_branch"),
        )
        .join(Patron, Patron.id == Notice.patron_id)
        .join(Branch, Branch.id == Patron.home_branch_id)
        .where(Notice.id.in_(claimed))
        .order_by(Notice.id)
    )  # fmt: skip
    notices = (await session.execute(query)).all()
    subjects = await _subjects(session, notices)
    for notice in notices:
        attempt = claimed[notice.id]
        subject = subjects.get((OBJECT_TYPES[notice.kind], notice.object_id))
        status, reason = "cancelled", _moot(notice, subject, now)
        if reason is None:
            status, reason = "skipped", _unreachable(notice)
        if reason is not None:
            await service.close(
                session, notice_id=notice.id, attempt=attempt, status=status, reason=reason
            )
            batch.closed[status] = batch.closed.get(status, 0) + 1
            continue
        batch.letters.append(
            _Letter(
                notice_id=notice.id, attempt=attempt, kind=notice.kind, address=notice.email,
                name=notice.name, language=notice.language, created_at=notice.created_at,
                context=_context(notice, subject, now.date()),
            )
        )  # fmt: skip
    return batch


async def _overrides(session: AsyncSession) -> dict[tuple[str, str], TemplateText]:
    rows = await session.scalars(select(NoticeTemplate))
    return {
        (row.kind, row.language): TemplateText(row.subject, row.text_body, row.html_body)
        for row in rows
    }


# --- the run ------------------------------------------------------------------------------


class _GroupCommit:
    """Marks notices sent for every lane, as many in one transaction as are waiting.

    A lane waits here between a message's body and its final line. Committing each mark on
    its own cost more than the SMTP conversation (bench/notices.py), so the committer takes
    every mark waiting, commits them in one statement, and wakes their lanes, which write
    their final lines at once: each notice is still marked before its final line is written,
    and the gap after the commit stays a matter of microseconds. The committer is a task of
    its own, so that a lane never waits for a commit other than its own group's.
    """

    def __init__(self, session: AsyncSession, clock: Clock) -> None:
        self._session = session
        self._clock = clock
        self._waiting: list[tuple[_Letter, asyncio.Future[bool]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._commit_forever())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def mark(self, letter: _Letter) -> bool:
        """Wait for `letter` to be marked sent: False if another run holds its claim."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting.append((letter, future))
        self._wake.set()
        letter.committed = await future
        return letter.committed

    async def _commit_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            group, self._waiting = self._waiting, []
            if not group:
                continue
            claims = [(letter.notice_id, letter.attempt) for letter, _ in group]
            try:
                marked = await service.mark_sent(self._session, claims=claims, now=self._clock())
                await self._session.commit()
            except BaseException as exc:
                await self._session.rollback()
                for _, future in group:
                    if not future.done():
                        future.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
                continue
            for letter, future in group:
                if not future.done():
                    future.set_result(letter.notice_id in marked)


@dataclass
class _Lane:
    """One SMTP connection and the session that marks its notices sent: a run sends over
    `NOTICE_CONNECTIONS` lanes at once, so that one lane's round trips (to the SMTP server,
    to the database) overlap the others'."""

    mailer: Mailer
    marks: AsyncSession


class _Run:
    def __init__(
        self, maker: async_sessionmaker[AsyncSession],
        mark_maker: async_sessionmaker[AsyncSession], *, settings: Settings, clock: Clock,
        on_progress: Progress | None,
    ) -> None:  # fmt: skip
        self.maker = maker
        self.mark_maker = mark_maker
        self.settings = settings
        self.clock = clock
        self.on_progress = on_progress
        self.summary = Delivery()
        self.total = 0
        self._group: _GroupCommit

    def _progress(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self.summary.done, max(self.total, self.summary.done))

    @staticmethod
    async def _marked(marks: AsyncSession, step: Awaitable[T]) -> T:
        """Run one step on a lane's marking session and commit it on its own: a notice is
        marked sent in a transaction of one statement. (A session per lane for the whole run:
        a session per message cost more than the message's SMTP conversation.)"""
        try:
            result = await step
            await marks.commit()
        except BaseException:
            await marks.rollback()
            raise
        return result

    async def _release(
        self, marks: AsyncSession, letter: _Letter, error: str, *, permanent: bool
    ) -> None:
        status = await self._marked(
            marks,
            service.release(
                marks, notice_id=letter.notice_id, attempt=letter.attempt, error=error,
                permanent=permanent, max_attempts=self.settings.notice_max_attempts,
                was_sent=letter.committed,
            ),
        )  # fmt: skip
        if status == "failed":
            self.summary.failed += 1
        elif status == "pending":
            self.summary.retrying += 1

    def _compose(self, renderer: Renderer, letter: _Letter) -> str | None:
        """Render the letter's message; the error, if its template fails."""
        try:
            rendered = renderer.render(letter.kind, letter.language, letter.context)
            letter.message = compose(
                notice_id=letter.notice_id, sender=self.settings.notice_from,
                to_name=letter.name, to_address=letter.address or "", rendered=rendered,
                written_at=letter.created_at,
            )  # fmt: skip
        except (TemplateError, InvalidNoticeTemplate, ValueError) as exc:
            return f"The notice cannot be written: {exc}"
        return None

    async def _send(self, lane: _Lane, letters: Sequence[_Letter]) -> None:
        sender = sender_address(self.settings.notice_from)
        for index, letter in enumerate(letters):
            try:
                sent = await lane.mailer.transmit(
                    sender=sender, recipient=letter.address or "", message=letter.message,
                    commit=partial(self._group.mark, letter),
                )  # fmt: skip
            except CONNECTION_ERRORS as exc:
                # The server is gone: this letter and the rest of the lane wait for a retry.
                error = f"SMTP server {lane.mailer.target}: {exc or type(exc).__name__}"
                for unsent in letters[index:]:
                    await self._release(lane.marks, unsent, error, permanent=False)
                self._progress()
                raise
            except SMTPResponseException as exc:
                error = f"SMTP server refused it: {exc.code} {exc.message}"
                await self._release(lane.marks, letter, error, permanent=is_permanent(exc))
            except (ValueError, UnicodeError) as exc:  # an address SMTP cannot carry
                error = f"The address cannot be used: {exc}"
                await self._release(lane.marks, letter, error, permanent=True)
            else:
                if sent:
                    self.summary.sent += 1
            self._progress()

    async def _send_batch(self, lanes: Sequence[_Lane], letters: Sequence[_Letter]) -> None:
        """The batch's letters dealt out over the lanes; the first lane's error is raised
        once every lane has stopped (each has put back what it could not send)."""
        shares = [(lane, letters[index :: len(lanes)]) for index, lane in enumerate(lanes)]
        outcomes = await asyncio.gather(
            *(self._send(lane, share) for lane, share in shares if share), return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    async def run(self, only_ids: Sequence[int] | None) -> Delivery:
        async with session_scope(self.maker) as session:
            await service.reclaim_stale(
                session, now=self.clock(),
                stale_after=timedelta(seconds=self.settings.notice_claim_seconds),
            )  # fmt: skip
            if self.settings.smtp_url is None:
                self.summary.pending = await service.note_waiting(session, reason=NO_SMTP)
                self.summary.note = NO_SMTP
                return self.summary
            target = parse_smtp_url(self.settings.smtp_url)
            self.total = await service.count_pending(session, only_ids=only_ids)
            renderer = Renderer(await _overrides(session))
        self._progress()
        async with AsyncExitStack() as stack:
            self._group = _GroupCommit(
                await stack.enter_async_context(self.mark_maker()), self.clock
            )
            self._group.start()
            stack.push_async_callback(self._group.stop)
            lanes = []
            for _ in range(self.settings.notice_connections):
                mailer = Mailer(target)
                stack.push_async_callback(mailer.close)
                marks = await stack.enter_async_context(self.mark_maker())
                lanes.append(_Lane(mailer, marks))
            await self._batches(lanes, renderer, only_ids)
        async with session_scope(self.maker) as session:
            self.summary.pending = await service.count_pending(session, only_ids=only_ids)
        return self.summary

    async def _batches(
        self, lanes: Sequence[_Lane], renderer: Renderer, only_ids: Sequence[int] | None
    ) -> None:
        after_id = 0
        while True:
            async with session_scope(self.maker) as session:
                batch = await _claim_batch(
                    session, now=self.clock(), after_id=after_id, only_ids=only_ids
                )
            if batch.last_id == after_id:
                return
            after_id = batch.last_id
            self.summary.cancelled += batch.closed.get("cancelled", 0)
            self.summary.skipped += batch.closed.get("skipped", 0)
            ready = []
            for letter in batch.letters:
                error = self._compose(renderer, letter)
                if error is None:
                    ready.append(letter)
                else:
                    await self._release(lanes[0].marks, letter, error, permanent=True)
            await self._send_batch(lanes, ready)
            self._progress()


async def deliver_pending(
    maker: async_sessionmaker[AsyncSession], *, settings: Settings,
    mark_maker: async_sessionmaker[AsyncSession] | None = None, clock: Clock = utcnow,
    only_ids: Sequence[int] | None = None, on_progress: Progress | None = None,
) -> Delivery:  # fmt: skip
    """Send the pending notices (or only those of `only_ids` still pending) by e-mail.

    `maker` opens the run's transactions (a claim per batch); `mark_maker` (by default the
    same) the sessions, one per SMTP connection, that mark each message sent. Raises
    `ConnectionError`/`TimeoutError` when the SMTP server cannot be reached or drops the
    connection, once what was in hand is back to pending: a transient error, for the caller
    to retry with backoff.
    """
    run = _Run(maker, mark_maker or maker, settings=settings, clock=clock, on_progress=on_progress)
    return await run.run(only_ids)
