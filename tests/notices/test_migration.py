"""Migration 0006 builds the notice tables the models describe, and gives every rule notice
terms that the database keeps in order."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from shelfmark.circulation.models import CirculationRule
from shelfmark.models import Base

TABLES = {"notices", "notice_templates", "circulation_rules"}


def _included(name: str | None, type_: str, _parent: Any) -> bool:
    return type_ != "table" or name in TABLES


def _compared(obj: Any, name: str | None, type_: str, *_: Any) -> bool:
    table = obj if type_ == "table" else getattr(obj, "table", None)
    return table is None or table.name in TABLES


def _differences(connection: Connection) -> list[Any]:
    options = {"compare_type": True, "include_name": _included, "include_object": _compared}
    context = MigrationContext.configure(connection, opts=options)
    with warnings.catch_warnings():
        # The rule scope's expression index cannot be reflected; Alembic says so.
        warnings.simplefilter("ignore")
        return list(compare_metadata(context, Base.metadata))


async def test_the_notice_tables_and_rule_terms_match_the_models(session: AsyncSession) -> None:
    connection = await session.connection()
    assert await connection.run_sync(_differences) == []


async def test_the_default_rule_has_the_default_notice_terms(session: AsyncSession) -> None:
    default = await session.scalar(
        select(CirculationRule).where(
            CirculationRule.branch_id.is_(None),
            CirculationRule.patron_category_id.is_(None),
            CirculationRule.item_type.is_(None),
        )
    )
    assert default is not None
    assert (default.due_soon_days, default.overdue_notice_days) == (2, [1, 7, 14])


@pytest.mark.parametrize(
    "terms",
    [
        {"due_soon_days": 0},
        {"overdue_notice_1": 0},
        {"overdue_notice_2": 1},  # not after the first (1)
        {"overdue_notice_1": None},  # the second without a first
        {"overdue_notice_3": 400},
    ],
)
async def test_the_database_keeps_notice_terms_in_order(
    session: AsyncSession, terms: dict[str, int | None]
) -> None:
    with pytest.raises(IntegrityError):
        async with session.begin_nested():
            await session.execute(update(CirculationRule).values(terms))
