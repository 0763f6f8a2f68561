"""catalog, users and audit

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "bibs",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("subtitle", sa.Text(), nullable=True),
        sa.Column(
            "contributors",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "isbns",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("publisher", sa.Text(), nullable=True),
        sa.Column("publication_year", sa.SmallInteger(), nullable=True),
        sa.Column("edition", sa.Text(), nullable=True),
        sa.Column("language", sa.String(length=3), nullable=True),
        sa.Column(
            "subjects",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "series",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("material_type", sa.String(length=32), nullable=False),
        sa.Column("control_number", sa.String(length=64), nullable=True),
        sa.Column("marc", sa.LargeBinary(), nullable=True),
        sa.Column("fingerprint", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bibs")),
        sa.UniqueConstraint("control_number", name=op.f("uq_bibs_control_number")),
    )
    with op.batch_alter_table("bibs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_bibs_fingerprint"), ["fingerprint"], unique=False)
        batch_op.create_index(batch_op.f("ix_bibs_language"), ["language"], unique=False)
        batch_op.create_index(batch_op.f("ix_bibs_material_type"), ["material_type"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_bibs_publication_year"), ["publication_year"], unique=False
        )

    op.create_table(
        "branches",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("address", sa.Text(), nullable=True),
        sa.Column(
            "opening_hours",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_branches")),
        sa.UniqueConstraint("code", name=op.f("uq_branches_code")),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("username", sa.String(length=150), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("full_name", sa.String(length=200), nullable=True),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("role IN ('admin', 'librarian', 'patron')", name=op.f("ck_users_role")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("username", name=op.f("uq_users_username")),
    )
    op.create_table(
        "audit_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("actor_name", sa.String(length=150), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("object_type", sa.String(length=64), nullable=False),
        sa.Column("object_id", sa.String(length=64), nullable=True),
        sa.Column(
            "changes",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["actor_id"],
            ["users.id"],
            name=op.f("fk_audit_events_actor_id_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
    )
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_events_at"), ["at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_audit_events_object_type_object_id"),
            ["object_type", "object_id"],
            unique=False,
        )

    op.create_table(
        "bib_isbns",
        sa.Column("bib_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("isbn", sa.String(length=13), nullable=False),
        sa.ForeignKeyConstraint(
            ["bib_id"], ["bibs.id"], name=op.f("fk_bib_isbns_bib_id_bibs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("bib_id", "isbn", name=op.f("pk_bib_isbns")),
    )
    with op.batch_alter_table("bib_isbns", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_bib_isbns_isbn"), ["isbn"], unique=False)

    op.create_table(
        "items",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("bib_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("barcode", sa.String(length=64), nullable=False),
        sa.Column(
            "branch_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("shelfmark", sa.String(length=128), nullable=True),
        sa.Column("item_type", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("price", sa.Numeric(precision=10, scale=2), nullable=True),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('available', 'on_loan', 'on_hold_shelf', 'in_transit', 'lost', 'missing', 'withdrawn')",
            name=op.f("ck_items_status"),
        ),
        sa.CheckConstraint("price IS NULL OR price >= 0", name=op.f("ck_items_price_not_negative")),
        sa.ForeignKeyConstraint(
            ["bib_id"], ["bibs.id"], name=op.f("fk_items_bib_id_bibs"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["branch_id"],
            ["branches.id"],
            name=op.f("fk_items_branch_id_branches"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_items")),
        sa.UniqueConstraint("barcode", name=op.f("uq_items_barcode")),
    )
    with op.batch_alter_table("items", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_items_bib_id"), ["bib_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_items_branch_id_status"), ["branch_id", "status"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("items", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_items_branch_id_status"))
        batch_op.drop_index(batch_op.f("ix_items_bib_id"))

    op.drop_table("items")
    with op.batch_alter_table("bib_isbns", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_bib_isbns_isbn"))

    op.drop_table("bib_isbns")
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_events_object_type_object_id"))
        batch_op.drop_index(batch_op.f("ix_audit_events_at"))

    op.drop_table("audit_events")
    op.drop_table("users")
    op.drop_table("branches")
    with op.batch_alter_table("bibs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_bibs_publication_year"))
        batch_op.drop_index(batch_op.f("ix_bibs_material_type"))
        batch_op.drop_index(batch_op.f("ix_bibs_language"))
        batch_op.drop_index(batch_op.f("ix_bibs_fingerprint"))

    op.drop_table("bibs")
