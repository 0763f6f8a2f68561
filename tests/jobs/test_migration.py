"""Migration 0003 builds the jobs table the model describes."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession

from shelfmark.models import Base


def _reflect_jobs_only(name: str | None, type_: str, _parent: Any) -> bool:
    return type_ != "table" or name == "jobs"


def _compare_jobs_only(obj: Any, name: str | None, type_: str, *_: Any) -> bool:
    table = obj if type_ == "table" else getattr(obj, "table", None)
    return table is None or table.name == "jobs"


def _differences(connection: Connection) -> list[Any]:
    options = {
        "compare_type": True,
        "include_name": _reflect_jobs_only,
        "include_object": _compare_jobs_only,
    }
    context = MigrationContext.configure(connection, opts=options)
    return list(compare_metadata(context, Base.metadata))


async def test_the_jobs_table_matches_the_model(session: AsyncSession) -> None:
    connection = await session.connection()
    assert await connection.run_sync(_differences) == []
