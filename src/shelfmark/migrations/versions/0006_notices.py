"""notices: the outbox of patron notices, admin templates, notice terms in circulation rules

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KINDS = "kind IN ('due-soon', 'overdue', 'hold-ready', 'hold-expired', 'fee-charged')"

# The notice terms of circulation rules, each column with the check that guards it. Existing
# rules get the defaults a new rule gets: due soon 2 days before, overdue after 1, 7, 14 days.
RULE_COLUMNS = (
    ("due_soon_days", "due_soon_days_in_range",
     "due_soon_days IS NULL OR due_soon_days BETWEEN 1 AND 60", 2),
    ("overdue_notice_1", "overdue_notice_1_in_range",
     "overdue_notice_1 IS NULL OR overdue_notice_1 BETWEEN 1 AND 365", 1),
    ("overdue_notice_2", "overdue_notice_2_in_order",
     "overdue_notice_2 IS NULL OR (overdue_notice_1 IS NOT NULL"
     " AND overdue_notice_2 > overdue_notice_1 AND overdue_notice_2 <= 365)", 7),
    ("overdue_notice_3", "overdue_notice_3_in_order",
     "overdue_notice_3 IS NULL OR (overdue_notice_2 IS NOT NULL"
     " AND overdue_notice_3 > overdue_notice_2 AND overdue_notice_3 <= 365)", 14),
)  # fmt: skip


def _id() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _add_rule_columns() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    for column, check, condition, _ in RULE_COLUMNS:
        name = f"ck_circulation_rules_{check}"
        if sqlite:
            # SQLite adds no constraint to an existing table, but takes one with a new column
            # (and rebuilding the table would lose its expression index).
            op.execute(
                f"ALTER TABLE circulation_rules ADD COLUMN {column} INTEGER"
                f" CONSTRAINT {name} CHECK ({condition})"
            )
        else:
            op.add_column("circulation_rules", sa.Column(column, sa.Integer(), nullable=True))
            op.create_check_constraint(name, "circulation_rules", condition)
    rules = sa.table("circulation_rules", *(sa.column(c[0], sa.Integer()) for c in RULE_COLUMNS))
    op.execute(rules.update().values({column: default for column, *_, default in RULE_COLUMNS}))


def upgrade() -> None:
    _add_rule_columns()
    op.create_table(
        "notices",
        sa.Column("id", _id(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("patron_id", _id(), nullable=False),
        sa.Column("object_id", _id(), nullable=False),
        sa.Column("level", sa.SmallInteger(), nullable=True),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("dedupe_key", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(KINDS, name=op.f("ck_notices_kind")),
        sa.CheckConstraint(
            "status IN ('pending', 'sending', 'sent', 'cancelled', 'skipped', 'failed')",
            name=op.f("ck_notices_status"),
        ),
        sa.CheckConstraint(
            "channel IN ('email', 'sms', 'print', 'none')", name=op.f("ck_notices_channel")
        ),
        sa.CheckConstraint(
            "(kind = 'overdue' AND level BETWEEN 1 AND 3) OR (kind <> 'overdue' AND level IS NULL)",
            name=op.f("ck_notices_level_of_overdue"),
        ),
        sa.CheckConstraint(
            "status <> 'sent' OR sent_at IS NOT NULL", name=op.f("ck_notices_sent_has_sent_at")
        ),
        sa.CheckConstraint(
            "status <> 'sending' OR claimed_at IS NOT NULL",
            name=op.f("ck_notices_claim_has_time"),
        ),
        sa.CheckConstraint("attempts >= 0", name=op.f("ck_notices_attempts_not_negative")),
        sa.ForeignKeyConstraint(
            ["patron_id"],
            ["patrons.id"],
            name=op.f("fk_notices_patron_id_patrons"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notices")),
        sa.UniqueConstraint("dedupe_key", name=op.f("uq_notices_dedupe_key")),
    )
    op.create_index(op.f("ix_notices_status_id"), "notices", ["status", "id"], unique=False)
    op.create_index(op.f("ix_notices_patron_id_id"), "notices", ["patron_id", "id"], unique=False)
    op.create_index(
        op.f("ix_notices_kind_object_id"), "notices", ["kind", "object_id"], unique=False
    )
    op.create_table(
        "notice_templates",
        sa.Column("id", _id(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("language", sa.String(length=3), nullable=False),
        sa.Column("subject", sa.String(length=500), nullable=False),
        sa.Column("text_body", sa.Text(), nullable=False),
        sa.Column("html_body", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(KINDS, name=op.f("ck_notice_templates_kind")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notice_templates")),
        sa.UniqueConstraint("kind", "language", name=op.f("uq_notice_templates_kind_language")),
    )


def downgrade() -> None:
    op.drop_table("notice_templates")
    op.drop_index(op.f("ix_notices_kind_object_id"), table_name="notices")
    op.drop_index(op.f("ix_notices_patron_id_id"), table_name="notices")
    op.drop_index(op.f("ix_notices_status_id"), table_name="notices")
    op.drop_table("notices")
    sqlite = op.get_bind().dialect.name == "sqlite"
    # Last first: a level's check names the level before it.
    for column, check, _, _ in reversed(RULE_COLUMNS):
        if not sqlite:
            op.drop_constraint(f"ck_circulation_rules_{check}", "circulation_rules", type_="check")
        op.drop_column("circulation_rules", column)
