"""The search index: one row of folded text per bib, its main subject headings, and the
vocabulary that typo tolerance draws on.

Rows are written by `search.index` in the transaction that writes the bib, and go with it
(ON DELETE CASCADE). Each database adds its own full-text structure in migration 0004: on
PostgreSQL a generated, weighted `document` tsvector column (GIN) and pg_trgm indexes; on
SQLite the external-content FTS5 table `bib_fts` over these columns, kept in step by
triggers (which a cascaded delete fires too). Neither is mapped here: only the backends
query them.
"""

from __future__ import annotations

from typing import Final

from sqlalchemy import Column, ForeignKey, Index, SmallInteger, String, Table, Text
from sqlalchemy.orm import Mapped, mapped_column

from shelfmark.db import Base, BigId


class BibSearch(Base):
    __tablename__ = "bib_search"

    bib_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("bibs.id", ondelete="CASCADE"), primary_key=True
    )
    # The folded title without a leading article: what a whole-title query is compared with.
    title_key: Mapped[str] = mapped_column(Text, default="")
    title_text: Mapped[str] = mapped_column(Text, default="")  # title and subtitle
    contributors_text: Mapped[str] = mapped_column(Text, default="")
    subjects_text: Mapped[str] = mapped_column(Text, default="")  # subjects and series
    description_text: Mapped[str] = mapped_column(Text, default="")
    # Copies of the bib's filter and facet columns: a search then reads this narrow table
    # only, and the wide `bibs` rows just for the page it returns.
    language: Mapped[str | None] = mapped_column(String(3))
    material_type: Mapped[str] = mapped_column(String(32))
    publication_year: Mapped[int | None] = mapped_column(SmallInteger)


class BibSearchSubject(Base):
    __tablename__ = "bib_search_subjects"
    __table_args__ = (Index(None, "key", "bib_id"),)

    bib_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("bibs.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(500), primary_key=True)  # the folded heading
    heading: Mapped[str] = mapped_column(String(500))


# Every word of three letters or more ever indexed: where typo tolerance looks up which
# words one edit away from a query word exist. Words are only added (a word no bib has any
# more costs a lookup that finds nothing) and never locked: the index is not unique, so two
# writers adding the same word never wait on each other, and a rare duplicate is harmless.
# `shelfmark reindex` rebuilds it.
bib_search_terms = Table(
    "bib_search_terms",
    Base.metadata,
    Column("term", String(64), nullable=False),
    Index(None, "term"),
)


# What indexes `bib_search` as it is written, as migration 0004 made it. A large import into
# a small catalog drops it and builds the index afresh when it ends, and whatever finds it
# missing does the same (search.index.bulk_indexing, build_missing_indexes).
# PostgreSQL: the GIN indexes (name → method and key). A migration that changes any of these
# must change them here too.
PG_SEARCH_INDEXES: Final[dict[str, str]] = {
    "ix_bib_search_document": "gin (document)",
    "ix_bib_search_title_text_trgm": "gin (title_text gin_trgm_ops)",
    "ix_bib_search_contributors_text_trgm": "gin (contributors_text gin_trgm_ops)",
}
# SQLite: the triggers that keep the FTS5 index `bib_fts` in step with `bib_search` (name →
# DDL). A migration that changes any of these must change them here too.
SQLITE_FTS_TRIGGERS: Final[dict[str, str]] = {
    "bib_search_ai": """CREATE TRIGGER bib_search_ai AFTER INSERT ON bib_search BEGIN
        INSERT INTO bib_fts(rowid, title_text, contributors_text, subjects_text, description_text)
        VALUES (new.bib_id, new.title_text, new.contributors_text, new.subjects_text,
                new.description_text);
    END""",
    "bib_search_ad": """CREATE TRIGGER bib_search_ad AFTER DELETE ON bib_search BEGIN
        INSERT INTO bib_fts(bib_fts, rowid, title_text, contributors_text, subjects_text,
                            description_text)
        VALUES ('delete', old.bib_id, old.title_text, old.contributors_text, old.subjects_text,
                old.description_text);
    END""",
    "bib_search_au": """CREATE TRIGGER bib_search_au AFTER UPDATE ON bib_search BEGIN
        INSERT INTO bib_fts(bib_fts, rowid, title_text, contributors_text, subjects_text,
                            description_text)
        VALUES ('delete', old.bib_id, old.title_text, old.contributors_text, old.subjects_text,
                old.description_text);
        INSERT INTO bib_fts(rowid, title_text, contributors_text, subjects_text, description_text)
        VALUES (new.bib_id, new.title_text, new.contributors_text, new.subjects_text,
                new.description_text);
    END""",
}
