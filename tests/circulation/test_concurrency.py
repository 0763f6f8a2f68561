"""Races on PostgreSQL: concurrent requests through the HTTP app, each in its own committed
transaction on its own connection.

These tests commit for real, so they run on a scratch database of their own (created and
migrated for the module, dropped after it): their rows never show up where other tests look.
Within it, each test uses fresh barcodes and cards.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from factories import (
    STAFF,
    auth,
    make_bib,
    make_branch,
    make_category,
    make_item,
    make_loan,
    make_patron,
    make_user,
)
from shelfmark.app import create_app
from shelfmark.auth.roles import Role
from shelfmark.catalog.models import Bib, Branch, Item
from shelfmark.circulation import fees, locking
from shelfmark.circulation.models import Loan
from shelfmark.db import create_engine, create_sessionmaker, session_scope, utcnow
from shelfmark.migrate import upgrade
from shelfmark.patrons.models import Patron, PatronCategory
from shelfmark.settings import Settings

pytestmark = pytest.mark.postgres_only

CLIENTS = 16
PG_ADMIN_DSN = os.environ.get("SHELFMARK_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


@dataclass
class Live:
    app: FastAPI
    maker: async_sessionmaker[AsyncSession]
    headers: dict[str, str]
    branch: Branch
    category: PatronCategory


async def _admin(sql: str) -> None:
    connection = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


@pytest.fixture(scope="module")
async def race_settings(settings: Settings) -> AsyncIterator[Settings]:
    name = f"shelfmark_race_{uuid.uuid4().hex[:10]}"
    await _admin(f'CREATE DATABASE "{name}"')
    race = settings.model_copy(
        update={"database_url": settings.database_url.rsplit("/", 1)[0] + f"/{name}"}
    )
    engine = create_engine(race)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()
    yield race
    await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def live(race_settings: Settings) -> AsyncIterator[Live]:
    """The app on a committing sessionmaker of its own engine, and a librarian's token."""
    engine = create_engine(race_settings, pool_size=CLIENTS + 4, max_overflow=4)
    maker = create_sessionmaker(engine)
    app = create_app(race_settings)
    app.state.engine = engine
    app.state.sessionmaker = app.state.read_sessionmaker = maker
    async with session_scope(maker) as session:
        librarian = await make_user(session, Role.LIBRARIAN)
        branch = await make_branch(session)
        category = await make_category(session)
    yield Live(app, maker, auth(librarian), branch, category)
    await engine.dispose()


@pytest.fixture
async def client(live: Live) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=live.app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


async def patrons(live: Live, count: int) -> list[Patron]:
    async with session_scope(live.maker) as session:
        return [
            await make_patron(session, category=live.category, branch=live.branch)
            for _ in range(count)
        ]


async def copy(live: Live, bib: Bib | None = None) -> Item:
    async with session_scope(live.maker) as session:
        return await make_item(session, bib=bib, branch=live.branch)


async def open_loans(live: Live, item: Item) -> list[Loan]:
    async with session_scope(live.maker) as session:
        query = select(Loan).where(Loan.item_id == item.id, Loan.returned_at.is_(None))
        return list((await session.scalars(query)).all())


async def item_status(live: Live, item: Item) -> str:
    async with session_scope(live.maker) as session:
        return (await session.get_one(Item, item.id)).status


