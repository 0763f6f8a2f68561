"""Hot reads on the pool's connections (`PoolReads`), as the server runs them.

The rest of the suite reads through the test's own connection (`SessionReads`), so these
tests use an engine of their own: what matters here is the pool, whose connections must come
back after every read, and not come back when a read broke them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy import bindparam, column, func, literal_column, select, table
from sqlalchemy.ext.asyncio import AsyncEngine

from shelfmark.db import PoolReads, create_engine
from shelfmark.settings import Settings

_VERSION = select(column("version_num")).select_from(table("alembic_version"))
_PID = select(func.pg_backend_pid().label("pid"))
_SLEEP = select(func.pg_sleep(bindparam("seconds")).label("slept"))
_SLEEP_PID = select(
    func.pg_backend_pid().label("pid"), func.pg_sleep(bindparam("seconds")).label("slept")
)


@pytest.fixture
async def small_engine(settings: Settings, engine: AsyncEngine) -> AsyncIterator[AsyncEngine]:
    """An engine whose pool holds one connection (`engine` has migrated the database)."""
    small = create_engine(settings, pool_size=1, max_overflow=0, pool_timeout=5)
    yield small
    await small.dispose()


def checked_out(engine: AsyncEngine) -> int:
    status = engine.pool.status()  # e.g. "... Current Checked out connections: 0"
    return int(status.rsplit(":", 1)[1])


async def test_a_statement_s_rows_are_read_and_the_connection_returned(
    small_engine: AsyncEngine,
) -> None:
    reads = PoolReads(small_engine)
    query = select(literal_column("'ok'").label("answer"))
    assert [dict(row) for row in await reads.rows(query)] == [{"answer": "ok"}]
    for _ in range(3):  # one connection in the pool: each read must give it back or keep it
        rows = await reads.fetch(_VERSION, {})
        assert len(rows) == 1
        assert rows[0]["version_num"]
    await reads.close()
    if small_engine.dialect.name == "postgresql":
        assert checked_out(small_engine) == 0


@pytest.mark.postgres_only
async def test_connections_are_kept_between_reads_until_old(small_engine: AsyncEngine) -> None:
    reads = PoolReads(small_engine)
    pids = {(await reads.fetch(_PID, {}))[0]["pid"] for _ in range(3)}
    assert len(pids) == 1
    assert checked_out(small_engine) == 1  # kept for the next read
    await reads.close()
    assert checked_out(small_engine) == 0
    reads.RECYCLE = 0.0  # each connection is then given back after its read
    await reads.fetch(_PID, {})
    assert checked_out(small_engine) == 0


@pytest.mark.postgres_only
async def test_a_broken_connection_is_dropped_and_the_next_read_gets_a_new_one(
    small_engine: AsyncEngine, database_url: str
) -> None:
    reads = PoolReads(small_engine)
    pid = (await reads.fetch(_PID, {}))[0]["pid"]
    admin = await asyncpg.connect(database_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        # Waits (up to 5 s) until the backend has gone, not only been told to go.
        assert await admin.fetchval("SELECT pg_terminate_backend($1, 5000)", pid)
    finally:
        await admin.close()
    # Which error depends on when the client reads the server's goodbye: the read fails
    # as one of these (ConnectionDoesNotExistError, InternalClientError "another operation
    # is in progress", ...), and the connection is not handed out again.
    broken = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError)
    with pytest.raises(broken):
        await reads.fetch(_PID, {})
    assert checked_out(small_engine) == 0
    assert (await reads.fetch(_PID, {}))[0]["pid"] != pid
    await reads.close()


@pytest.mark.postgres_only
async def test_a_cancelled_read_does_not_leave_its_connection_busy(
    small_engine: AsyncEngine,
) -> None:
    reads = PoolReads(small_engine)
    slow = asyncio.create_task(reads.fetch(_SLEEP, {"seconds": 5}))
    await asyncio.sleep(0.3)
    slow.cancel()
    with pytest.raises(asyncio.CancelledError):
        await slow
    assert checked_out(small_engine) == 0
    # The pool's only connection is usable at once (not behind the 5 s sleep).
    rows = await asyncio.wait_for(reads.fetch(_VERSION, {}), timeout=2)
    assert rows[0]["version_num"]
    await reads.close()


@pytest.mark.postgres_only
async def test_reads_beyond_the_kept_connections_wait_for_one(
    settings: Settings, engine: AsyncEngine
) -> None:
    """Never more than `kept` connections out of the pool, however many reads at once: the
    others wait for a kept one (none is taken from the pool for one read and given back)."""
    roomy = create_engine(settings, pool_size=4, max_overflow=0, pool_timeout=5)
    reads = PoolReads(roomy)  # kept: half the pool, 2
    try:
        slow = [asyncio.create_task(reads.fetch(_SLEEP_PID, {"seconds": 1.0})) for _ in range(5)]
        for _ in range(100):  # until the first two reads are on their connections
            assert checked_out(roomy) <= 2
            if checked_out(roomy) == 2:
                break
            await asyncio.sleep(0.01)
        assert checked_out(roomy) == 2
        waiting = asyncio.create_task(reads.fetch(_PID, {}))
        await asyncio.sleep(0.05)
        assert not waiting.done()  # behind the slow reads
        waiting.cancel()  # a read cancelled while it waits holds no connection
        with pytest.raises(asyncio.CancelledError):
            await waiting
        pids = {(await task)[0]["pid"] for task in slow}
        assert len(pids) == 2
        assert (await reads.fetch(_PID, {}))[0]["pid"] in pids
        assert checked_out(roomy) == 2
    finally:
        await reads.close()
        await roomy.dispose()
