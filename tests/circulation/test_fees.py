from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from circulation.conftest import NOW, Desk
from factories import STAFF, auth, make_loan, make_patron, make_patron_user, make_user
from shelfmark.audit.models import AuditEvent
from shelfmark.auth.models import User
from shelfmark.auth.roles import Role
from shelfmark.circulation import fees, loans
from shelfmark.circulation.calendar import create_closed_day
from shelfmark.circulation.errors import FeeClosed, PaymentTooLarge
from shelfmark.circulation.models import CirculationRule, Fee
from shelfmark.circulation.schemas import CheckinCreate, ClosedDayCreate


@pytest.fixture
async def librarian(session: AsyncSession) -> User:
    user = await make_user(session, Role.LIBRARIAN)
    await session.commit()
    return user


def rule(per_day: str, cap: str | None, grace: int) -> CirculationRule:
    return CirculationRule(
        fine_per_day=Decimal(per_day), fine_cap=Decimal(cap) if cap else None, grace_days=grace
    )


class TestOverdueFine:
    @pytest.mark.parametrize(
        ("late", "per_day", "cap", "grace", "already", "fine"),
        [
            (0, "0.50", "3.00", 0, "0", "0.00"),
            (1, "0.50", "3.00", 0, "0", "0.50"),
            (2, "0.50", "3.00", 2, "0", "0.00"),  # within grace
            (3, "0.50", "3.00", 2, "0", "0.50"),  # only the days past grace
            (10, "0.50", "3.00", 0, "0", "3.00"),  # capped
            (10, "0.50", None, 0, "0", "5.00"),  # no cap
            (4, "0.50", "3.00", 0, "2.00", "1.00"),  # what a renewal charged counts
            (4, "0.50", "3.00", 0, "3.00", "0.00"),
            (3, "0.33", None, 0, "0", "0.99"),
        ],
    )
    def test_per_open_day_after_grace_capped(
        self, late: int, per_day: str, cap: str | None, grace: int, already: str, fine: str
    ) -> None:
        amount = fees.overdue_fine(
            rule=rule(per_day, cap, grace), late_days=late, already_charged=Decimal(already)
        )
        assert amount == Decimal(fine)

    async def test_closed_days_are_not_charged(self, session: AsyncSession, desk: Desk) -> None:
        await make_loan(session, item=desk.item, patron=desk.patron, now=NOW)  # due 16 March
        await create_closed_day(
            session, actor=STAFF, now=NOW,
            data=ClosedDayCreate(branch=desk.branch.code, first_day=NOW.date() + timedelta(15),
                                 last_day=NOW.date() + timedelta(17)),
        )  # fmt: skip
        back = NOW + timedelta(days=19)  # 5 days late, 3 closed: 2 open days, 1 grace
        result = await loans.check_in(
            session, actor=STAFF, data=CheckinCreate(item_barcode=desk.item.barcode), now=back
        )
        assert result.fee is not None
        assert result.fee.amount == Decimal("0.50")
        assert result.fee.description == "2 open day(s) late"

    async def test_the_cap_holds_across_renewals(self, session: AsyncSession, desk: Desk) -> None:
        loan = await make_loan(session, item=desk.item, patron=desk.patron, now=NOW)
        await loans.renew(
            session, actor=STAFF, loan_id=loan.id, override=None, now=NOW + timedelta(days=20)
        )  # 6 late, 1 grace: 2.50
        back = loan.due_at + timedelta(days=10)
        await loans.check_in(
            session, actor=STAFF, data=CheckinCreate(item_barcode=desk.item.barcode), now=back
        )
        charged = (await session.scalars(select(Fee.amount).where(Fee.loan_id == loan.id))).all()
        assert sorted(charged) == [Decimal("0.50"), Decimal("2.50")]


async def owe(session: AsyncSession, desk: Desk, amount: str) -> Fee:
    return await fees.charge_manual(
        session, actor=STAFF, patron_card=desk.patron.card_number, amount=Decimal(amount),
        description="Damaged case", item=None, now=NOW,
    )  # fmt: skip