class TestRaces:
    async def test_sixteen_checkouts_of_one_copy_lend_it_once(
        self, live: Live, client: httpx.AsyncClient
    ) -> None:
        readers = await patrons(live, CLIENTS)
        for _trial in range(3):
            item = await copy(live)
            responses = await asyncio.gather(
                *(
                    client.post(
                        "/api/v1/checkouts",
                        headers=live.headers,
                        json={"item_barcode": item.barcode, "patron_card": reader.card_number},
                    )
                    for reader in readers
                )
            )
            statuses = sorted(r.status_code for r in responses)
            assert statuses == [201] + [409] * (CLIENTS - 1), [r.text for r in responses]
            refusals = {r.json()["type"] for r in responses if r.status_code == 409}
            assert refusals == {"/problems/item-not-available"}
            loans = await open_loans(live, item)
            assert len(loans) == 1
            winner = next(r.json() for r in responses if r.status_code == 201)
            assert loans[0].id == winner["id"]
            assert await item_status(live, item) == "on_loan"

    async def test_checkin_and_checkout_at_once(
        self, live: Live, client: httpx.AsyncClient
    ) -> None:
        first, second = await patrons(live, 2)
        outcomes = set()
        for _trial in range(8):
            item = await copy(live)
            async with session_scope(live.maker) as session:
                await make_loan(session, item=item, patron=first, now=utcnow())
            checkin, checkout = await asyncio.gather(
                client.post("/api/v1/checkins", json={"item_barcode": item.barcode},
                            headers=live.headers),
                client.post("/api/v1/checkouts", headers=live.headers,
                            json={"item_barcode": item.barcode,
                                  "patron_card": second.card_number}),
            )  # fmt: skip
            assert checkin.status_code == 200, checkin.text
            assert checkout.status_code in {201, 409}, checkout.text
            loans = await open_loans(live, item)
            if checkout.status_code == 201:
                # The checkin came first: the copy is lent anew, to the second patron.
                assert [loan.patron_id for loan in loans] == [second.id]
                assert await item_status(live, item) == "on_loan"
            else:
                assert checkout.json()["type"] == "/problems/item-not-available"
                assert loans == []
                assert await item_status(live, item) == "available"
            outcomes.add(checkout.status_code)
        assert outcomes  # either order is right; never both, never a 500

    async def test_a_checkout_locks_the_copy_before_the_patron(self, live: Live) -> None:
        """One statement locks both, in the desk's order (item, then patron): waiting on a
        patron locked elsewhere, it already holds the copy, as two statements would."""
        (reader,) = await patrons(live, 1)
        item = await copy(live)
        async with live.maker() as holder, live.maker() as desk:
            await holder.execute(select(Patron.id).where(Patron.id == reader.id).with_for_update())
            locking_both = asyncio.create_task(
                locking.lock_item_and_patron(
                    desk, barcode=item.barcode, card_number=reader.card_number
                )
            )
            async with live.maker() as probe:
                for _ in range(100):  # until the desk holds the copy (and waits on the patron)
                    try:
                        await probe.execute(
                            select(Item.id).where(Item.id == item.id).with_for_update(nowait=True)
                        )
                    except DBAPIError:
                        await probe.rollback()
                        break
                    await probe.rollback()
                    await asyncio.sleep(0.02)
                else:
                    locking_both.cancel()
                    await holder.rollback()
                    pytest.fail("the desk waits on the patron without holding the copy")
            assert not locking_both.done()  # still waiting on the patron
            await holder.commit()
            locked_item, locked_patron = await locking_both
            assert (locked_item.id, locked_patron.id) == (item.id, reader.id)
            assert locked_patron.category.id == live.category.id
            await desk.rollback()

    async def test_two_holds_placed_at_once_keep_a_strict_order(
        self, live: Live, client: httpx.AsyncClient
    ) -> None:
        reader, *waiting = await patrons(live, 3)
        for _trial in range(5):
            async with session_scope(live.maker) as session:
                bib = await make_bib(session)
            item = await copy(live, bib)
            async with session_scope(live.maker) as session:
                await make_loan(session, item=item, patron=reader, now=utcnow())
            placed = await asyncio.gather(
                *(
                    client.post(
                        "/api/v1/holds",
                        headers=live.headers,
                        json={
                            "bib_id": bib.id,
                            "patron_card": patron.card_number,
                            "pickup_branch": live.branch.code,
                        },
                    )
                    for patron in waiting
                )
            )
            assert [r.status_code for r in placed] == [201, 201], [r.text for r in placed]
            by_id = sorted((r.json() for r in placed), key=lambda hold: hold["id"])
            assert [hold["queue_position"] for hold in by_id] == [1, 2]
            queue = await client.get(
                "/api/v1/holds", params={"bib_id": bib.id}, headers=live.headers
            )
            assert [h["queue_position"] for h in queue.json()["items"]] == [1, 2]
            assert [h["id"] for h in queue.json()["items"]] == [h["id"] for h in by_id]

    async def test_two_payments_never_pay_more_than_is_owed(
        self, live: Live, client: httpx.AsyncClient
    ) -> None:
        (payer,) = await patrons(live, 1)
        async with session_scope(live.maker) as session:
            fee = await fees.charge_manual(
                session, actor=STAFF, patron_card=payer.card_number, amount=Decimal("5.00"),
                description="Damage", item=None, now=utcnow(),
            )  # fmt: skip
        responses = await asyncio.gather(
            *(
                client.post(f"/api/v1/fees/{fee.id}/payments", json={"amount": "3.00"},
                            headers=live.headers)
                for _ in range(2)
            )
        )  # fmt: skip
        assert sorted(r.status_code for r in responses) == [201, 422]
        async with session_scope(live.maker) as session:
            balance, _ = await fees.balance_of(session, payer.id)
        assert balance == Decimal("2.00")
