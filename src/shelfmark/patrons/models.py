from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Numeric,
    String,
    Text,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from shelfmark.catalog.models import Branch
from shelfmark.db import Base, BigId, UTCDateTime, utcnow

NOTICE_CHANNELS = ("email", "sms", "print", "none")


class PatronCategory(Base):
    """A kind of patron (adult, child, staff…), the key circulation rules are written against.

    `fee_block_threshold`: a patron of this category whose open fees total more than this is
    refused checkouts, renewals and holds (`fees-over-threshold`); NULL never blocks.
    """

    __tablename__ = "patron_categories"
    __table_args__ = (
        CheckConstraint(
            "fee_block_threshold IS NULL OR fee_block_threshold >= 0", name="threshold_not_negative"
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    fee_block_threshold: Mapped[Decimal | None] = mapped_column(Numeric(10, 2))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Patron(Base):
    """A borrower, known by a unique library card number."""

    __tablename__ = "patrons"
    __table_args__ = (
        CheckConstraint(
            "notice_channel IN (" + ", ".join(f"'{c}'" for c in NOTICE_CHANNELS) + ")",
            name="notice_channel",
        ),
        Index(None, "category_id"),
        Index(None, "home_branch_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    card_number: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(320))
    phone: Mapped[str | None] = mapped_column(String(40))
    category_id: Mapped[int] = mapped_column(
        ForeignKey("patron_categories.id", ondelete="RESTRICT")
    )
    home_branch_id: Mapped[int] = mapped_column(ForeignKey("branches.id", ondelete="RESTRICT"))
    expires_on: Mapped[date] = mapped_column(Date)
    # argon2, for the self-check machines (SIP2); NULL: no PIN set.
    pin_hash: Mapped[str | None] = mapped_column(String(255))
    notice_channel: Mapped[str] = mapped_column(String(16), default="email")
    language: Mapped[str | None] = mapped_column(String(3))
    # Opted in: their closed loans keep naming them (a reading history they can see); by
    # default a loan forgets its patron once LOAN_RETENTION_DAYS have passed since its return.
    keep_reading_history: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false()
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    category: Mapped[PatronCategory] = relationship(lazy="raise")
    home_branch: Mapped[Branch] = relationship(lazy="raise")
    active_blocks: Mapped[list[PatronBlock]] = relationship(
        lazy="raise",
        viewonly=True,
        primaryjoin="and_(Patron.id == PatronBlock.patron_id, PatronBlock.lifted_at.is_(None))",
        order_by="PatronBlock.id",
    )

    def is_expired(self, today: date) -> bool:
        return self.expires_on < today


class PatronBlock(Base):
    """A manual block (lost card, conduct…) with its reason; lifting keeps it as history."""

    __tablename__ = "patron_blocks"
    __table_args__ = (Index(None, "patron_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    patron_id: Mapped[int] = mapped_column(ForeignKey("patrons.id", ondelete="CASCADE"))
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(150))
    lifted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lifted_by: Mapped[str | None] = mapped_column(String(150))
