from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import Table, event, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

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
    make_user,
)
from shelfmark import hotpath
from shelfmark.audit.models import AuditEvent
from shelfmark.auth.models import User
from shelfmark.auth.roles import Actor, Role
from shelfmark.auth.service import actor_of
from shelfmark.circulation import calendar, fees, holds, loans
from shelfmark.circulation.errors import ItemOnLoan, LoanClosed, LoanLimitReached
from shelfmark.circulation.models import Fee, Hold, Loan
from shelfmark.circulation.schemas import (
    CheckinCreate,
    CheckoutCreate,
    ClosedDayCreate,
    HoldCreate,
)
from shelfmark.db import utcnow
from shelfmark.errors import Forbidden
from shelfmark.patrons import service as patrons_service
from shelfmark.patrons.models import Patron
from shelfmark.patrons.schemas import PatronUpdate


@pytest.fixture
async def librarian(session: AsyncSession) -> User:
    user = await make_user(session, Role.LIBRARIAN)
    await session.commit()
    return user


async def count(session: AsyncSession, model: type) -> int:
    return await session.scalar(select(func.count()).select_from(model)) or 0


async def patron_actor(session: AsyncSession, patron: Patron) -> Actor:
    return actor_of(await make_patron_user(session, patron))


def checkin(desk: Desk, **kwargs: object) -> CheckinCreate:
    return CheckinCreate.model_validate({"item_barcode": desk.item.barcode} | kwargs)


def checkout(desk: Desk, **kwargs: object) -> CheckoutCreate:
    values: dict[str, object] = {
        "item_barcode": desk.item.barcode, "patron_card": desk.patron.card_number,
    }  # fmt: skip
    return CheckoutCreate.model_validate(values | kwargs)


class TestCheckOut:
    async def test_lends_the_copy_due_by_the_rule(self, session: AsyncSession, desk: Desk) -> None:
        loan = await loans.check_out(session, actor=STAFF, data=checkout(desk), now=NOW)
        assert loan.due_at == datetime(2026, 3, 16, 23, 59, 59, tzinfo=UTC)
        assert loan.item.status == "on_loan"
        assert loan.item.last_seen_at == NOW
        assert loan.branch_id == desk.branch.id

    async def test_staff_may_set_the_due_date(self, session: AsyncSession, desk: Desk) -> None:
        due = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)
        loan = await loans.check_out(
            session, actor=STAFF, data=checkout(desk, due_at=due.isoformat()), now=NOW
        )
        assert loan.due_at == due

    async def test_a_due_date_on_a_closed_day_moves_to_the_next_open_day(
        self, session: AsyncSession, desk: Desk
    ) -> None:
        """The branch's own closed days and those of every branch, yearly ones included."""
        closures = (
            ClosedDayCreate(branch=desk.branch.code, first_day=date(2026, 3, 16)),
            ClosedDayCreate(first_day=date(2000, 3, 17), last_day=date(2000, 3, 18), yearly=True),
            ClosedDayCreate(branch=(await make_branch(session)).code, first_day=date(2026, 3, 19)),
        )
        for data in closures:
            await calendar.create_closed_day(session, actor=STAFF, data=data, now=NOW)
        loan = await loans.check_out(session, actor=STAFF, data=checkout(desk), now=NOW)
        assert loan.due_at == datetime(2026, 3, 19, 23, 59, 59, tzinfo=UTC)

    async def test_a_rule_for_an_item_type_counts_only_loans_of_that_type(
        self, session: AsyncSession, desk: Desk
    ) -> None:
        await make_rule(session, branch=desk.branch, item_type="dvd", max_loans=1)
        book = await make_item(session, bib=desk.bib, branch=desk.branch, item_type="book")
        await make_loan(session, item=book, patron=desk.patron, now=NOW)
        dvds = [
            await make_item(session, bib=desk.bib, branch=desk.branch, item_type="dvd")
            for _ in range(2)
        ]
        first = await loans.check_out(
            session, actor=STAFF, data=checkout(desk, item_barcode=dvds[0].barcode), now=NOW
        )
        assert first.item_id == dvds[0].id  # one book on loan: no dvd yet
        with pytest.raises(LoanLimitReached):
            await loans.check_out(
                session, actor=STAFF, data=checkout(desk, item_barcode=dvds[1].barcode), now=NOW
            )

    async def test_lending_a_held_title_fulfils_the_hold_and_the_event_names_both(
        self, session: AsyncSession, desk: Desk
    ) -> None:
        """The loan is written before the hold that names it; otherwise with the copy and
        the event in one write (then the event names the loan by its new key)."""
        hold = await holds.place_hold(
            session, actor=STAFF, now=NOW,
            data=HoldCreate(bib_id=desk.bib.id, patron_card=desk.patron.card_number,
                            pickup_branch=desk.branch.code),
        )  # fmt: skip
        loan = await loans.check_out(session, actor=STAFF, data=checkout(desk), now=NOW)
        other = await make_item(session, branch=desk.branch)
        plain = await loans.check_out(
            session, actor=STAFF, data=checkout(desk, item_barcode=other.barcode), now=NOW
        )
        assert (hold.status, hold.loan_id) == ("fulfilled", loan.id)
        events = {
            event.object_id: event.changes
            for event in await session.scalars(
                select(AuditEvent).where(AuditEvent.action == "loan.checkout")
            )
        }
        assert events[str(loan.id)]["fulfilled_hold_id"] == hold.id
        assert events[str(plain.id)]["item_barcode"] == other.barcode
        assert "fulfilled_hold_id" not in events[str(plain.id)]
        assert await session.get(Loan, plain.id) is plain

    async def test_a_second_open_loan_of_a_copy_is_item_on_loan_from_the_index(
        self, session: AsyncSession, desk: Desk
    ) -> None:
        """Should a path forget the lock, the partial unique index has the last word: the
        violation is the domain error on both databases; any other is not."""
        await loans.check_out(session, actor=STAFF, data=checkout(desk), now=NOW)
        values = {
            "item_id": desk.item.id, "patron_id": desk.patron.id, "branch_id": desk.branch.id,
            "checked_out_at": NOW, "due_at": NOW, "renewals": 0, "returned_at": None,
            "lost_at": None,
        }  # fmt: skip
        table = Loan.__table__
        assert isinstance(table, Table)
        with pytest.raises(ItemOnLoan):
            await loans._lend(session, hotpath.inserting(table, values), item=desk.item)
        await session.rollback()
        unknown = values | {"patron_id": 10**12}  # no such patron: a foreign key
        with pytest.raises(IntegrityError):
            await loans._lend(session, hotpath.inserting(table, unknown), item=desk.item)

    async def test_a_patron_cannot_check_out(self, session: AsyncSession, desk: Desk) -> None:
        actor = await patron_actor(session, desk.patron)
        with pytest.raises(Forbidden):
            await loans.check_out(session, actor=actor, data=checkout(desk), now=NOW)


