"""The judged query set over the real LoC 10k sample, on each database.

The sample is imported once per database per run, into a database of its own (a SQLite
file, a fresh PostgreSQL database) that the per-test rollback fixtures never see. Each
query must find its record within its rank; hits@1 and hits@5 are printed at the end of the
run (see conftest.py).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from conftest import PG_ADMIN_DSN, unreachable
from shelfmark.auth.roles import SYSTEM
from shelfmark.db import create_engine, create_read_sessionmaker, create_sessionmaker
from shelfmark.interop.marc_import import import_file
from shelfmark.migrate import upgrade
from shelfmark.search import service
from shelfmark.settings import Settings

pytestmark = pytest.mark.slow

JUDGED: list[dict[str, Any]] = json.loads(
    (Path(__file__).parent / "judged_queries.json").read_text(encoding="utf-8")
)
SAMPLE = "loc-books-2016-sample-10k.mrc"
DEPTH = 20  # ranks beyond this count as not found


def _pg_admin(sql: str) -> None:
    async def run() -> None:
        connection = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    asyncio.run(run())


@pytest.fixture(scope="module")
def sample(marc_file: Callable[[str], Path]) -> Path:
    return marc_file(SAMPLE)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def judged_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, sample: Path
) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('judged') / 'judged.db'}"
        return
    name = f"shelfmark_judged_{uuid.uuid4().hex[:10]}"
    try:
        _pg_admin(f'CREATE DATABASE "{name}"')
    except (OSError, asyncpg.PostgresError) as exc:
        unreachable(f"PostgreSQL at {PG_ADMIN_DSN} is unreachable: {exc}")
    base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    yield f"{base}/{name}"
    _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
async def judged_catalog(
    judged_url: str, sample: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """The 10k sample, imported (and indexed by the import) once per database."""
    settings = Settings(
        shelfmark_home=tmp_path_factory.mktemp("judged-home"), database_url=judged_url,
        secret_key="test-secret-key-of-at-least-32-bytes!", redis_url=None, broker_url=None,
    )  # fmt: skip
    engine = create_engine(settings)
    await upgrade(engine)
    summary = await import_file(create_sessionmaker(engine), sample, actor=SYSTEM)
    assert summary.created == 10_000
    yield create_read_sessionmaker(engine)
    await engine.dispose()


@pytest.mark.parametrize(
    "judged", JUDGED, ids=[f"{i:02d}-{j['query'][:40]}" for i, j in enumerate(JUDGED)]
)
async def test_judged_query(
    judged: dict[str, Any],
    judged_url: str,
    judged_catalog: async_sessionmaker[AsyncSession],
    judged_ranks: dict[str, dict[str, int | None]],
) -> None:
    async with judged_catalog() as session:
        page = await service.search(
            session, q=judged["query"], filters=service.SearchFilters(), limit=DEPTH
        )
    found = [hit.control_number for hit in page.items]
    rank = found.index(judged["control_number"]) + 1 if judged["control_number"] in found else None
    database = judged_url.split("+", 1)[0]
    judged_ranks.setdefault(database, {})[judged["query"]] = rank
    assert rank is not None, f"{judged['query']!r} ({judged['why']}): not in the top {DEPTH}"
    assert rank <= judged["max_rank"], (
        f"{judged['query']!r} ({judged['why']}): rank {rank}, expected ≤ {judged['max_rank']}"
    )


def test_the_judged_set_is_well_formed() -> None:
    assert len(JUDGED) >= 30
    for judged in JUDGED:
        assert set(judged) == {"query", "control_number", "max_rank", "why"}
        assert judged["why"]
        assert 1 <= judged["max_rank"] <= 5
    assert len({j["query"] for j in JUDGED}) == len(JUDGED)
