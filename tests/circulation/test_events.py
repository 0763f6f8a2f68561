"""Domain events reach subscribers after the commit, and never for a refused request."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from circulation.conftest import Desk
from factories import auth, make_user
from shelfmark import events
from shelfmark.auth.roles import Role


@pytest.fixture
def heard() -> Iterator[list[events.Event]]:
    received: list[events.Event] = []
    unsubscribe = events.subscribe(events.ALL, received.append)
    yield received
    unsubscribe()


class TestBus:
    async def test_a_failing_handler_does_not_stop_the_others(self) -> None:
        bus = events.Bus()
        got: list[str] = []

        def broken(event: events.Event) -> None:
            raise RuntimeError("boom")

        async def works(event: events.Event) -> None:
            got.append(event.name)

        bus.subscribe("loan.created", broken)
        bus.subscribe("loan.created", works)
        unsubscribe = bus.subscribe(events.ALL, works)
        await bus.deliver(events.Event("loan.created", at=datetime(2026, 1, 1, tzinfo=UTC)))
        unsubscribe()
        await bus.deliver(events.Event("loan.created", at=datetime(2026, 1, 1, tzinfo=UTC)))
        assert got == ["loan.created", "loan.created", "loan.created"]


class TestPublishing:
    async def test_checkout_and_checkin_are_told_with_their_branch(
        self, client: httpx.AsyncClient, session: AsyncSession, desk: Desk,
        heard: list[events.Event],
    ) -> None:  # fmt: skip
        librarian = await make_user(session, Role.LIBRARIAN)
        await session.commit()
        body = {"item_barcode": desk.item.barcode, "patron_card": desk.patron.card_number}
        lent = await client.post("/api/v1/checkouts", json=body, headers=auth(librarian))
        assert lent.status_code == 201
        assert [e.name for e in heard] == ["loan.created"]
        assert heard[0].payload["branch"] == desk.branch.code
        assert heard[0].payload["loan_id"] == lent.json()["id"]
        assert heard[0].as_dict()["payload"]["item_barcode"] == desk.item.barcode

        refused = await client.post("/api/v1/checkouts", json=body, headers=auth(librarian))
        assert refused.status_code == 409
        assert len(heard) == 1, "a refused request must publish nothing"

        await client.post(
            "/api/v1/checkins", json={"item_barcode": desk.item.barcode}, headers=auth(librarian)
        )
        assert [e.name for e in heard] == ["loan.created", "item.returned"]
        assert heard[1].payload["branch"] == desk.branch.code
