"""Migration 0002 builds what the patrons and circulation models describe, and seeds the
default rule."""

from __future__ import annotations

import warnings
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Table, select
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession

from shelfmark.circulation.models import CirculationRule
from shelfmark.models import Base

TABLES = {
    "patron_categories", "patrons", "patron_blocks", "circulation_rules", "closed_days",
    "loans", "holds", "fees", "payments", "users",
}  # fmt: skip


def _table_of(diff: Any) -> str | None:
    if isinstance(diff, list):  # column modifications come as a list of tuples
        return str(diff[0][2])
    if diff[0] in {"add_column", "remove_column"}:
        return str(diff[2])
    for part in diff[1:]:
        if isinstance(part, Table):
            return str(part.name)
        table = getattr(part, "table", None)
        if table is not None:
            return str(table.name)
    return None


def _differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    with warnings.catch_warnings():
        # Expression indexes (the rule scope) cannot be reflected; Alembic says so.
        warnings.simplefilter("ignore")
        diffs = compare_metadata(context, Base.metadata)
    sqlite = connection.dialect.name == "sqlite"
    return [
        d
        for d in diffs
        if _table_of(d) in TABLES
        # SQLite does not reflect the name of a column-level foreign key (users.patron_id).
        and not (sqlite and not isinstance(d, list) and d[0] in {"add_fk", "remove_fk"})
    ]


async def test_the_schema_matches_the_models(session: AsyncSession) -> None:
    connection = await session.connection()
    assert await connection.run_sync(_differences) == []


async def test_the_default_rule_is_seeded(session: AsyncSession) -> None:
    defaults = (
        await session.scalars(
            select(CirculationRule).where(
                CirculationRule.branch_id.is_(None),
                CirculationRule.patron_category_id.is_(None),
                CirculationRule.item_type.is_(None),
            )
        )
    ).all()
    assert len(defaults) == 1
    assert defaults[0].is_default
    assert (defaults[0].loan_period, defaults[0].period_unit) == (21, "days")