async def _expired(session: AsyncSession, desk: Desk) -> None:
    await patrons_service.update_patron(
        session, actor=STAFF, patron=desk.patron,
        data=PatronUpdate(expires_on=NOW.date() - timedelta(days=1)),
    )  # fmt: skip


async def _blocked(session: AsyncSession, desk: Desk) -> None:
    await patrons_service.add_block(
        session, actor=STAFF, patron=desk.patron, reason="Conduct", now=NOW
    )


async def _owes(session: AsyncSession, desk: Desk) -> None:
    await fees.charge_manual(
        session, actor=STAFF, patron_card=desk.patron.card_number, amount=Decimal("5.01"),
        description="Damage", item=None, now=NOW,
    )  # fmt: skip


async def _at_limit(session: AsyncSession, desk: Desk) -> None:
    for _ in range(2):
        other = await make_item(session, branch=desk.branch)
        await make_loan(session, item=other, patron=desk.patron, now=NOW)


async def _lost(session: AsyncSession, desk: Desk) -> None:
    desk.item.status = "lost"


async def _held_for_another(session: AsyncSession, desk: Desk) -> None:
    other = await make_patron(session, category=desk.category, branch=desk.branch)
    await holds.place_hold(
        session, actor=STAFF, now=NOW,
        data=HoldCreate(bib_id=desk.bib.id, patron_card=other.card_number,
                        pickup_branch=desk.branch.code),
    )  # fmt: skip
    await loans.check_in(session, actor=STAFF, data=checkin(desk), now=NOW)


REFUSALS: list[tuple[str, Callable[[AsyncSession, Desk], Awaitable[None]]]] = [
    ("patron-expired", _expired),
    ("patron-blocked", _blocked),
    ("fees-over-threshold", _owes),
    ("loan-limit-reached", _at_limit),
    ("item-not-available", _lost),
    ("item-on-hold-for-another", _held_for_another),
]


