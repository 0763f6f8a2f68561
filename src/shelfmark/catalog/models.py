from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    CheckConstraint,
    ForeignKey,
    Index,
    LargeBinary,
    Numeric,
    SmallInteger,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from shelfmark.db import Base, BigId, JSONType, UTCDateTime, utcnow

ITEM_STATUSES = (
    "available",
    "on_loan",
    "on_hold_shelf",
    "in_transit",
    "lost",
    "missing",
    "withdrawn",
)


class Branch(Base):
    __tablename__ = "branches"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    address: Mapped[str | None] = mapped_column(Text)
    # {"mon": [["09:00", "18:00"]], ...}: intervals per weekday; a missing day is closed.
    opening_hours: Mapped[dict[str, list[list[str]]]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Bib(Base):
    """A bibliographic record: the title that copies are copies of.

    Lists (contributors, ISBNs, subjects, series) are JSON on the row so that a record reads in
    one query; `bib_isbns` indexes the ISBNs for lookups and matching.
    """

    __tablename__ = "bibs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    title: Mapped[str] = mapped_column(Text)
    subtitle: Mapped[str | None] = mapped_column(Text)
    contributors: Mapped[list[dict[str, str]]] = mapped_column(JSONType, default=list)
    isbns: Mapped[list[str]] = mapped_column(JSONType, default=list)
    publisher: Mapped[str | None] = mapped_column(Text)
    publication_year: Mapped[int | None] = mapped_column(SmallInteger, index=True)
    edition: Mapped[str | None] = mapped_column(Text)
    language: Mapped[str | None] = mapped_column(String(3), index=True)
    subjects: Mapped[list[str]] = mapped_column(JSONType, default=list)
    series: Mapped[list[str]] = mapped_column(JSONType, default=list)
    description: Mapped[str | None] = mapped_column(Text)
    material_type: Mapped[str] = mapped_column(String(32), default="book", index=True)
    control_number: Mapped[str | None] = mapped_column(String(64), unique=True)
    # The whole source record as UTF-8 MARC21, so that an export gives back every field.
    marc: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    fingerprint: Mapped[str | None] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class BibIsbn(Base):
    __tablename__ = "bib_isbns"

    bib_id: Mapped[int] = mapped_column(ForeignKey("bibs.id", ondelete="CASCADE"), primary_key=True)
    isbn: Mapped[str] = mapped_column(String(13), primary_key=True, index=True)


class Item(Base):
    """A copy: one physical (or lendable) thing with a unique barcode."""

    __tablename__ = "items"
    __table_args__ = (
        CheckConstraint(
            "status IN (" + ", ".join(f"'{s}'" for s in ITEM_STATUSES) + ")", name="status"
        ),
        CheckConstraint("price IS NULL OR price >= 0", name="price_not_negative"),
        Index(None, "bib_id"),
        Index(None, "branch_id", "status"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    bib_id: Mapped[int] = mapped_column(ForeignKey("bibs.id", ondelete="RESTRICT"))
    barcode: Mapped[str] = mapped_column(String(64), unique=True)
    branch_id: Mapped[int] = mapped_column(ForeignKey("branches.id", ondelete="RESTRICT"))
    shelfmark: Mapped[str | None] = mapped_column(String(128))
    item_type: Mapped[str] = mapped_column(String(32), default="book")
    status: Mapped[str] = mapped_column(String(16), default="available")
    price: Mapped[Decimal | None] = mapped_column(Numeric(10, 2))
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    branch: Mapped[Branch] = relationship(lazy="raise")
    bib: Mapped[Bib] = relationship(lazy="raise")
