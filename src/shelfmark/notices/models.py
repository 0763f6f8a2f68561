"""Notice tables: the outbox of messages to patrons, and the templates that override the
packaged ones.

A notice row is written in the same transaction as what it announces (a hold made ready, a
fee charged) or by the daily runs (due soon, overdue), before anything is sent: the row is the
truth about the message. `dedupe_key` is unique per (kind, object, day), so that however often
a run is repeated, or whatever levels of overdue are due at once, a loan gets at most one
notice of a kind a day. See `shelfmark.notices.delivery` for how a row moves
pending → sending → sent (or cancelled, skipped, failed) exactly once.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from shelfmark.db import Base, BigId, UTCDateTime, utcnow
from shelfmark.patrons.models import NOTICE_CHANNELS

NOTICE_KINDS = ("due-soon", "overdue", "hold-ready", "hold-expired", "fee-charged")
# pending: to send; sending: claimed by a delivery run (see `claimed_at`); sent; cancelled:
# moot by send time (the loan was returned, the hold picked up); skipped: the patron cannot be
# reached by e-mail (another channel, no address); failed: refused for good, or out of tries.
NOTICE_STATUSES = ("pending", "sending", "sent", "cancelled", "skipped", "failed")
FINISHED_STATUSES = ("sent", "cancelled", "skipped", "failed")
OVERDUE_LEVELS = 3
# What a notice's `object_id` is, by kind.
OBJECT_TYPES = {
    "due-soon": "loan",
    "overdue": "loan",
    "hold-ready": "hold",
    "hold-expired": "hold",
    "fee-charged": "fee",
}


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN (" + ", ".join(f"'{v}'" for v in values) + ")"


def dedupe_key(kind: str, object_id: int, day: date) -> str:
    return f"{kind}:{object_id}:{day.isoformat()}"


class Notice(Base):
    __tablename__ = "notices"
    __table_args__ = (
        CheckConstraint(_in("kind", NOTICE_KINDS), name="kind"),
        CheckConstraint(_in("status", NOTICE_STATUSES), name="status"),
        CheckConstraint(_in("channel", NOTICE_CHANNELS), name="channel"),
        CheckConstraint(
            f"(kind = 'overdue' AND level BETWEEN 1 AND {OVERDUE_LEVELS})"
            " OR (kind <> 'overdue' AND level IS NULL)",
            name="level_of_overdue",
        ),
        CheckConstraint("status <> 'sent' OR sent_at IS NOT NULL", name="sent_has_sent_at"),
        CheckConstraint("status <> 'sending' OR claimed_at IS NOT NULL", name="claim_has_time"),
        CheckConstraint("attempts >= 0", name="attempts_not_negative"),
        Index(None, "status", "id"),
        Index(None, "patron_id", "id"),
        Index(None, "kind", "object_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    patron_id: Mapped[int] = mapped_column(ForeignKey("patrons.id", ondelete="CASCADE"))
    # The loan, hold or fee the notice is about (`OBJECT_TYPES`): no foreign key, since it
    # names one of three tables; the delivery reads it back and cancels a notice whose object
    # has gone or moved on.
    object_id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"))
    # Overdue notices: 1st, 2nd or 3rd.
    level: Mapped[int | None] = mapped_column(SmallInteger)
    # Loan notices: the due date they speak of. A renewal moves it, which makes them moot and
    # starts the levels of overdue over.
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The patron's notice channel when the notice was written (delivery reads it afresh).
    channel: Mapped[str] = mapped_column(String(16))
    dedupe_key: Mapped[str] = mapped_column(String(200), unique=True)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    # Delivery runs that claimed the notice; also the fencing token of the current claim, so
    # that a run whose claim was taken over cannot mark the notice sent.
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    # Why the notice is cancelled or skipped, or why a pending one waits.
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    @property
    def object_type(self) -> str:
        return OBJECT_TYPES[self.kind]


class NoticeTemplate(Base):
    """An admin's wording of a kind of notice in a language, used instead of the packaged
    template. Without `html_body` the message is text only."""

    __tablename__ = "notice_templates"
    __table_args__ = (
        CheckConstraint(_in("kind", NOTICE_KINDS), name="kind"),
        UniqueConstraint("kind", "language"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    # ISO 639-2, as `patrons.language` ("eng", "fre").
    language: Mapped[str] = mapped_column(String(3))
    subject: Mapped[str] = mapped_column(String(500))
    text_body: Mapped[str] = mapped_column(Text)
    html_body: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    def __str__(self) -> str:
        return f"{self.kind} ({self.language})"
