"""The desk's hot path (`shelfmark.hotpath`): statements on the driver's connection inside
the session's transaction, instances loaded from rows, rows updated without the flush."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import Table, bindparam, func, insert, inspect, literal, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from factories import make_branch, make_item
from shelfmark import hotpath
from shelfmark.catalog.models import Branch, Item
from shelfmark.circulation import locking
from shelfmark.db import constraint_of, create_engine, create_sessionmaker
from shelfmark.settings import Settings

BRANCHES = Branch.__table__
assert isinstance(BRANCHES, Table)
_INSERT_BRANCH = insert(BRANCHES)
_COUNT_BRANCHES = select(func.count().label("n")).where(Branch.code == bindparam("code"))
_ITEM_STATUS = select(Item.status, Item.updated_at).where(Item.id == bindparam("item_id"))
_XACT_LOCK = select(func.pg_advisory_xact_lock(bindparam("key")).label("locked"))
_TRY_LOCK = select(func.pg_try_advisory_lock(bindparam("key")).label("got"))
_UNLOCK = select(func.pg_advisory_unlock(bindparam("key")).label("freed"))
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def branch_values(code: str) -> dict[str, object]:
    return {
        "code": code, "name": f"Branch {code}", "address": None, "opening_hours": {"mon": "9-5"},
        "created_at": NOW, "updated_at": NOW,
    }  # fmt: skip


async def queries_sent(connection: AsyncConnection) -> list[str]:
    """The statements asyncpg sends from now on (on PostgreSQL; none are seen elsewhere).
    asyncpg logs in a callback: let the loop run once before reading."""
    sent: list[str] = []
    if connection.dialect.name == "postgresql":
        driver = (await connection.get_raw_connection()).driver_connection
        driver.add_query_logger(lambda record: sent.append(record.query))
    return sent


@pytest.fixture
async def own_engine(settings: Settings, engine: AsyncEngine) -> AsyncIterator[AsyncEngine]:
    """Sessions as the server makes them, each on a connection of its own from the pool
    (the suite's sessions join the test's transaction, which has always begun)."""
    own = create_engine(settings, pool_size=3, max_overflow=0, pool_timeout=5)
    yield own
    await own.dispose()


async def test_a_first_statement_begins_the_session_s_transaction(
    own_engine: AsyncEngine,
) -> None:
    """A write sent first, past SQLAlchemy, is still undone by the session's rollback."""
    maker = create_sessionmaker(own_engine)
    async with maker() as session:
        await hotpath.rows(session, _INSERT_BRANCH, branch_values("HOT-ROLLBACK"))
        inside = await hotpath.rows(session, _COUNT_BRANCHES, {"code": "HOT-ROLLBACK"})
        assert inside[0]["n"] == 1
        await session.rollback()
    async with maker() as session:
        after = await hotpath.rows(session, _COUNT_BRANCHES, {"code": "HOT-ROLLBACK"})
        assert after[0]["n"] == 0


@pytest.mark.postgres_only
async def test_a_lock_taken_first_is_held_until_the_session_commits(
    own_engine: AsyncEngine,
) -> None:
    maker = create_sessionmaker(own_engine)
    key = {"key": 424242}
    async with maker() as holder, maker() as other:
        await hotpath.rows(holder, _XACT_LOCK, key)
        async with own_engine.connect() as probe:
            got = (await probe.execute(_TRY_LOCK, key)).scalar_one()
            assert got is False  # still held: the statement ran in the open transaction
        await holder.commit()
        got = (await hotpath.rows(other, _TRY_LOCK, key))[0]["got"]
        assert got is True
        await hotpath.rows(other, _UNLOCK, key)
        await other.commit()


async def test_a_loaded_instance_is_in_the_session_and_clean(session: AsyncSession) -> None:
    item = await make_item(session)
    await session.commit()
    barcode, branch_code = item.barcode, item.branch.code
    session.expunge_all()
    locked = await locking.lock_item_by_barcode(session, barcode)
    state = inspect(locked)
    assert state.persistent
    assert not state.modified
    assert locked in session
    assert locked.branch.code == branch_code
    assert await session.get(Item, locked.id) is locked
    assert not session.dirty
    assert not session.new
    # The unit of work sees a change made to it, and a rollback expires it.
    locked.shelfmark = "B 2"
    assert locked in session.dirty
    await session.flush()
    assert await session.scalar(select(Item.shelfmark).where(Item.id == locked.id)) == "B 2"
    await session.rollback()
    assert "shelfmark" not in inspect(locked).dict


