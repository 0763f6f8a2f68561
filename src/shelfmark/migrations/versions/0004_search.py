"""search index

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24

`bib_search` holds each bib's text folded in Python (shelfmark.search.text.fold), and
`bib_search_subjects` its main subject headings, `bib_search_terms` the words that typo
tolerance looks up. On PostgreSQL a STORED generated tsvector (title A, contributors B,
subjects and series C, description D) with a GIN index, and pg_trgm GIN indexes on title and
contributors; on SQLite an external-content FTS5 table over `bib_search`, kept in step by
triggers. Existing bibs are indexed here (backfill).
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from shelfmark.search.text import index_row, index_terms

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSONType = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
BACKFILL_BATCH = 2_000

POSTGRES_DDL = (
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    """ALTER TABLE bib_search ADD COLUMN document tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('simple'::regconfig, title_text), 'A')
        || setweight(to_tsvector('simple'::regconfig, contributors_text), 'B')
        || setweight(to_tsvector('simple'::regconfig, subjects_text), 'C')
        || setweight(to_tsvector('simple'::regconfig, description_text), 'D')
    ) STORED""",
    "CREATE INDEX ix_bib_search_document ON bib_search USING gin (document)",
    "CREATE INDEX ix_bib_search_title_text_trgm ON bib_search USING gin (title_text gin_trgm_ops)",
    "CREATE INDEX ix_bib_search_contributors_text_trgm ON bib_search "
    "USING gin (contributors_text gin_trgm_ops)",
)

SQLITE_DDL = (
    # External content: the text lives once, in bib_search; FTS5 keeps only its index.
    """CREATE VIRTUAL TABLE bib_fts USING fts5(
        title_text, contributors_text, subjects_text, description_text,
        content='bib_search', content_rowid='bib_id',
        tokenize='unicode61 remove_diacritics 2', prefix='2 3')""",
    """CREATE TRIGGER bib_search_ai AFTER INSERT ON bib_search BEGIN
        INSERT INTO bib_fts(rowid, title_text, contributors_text, subjects_text, description_text)
        VALUES (new.bib_id, new.title_text, new.contributors_text, new.subjects_text,
                new.description_text);
    END""",
    """CREATE TRIGGER bib_search_ad AFTER DELETE ON bib_search BEGIN
        INSERT INTO bib_fts(bib_fts, rowid, title_text, contributors_text, subjects_text,
                            description_text)
        VALUES ('delete', old.bib_id, old.title_text, old.contributors_text, old.subjects_text,
                old.description_text);
    END""",
    """CREATE TRIGGER bib_search_au AFTER UPDATE ON bib_search BEGIN
        INSERT INTO bib_fts(bib_fts, rowid, title_text, contributors_text, subjects_text,
                            description_text)
        VALUES ('delete', old.bib_id, old.title_text, old.contributors_text, old.subjects_text,
                old.description_text);
        INSERT INTO bib_fts(rowid, title_text, contributors_text, subjects_text, description_text)
        VALUES (new.bib_id, new.title_text, new.contributors_text, new.subjects_text,
                new.description_text);
    END""",
)


def upgrade() -> None:
    op.create_table(
        "bib_search",
        sa.Column("bib_id", BigId, nullable=False),
        sa.Column("title_key", sa.Text(), nullable=False),
        sa.Column("title_text", sa.Text(), nullable=False),
        sa.Column("contributors_text", sa.Text(), nullable=False),
        sa.Column("subjects_text", sa.Text(), nullable=False),
        sa.Column("description_text", sa.Text(), nullable=False),
        sa.Column("language", sa.String(length=3), nullable=True),
        sa.Column("material_type", sa.String(length=32), nullable=False),
        sa.Column("publication_year", sa.SmallInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["bib_id"], ["bibs.id"], name=op.f("fk_bib_search_bib_id_bibs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("bib_id", name=op.f("pk_bib_search")),
    )
    op.create_table(
        "bib_search_subjects",
        sa.Column("bib_id", BigId, nullable=False),
        sa.Column("key", sa.String(length=500), nullable=False),
        sa.Column("heading", sa.String(length=500), nullable=False),
        sa.ForeignKeyConstraint(
            ["bib_id"],
            ["bibs.id"],
            name=op.f("fk_bib_search_subjects_bib_id_bibs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("bib_id", "key", name=op.f("pk_bib_search_subjects")),
    )
    op.create_index(
        op.f("ix_bib_search_subjects_key_bib_id"), "bib_search_subjects", ["key", "bib_id"]
    )
    op.create_table("bib_search_terms", sa.Column("term", sa.String(length=64), nullable=False))
    op.create_index(op.f("ix_bib_search_terms_term"), "bib_search_terms", ["term"])
    for statement in POSTGRES_DDL if _dialect() == "postgresql" else SQLITE_DDL:
        op.execute(statement)
    _backfill()


def downgrade() -> None:
    if _dialect() == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS bib_search_ai")
        op.execute("DROP TRIGGER IF EXISTS bib_search_ad")
        op.execute("DROP TRIGGER IF EXISTS bib_search_au")
        op.execute("DROP TABLE IF EXISTS bib_fts")
    op.drop_index(op.f("ix_bib_search_terms_term"), table_name="bib_search_terms")
    op.drop_table("bib_search_terms")
    op.drop_index(op.f("ix_bib_search_subjects_key_bib_id"), table_name="bib_search_subjects")
    op.drop_table("bib_search_subjects")
    op.drop_table("bib_search")  # the tsvector column and its indexes go with it


def _dialect() -> str:
    return str(op.get_bind().dialect.name)


_bibs = sa.table(
    "bibs",
    sa.column("id", BigId), sa.column("title", sa.Text), sa.column("subtitle", sa.Text),
    sa.column("contributors", JSONType), sa.column("subjects", JSONType),
    sa.column("series", JSONType), sa.column("description", sa.Text),
    sa.column("language", sa.String), sa.column("material_type", sa.String),
    sa.column("publication_year", sa.SmallInteger),
)  # fmt: skip
_bib_search = sa.table(
    "bib_search",
    sa.column("bib_id", BigId), sa.column("title_key", sa.Text), sa.column("title_text", sa.Text),
    sa.column("contributors_text", sa.Text), sa.column("subjects_text", sa.Text),
    sa.column("description_text", sa.Text), sa.column("language", sa.String),
    sa.column("material_type", sa.String), sa.column("publication_year", sa.SmallInteger),
)  # fmt: skip
_terms = sa.table("bib_search_terms", sa.column("term", sa.String))
_subjects = sa.table(
    "bib_search_subjects",
    sa.column("bib_id", BigId), sa.column("key", sa.String), sa.column("heading", sa.String),
)  # fmt: skip


def _backfill() -> None:
    """Index the bibs that exist already, in batches, with the same folding as the app."""
    bind = op.get_bind()
    after = 0
    terms: set[str] = set()
    while True:
        query = (
            sa.select(_bibs).where(_bibs.c.id > after).order_by(_bibs.c.id).limit(BACKFILL_BATCH)
        )
        rows = bind.execute(query).mappings().all()
        if not rows:
            break
        documents: list[dict[str, Any]] = []
        subjects: list[dict[str, Any]] = []
        for row in rows:
            indexed = index_row(row)
            terms |= index_terms(indexed.values)
            documents.append({"bib_id": row["id"], **indexed.values})
            subjects.extend(
                {"bib_id": row["id"], "key": key, "heading": heading}
                for key, heading in indexed.headings.items()
            )
        bind.execute(sa.insert(_bib_search), documents)
        if subjects:
            bind.execute(sa.insert(_subjects), subjects)
        after = rows[-1]["id"]
    if terms:
        bind.execute(sa.insert(_terms), [{"term": term} for term in sorted(terms)])
