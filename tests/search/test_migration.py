"""Migration 0004 on a database of its own: it indexes the bibs that exist (backfill), builds
what the models describe, and goes down and up again."""

from __future__ import annotations

import asyncio
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Table, func, insert, inspect, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from conftest import PG_ADMIN_DSN, unreachable
from shelfmark.catalog.models import Bib, BibIsbn
from shelfmark.db import create_engine, create_read_sessionmaker, utcnow
from shelfmark.migrate import alembic_config, upgrade
from shelfmark.models import Base
from shelfmark.search import service
from shelfmark.search.index import SEARCH_INDEX_LOCK, build_missing_indexes
from shelfmark.search.models import PG_SEARCH_INDEXES
from shelfmark.settings import Settings

TABLES = {"bib_search", "bib_search_subjects", "bib_search_terms"}
# PostgreSQL's own parts, which the models leave out on purpose (only the backend uses them)
POSTGRES_ONLY = {
    "document", "ix_bib_search_document", "ix_bib_search_title_text_trgm",
    "ix_bib_search_contributors_text_trgm",
}  # fmt: skip
BEFORE = ScriptDirectory.from_config(alembic_config()).get_revision("0004").down_revision
assert isinstance(BEFORE, str)


def _pg_admin(sql: str) -> None:
    async def run() -> None:
        connection = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    asyncio.run(run())


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'migration.db'}"
        return
    name = f"shelfmark_migration_{uuid.uuid4().hex[:10]}"
    try:
        _pg_admin(f'CREATE DATABASE "{name}"')
    except (OSError, asyncpg.PostgresError) as exc:
        unreachable(f"PostgreSQL at {PG_ADMIN_DSN} is unreachable: {exc}")
    base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    yield f"{base}/{name}"
    _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def fresh_engine(fresh_url: str, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    settings = Settings(
        shelfmark_home=tmp_path, database_url=fresh_url, redis_url=None, broker_url=None,
        secret_key="test-secret-key-of-at-least-32-bytes!",
    )  # fmt: skip
    engine = create_engine(settings)
    yield engine
    await engine.dispose()


def _bib(title: str, **values: Any) -> dict[str, Any]:
    now = utcnow()
    return {
        "title": title, "subtitle": None, "contributors": [], "isbns": [], "subjects": [],
        "series": [], "material_type": "book", "created_at": now, "updated_at": now,
    } | values  # fmt: skip


def _differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # FTS5 tables and the tsvector column reflect oddly
        diffs = compare_metadata(context, Base.metadata)
    mine = []
    for diff in diffs:
        table = diff[0][2] if isinstance(diff, list) else _table_of(diff)
        removed = diff[0] in {"remove_column", "remove_index"}
        if table in TABLES and not (removed and diff[-1].name in POSTGRES_ONLY):
            mine.append(diff)
    return mine


def _table_of(diff: Any) -> str | None:
    if diff[0] in {"add_column", "remove_column"}:
        return str(diff[2])
    for part in diff[1:]:
        if isinstance(part, Table):
            return str(part.name)
        table = getattr(part, "table", None)
        if table is not None:
            return str(table.name)
    return None


def _downgrade(connection: Connection) -> None:
    command.downgrade(alembic_config(connection), BEFORE)


async def test_backfill_schema_and_roundtrip(fresh_engine: AsyncEngine) -> None:
    await upgrade(fresh_engine, BEFORE)
    async with fresh_engine.begin() as connection:
        await connection.execute(
            insert(Bib),
            [
                _bib("Wendezeit in Görlitz", subjects=["Görlitz (Germany) -- History."]),
                _bib("The left hand of darkness", isbns=["9780441478125"]),
            ],
        )
        await connection.execute(insert(BibIsbn), [{"bib_id": 2, "isbn": "9780441478125"}])

    await upgrade(fresh_engine)

    async with create_read_sessionmaker(fresh_engine)() as session:
        page = await service.search(session, q="gorlitz", filters=service.SearchFilters())
        assert [hit.title for hit in page.items] == ["Wendezeit in Görlitz"]
        assert page.facets.subject[0].value == "Görlitz (Germany)"
        page = await service.search(session, q="0-441-47812-3", filters=service.SearchFilters())
        assert [hit.id for hit in page.items] == [2]
        page = await service.search(session, q="darknes lefft", filters=service.SearchFilters())
        assert [hit.id for hit in page.items] == [2]  # the vocabulary was backfilled too
    async with fresh_engine.connect() as connection:
        assert await connection.run_sync(_differences) == []

    async with fresh_engine.begin() as connection:
        await connection.run_sync(_downgrade)
        names = set(await connection.run_sync(lambda c: inspect(c).get_table_names()))
        assert not names & (TABLES | {"bib_fts"})
    await upgrade(fresh_engine)


async def test_migrate_builds_the_search_indexes_an_import_left_out(
    fresh_engine: AsyncEngine,
) -> None:
    """An import stopped while it had the full-text index dropped (search.index.bulk_indexing):
    `shelfmark migrate` builds it; two builds at once (two imports ending) take turns."""
    await upgrade(fresh_engine)
    assert await build_missing_indexes(async_sessionmaker(fresh_engine)) == []
    if fresh_engine.dialect.name == "sqlite":
        trigger = text("SELECT sql FROM sqlite_master WHERE name = 'bib_search_ai'")
        async with fresh_engine.begin() as connection:
            made = await connection.scalar(trigger)
            await connection.execute(text("DROP TRIGGER bib_search_ai"))
        await upgrade(fresh_engine)
        async with fresh_engine.connect() as connection:
            assert made is not None
            assert await connection.scalar(trigger) == made
        return

    async def indexes() -> dict[str, str]:
        async with fresh_engine.connect() as connection:
            query = text(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'bib_search'"
            )
            return dict((await connection.execute(query)).all())

    made = await indexes()
    assert set(PG_SEARCH_INDEXES) <= set(made)
    async with fresh_engine.begin() as connection:
        await connection.execute(text("DROP INDEX ix_bib_search_document"))
    await upgrade(fresh_engine)
    assert await indexes() == made

    async with fresh_engine.begin() as connection:
        for name in PG_SEARCH_INDEXES:
            await connection.execute(text(f"DROP INDEX {name}"))
    maker = async_sessionmaker(fresh_engine)
    async with fresh_engine.connect() as holder:
        # Both calls find the indexes missing, and wait at their locks until both do.
        for number in range(len(PG_SEARCH_INDEXES)):
            await holder.execute(select(func.pg_advisory_lock(SEARCH_INDEX_LOCK, number)))
        both = asyncio.gather(build_missing_indexes(maker), build_missing_indexes(maker))
        waiting = text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
        for _ in range(500):
            if await holder.scalar(waiting) == 2 * len(PG_SEARCH_INDEXES):
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the two builds never both waited")
        await holder.execute(select(func.pg_advisory_unlock_all()))
        await holder.commit()
        built = await both
    assert built == [list(PG_SEARCH_INDEXES)] * 2  # the second found each one built
    assert await indexes() == made