async def test_a_held_instance_is_refreshed_like_populate_existing(session: AsyncSession) -> None:
    item = await make_item(session, shelfmark="A 1")
    await session.commit()
    item.shelfmark = "changed, unflushed"
    again = await locking.lock_item_by_barcode(session, item.barcode)
    assert again is item
    assert item.shelfmark == "A 1"
    kept = hotpath.Loader(Item, refresh=False)
    query = select(*kept.columns).where(Item.id == bindparam("item_id"))
    item.shelfmark = "changed again"
    (row,) = await hotpath.rows(session, query, {"item_id": item.id})
    assert kept.instance(session, row) is item
    assert item.shelfmark == "changed again"


async def test_an_update_is_written_at_once_and_leaves_nothing_to_flush(
    session: AsyncSession,
) -> None:
    item = await make_item(session)
    await session.commit()
    before = item.updated_at
    await hotpath.write(session, hotpath.updating(item, {"status": "missing", "last_seen_at": NOW}))
    assert item.status == "missing"
    assert item.last_seen_at == NOW
    assert item.updated_at > before  # set by the row's own rule, as a flush would
    assert not inspect(item).modified
    assert not session.dirty
    (row,) = await hotpath.rows(session, _ITEM_STATUS, {"item_id": item.id})
    assert row["status"] == "missing"
    assert row["updated_at"] == item.updated_at


async def test_a_violated_constraint_is_sqlalchemy_s_integrity_error(
    session: AsyncSession,
) -> None:
    """As through the ORM: the admin names the constraint from it."""
    branch = await make_branch(session)
    await session.commit()
    with pytest.raises(IntegrityError) as raised:
        await hotpath.rows(session, _INSERT_BRANCH, branch_values(branch.code))
    assert constraint_of(raised.value) == "uq_branches_code"


async def test_values_are_bound_as_their_columns_bind_them(session: AsyncSession) -> None:
    """JSON is serialised, UTC times are sent as such (the columns' bind processing)."""
    await hotpath.rows(session, _INSERT_BRANCH, branch_values("HOT-JSON"))
    query = select(Branch.opening_hours, Branch.created_at).where(Branch.code == "HOT-JSON")
    row = (await session.execute(query)).one()
    assert row.opening_hours == {"mon": "9-5"}
    assert row.created_at == NOW


def test_statements_the_driver_cannot_run_as_compiled_are_refused() -> None:
    dialect = postgresql.asyncpg.dialect()  # type: ignore[no-untyped-call]
    expanding = select(Item.id).where(Item.status.in_(["lost", "missing"]))
    with pytest.raises(TypeError, match="expanding IN"):
        hotpath.compiled(expanding, dialect, {})
    constant = select(Item.id).where(Item.status.in_([literal("lost"), literal("missing")]))
    assert hotpath.compiled(constant, dialect, {}).defaults  # its values go with it
    values = branch_values("X")
    del values["created_at"]  # a Python-side default the driver would not compute
    with pytest.raises(TypeError, match="every value"):
        hotpath.compiled(_INSERT_BRANCH, dialect, values)


async def test_writes_go_together_in_one_statement_on_postgresql(
    session: AsyncSession, connection: AsyncConnection
) -> None:
    first, second = await make_item(session), await make_item(session)
    await session.commit()
    sent = await queries_sent(connection)
    postgresql = connection.dialect.name == "postgresql"
    await hotpath.write(
        session,
        hotpath.updating(first, {"status": "missing"}),
        hotpath.updating(second, {"shelfmark": "B 2", "last_seen_at": NOW}),
        hotpath.inserting(BRANCHES, branch_values("HOT-WRITE")),
    )
    await asyncio.sleep(0)  # asyncpg logs in a callback
    if postgresql:
        assert len(sent) == 1
        assert sent[0].startswith("WITH w0 AS")
    assert (first.status, second.shelfmark, second.last_seen_at) == ("missing", "B 2", NOW)
    assert not session.dirty
    query = select(Item.id, Item.status, Item.shelfmark).where(Item.id.in_([first.id, second.id]))
    found = {row.id: (row.status, row.shelfmark) for row in await session.execute(query)}
    assert found[first.id][0] == "missing"
    assert found[second.id][1] == "B 2"
    count = await hotpath.rows(session, _COUNT_BRANCHES, {"code": "HOT-WRITE"})
    assert count[0]["n"] == 1


