from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from circulation.conftest import NOW, Desk
from factories import (
    STAFF,
    auth,
    make_branch,
    make_item,
    make_loan,
    make_patron,
    make_patron_user,
    make_rule,
)
from shelfmark.catalog.models import Branch
from shelfmark.circulation import holds, loans
from shelfmark.circulation.errors import (
    DuplicateHold,
    HoldClosed,
    HoldLimitReached,
    ItemOnHoldForAnother,
    NotHoldable,
    TitleOnLoanToPatron,
)
from shelfmark.circulation.models import Hold
from shelfmark.circulation.schemas import CheckinCreate, CheckoutCreate, HoldCreate
from shelfmark.db import utcnow
from shelfmark.patrons.models import Patron


async def hold_for(
    session: AsyncSession, desk: Desk, patron: Patron, *, pickup: Branch | None = None,
    item_id: int | None = None, now: datetime = NOW,
) -> Hold:  # fmt: skip
    target = {"item_id": item_id} if item_id else {"bib_id": desk.bib.id}
    data = HoldCreate.model_validate(
        target | {"patron_card": patron.card_number,
                  "pickup_branch": (pickup or desk.branch).code}
    )  # fmt: skip
    return await holds.place_hold(session, actor=STAFF, data=data, now=now)


async def check_in(session: AsyncSession, desk: Desk, *, at: Branch | None = None,
                   now: datetime = NOW) -> loans.Checkin:  # fmt: skip
    data = CheckinCreate(item_barcode=desk.item.barcode, branch=(at or desk.branch).code)
    return await loans.check_in(session, actor=STAFF, data=data, now=now)


async def check_out(session: AsyncSession, desk: Desk, patron: Patron, *, at: Branch | None = None,
                    now: datetime = NOW) -> loans.Loan:  # fmt: skip
    data = CheckoutCreate(
        item_barcode=desk.item.barcode, patron_card=patron.card_number,
        branch=(at or desk.branch).code,
    )  # fmt: skip
    return await loans.check_out(session, actor=STAFF, data=data, now=now)


async def position(session: AsyncSession, hold: Hold) -> int | None:
    return (await holds.read_hold(session, hold.id))[1]


class TestHoldLifecycle:
    async def test_waiting_ready_expired_in_transit_ready_fulfilled(
        self, session: AsyncSession, desk: Desk
    ) -> None:
        east = await make_branch(session)
        reader, first, second = (
            desk.patron,
            await make_patron(session, category=desk.category, branch=desk.branch),
            await make_patron(session, category=desk.category, branch=east),
        )
        await make_loan(session, item=desk.item, patron=reader, now=NOW)

        # Two holds queue in order; the reader cannot hold what they have, nobody twice.
        one = await hold_for(session, desk, first)
        two = await hold_for(session, desk, second, pickup=east)
        assert (one.status, await position(session, one)) == ("waiting", 1)
        assert await position(session, two) == 2
        with pytest.raises(TitleOnLoanToPatron):
            await hold_for(session, desk, reader)
        with pytest.raises(DuplicateHold):
            await hold_for(session, desk, first)

        # Returned at its pickup branch, the copy goes on the hold shelf for the first.
        later = NOW + timedelta(days=5)
        returned = await check_in(session, desk, now=later)
        assert returned.routing.next == "hold_shelf"
        assert returned.routing.hold is one
        assert (one.status, one.item_id, one.ready_at) == ("ready", desk.item.id, later)
        assert one.ready_until == datetime(2026, 3, 10, 23, 59, 59, tzinfo=UTC)  # 3 days
        assert desk.item.status == "on_hold_shelf"
        assert await position(session, one) is None
        assert await position(session, two) == 1
        with pytest.raises(ItemOnHoldForAnother):
            await check_out(session, desk, second, now=later)

        # Not collected in time: it expires and the copy travels to the next pickup branch.
        assert await holds.expire_holds(session, now=one.ready_until) == []
        expired = await holds.expire_holds(session, now=one.ready_until + timedelta(seconds=1))
        assert expired == [one]
        assert one.status == "expired"
        assert (two.status, two.item_id, desk.item.status) == ("in_transit", desk.item.id,
                                                               "in_transit")  # fmt: skip

        # Passing through another branch, it travels on; at the pickup branch, it is ready.
        transit = await check_in(session, desk, now=later)
        assert (transit.routing.next, transit.routing.transit_to) == ("transit", east)
        arrived = await check_in(session, desk, at=east, now=later + timedelta(days=1))
        assert (arrived.routing.next, arrived.routing.hold) == ("hold_shelf", two)
        assert two.status == "ready"

        # Lent to the patron it waits for: fulfilled, once.
        loan = await check_out(session, desk, second, at=east, now=later + timedelta(days=2))
        assert (two.status, two.loan_id, desk.item.status) == ("fulfilled", loan.id, "on_loan")
        with pytest.raises(HoldClosed):
            await holds.cancel_hold(session, actor=STAFF, hold_id=two.id, now=NOW)

    async def test_cancelling_a_ready_hold_passes_the_copy_on(
        self, session: AsyncSession, desk: Desk
    ) -> None:
        first = await make_patron(session, category=desk.category, branch=desk.branch)
        second = await make_patron(session, category=desk.category, branch=desk.branch)
        one = await hold_for(session, desk, first)
        two = await hold_for(session, desk, second)
        await check_in(session, desk)
        assert one.status == "ready"
        await holds.cancel_hold(session, actor=STAFF, hold_id=one.id, now=NOW)
        assert (one.status, one.closed_at) == ("cancelled", NOW)
        assert (two.status, two.item_id, desk.item.status) == ("ready", desk.item.id,
                                                               "on_hold_shelf")  # fmt: skip
        await holds.cancel_hold(session, actor=STAFF, hold_id=two.id, now=NOW)
        assert desk.item.status == "available"

    async def test_lending_over_a_hold_puts_it_back_in_the_queue(
        self, session: AsyncSession, desk: Desk
    ) -> None:
        first = await make_patron(session, category=desk.category, branch=desk.branch)
        one = await hold_for(session, desk, first)
        await check_in(session, desk)
        data = CheckoutCreate(
            item_barcode=desk.item.barcode, patron_card=desk.patron.card_number,
            override={"reason": "Hold patron moved away"},
        )  # fmt: skip
        await loans.check_out(session, actor=STAFF, data=data, now=NOW)
        assert (one.status, one.item_id, one.ready_until) == ("waiting", None, None)
        assert await position(session, one) == 1

    async def test_a_waiting_title_hold_is_fulfilled_by_any_copy(
        self, session: AsyncSession, desk: Desk
    ) -> None:
        hold = await hold_for(session, desk, desk.patron)
        loan = await check_out(session, desk, desk.patron)
        assert (hold.status, hold.loan_id) == ("fulfilled", loan.id)

    async def test_an_item_level_hold_waits_for_its_copy(
        self, session: AsyncSession, desk: Desk
    ) -> None:
        other_copy = await make_item(session, bib=desk.bib, branch=desk.branch)
        hold = await hold_for(session, desk, desk.patron, item_id=other_copy.id)
        assert hold.level == "item"
        assert (await check_in(session, desk)).routing.next == "reshelve"
        assert hold.status == "waiting"
        routed = await loans.check_in(
            session, actor=STAFF, data=CheckinCreate(item_barcode=other_copy.barcode), now=NOW
        )
        assert (routed.routing.hold, hold.status) == (hold, "ready")


