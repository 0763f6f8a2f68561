"""patrons and circulation: categories, patrons, blocks, rules, closed days, loans, holds,
fees and payments; users.patron_id; the default circulation rule

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "patron_categories",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("fee_block_threshold", sa.Numeric(precision=10, scale=2), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "fee_block_threshold IS NULL OR fee_block_threshold >= 0",
            name=op.f("ck_patron_categories_threshold_not_negative"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_patron_categories")),
        sa.UniqueConstraint("code", name=op.f("uq_patron_categories_code")),
    )
    op.create_table(
        "circulation_rules",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("branch_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column(
            "patron_category_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=True,
        ),
        sa.Column("item_type", sa.String(length=32), nullable=True),
        sa.Column("loan_period", sa.Integer(), nullable=False),
        sa.Column("period_unit", sa.String(length=8), nullable=False),
        sa.Column("renewals_allowed", sa.Integer(), nullable=False),
        sa.Column("max_loans", sa.Integer(), nullable=True),
        sa.Column("max_holds", sa.Integer(), nullable=True),
        sa.Column("fine_per_day", sa.Numeric(precision=10, scale=2), nullable=False),
        sa.Column("fine_cap", sa.Numeric(precision=10, scale=2), nullable=True),
        sa.Column("grace_days", sa.Integer(), nullable=False),
        sa.Column("holdable", sa.Boolean(), nullable=False),
        sa.Column("renew_from", sa.String(length=16), nullable=False),
        sa.Column("hold_pickup_days", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "period_unit IN ('days', 'hours')", name=op.f("ck_circulation_rules_period_unit")
        ),
        sa.CheckConstraint(
            "renew_from IN ('due_date', 'today')", name=op.f("ck_circulation_rules_renew_from")
        ),
        sa.CheckConstraint(
            "fine_per_day >= 0 AND (fine_cap IS NULL OR fine_cap >= 0)",
            name=op.f("ck_circulation_rules_fines_not_negative"),
        ),
        sa.CheckConstraint(
            "loan_period > 0", name=op.f("ck_circulation_rules_loan_period_positive")
        ),
        sa.CheckConstraint(
            "renewals_allowed >= 0 AND grace_days >= 0 AND hold_pickup_days > 0",
            name=op.f("ck_circulation_rules_counts_not_negative"),
        ),
        sa.ForeignKeyConstraint(
            ["branch_id"],
            ["branches.id"],
            name=op.f("fk_circulation_rules_branch_id_branches"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["patron_category_id"],
            ["patron_categories.id"],
            name=op.f("fk_circulation_rules_patron_category_id_patron_categories"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_circulation_rules")),
    )
    op.create_index(
        "uq_circulation_rules_scope",
        "circulation_rules",
        [
            sa.text("coalesce(branch_id, 0)"),
            sa.text("coalesce(patron_category_id, 0)"),
            sa.text("coalesce(item_type, '')"),
        ],
        unique=True,
    )
    op.create_table(
        "closed_days",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("branch_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("first_day", sa.Date(), nullable=False),
        sa.Column("last_day", sa.Date(), nullable=False),
        sa.Column("yearly", sa.Boolean(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("last_day >= first_day", name=op.f("ck_closed_days_range_in_order")),
        sa.ForeignKeyConstraint(
            ["branch_id"],
            ["branches.id"],
            name=op.f("fk_closed_days_branch_id_branches"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_closed_days")),
    )
    op.create_index(op.f("ix_closed_days_branch_id"), "closed_days", ["branch_id"], unique=False)
    op.create_table(
        "patrons",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("card_number", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("phone", sa.String(length=40), nullable=True),
        sa.Column(
            "category_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "home_branch_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("expires_on", sa.Date(), nullable=False),
        sa.Column("pin_hash", sa.String(length=255), nullable=True),
        sa.Column("notice_channel", sa.String(length=16), nullable=False),
        sa.Column("language", sa.String(length=3), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "notice_channel IN ('email', 'sms', 'print', 'none')",
            name=op.f("ck_patrons_notice_channel"),
        ),
        sa.ForeignKeyConstraint(
            ["category_id"],
            ["patron_categories.id"],
            name=op.f("fk_patrons_category_id_patron_categories"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["home_branch_id"],
            ["branches.id"],
            name=op.f("fk_patrons_home_branch_id_branches"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_patrons")),
        sa.UniqueConstraint("card_number", name=op.f("uq_patrons_card_number")),
    )
    op.create_index(op.f("ix_patrons_category_id"), "patrons", ["category_id"], unique=False)
    op.create_index(op.f("ix_patrons_home_branch_id"), "patrons", ["home_branch_id"], unique=False)
    op.create_table(
        "loans",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("item_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "patron_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "branch_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("checked_out_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("renewals", sa.Integer(), nullable=False),
        sa.Column("returned_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lost_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("renewals >= 0", name=op.f("ck_loans_renewals_not_negative")),
        sa.ForeignKeyConstraint(
            ["branch_id"],
            ["branches.id"],
            name=op.f("fk_loans_branch_id_branches"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["item_id"], ["items.id"], name=op.f("fk_loans_item_id_items"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["patron_id"],
            ["patrons.id"],
            name=op.f("fk_loans_patron_id_patrons"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_loans")),
    )
    op.create_index(
        "ix_loans_due_at_open",
        "loans",
        ["due_at"],
        unique=False,
        postgresql_where=sa.text("returned_at IS NULL"),
        sqlite_where=sa.text("returned_at IS NULL"),
    )
    op.create_index(
        op.f("ix_loans_patron_id_returned_at"), "loans", ["patron_id", "returned_at"], unique=False
    )
    op.create_index(
        "uq_loans_item_id_open",
        "loans",
        ["item_id"],
        unique=True,
        postgresql_where=sa.text("returned_at IS NULL"),
        sqlite_where=sa.text("returned_at IS NULL"),
    )
    op.create_table(
        "patron_blocks",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "patron_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=150), nullable=False),
        sa.Column("lifted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lifted_by", sa.String(length=150), nullable=True),
        sa.ForeignKeyConstraint(
            ["patron_id"],
            ["patrons.id"],
            name=op.f("fk_patron_blocks_patron_id_patrons"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_patron_blocks")),
    )
    op.create_index(
        op.f("ix_patron_blocks_patron_id"), "patron_blocks", ["patron_id"], unique=False
    )
    op.create_table(
        "fees",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "patron_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("loan_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("item_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("amount", sa.Numeric(precision=10, scale=2), nullable=False),
        sa.Column("outstanding", sa.Numeric(precision=10, scale=2), nullable=False),
        sa.Column("waived", sa.Numeric(precision=10, scale=2), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("waive_reason", sa.Text(), nullable=True),
        sa.CheckConstraint("kind IN ('overdue', 'lost', 'manual')", name=op.f("ck_fees_kind")),
        sa.CheckConstraint("status IN ('open', 'paid', 'waived')", name=op.f("ck_fees_status")),
        sa.CheckConstraint("amount > 0", name=op.f("ck_fees_amount_positive")),
        sa.CheckConstraint(
            "outstanding >= 0 AND waived >= 0 AND outstanding + waived <= amount",
            name=op.f("ck_fees_outstanding_in_range"),
        ),
        sa.ForeignKeyConstraint(
            ["item_id"], ["items.id"], name=op.f("fk_fees_item_id_items"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["loan_id"], ["loans.id"], name=op.f("fk_fees_loan_id_loans"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["patron_id"],
            ["patrons.id"],
            name=op.f("fk_fees_patron_id_patrons"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fees")),
    )
    op.create_index(op.f("ix_fees_patron_id_status"), "fees", ["patron_id", "status"], unique=False)
    op.create_index(
        "uq_fees_loan_id_due_at_overdue",
        "fees",
        ["loan_id", "due_at"],
        unique=True,
        postgresql_where=sa.text("kind = 'overdue'"),
        sqlite_where=sa.text("kind = 'overdue'"),
    )
    op.create_index(
        "uq_fees_loan_id_lost",
        "fees",
        ["loan_id"],
        unique=True,
        postgresql_where=sa.text("kind = 'lost'"),
        sqlite_where=sa.text("kind = 'lost'"),
    )
    op.create_table(
        "holds",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("level", sa.String(length=8), nullable=False),
        sa.Column("bib_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("item_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column(
            "patron_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "pickup_branch_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("placed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ready_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ready_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("loan_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.CheckConstraint(
            "level = 'title' OR item_id IS NOT NULL", name=op.f("ck_holds_item_level_has_item")
        ),
        sa.CheckConstraint("level IN ('title', 'item')", name=op.f("ck_holds_level")),
        sa.CheckConstraint(
            "status IN ('waiting', 'in_transit', 'ready', 'fulfilled', 'cancelled', 'expired')",
            name=op.f("ck_holds_status"),
        ),
        sa.CheckConstraint(
            "status NOT IN ('in_transit', 'ready') OR item_id IS NOT NULL",
            name=op.f("ck_holds_trapped_has_item"),
        ),
        sa.ForeignKeyConstraint(
            ["bib_id"], ["bibs.id"], name=op.f("fk_holds_bib_id_bibs"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["item_id"], ["items.id"], name=op.f("fk_holds_item_id_items"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["loan_id"], ["loans.id"], name=op.f("fk_holds_loan_id_loans"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["patron_id"],
            ["patrons.id"],
            name=op.f("fk_holds_patron_id_patrons"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["pickup_branch_id"],
            ["branches.id"],
            name=op.f("fk_holds_pickup_branch_id_branches"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_holds")),
        sa.UniqueConstraint("loan_id", name=op.f("uq_holds_loan_id")),
    )
    op.create_index(op.f("ix_holds_bib_id_status"), "holds", ["bib_id", "status"], unique=False)
    op.create_index(
        op.f("ix_holds_patron_id_status"), "holds", ["patron_id", "status"], unique=False
    )
    op.create_index(
        op.f("ix_holds_status_ready_until"), "holds", ["status", "ready_until"], unique=False
    )
    op.create_index(
        "uq_holds_item_id_trapped",
        "holds",
        ["item_id"],
        unique=True,
        postgresql_where=sa.text("status IN ('in_transit', 'ready')"),
        sqlite_where=sa.text("status IN ('in_transit', 'ready')"),
    )
    op.create_index(
        "uq_holds_patron_id_bib_id_active",
        "holds",
        ["patron_id", "bib_id"],
        unique=True,
        postgresql_where=sa.text("status IN ('waiting', 'in_transit', 'ready')"),
        sqlite_where=sa.text("status IN ('waiting', 'in_transit', 'ready')"),
    )
    op.create_table(
        "payments",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("fee_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("amount", sa.Numeric(precision=10, scale=2), nullable=False),
        sa.Column("method", sa.String(length=16), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("paid_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_by", sa.String(length=150), nullable=False),
        sa.CheckConstraint(
            "method IN ('cash', 'card', 'online', 'other')", name=op.f("ck_payments_method")
        ),
        sa.CheckConstraint("amount > 0", name=op.f("ck_payments_amount_positive")),
        sa.ForeignKeyConstraint(
            ["fee_id"], ["fees.id"], name=op.f("fk_payments_fee_id_fees"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payments")),
    )
    op.create_index(op.f("ix_payments_fee_id"), "payments", ["fee_id"], unique=False)
    _add_users_patron_id()
    _seed_default_rule()


def _add_users_patron_id() -> None:
    if op.get_bind().dialect.name == "sqlite":
        # SQLite cannot ALTER a constraint in; a named REFERENCES clause on the new column is
        # the one way short of copying the table (which would fire the ON DELETE actions of
        # the tables that reference users).
        op.execute(
            "ALTER TABLE users ADD COLUMN patron_id INTEGER "
            "CONSTRAINT fk_users_patron_id_patrons REFERENCES patrons (id) ON DELETE SET NULL"
        )
        return
    op.add_column("users", sa.Column("patron_id", sa.BigInteger(), nullable=True))
    op.create_foreign_key(
        op.f("fk_users_patron_id_patrons"),
        "users",
        "patrons",
        ["patron_id"],
        ["id"],
        ondelete="SET NULL",
    )


# The default rule: matches every branch, patron category and item type; cannot be deleted.
DEFAULT_RULE = {
    "branch_id": None,
    "patron_category_id": None,
    "item_type": None,
    "loan_period": 21,
    "period_unit": "days",
    "renewals_allowed": 2,
    "max_loans": 30,
    "max_holds": 10,
    "fine_per_day": Decimal("0.25"),
    "fine_cap": Decimal("10.00"),
    "grace_days": 0,
    "holdable": True,
    "renew_from": "due_date",
    "hold_pickup_days": 7,
}


def _seed_default_rule() -> None:
    money = ("fine_per_day", "fine_cap")
    rules = sa.table(
        "circulation_rules",
        *(sa.column(name) for name in DEFAULT_RULE if name not in money),
        *(sa.column(name, sa.Numeric(10, 2)) for name in money),
        sa.column("created_at", sa.DateTime(timezone=True)),
        sa.column("updated_at", sa.DateTime(timezone=True)),
    )
    now = datetime.now(UTC)
    op.bulk_insert(rules, [DEFAULT_RULE | {"created_at": now, "updated_at": now}])


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        # Dropping a column that has a foreign key needs the copy-and-move of batch mode.
        with op.batch_alter_table("users") as batch_op:
            batch_op.drop_column("patron_id")
    else:
        op.drop_constraint(op.f("fk_users_patron_id_patrons"), "users", type_="foreignkey")
        op.drop_column("users", "patron_id")
    op.drop_index(op.f("ix_payments_fee_id"), table_name="payments")
    op.drop_table("payments")
    op.drop_index(
        "uq_holds_patron_id_bib_id_active",
        table_name="holds",
        postgresql_where=sa.text("status IN ('waiting', 'in_transit', 'ready')"),
        sqlite_where=sa.text("status IN ('waiting', 'in_transit', 'ready')"),
    )
    op.drop_index(
        "uq_holds_item_id_trapped",
        table_name="holds",
        postgresql_where=sa.text("status IN ('in_transit', 'ready')"),
        sqlite_where=sa.text("status IN ('in_transit', 'ready')"),
    )
    op.drop_index(op.f("ix_holds_status_ready_until"), table_name="holds")
    op.drop_index(op.f("ix_holds_patron_id_status"), table_name="holds")
    op.drop_index(op.f("ix_holds_bib_id_status"), table_name="holds")
    op.drop_table("holds")
    op.drop_index(
        "uq_fees_loan_id_lost",
        table_name="fees",
        postgresql_where=sa.text("kind = 'lost'"),
        sqlite_where=sa.text("kind = 'lost'"),
    )
    op.drop_index(
        "uq_fees_loan_id_due_at_overdue",
        table_name="fees",
        postgresql_where=sa.text("kind = 'overdue'"),
        sqlite_where=sa.text("kind = 'overdue'"),
    )
    op.drop_index(op.f("ix_fees_patron_id_status"), table_name="fees")
    op.drop_table("fees")
    op.drop_index(op.f("ix_patron_blocks_patron_id"), table_name="patron_blocks")
    op.drop_table("patron_blocks")
    op.drop_index(
        "uq_loans_item_id_open",
        table_name="loans",
        postgresql_where=sa.text("returned_at IS NULL"),
        sqlite_where=sa.text("returned_at IS NULL"),
    )
    op.drop_index(op.f("ix_loans_patron_id_returned_at"), table_name="loans")
    op.drop_index(
        "ix_loans_due_at_open",
        table_name="loans",
        postgresql_where=sa.text("returned_at IS NULL"),
        sqlite_where=sa.text("returned_at IS NULL"),
    )
    op.drop_table("loans")
    op.drop_index(op.f("ix_patrons_home_branch_id"), table_name="patrons")
    op.drop_index(op.f("ix_patrons_category_id"), table_name="patrons")
    op.drop_table("patrons")
    op.drop_index(op.f("ix_closed_days_branch_id"), table_name="closed_days")
    op.drop_table("closed_days")
    op.drop_index("uq_circulation_rules_scope", table_name="circulation_rules")
    op.drop_table("circulation_rules")
    op.drop_table("patron_categories")
