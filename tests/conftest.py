"""Fixtures: every database test runs on SQLite and on PostgreSQL.

Each database is created fresh for the run and built by the migrations; each test runs in an
outer transaction that is rolled back, and the code under test commits only savepoints.
A database server that cannot be reached skips its leg on a laptop and fails under CI=true.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from shelfmark.admin import bind_admin
from shelfmark.app import create_app, with_event_streams
from shelfmark.cache import SESSION_KEY as CACHE_KEY
from shelfmark.db import create_engine
from shelfmark.migrate import upgrade
from shelfmark.settings import Settings
from shelfmark.worker import configure as configure_celery

IN_CI = os.environ.get("CI") == "true"
PG_ADMIN_DSN = os.environ.get("SHELFMARK_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`@pytest.mark.postgres_only` tests (races, pg_trgm) are not collected on the SQLite
    leg: there is nothing there for them to run, and a skip would read as a failure hidden."""
    kept, dropped = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_sqlite = callspec is not None and callspec.params.get("database_url") == "sqlite"
        (dropped if on_sqlite and item.get_closest_marker("postgres_only") else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def unreachable(reason: str) -> None:
    """Skip a leg whose server, tool or data is missing, except under CI, where that is a
    failure."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: what a test needs missing is a failure, not a skip)")
    pytest.skip(reason)


MARC_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "marc"


def marc_file(name: str) -> Path:
    """A file of ../shared/data/marc (its README says what each is); `unreachable` without."""
    path = MARC_DIR / name
    if not path.exists():
        unreachable(f"{path} is missing: ../shared/data/marc is not beside this checkout")
    return path


@pytest.fixture(scope="session")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("shelfmark-home")


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, home: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{home / 'test.db'}"
        return
    yield from postgres_database(request)


def postgres_database(request: pytest.FixtureRequest) -> Iterator[str]:
    name = f"shelfmark_test_{uuid.uuid4().hex[:10]}"

    async def admin(sql: str) -> None:
        connection = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    try:
        asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as exc:
        unreachable(f"PostgreSQL at {PG_ADMIN_DSN} is unreachable: {exc}")
    base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    yield f"{base}/{name}"
    asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def settings(home: Path, database_url: str) -> Settings:
    return Settings(
        shelfmark_home=home,
        database_url=database_url,
        secret_key="test-secret-key-of-at-least-32-bytes!",
        redis_url=None,
        broker_url=None,
        smtp_url=None,
    )


@pytest.fixture(scope="session")
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(settings)
    await upgrade(engine)
    yield engine
    await engine.dispose()


@pytest.fixture
def dialect(engine: AsyncEngine) -> str:
    return engine.dialect.name


@pytest.fixture
async def connection(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    async with engine.connect() as connection:
        transaction = await connection.begin()
        yield connection
        if transaction.is_active:
            await transaction.rollback()


@pytest.fixture
def sessionmaker(connection: AsyncConnection) -> async_sessionmaker[AsyncSession]:
    """Sessions on the test's connection: their commits only release savepoints."""
    return async_sessionmaker(
        bind=connection,
        expire_on_commit=False,
        autoflush=False,
        join_transaction_mode="create_savepoint",
    )


@pytest.fixture
async def session(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    async with sessionmaker() as session:
        yield session


@pytest.fixture
def app(
    settings: Settings,
    engine: AsyncEngine,
    connection: AsyncConnection,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> FastAPI:
    app = create_app(settings)
    app.state.engine = engine
    # The app's sessions invalidate its cache after commit, as in production.
    sessionmaker.configure(info={CACHE_KEY: app.state.cache})
    app.state.sessionmaker = sessionmaker
    app.state.read_sessionmaker = sessionmaker
    bind_admin(app, connection, join_transaction_mode="create_savepoint")
    # Work the app sends after a commit (a notice to deliver, a job) goes to the test home's
    # embedded broker, as `serve` sends it to its own; no worker reads it there.
    configure_celery(settings)
    return app


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    # As servers run it (`shelfmark.asgi:app`): event streams handed off outside the app.
    transport = httpx.ASGITransport(app=with_event_streams(app), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client