class TestHoldRefusals:
    async def test_hold_limit_and_not_holdable(self, session: AsyncSession, desk: Desk) -> None:
        for _ in range(2):
            item = await make_item(session, branch=desk.branch)
            await holds.place_hold(
                session, actor=STAFF, now=NOW,
                data=HoldCreate(bib_id=item.bib_id, patron_card=desk.patron.card_number,
                                pickup_branch=desk.branch.code),
            )  # fmt: skip
        with pytest.raises(HoldLimitReached):
            await hold_for(session, desk, desk.patron)
        reference = await make_branch(session)
        await make_rule(session, branch=reference, holdable=False)
        item = await make_item(session, branch=reference)
        other = await make_patron(session, category=desk.category, branch=desk.branch)
        with pytest.raises(NotHoldable):
            await holds.place_hold(
                session, actor=STAFF, now=NOW,
                data=HoldCreate(item_id=item.id, patron_card=other.card_number,
                                pickup_branch=desk.branch.code),
            )  # fmt: skip


class TestHoldRoutes:
    async def test_a_patron_places_reads_and_cancels_their_own(
        self, client: httpx.AsyncClient, session: AsyncSession, desk: Desk
    ) -> None:
        other = await make_patron(session, category=desk.category, branch=desk.branch)
        mine, theirs = (
            await make_patron_user(session, desk.patron),
            await make_patron_user(session, other),
        )
        await make_loan(session, item=desk.item, patron=other, now=utcnow())
        await session.commit()
        body = {"bib_id": desk.bib.id, "patron_card": desk.patron.card_number,
                "pickup_branch": desk.branch.code}  # fmt: skip
        placed = await client.post("/api/v1/holds", json=body, headers=auth(mine))
        assert placed.status_code == 201, placed.text
        hold = placed.json()
        assert (hold["status"], hold["queue_position"], hold["level"]) == ("waiting", 1, "title")
        for_someone_else = await client.post(
            "/api/v1/holds", json=body | {"patron_card": other.card_number}, headers=auth(mine)
        )
        assert for_someone_else.status_code == 403
        assert (
            await client.get(f"/api/v1/holds/{hold['id']}", headers=auth(theirs))
        ).status_code == 403
        not_yours = await client.post(f"/api/v1/holds/{hold['id']}/cancel", headers=auth(theirs))
        assert not_yours.status_code == 403
        listed = await client.get("/api/v1/holds", headers=auth(mine))
        assert [h["id"] for h in listed.json()["items"]] == [hold["id"]]
        cancelled = await client.post(f"/api/v1/holds/{hold['id']}/cancel", headers=auth(mine))
        assert cancelled.status_code == 200
        assert (cancelled.json()["status"], cancelled.json()["queue_position"]) == (
            "cancelled",
            None,
        )
        again = await client.post(f"/api/v1/holds/{hold['id']}/cancel", headers=auth(mine))
        assert again.json()["type"] == "/problems/hold-closed"

    async def test_bib_or_item_but_not_both(
        self, client: httpx.AsyncClient, session: AsyncSession, desk: Desk
    ) -> None:
        user = await make_patron_user(session, desk.patron)
        await session.commit()
        body = {
            "bib_id": desk.bib.id, "item_id": desk.item.id,
            "patron_card": desk.patron.card_number, "pickup_branch": desk.branch.code,
        }  # fmt: skip
        response = await client.post("/api/v1/holds", json=body, headers=auth(user))
        assert response.status_code == 422
