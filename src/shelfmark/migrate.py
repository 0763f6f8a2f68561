"""Run the Alembic migrations from code: the CLI, the app's tests and the demo use this.

Two migrations may start at once (the Kubernetes Job and an operator's manual run, or a
Job retried while its first pod still runs); they must run one after the other, the second
finding the schema already at head. On PostgreSQL the migration's transaction first takes
an advisory lock, held until it commits or rolls back (or its connection drops). On SQLite
the database file's own lock is enough: the migration's transaction starts as SQLite's
single writer (BEGIN IMMEDIATE), so a second one waits for the first to commit, and then
reads the version the first wrote.
"""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import func, select
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, async_sessionmaker

from shelfmark.search.index import build_missing_indexes

MIGRATIONS = Path(__file__).parent / "migrations"
# The advisory lock's key: any bigint that no other code of the database's users takes.
# Spelt "SHELFMRK" in ASCII, for whoever finds it in pg_locks.
MIGRATION_LOCK = int.from_bytes(b"SHELFMRK", "big") - 2**63

log = logging.getLogger(__name__)


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def _upgrade(connection: Connection, revision: str) -> None:
    command.upgrade(alembic_config(connection), revision)


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Bring the database of `engine` to `revision`, in one transaction where the database
    allows transactional DDL (PostgreSQL, SQLite), one migration at a time; then build any
    search index that is missing."""
    if engine.dialect.name == "sqlite":
        engine = engine.execution_options(sqlite_begin="IMMEDIATE")
    async with engine.begin() as connection:
        await _lock(connection)
        await connection.run_sync(_upgrade, revision)
    # An import stopped while it was building them again (search.index.bulk_indexing).
    await build_missing_indexes(async_sessionmaker(engine))


async def _lock(connection: AsyncConnection) -> None:
    """On PostgreSQL, wait for any other migration to finish (the lock is the transaction's:
    its commit or rollback releases it)."""
    if connection.dialect.name != "postgresql":
        return
    if not await connection.scalar(select(func.pg_try_advisory_xact_lock(MIGRATION_LOCK))):
        log.info("Another migration is running: waiting for it to finish.")
        await connection.execute(select(func.pg_advisory_xact_lock(MIGRATION_LOCK)))