async def test_a_write_may_name_the_key_of_a_row_an_earlier_one_inserts(
    session: AsyncSession, connection: AsyncConnection
) -> None:
    """A keyed insert's key is returned, and a later write of the same call may take it (as
    its column's type: text here), on PostgreSQL still in one statement."""
    item = await make_item(session)
    await session.commit()
    sent = await queries_sent(connection)
    postgresql = connection.dialect.name == "postgresql"
    first = hotpath.inserting(BRANCHES, branch_values("HOT-KEY-1"), keyed=True)
    second = hotpath.inserting(BRANCHES, branch_values("HOT-KEY-2"), keyed=True)
    naming = branch_values("HOT-KEY-3") | {"address": hotpath.KeyOf(first)}
    keys = await hotpath.write(
        session, first, hotpath.updating(item, {"status": "missing"}), second,
        hotpath.inserting(BRANCHES, naming),
    )  # fmt: skip
    await asyncio.sleep(0)
    if postgresql:
        assert len(sent) == 1
    query = select(Branch.code, Branch.id, Branch.address).where(Branch.code.like("HOT-KEY-%"))
    found = {row.code: (row.id, row.address) for row in await session.execute(query)}
    assert keys == [found["HOT-KEY-1"][0], found["HOT-KEY-2"][0]]
    assert found["HOT-KEY-3"][1] == str(keys[0])
    assert item.status == "missing"


async def test_a_key_of_a_write_that_is_not_an_earlier_keyed_one_is_refused(
    session: AsyncSession,
) -> None:
    unkeyed = hotpath.inserting(BRANCHES, branch_values("HOT-NOKEY-1"))
    keyed = hotpath.inserting(BRANCHES, branch_values("HOT-NOKEY-2"), keyed=True)
    for named, writes in ((unkeyed, [unkeyed]), (keyed, []), (keyed, ["after"])):
        naming = hotpath.inserting(
            BRANCHES, branch_values("HOT-NOKEY-3") | {"address": hotpath.KeyOf(named)}
        )
        ordered = [naming, keyed] if writes == ["after"] else [*writes, naming]
        with pytest.raises(ValueError, match="no earlier keyed write"):
            await hotpath.write(session, *ordered)
    count = await hotpath.rows(session, _COUNT_BRANCHES, {"code": "HOT-NOKEY-1"})
    assert count[0]["n"] == 0  # refused before anything was sent


def test_a_model_that_maps_a_column_under_another_name_is_refused_for_updates() -> None:
    class Base(DeclarativeBase):
        pass

    class Renamed(Base):
        __tablename__ = "renamed"
        id: Mapped[int] = mapped_column(primary_key=True)
        label: Mapped[str] = mapped_column("name")

    with pytest.raises(TypeError, match="other names"):
        hotpath.updating(Renamed(id=1, label="x"), {"label": "y"})


@pytest.mark.postgres_only
async def test_each_transaction_of_a_session_has_its_statements(own_engine: AsyncEngine) -> None:
    """After a commit the next statement begins a new transaction (the first one's lock is
    gone); inside a savepoint, statements run after its SAVEPOINT, so that rolling it back
    drops what they locked."""
    maker = create_sessionmaker(own_engine)
    key, other_key = {"key": 515151}, {"key": 525252}

    async def free(lock: dict[str, int]) -> bool:
        async with own_engine.connect() as probe:
            got = (await probe.execute(_TRY_LOCK, lock)).scalar_one()
            if got:
                await probe.execute(_UNLOCK, lock)
            return bool(got)

    async with maker() as session:
        await hotpath.rows(session, _XACT_LOCK, key)
        await session.commit()
        assert await free(key)
        await hotpath.rows(session, _XACT_LOCK, key)  # the driver connection is known now
        assert not await free(key)
        savepoint = await session.begin_nested()
        await hotpath.rows(session, _XACT_LOCK, other_key)
        assert not await free(other_key)
        await savepoint.rollback()
        assert await free(other_key)  # taken inside the savepoint: dropped with it
        assert not await free(key)
        await session.rollback()
        assert await free(key)