class TestCheckoutRefusals:
    @pytest.mark.parametrize(("code", "arrange"), REFUSALS, ids=[c for c, _ in REFUSALS])
    async def test_each_refusal_has_its_problem_type_and_writes_nothing(
        self, client: httpx.AsyncClient, session: AsyncSession, desk: Desk, librarian: User,
        code: str, arrange: Callable[[AsyncSession, Desk], Awaitable[None]],
    ) -> None:  # fmt: skip
        await arrange(session, desk)
        await session.commit()
        before = {m: await count(session, m) for m in (Loan, AuditEvent, Fee, Hold)}
        status_before = desk.item.status
        body = {"item_barcode": desk.item.barcode, "patron_card": desk.patron.card_number}
        response = await client.post("/api/v1/checkouts", json=body, headers=auth(librarian))
        assert response.status_code == 409, response.text
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert problem["type"] == f"/problems/{code}"
        assert problem["overridable"] is True
        assert {m: await count(session, m) for m in before} == before
        await session.refresh(desk.item)
        assert desk.item.status == status_before

    @pytest.mark.parametrize(("code", "arrange"), REFUSALS, ids=[c for c, _ in REFUSALS])
    async def test_a_librarian_overrides_with_a_reason_and_it_is_audited(
        self, client: httpx.AsyncClient, session: AsyncSession, desk: Desk, librarian: User,
        code: str, arrange: Callable[[AsyncSession, Desk], Awaitable[None]],
    ) -> None:  # fmt: skip
        await arrange(session, desk)
        await session.commit()
        body = {
            "item_barcode": desk.item.barcode, "patron_card": desk.patron.card_number,
            "override": {"reason": "Approved by the head librarian"},
        }  # fmt: skip
        response = await client.post("/api/v1/checkouts", json=body, headers=auth(librarian))
        assert response.status_code == 201, response.text
        event = await session.scalar(
            select(AuditEvent).where(
                AuditEvent.action == "loan.checkout",
                AuditEvent.object_id == str(response.json()["id"]),
            )
        )
        assert event is not None
        assert event.actor_name == librarian.username
        assert event.changes["override"]["reason"] == "Approved by the head librarian"
        assert code in event.changes["override"]["refusals"]

    async def test_on_loan_cannot_be_overridden(
        self, client: httpx.AsyncClient, session: AsyncSession, desk: Desk, librarian: User
    ) -> None:
        await make_loan(session, item=desk.item, patron=desk.patron, now=NOW)
        other = await make_patron(session, category=desk.category, branch=desk.branch)
        await session.commit()
        body = {
            "item_barcode": desk.item.barcode, "patron_card": other.card_number,
            "override": {"reason": "Please"},
        }  # fmt: skip
        response = await client.post("/api/v1/checkouts", json=body, headers=auth(librarian))
        assert response.status_code == 409
        assert response.json()["type"] == "/problems/item-not-available"
        assert response.json()["overridable"] is False
        assert await session.scalar(select(func.count()).where(Loan.item_id == desk.item.id)) == 1

    async def test_unknown_item_and_patron_are_404(
        self, client: httpx.AsyncClient, desk: Desk, librarian: User
    ) -> None:
        unknown_item = await client.post(
            "/api/v1/checkouts", headers=auth(librarian),
            json={"item_barcode": "NOPE", "patron_card": desk.patron.card_number},
        )  # fmt: skip
        assert unknown_item.status_code == 404
        assert unknown_item.json()["type"] == "/problems/item-not-found"
        unknown_patron = await client.post(
            "/api/v1/checkouts", headers=auth(librarian),
            json={"item_barcode": desk.item.barcode, "patron_card": "NOPE"},
        )  # fmt: skip
        assert unknown_patron.status_code == 404
        assert unknown_patron.json()["type"] == "/problems/patron-not-found"


