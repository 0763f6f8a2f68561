"""Engines, sessions and the declarative base.

One transaction per request or task: `session_scope()` (and the `get_session` dependency built
on it) commits when the work succeeds and rolls back when it raises. Services only `flush()`.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson
from sqlalchemy import JSON, BigInteger, DateTime, Integer, MetaData, Table, event
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Session
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection, QueuePool
from sqlalchemy.sql import Select
from sqlalchemy.types import TypeDecorator
from sqlalchemy.util import greenlet_spawn

from shelfmark import hotpath
from shelfmark.settings import Settings

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# BIGINT identities on PostgreSQL; SQLite only auto-increments an INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")
JSONType = JSON().with_variant(JSONB(), "postgresql")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every database (SQLite stores naive text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given where UTC is required")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def utcnow() -> datetime:
    return datetime.now(UTC)


def _json_dumps(value: Any) -> str:
    # orjson keeps non-ASCII text as is (the stdlib would escape it), and is fast.
    return orjson.dumps(value).decode()


def _sqlite_pragmas(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    # Let SQLAlchemy, not the driver, decide when transactions begin (see _sqlite_begin), so
    # that SAVEPOINTs and transactional DDL behave as on PostgreSQL.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


# `execution_options(sqlite_begin="IMMEDIATE")`: the transaction takes the write lock at once
# (waiting for busy_timeout), for work that reads before it writes and must not interleave
# with another writer, such as a migration.
_SQLITE_BEGIN = {"DEFERRED": "BEGIN", "IMMEDIATE": "BEGIN IMMEDIATE"}


def _sqlite_begin(connection: Any) -> None:
    mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
    connection.exec_driver_sql(_SQLITE_BEGIN[mode])


def create_engine(settings: Settings, **overrides: Any) -> AsyncEngine:
    url = overrides.pop("url", settings.database_url)
    options: dict[str, Any] = {
        "echo": settings.db_echo,
        "json_serializer": _json_dumps,
        "json_deserializer": orjson.loads,
    }
    if url.startswith("sqlite"):
        settings.shelfmark_home.mkdir(parents=True, exist_ok=True)
    else:
        options |= {
            "pool_size": settings.db_pool_size,
            "max_overflow": settings.db_max_overflow,
            # No pre-ping: it costs a round trip per checkout. Stale connections are recycled
            # instead, and a request that meets a dead one fails once and is retried by
            # the client (the pool then discards it).
            "pool_recycle": 1800,
        }
    options |= overrides
    engine = create_async_engine(url, **options)
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
    return engine


def create_sessionmaker(
    engine: AsyncEngine, *, info: dict[str, Any] | None = None
) -> async_sessionmaker[AsyncSession]:
    """Sessions for units of work; `info` reaches every session (the app puts its cache
    there, for invalidation after commit)."""
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False, info=info or {})


def create_read_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions for requests that only read: no BEGIN/COMMIT round trips (autocommit).

    A read of one statement sees one consistent snapshot anyway; reads that need several
    statements to agree use the ordinary, transactional sessions.
    """
    autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
    return async_sessionmaker(autocommit, expire_on_commit=False, autoflush=False)


async def _driver_fetch(
    driver: Any, dialect: Dialect, statement: Select[Any], params: Mapping[str, Any]
) -> Sequence[Mapping[str, Any]]:
    """Run a module-level statement on an asyncpg connection, compiled once (`hotpath`)."""
    found = hotpath.compiled(statement, dialect, params)
    records: Sequence[Mapping[str, Any]] = await driver.fetch(found.sql, *found.arguments(params))
    return records