class TestPayments:
    async def test_partial_then_full_payment(self, session: AsyncSession, desk: Desk) -> None:
        fee = await owe(session, desk, "4.00")
        await fees.pay(session, actor=STAFF, fee_id=fee.id, amount=Decimal("1.50"),
                       method="cash", note=None, now=NOW)  # fmt: skip
        assert (fee.status, fee.outstanding) == ("open", Decimal("2.50"))
        assert await fees.balance_of(session, desk.patron.id) == (Decimal("2.50"), 1)
        await fees.pay(session, actor=STAFF, fee_id=fee.id, amount=Decimal("2.50"),
                       method="card", note="terminal 2", now=NOW)  # fmt: skip
        assert (fee.status, fee.outstanding, fee.closed_at) == ("paid", Decimal("0.00"), NOW)
        assert [p.amount for p in fee.payments] == [Decimal("1.50"), Decimal("2.50")]
        assert await fees.balance_of(session, desk.patron.id) == (Decimal("0.00"), 0)
        with pytest.raises(FeeClosed):
            await fees.pay(session, actor=STAFF, fee_id=fee.id, amount=Decimal("1.00"),
                           method="cash", note=None, now=NOW)  # fmt: skip

    async def test_more_than_outstanding_is_refused(
        self, session: AsyncSession, desk: Desk
    ) -> None:
        fee = await owe(session, desk, "1.00")
        with pytest.raises(PaymentTooLarge):
            await fees.pay(session, actor=STAFF, fee_id=fee.id, amount=Decimal("1.01"),
                           method="cash", note=None, now=NOW)  # fmt: skip
        assert fee.outstanding == Decimal("1.00")

    async def test_waive_after_a_partial_payment(self, session: AsyncSession, desk: Desk) -> None:
        fee = await owe(session, desk, "3.00")
        await fees.pay(session, actor=STAFF, fee_id=fee.id, amount=Decimal("1.00"),
                       method="cash", note=None, now=NOW)  # fmt: skip
        await fees.waive(session, actor=STAFF, fee_id=fee.id, reason="Goodwill", now=NOW)
        assert (fee.status, fee.outstanding, fee.waived) == ("waived", 0, Decimal("2.00"))
        assert fee.waive_reason == "Goodwill"


class TestFeeRoutes:
    async def test_charge_pay_waive_and_balance(
        self, client: httpx.AsyncClient, session: AsyncSession, desk: Desk, librarian: User
    ) -> None:
        headers = auth(librarian)
        charged = await client.post(
            "/api/v1/fees", headers=headers,
            json={"patron_card": desk.patron.card_number, "amount": "6.00",
                  "description": "Damaged case", "item_barcode": desk.item.barcode},
        )  # fmt: skip
        assert charged.status_code == 201, charged.text
        fee = charged.json()
        assert (fee["kind"], fee["amount"], fee["item_id"]) == ("manual", "6.00", desk.item.id)
        balance_url = f"/api/v1/patrons/{desk.patron.id}/balance"
        balance = (await client.get(balance_url, headers=headers)).json()
        assert balance | {"patron_id": 0} == {
            "patron_id": 0, "card_number": desk.patron.card_number, "balance": "6.00",
            "open_fees": 1, "fee_block_threshold": "5.00", "over_threshold": True,
        }  # fmt: skip
        paid = await client.post(
            f"/api/v1/fees/{fee['id']}/payments", json={"amount": "2.00"}, headers=headers
        )
        assert paid.status_code == 201, paid.text
        assert (paid.json()["outstanding"], paid.json()["paid"]) == ("4.00", "2.00")
        assert paid.json()["payments"][0]["received_by"] == librarian.username
        too_much = await client.post(
            f"/api/v1/fees/{fee['id']}/payments", json={"amount": "4.01"}, headers=headers
        )
        assert too_much.status_code == 422
        assert too_much.json()["type"] == "/problems/payment-exceeds-outstanding"
        waived = await client.post(
            f"/api/v1/fees/{fee['id']}/waive", json={"reason": "Goodwill"}, headers=headers
        )
        assert waived.json() | {"payments": [], "closed_at": None} == paid.json() | {
            "status": "waived", "outstanding": "0.00", "waived": "4.00", "payments": [],
            "waive_reason": "Goodwill", "closed_at": None,
        }  # fmt: skip
        balance = (await client.get(balance_url, headers=headers)).json()
        assert (balance["balance"], balance["over_threshold"]) == ("0.00", False)
        actions = (
            await session.scalars(
                select(AuditEvent.action).where(AuditEvent.object_id == str(fee["id"]),
                                                AuditEvent.object_type == "fee")
            )
        ).all()  # fmt: skip
        assert sorted(actions) == ["fee.charge", "fee.pay", "fee.waive"]

    async def test_a_patron_sees_only_their_own_fees(
        self, client: httpx.AsyncClient, session: AsyncSession, desk: Desk
    ) -> None:
        mine = await owe(session, desk, "1.00")
        other = await make_patron(session, category=desk.category, branch=desk.branch)
        theirs = await fees.charge_manual(
            session, actor=STAFF, patron_card=other.card_number, amount=Decimal("2.00"),
            description="x", item=None, now=NOW,
        )  # fmt: skip
        user = await make_patron_user(session, desk.patron)
        await session.commit()
        listed = await client.get("/api/v1/fees", headers=auth(user))
        assert [f["id"] for f in listed.json()["items"]] == [mine.id]
        assert (
            await client.get(f"/api/v1/fees/{theirs.id}", headers=auth(user))
        ).status_code == 403
        balance = await client.get(f"/api/v1/patrons/{other.id}/balance", headers=auth(user))
        assert balance.status_code == 403
        pay = await client.post(
            f"/api/v1/fees/{mine.id}/payments", json={"amount": "1.00"}, headers=auth(user)
        )
        assert pay.status_code == 403