class TestCheckIn:
    async def test_closes_the_loan_and_reshelves_at_home(
        self, session: AsyncSession, desk: Desk
    ) -> None:
        loan = await make_loan(session, item=desk.item, patron=desk.patron, now=NOW)
        later = NOW + timedelta(days=3)
        result = await loans.check_in(session, actor=STAFF, data=checkin(desk), now=later)
        assert result.loan is loan
        assert loan.returned_at == later
        assert result.fee is None
        assert result.routing.next == "reshelve"
        assert desk.item.status == "available"
        assert desk.item.last_seen_at == later

    async def test_elsewhere_sends_the_copy_home(self, session: AsyncSession, desk: Desk) -> None:
        other = await make_branch(session)
        await make_loan(session, item=desk.item, patron=desk.patron, now=NOW)
        result = await loans.check_in(
            session, actor=STAFF, data=checkin(desk, branch=other.code), now=NOW
        )
        assert result.routing.next == "transit"
        assert result.routing.transit_to is not None
        assert result.routing.transit_to.id == desk.branch.id
        assert desk.item.status == "in_transit"
        home = await loans.check_in(session, actor=STAFF, data=checkin(desk), now=NOW)
        assert home.loan is None
        assert home.routing.next == "reshelve"
        assert desk.item.status == "available"

    async def test_not_on_loan_is_no_error_and_records_the_copy_as_seen(
        self, client: httpx.AsyncClient, session: AsyncSession, desk: Desk, librarian: User
    ) -> None:
        desk.item.status = "missing"
        await session.commit()
        response = await client.post(
            "/api/v1/checkins", json={"item_barcode": desk.item.barcode}, headers=auth(librarian)
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["loan"] is None
        assert body["fee"] is None
        assert body["next"] == "reshelve"
        assert body["item"]["status"] == "available"
        await session.refresh(desk.item)
        assert desk.item.last_seen_at is not None

    async def test_overdue_return_charges_the_fine(
        self, client: httpx.AsyncClient, session: AsyncSession, desk: Desk, librarian: User
    ) -> None:
        # Lent 20 days ago for 14 days: 6 days late, 1 grace day, 0.50 a day = 2.50.
        await make_loan(
            session, item=desk.item, patron=desk.patron, now=utcnow() - timedelta(days=20)
        )
        await session.commit()
        response = await client.post(
            "/api/v1/checkins", json={"item_barcode": desk.item.barcode}, headers=auth(librarian)
        )
        body = response.json()
        assert body["loan"]["returned_at"] is not None
        assert body["loan"]["overdue"] is False
        assert body["fee"]["kind"] == "overdue"
        assert body["fee"]["amount"] == "2.50"
        assert body["fee"]["outstanding"] == "2.50"


class TestRenew:
    async def test_extends_from_the_due_date(self, session: AsyncSession, desk: Desk) -> None:
        loan = await make_loan(session, item=desk.item, patron=desk.patron, now=NOW)
        renewed = await loans.renew(
            session, actor=STAFF, loan_id=loan.id, override=None, now=NOW + timedelta(days=2)
        )
        assert renewed.renewals == 1
        assert renewed.due_at == datetime(2026, 3, 30, 23, 59, 59, tzinfo=UTC)

    async def test_from_today_when_the_rule_says_so(
        self, session: AsyncSession, desk: Desk
    ) -> None:
        desk.rule.renew_from = "today"
        loan = await make_loan(session, item=desk.item, patron=desk.patron, now=NOW)
        renewed = await loans.renew(
            session, actor=STAFF, loan_id=loan.id, override=None, now=NOW + timedelta(days=2)
        )
        assert renewed.due_at == datetime(2026, 3, 18, 23, 59, 59, tzinfo=UTC)

    async def test_overdue_renewal_charges_what_accrued(
        self, session: AsyncSession, desk: Desk
    ) -> None:
        loan = await make_loan(session, item=desk.item, patron=desk.patron, now=NOW)
        late = NOW + timedelta(days=18)  # 4 days late, 1 grace: 1.50
        await loans.renew(session, actor=STAFF, loan_id=loan.id, override=None, now=late)
        fee = await session.scalar(select(Fee).where(Fee.loan_id == loan.id))
        assert fee is not None
        assert fee.amount == Decimal("1.50")
        assert loan.due_at == datetime(2026, 4, 3, 23, 59, 59, tzinfo=UTC)  # from today

    async def test_the_patron_renews_their_own_loan(
        self, client: httpx.AsyncClient, session: AsyncSession, desk: Desk
    ) -> None:
        loan = await make_loan(session, item=desk.item, patron=desk.patron, now=utcnow())
        user = await make_patron_user(session, desk.patron)
        await session.commit()
        response = await client.post(f"/api/v1/loans/{loan.id}/renew", headers=auth(user))
        assert response.status_code == 200, response.text
        assert response.json()["renewals"] == 1

    async def test_used_up_renewals_are_refused(
        self, client: httpx.AsyncClient, session: AsyncSession, desk: Desk, librarian: User
    ) -> None:
        loan = await make_loan(session, item=desk.item, patron=desk.patron, now=utcnow())
        await session.commit()
        url = f"/api/v1/loans/{loan.id}/renew"
        assert (await client.post(url, headers=auth(librarian))).status_code == 200
        refused = await client.post(url, headers=auth(librarian))
        assert refused.status_code == 409
        assert refused.json()["type"] == "/problems/renewals-exhausted"
        overridden = await client.post(
            url, json={"override": {"reason": "Exam week"}}, headers=auth(librarian)
        )
        assert overridden.status_code == 200
        assert overridden.json()["renewals"] == 2

    async def test_another_patron_waiting_refuses_renewal(
        self, client: httpx.AsyncClient, session: AsyncSession, desk: Desk, librarian: User
    ) -> None:
        loan = await make_loan(session, item=desk.item, patron=desk.patron, now=utcnow())
        other = await make_patron(session, category=desk.category, branch=desk.branch)
        await holds.place_hold(
            session, actor=STAFF, now=utcnow(),
            data=HoldCreate(bib_id=desk.bib.id, patron_card=other.card_number,
                            pickup_branch=desk.branch.code),
        )  # fmt: skip
        await session.commit()
        response = await client.post(f"/api/v1/loans/{loan.id}/renew", headers=auth(librarian))
        assert response.status_code == 409
        assert response.json()["type"] == "/problems/holds-waiting"

    async def test_a_blocked_patron_cannot_renew(
        self, client: httpx.AsyncClient, session: AsyncSession, desk: Desk
    ) -> None:
        loan = await make_loan(session, item=desk.item, patron=desk.patron, now=utcnow())
        await _blocked(session, desk)
        user = await make_patron_user(session, desk.patron)
        await session.commit()
        url = f"/api/v1/loans/{loan.id}/renew"
        response = await client.post(url, headers=auth(user))
        assert response.status_code == 409
        assert response.json()["type"] == "/problems/patron-blocked"
        self_override = await client.post(
            url, json={"override": {"reason": "I promise"}}, headers=auth(user)
        )
        assert self_override.status_code == 403

    async def test_a_returned_loan_is_not_renewed(self, session: AsyncSession, desk: Desk) -> None:
        loan = await make_loan(session, item=desk.item, patron=desk.patron, now=NOW)
        await loans.check_in(session, actor=STAFF, data=checkin(desk), now=NOW)
        with pytest.raises(LoanClosed):
            await loans.renew(session, actor=STAFF, loan_id=loan.id, override=None, now=NOW)


class TestDeclareLost:
    async def test_charges_the_price_and_a_return_waives_what_is_owed(
        self, client: httpx.AsyncClient, session: AsyncSession, desk: Desk, librarian: User
    ) -> None:
        loan = await make_loan(session, item=desk.item, patron=desk.patron, now=utcnow())
        await session.commit()
        response = await client.post(f"/api/v1/loans/{loan.id}/lost", headers=auth(librarian))
        assert response.status_code == 200, response.text
        assert response.json()["lost_at"] is not None
        await session.refresh(desk.item)
        assert desk.item.status == "lost"
        fee = await session.scalar(select(Fee).where(Fee.loan_id == loan.id))
        assert fee is not None
        assert (fee.kind, fee.amount) == ("lost", Decimal("20.00"))
        await fees.pay(
            session, actor=STAFF, fee_id=fee.id, amount=Decimal("5.00"), method="cash",
            note=None, now=utcnow(),
        )  # fmt: skip
        await session.commit()
        again = await client.post(f"/api/v1/loans/{loan.id}/lost", headers=auth(librarian))
        assert again.json()["type"] == "/problems/loan-lost"
        back = await client.post(
            "/api/v1/checkins", json={"item_barcode": desk.item.barcode}, headers=auth(librarian)
        )
        assert back.json()["loan"]["returned_at"] is not None
        assert back.json()["item"]["status"] == "available"
        await session.refresh(fee)
        assert (fee.status, fee.outstanding, fee.waived) == (
            "waived", Decimal("0.00"), Decimal("15.00"),
        )  # fmt: skip


class TestReadingLoans:
    async def test_a_patron_reading_another_patrons_loan_is_403(
        self, client: httpx.AsyncClient, session: AsyncSession, desk: Desk
    ) -> None:
        loan = await make_loan(session, item=desk.item, patron=desk.patron, now=utcnow())
        other = await make_patron(session, category=desk.category, branch=desk.branch)
        owner, stranger = (
            await make_patron_user(session, desk.patron),
            await make_patron_user(session, other),
        )
        await session.commit()
        mine = await client.get(f"/api/v1/loans/{loan.id}", headers=auth(owner))
        assert mine.status_code == 200
        assert mine.json()["patron_card"] == desk.patron.card_number
        theirs = await client.get(f"/api/v1/loans/{loan.id}", headers=auth(stranger))
        assert theirs.status_code == 403
        assert theirs.json()["type"] == "/problems/forbidden"
        listed = await client.get(
            "/api/v1/loans", params={"patron_card": desk.patron.card_number},
            headers=auth(stranger),
        )  # fmt: skip
        assert listed.status_code == 403
        own_list = await client.get("/api/v1/loans", headers=auth(stranger))
        assert own_list.json()["items"] == []

    async def test_filters_and_keyset_pages(
        self, client: httpx.AsyncClient, session: AsyncSession, desk: Desk, librarian: User
    ) -> None:
        desk.rule.max_loans = None
        now = utcnow()
        items = [await make_item(session, branch=desk.branch) for _ in range(5)]
        made = [
            await make_loan(session, item=item, patron=desk.patron, now=now - timedelta(days=d))
            for item, d in zip(items, (0, 1, 20, 30, 2), strict=True)
        ]
        await loans.check_in(
            session, actor=STAFF, data=checkin(desk, item_barcode=items[4].barcode), now=now
        )
        await session.commit()

        async def ids(**params: object) -> list[int]:
            params = {"patron_card": desk.patron.card_number} | params
            response = await client.get("/api/v1/loans", params=params, headers=auth(librarian))
            assert response.status_code == 200, response.text
            return [loan["id"] for loan in response.json()["items"]]

        assert await ids() == [loan.id for loan in made]
        assert await ids(open=True) == [loan.id for loan in made[:4]]
        assert await ids(open=False) == [made[4].id]
        assert await ids(overdue=True) == [made[2].id, made[3].id]
        assert await ids(item_barcode=items[1].barcode) == [made[1].id]
        assert await ids(branch=desk.branch.code) == [loan.id for loan in made]
        seen: list[int] = []
        cursor = None
        while True:
            params: dict[str, object] = {"patron_card": desk.patron.card_number, "limit": 2}
            if cursor:
                params["cursor"] = cursor
            page = (
                await client.get("/api/v1/loans", params=params, headers=auth(librarian))
            ).json()
            seen += [loan["id"] for loan in page["items"]]
            if not (cursor := page["next_cursor"]):
                break
        assert seen == [loan.id for loan in made]


class TestStatementsPerDeskAction:
    """The desk's throughput is bounded by the work per checkout and checkin (see
    bench/circulation.py): upper bounds on the statements each sends, so that an extra
    round trip or a lazy load shows up here rather than in the benchmark."""

    async def test_a_checkout_and_an_on_time_checkin(
        self, session: AsyncSession, connection: AsyncConnection, desk: Desk
    ) -> None:
        statements: list[str] = []
        await session.connection()  # the test's transaction begins (a savepoint) uncounted
        # On PostgreSQL the hot path sends statements on asyncpg's connection, past
        # SQLAlchemy's events: they are counted there, with SQLAlchemy's own (asyncpg logs
        # a statement in a callback of the event loop's next turn).
        driver = (await connection.get_raw_connection()).driver_connection
        postgresql = connection.dialect.name == "postgresql"

        def record(*args: Any) -> None:
            statements.append(args[0].query if postgresql else str(args[2]))

        target = connection.sync_connection
        if postgresql:
            driver.add_query_logger(record)
        else:
            event.listen(target, "before_cursor_execute", record)
        try:
            loan = await loans.check_out(session, actor=STAFF, data=checkout(desk), now=NOW)
            await asyncio.sleep(0)
            out = list(statements)
            statements.clear()
            done = await loans.check_in(
                session, actor=STAFF, data=checkin(desk), now=NOW + timedelta(days=1)
            )
            await asyncio.sleep(0)
            back = list(statements)
        finally:
            if postgresql:
                driver.remove_query_logger(record)
            else:
                event.remove(target, "before_cursor_execute", record)
        assert done.loan is loan
        # Lock the copy and the patron; the rule with the calendar, the patron's standing,
        # the copy's and their loans and holds; insert the loan, update the copy and insert
        # the audit event naming the loan (on PostgreSQL in one statement).
        assert len(out) == (3 if postgresql else 5), out
        # Lock the copy; its open loan with the patron, and whether holds wait; update the
        # copy and the loan, insert the audit event (on PostgreSQL in one statement). No rule,
        # no calendar: nothing is owed.
        assert len(back) == (3 if postgresql else 5), back