async def insert_rows(
    session: AsyncSession, table: Table, columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> None:
    """Insert complete rows (tuples of Python values in `columns` order, as SQLAlchemy
    would take them) in the session's transaction, by the fastest bulk path of the database.

    PostgreSQL: binary COPY on the asyncpg connection (copy_records_to_table); SQLite: one
    prepared INSERT run by the driver's executemany. Either skips SQLAlchemy's per-row
    parameter handling, which cost more than the database's work; the columns' own bind
    processing (JSON, UTC datetimes) is applied here, once per value that needs it (once per
    column where every row holds the same object).
    """
    if not rows:
        return
    connection = await session.connection()
    dialect = connection.dialect
    processors = [
        (position, processor)
        for position, name in enumerate(columns)
        if (processor := table.c[name].type.dialect_impl(dialect).bind_processor(dialect))
    ]
    if processors:
        # Column by column: a column whose every value is one object (an import's one
        # timestamp for all its rows) is processed once, the others by map.
        values = list(zip(*rows, strict=True))
        for position, processor in processors:
            column = values[position]
            first = column[0]
            if all(value is first for value in column):
                values[position] = (processor(first),) * len(column)
            else:
                values[position] = tuple(map(processor, column))
        rows = list(zip(*values, strict=True))
    on_driver = await hotpath.driver_of(session)
    if on_driver is not None:
        _, _, driver = on_driver
        await driver.copy_records_to_table(table.name, records=rows, columns=list(columns))
        return
    names = ", ".join(f'"{name}"' for name in columns)
    marks = ", ".join("?" * len(columns))
    await connection.exec_driver_sql(
        f'INSERT INTO "{table.name}" ({names}) VALUES ({marks})',  # noqa: S608 - names, not data
        rows,
    )


class Reads(Protocol):
    """Where the hottest reads run (a bib by id, the first pages of bibs): requests that read
    one module-level statement and nothing else, and need no session for it."""

    async def fetch(
        self, statement: Select[Any], params: Mapping[str, Any]
    ) -> Sequence[Mapping[str, Any]]:
        """The rows of a module-level statement (see `hotpath.rows`)."""
        ...  # pragma: no cover

    async def rows(self, query: Select[Any]) -> Sequence[Mapping[str, Any]]:
        """The rows of any other query, as mappings, through a read session."""
        ...  # pragma: no cover


class SessionReads:
    """Reads through a sessionmaker's sessions (the tests', bound to their connection)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def fetch(
        self, statement: Select[Any], params: Mapping[str, Any]
    ) -> Sequence[Mapping[str, Any]]:
        async with self._sessions() as session:
            return await hotpath.rows(session, statement, params)

    async def rows(self, query: Select[Any]) -> Sequence[Mapping[str, Any]]:
        async with self._sessions() as session:
            rows: Sequence[Mapping[str, Any]] = (await session.execute(query)).mappings().all()
            return rows


class PoolReads(SessionReads):
    """Reads straight on connections of the engine's pool, without a session (the server's).

    Opening and closing a read session costs more CPU than the read itself: 315 µs against
    105 µs for a bib by id through the pool's raw connection (measured in-process, the same
    statement on the same connection each way). On PostgreSQL the statement runs on the
    asyncpg connection, in autocommit (no transaction is begun on it, so none is left open).
    At most `kept` reads run at once, on connections kept here from one read to the next
    rather than checked back into the pool (its checkout and checkin were a sixth of a cold
    read's CPU); a read that finds them all busy waits for one. Taking another from the pool
    for that read alone, as was done beyond 4 kept, cost more than the wait: under 32
    clients a bib by id took about 400 µs of the server's CPU and a page of 50 about 500;
    with 16 kept and waiting, 290 and 340 (bench/api_read.py; with 8 kept, 340 and 430).
    `kept` is half the pool's size unless given (16 of the default 32): kept, connections
    are out of the pool, and the other half (and its overflow) stays for the sessions. Each
    is given back once `RECYCLE` seconds old, for the pool to recycle as it does its own,
    and all of them by `close`. A connection whose read failed or was cancelled is dropped.
    Elsewhere a read session runs the statement (SQLite's reads are in-process).
    """

    RECYCLE = 1800.0  # as the engine's pool_recycle

    def __init__(self, engine: AsyncEngine, *, kept: int | None = None) -> None:
        super().__init__(create_read_sessionmaker(engine))
        self._engine = engine
        self._pooled = engine.dialect.name == "postgresql"
        if kept is None:
            pool = engine.pool
            kept = max(1, pool.size() // 2) if isinstance(pool, QueuePool) else 1
        self._slots = asyncio.Semaphore(kept)
        self._idle: list[tuple[float, PoolProxiedConnection]] = []

    async def fetch(
        self, statement: Select[Any], params: Mapping[str, Any]
    ) -> Sequence[Mapping[str, Any]]:
        if not self._pooled:
            return await super().fetch(statement, params)
        async with self._slots:
            return await self._fetch(statement, params)

    async def _fetch(
        self, statement: Select[Any], params: Mapping[str, Any]
    ) -> Sequence[Mapping[str, Any]]:
        # Holding a slot: every kept connection not in use by another read is idle here.
        if self._idle:
            taken_at, pooled = self._idle.pop()
        else:
            taken_at, pooled = time.monotonic(), await self._engine.raw_connection()
        try:
            rows = await _driver_fetch(
                pooled.driver_connection, self._engine.dialect, statement, params
            )
        except BaseException:
            # It may be left mid-protocol: closed (which gives it back to the pool as a slot
            # to reconnect), never handed to the next read. In a greenlet: closing awaits.
            await greenlet_spawn(pooled.invalidate)
            raise
        if time.monotonic() - taken_at < self.RECYCLE:
            self._idle.append((taken_at, pooled))
        else:
            await greenlet_spawn(pooled.close)  # back to the pool, which recycles it
        return rows

    async def close(self) -> None:
        """Give the kept connections back to the pool (before the engine is disposed)."""
        idle, self._idle = self._idle, []
        for _, pooled in idle:
            await greenlet_spawn(pooled.close)


# What `constraint_of` reports for a broken foreign key or NOT NULL (SQLite names neither).
IN_USE = "foreign_key"
NOT_NULL = "not_null"
_SQLITE_PATTERNS = (
    re.compile(r"CHECK constraint failed: (\w+)"),
    re.compile(r"UNIQUE constraint failed: index '(\w+)'"),
)
_SQLITE_UNIQUE_COLUMNS = re.compile(r"UNIQUE constraint failed: ([\w.]+(?:, [\w.]+)*)")
_POSTGRES_STATES = {"23503": IN_USE, "23502": NOT_NULL}


def constraint_of(error: IntegrityError) -> str:
    """The name of the constraint a write broke, the same on PostgreSQL and SQLite.

    asyncpg names it; SQLite names check constraints and expression indexes, and gives the
    columns of a plain unique constraint, from which the naming convention
    (`uq_<table>_<columns>`) rebuilds its name. Foreign keys and NOT NULL are reported as
    `IN_USE` and `NOT_NULL`: SQLite names neither.
    """
    cause = getattr(error.orig, "__cause__", None)
    state = getattr(cause, "sqlstate", None)
    if state in _POSTGRES_STATES:
        return _POSTGRES_STATES[state]
    name = getattr(cause, "constraint_name", None)
    if isinstance(name, str) and name:
        return name
    text = str(error.orig)
    for pattern in _SQLITE_PATTERNS:
        if match := pattern.search(text):
            return match.group(1)
    if match := _SQLITE_UNIQUE_COLUMNS.search(text):
        columns = [column.split(".") for column in match.group(1).split(", ")]
        return f"uq_{columns[0][0]}_" + "_".join(column[-1] for column in columns)
    if "FOREIGN KEY" in text:
        return IN_USE
    if "NOT NULL" in text:
        return NOT_NULL
    return "unknown"


async def flush_or_raise(session: AsyncSession, error: Exception) -> None:
    """Flush; a violated constraint becomes `error` (a domain error). The database, not a
    prior SELECT, has the last word.

    The error ends the unit of work: a failed statement aborts a PostgreSQL transaction, and
    a savepoint would not save it here, because `begin_nested()` flushes the pending rows
    before it emits SAVEPOINT. Code that must carry on after a conflict adds its row inside
    `session.begin_nested()` itself (jobs and Idempotency-Keys do).
    """
    try:
        await session.flush()
    except IntegrityError as exc:
        raise error from exc


AfterCommit = Callable[[], Awaitable[None] | None]


def after_commit(session: AsyncSession | Session, callback: AfterCommit) -> None:
    """Run `callback` once the session's transaction has committed; never if it rolls back.

    Work for other processes (Celery tasks, live events) goes through here, so that a refused
    request sends nothing.
    """
    session.info.setdefault("after_commit", []).append(callback)


async def _run_after_commit(session: AsyncSession) -> None:
    callbacks: list[AfterCommit] = session.info.pop("after_commit", [])
    for callback in callbacks:
        result = callback()
        if result is not None:
            await result


@asynccontextmanager
async def session_scope(maker: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """One unit of work: commit on success, roll back (and drop queued work) on error."""
    async with maker() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            session.info.pop("after_commit", None)
            await session.rollback()
            raise
        await _run_after_commit(session)
