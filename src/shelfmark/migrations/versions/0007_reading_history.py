"""reading history: a closed loan may forget its patron (loans.patron_id NULL-able, never on
an open loan); patrons.keep_reading_history, the opt-in that keeps it

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24
"""

import re
from collections.abc import Callable, Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OPEN_HAS_PATRON = "ck_loans_open_has_patron"
CONDITION = "patron_id IS NOT NULL OR returned_at IS NOT NULL"
_NOT_NULL = re.compile(r"\bpatron_id INTEGER NOT NULL,")
_NULLABLE = re.compile(r"\bpatron_id INTEGER,")
_CHECK = f",\n\tCONSTRAINT {OPEN_HAS_PATRON} CHECK ({CONDITION})"
_LAST_PARENTHESIS = re.compile(r"\s*\)\s*$")


def _loans_table_sql(bind: sa.Connection) -> str:
    query = sa.text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'loans'")
    return str(bind.execute(query).scalar_one())


def _rewrite_loans_on_sqlite(change: Callable[[str], str]) -> None:
    """Change the declaration of `loans` in place.

    SQLite alters no column's NOT NULL nor adds a CHECK to a table; the usual way round,
    copying into a new table and dropping the old one, cannot run here: the migration is one
    transaction with foreign keys on, and dropping `loans` would break the holds and fees that
    refer to it. SQLite documents this other way for changes that leave the stored rows as
    they are — dropping a NOT NULL, adding a CHECK that every row meets (every loan has a
    patron until now) — in "Making Other Kinds Of Table Schema Changes"
    (https://www.sqlite.org/lang_altertable.html#otheralter): edit the table's SQL in
    sqlite_master, bump the schema version so that every connection reads it again, check.
    """
    bind = op.get_bind()
    version = int(bind.exec_driver_sql("PRAGMA schema_version").scalar_one())
    sql = change(_loans_table_sql(bind))
    bind.exec_driver_sql("PRAGMA writable_schema = ON")
    try:
        bind.execute(
            sa.text("UPDATE sqlite_master SET sql = :sql WHERE type = 'table' AND name = 'loans'"),
            {"sql": sql},
        )
        # A pragma takes no bound parameter; `version` is an int read just above.
        bind.exec_driver_sql(f"PRAGMA schema_version = {version + 1}")
    finally:
        bind.exec_driver_sql("PRAGMA writable_schema = OFF")
    verdict = bind.exec_driver_sql("PRAGMA quick_check").scalar_one()
    if verdict != "ok":
        raise RuntimeError(f"The loans table failed SQLite's check after the change: {verdict}")


def _substitute(pattern: re.Pattern[str], replacement: str, sql: str) -> str:
    new, count = pattern.subn(replacement, sql)
    if count != 1:
        raise RuntimeError(f"Unexpected declaration of the loans table: {sql}")
    return new


def _nullable(sql: str) -> str:
    sql = _substitute(_NOT_NULL, "patron_id INTEGER,", sql)
    return _substitute(_LAST_PARENTHESIS, _CHECK + "\n)", sql)


def _not_null(sql: str) -> str:
    sql = _substitute(_NULLABLE, "patron_id INTEGER NOT NULL,", sql)
    if _CHECK not in sql:
        raise RuntimeError(f"Unexpected declaration of the loans table: {sql}")
    return sql.replace(_CHECK, "")


def upgrade() -> None:
    op.add_column(
        "patrons",
        sa.Column("keep_reading_history", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    if op.get_bind().dialect.name == "sqlite":
        _rewrite_loans_on_sqlite(_nullable)
    else:
        op.alter_column("loans", "patron_id", existing_type=sa.BigInteger(), nullable=True)
        op.create_check_constraint(op.f(OPEN_HAS_PATRON), "loans", CONDITION)


def downgrade() -> None:
    loans = sa.table("loans", sa.column("patron_id"))
    anonymised = op.get_bind().execute(
        sa.select(sa.func.count()).select_from(loans).where(loans.c.patron_id.is_(None))
    )
    if anonymised.scalar_one():
        raise RuntimeError(
            "Some loans have been anonymised (they name no patron): the schema before 0007 "
            "cannot hold them. Delete them first if that is what you want."
        )
    if op.get_bind().dialect.name == "sqlite":
        _rewrite_loans_on_sqlite(_not_null)
    else:
        op.drop_constraint(op.f(OPEN_HAS_PATRON), "loans", type_="check")
        op.alter_column("loans", "patron_id", existing_type=sa.BigInteger(), nullable=False)
    op.drop_column("patrons", "keep_reading_history")
