"""Checkout, checkin, renew, renew all and item information at a self-check, end to end: a
kiosk over TCP, the server in the test's event loop, the loans read back through the
circulation service."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from circulation.conftest import NOW
from factories import STAFF, make_branch, make_item, make_loan, make_patron
from interop.conftest import DATE, INSTITUTION, NO_DATE, PIN, Kiosk, Library, fixed, variable
from shelfmark.audit.models import AuditEvent
from shelfmark.circulation import holds, loans
from shelfmark.circulation.loans import LoanFilters
from shelfmark.circulation.models import Loan
from shelfmark.circulation.schemas import CheckinCreate, HoldCreate
from shelfmark.interop.sip2.context import BAD_PIN
from shelfmark.patrons import service as patrons_service
from shelfmark.patrons.models import Patron

DUE = "20260316   Z235959"  # 14 days from the self-checks' clock, end of day
DUE_RENEWED = "20260330   Z235959"


def checkout(card: str, barcode: str, *, pin: str | None = PIN, policy: str = "N",
             no_block: str = "N", due: str = NO_DATE) -> str:  # fmt: skip
    ad = f"AD{pin}|" if pin is not None else ""
    return f"11{policy}{no_block}{DATE}{due}AO{INSTITUTION}|AA{card}|AB{barcode}|AC|{ad}"


def checkin(barcode: str, location: str = "") -> str:
    return f"09N{DATE}{DATE}AP{location}|AO{INSTITUTION}|AB{barcode}|AC|"


def renew(card: str, barcode: str, *, pin: str = PIN, third_party: str = "N") -> str:
    return f"29{third_party}N{DATE}{NO_DATE}AO{INSTITUTION}|AA{card}|AD{pin}|AB{barcode}|"


async def open_loans(session: AsyncSession, *, barcode: str) -> list[Loan]:
    found = await loans.list_loans(
        session, actor=STAFF, filters=LoanFilters(item_barcode=barcode, open=True), now=NOW,
        limit=10, after_id=None,
    )  # fmt: skip
    return list(found)


async def loan_count(session: AsyncSession) -> int:
    return await session.scalar(select(func.count()).select_from(Loan)) or 0


async def hold_for_another(session: AsyncSession, library: Library, *, pickup: str) -> Patron:
    other = await make_patron(session, category=library.desk.category, branch=library.desk.branch)
    await holds.place_hold(
        session, actor=STAFF, now=NOW,
        data=HoldCreate(bib_id=library.desk.bib.id, patron_card=other.card_number,
                        pickup_branch=pickup),
    )  # fmt: skip
    return other


class TestCheckout:
    async def test_lends_the_copy_at_the_kiosks_branch(
        self, logged_in: Kiosk, library: Library, session: AsyncSession
    ) -> None:
        item, patron = library.desk.item, library.patron
        answer = await logged_in.send(checkout(patron.card_number, item.barcode))
        ok, renewed, magnetic, desensitize, _ = fixed(answer)
        assert (ok, renewed, magnetic, desensitize) == ("1", "N", "N", "Y")
        fields = variable(answer)
        assert fields["AA"] == [patron.card_number]
        assert fields["AB"] == [item.barcode]
        assert fields["AJ"] == [library.desk.bib.title]
        assert fields["AH"] == [DUE]
        assert fields["AO"] == [INSTITUTION]
        assert fields["CK"] == ["001"]
        (loan,) = await open_loans(session, barcode=item.barcode)
        assert loan.patron_id == patron.id
        assert loan.branch_id == library.desk.branch.id
        assert loan.due_at == datetime(2026, 3, 16, 23, 59, 59, tzinfo=UTC)
        event = await session.scalar(select(AuditEvent).where(AuditEvent.action == "loan.checkout"))
        assert event is not None
        assert event.actor_name == library.staff.username

    async def test_a_blocked_patron_is_refused_with_the_reason(
        self, logged_in: Kiosk, library: Library, session: AsyncSession
    ) -> None:
        await patrons_service.add_block(
            session, actor=STAFF, patron=library.patron, reason="Conduct", now=NOW
        )
        await session.commit()
        answer = await logged_in.send(
            checkout(library.patron.card_number, library.desk.item.barcode)
        )
        assert fixed(answer)[:4] == ["0", "N", "U", "N"]
        assert variable(answer)["AF"] == [f"Patron {library.patron.card_number} is blocked."]
        assert variable(answer)["AH"] == [""]
        assert await loan_count(session) == 0

    async def test_a_copy_on_hold_for_another_patron_is_refused(
        self, logged_in: Kiosk, library: Library, session: AsyncSession
    ) -> None:
        await hold_for_another(session, library, pickup=library.desk.branch.code)
        await loans.check_in(
            session, actor=STAFF, now=NOW,
            data=CheckinCreate(item_barcode=library.desk.item.barcode),
        )  # fmt: skip
        await session.commit()
        answer = await logged_in.send(
            checkout(library.patron.card_number, library.desk.item.barcode)
        )
        assert fixed(answer)[0] == "0"
        item = library.desk.item.barcode
        assert variable(answer)["AF"] == [f"Item {item} is ready for another patron."]
        assert await loan_count(session) == 0

    async def test_the_pin_must_be_right(
        self, logged_in: Kiosk, library: Library, session: AsyncSession
    ) -> None:
        for pin in ("0000", None, ""):
            answer = await logged_in.send(
                checkout(library.patron.card_number, library.desk.item.barcode, pin=pin)
            )
            assert fixed(answer)[0] == "0"
            assert variable(answer)["AF"] == [BAD_PIN]
        assert await loan_count(session) == 0

    async def test_a_patron_without_a_pin_borrows_without_one(
        self, logged_in: Kiosk, library: Library, session: AsyncSession
    ) -> None:
        patron = await make_patron(
            session, category=library.desk.category, branch=library.desk.branch
        )
        await session.commit()
        answer = await logged_in.send(
            checkout(patron.card_number, library.desk.item.barcode, pin=None)
        )
        assert fixed(answer)[0] == "1"

    async def test_unknown_patron_and_item(self, logged_in: Kiosk, library: Library) -> None:
        answer = await logged_in.send(checkout("NOSUCHCARD", library.desk.item.barcode))
        assert variable(answer)["AF"] == ["There is no patron with card number 'NOSUCHCARD'."]
        answer = await logged_in.send(checkout(library.patron.card_number, "NOSUCHITEM"))
        assert variable(answer)["AF"] == ["There is no item with barcode 'NOSUCHITEM'."]

    async def test_with_the_renewal_policy_a_copy_in_hand_is_renewed(
        self, logged_in: Kiosk, library: Library, session: AsyncSession
    ) -> None:
        item, card = library.desk.item, library.patron.card_number
        assert fixed(await logged_in.send(checkout(card, item.barcode)))[0] == "1"
        refused = await logged_in.send(checkout(card, item.barcode))
        assert fixed(refused)[0] == "0"
        assert variable(refused)["AF"] == [f"Item {item.barcode} is on loan."]
        answer = await logged_in.send(checkout(card, item.barcode, policy="Y"))
        assert fixed(answer)[:2] == ["1", "Y"]
        assert variable(answer)["AH"] == [DUE_RENEWED]
        (loan,) = await open_loans(session, barcode=item.barcode)
        assert loan.renewals == 1

    async def test_offline_no_block_overrides_and_keeps_the_due_date(
        self, logged_in: Kiosk, library: Library, session: AsyncSession
    ) -> None:
        await patrons_service.add_block(
            session, actor=STAFF, patron=library.patron, reason="Conduct", now=NOW
        )
        await session.commit()
        answer = await logged_in.send(
            checkout(library.patron.card_number, library.desk.item.barcode, no_block="Y",
                     due="20260310   Z120000")
        )  # fmt: skip
        assert fixed(answer)[0] == "1", answer
        assert variable(answer)["AH"] == ["20260310   Z120000"]
        event = await session.scalar(select(AuditEvent).where(AuditEvent.action == "loan.checkout"))
        assert event is not None
        assert event.changes["override"]["refusals"] == ["patron-blocked"]


class TestCheckin:
    async def test_closes_the_loan_and_reshelves(
        self, logged_in: Kiosk, library: Library, session: AsyncSession
    ) -> None:
        item = library.desk.item
        await make_loan(session, item=item, patron=library.patron, now=NOW)
        await session.commit()
        answer = await logged_in.send(checkin(item.barcode))
        ok, resensitize, _, alert, _ = fixed(answer)
        assert (ok, resensitize, alert) == ("1", "Y", "N")
        fields = variable(answer)
        assert fields["AA"] == [library.patron.card_number]
        assert fields["AQ"] == [library.desk.branch.code]
        assert fields["AJ"] == [library.desk.bib.title]
        assert "CV" not in fields
        assert await open_loans(session, barcode=item.barcode) == []

    async def test_a_copy_for_a_hold_here_goes_to_the_hold_shelf(
        self, logged_in: Kiosk, library: Library, session: AsyncSession
    ) -> None:
        item = library.desk.item
        await make_loan(session, item=item, patron=library.patron, now=NOW)
        other = await hold_for_another(session, library, pickup=library.desk.branch.code)
        await session.commit()
        answer = await logged_in.send(checkin(item.barcode))
        assert fixed(answer)[3] == "Y"
        fields = variable(answer)
        assert fields["CV"] == ["01"]
        assert fields["CT"] == [library.desk.branch.code]
        assert fields["CY"] == [other.card_number]
        (hold, _), *_ = await holds.list_holds(
            session, actor=STAFF, filters=holds.HoldFilters(patron_card=other.card_number),
            limit=10, after_id=None,
        )  # fmt: skip
        assert hold.status == "ready"
        assert hold.item_id == item.id

    async def test_a_copy_for_a_hold_elsewhere_goes_in_transit(
        self, kiosk: Kiosk, library: Library, session: AsyncSession
    ) -> None:
        item = library.desk.item
        elsewhere = await make_branch(session)
        await make_loan(session, item=item, patron=library.patron, now=NOW)
        await hold_for_another(session, library, pickup=library.desk.branch.code)
        await session.commit()
        assert await kiosk.login(library.staff, elsewhere.code) == "941"
        answer = await kiosk.send(checkin(item.barcode))
        assert fixed(answer)[3] == "Y"
        assert variable(answer)["CV"] == ["02"]
        assert variable(answer)["CT"] == [library.desk.branch.code]

    async def test_the_return_location_names_the_branch(
        self, kiosk: Kiosk, library: Library, session: AsyncSession
    ) -> None:
        """A book drop logged in nowhere says where the copy came back (AP): a copy
        returned at another branch is sent home."""
        item = library.desk.item
        elsewhere = await make_branch(session)
        await make_loan(session, item=item, patron=library.patron, now=NOW)
        await session.commit()
        assert await kiosk.login(library.staff) == "941"
        answer = await kiosk.send(checkin(item.barcode, location=elsewhere.code))
        assert variable(answer)["CV"] == ["04"]
        assert variable(answer)["CT"] == [library.desk.branch.code]

    async def test_a_late_return_says_what_it_cost(
        self, kiosk: Kiosk, library: Library, session: AsyncSession
    ) -> None:
        item = library.desk.item
        await make_loan(session, item=item, patron=library.patron, now=NOW - timedelta(days=20))
        await session.commit()
        assert await kiosk.login(library.staff) == "941"
        answer = await kiosk.send(checkin(item.barcode))
        assert fixed(answer)[0] == "1"
        assert variable(answer)["AF"] == ["Returned late: a fine of 2.50 was charged."]

    async def test_a_copy_not_on_loan_is_taken_back(
        self, logged_in: Kiosk, library: Library
    ) -> None:
        answer = await logged_in.send(checkin(library.desk.item.barcode))
        assert fixed(answer)[0] == "1"
        assert variable(answer)["AF"] == ["The item was not on loan."]

    async def test_an_unknown_copy_raises_the_alert(self, logged_in: Kiosk) -> None:
        answer = await logged_in.send(checkin("NOSUCHITEM"))
        assert fixed(answer)[0] == "0"
        assert fixed(answer)[3] == "Y"
        assert variable(answer)["AF"] == ["There is no item with barcode 'NOSUCHITEM'."]

    async def test_a_cancelled_checkin_is_refused(
        self, logged_in: Kiosk, library: Library, session: AsyncSession
    ) -> None:
        item = library.desk.item
        await make_loan(session, item=item, patron=library.patron, now=NOW)
        await session.commit()
        answer = await logged_in.send(checkin(item.barcode) + "BIY|")
        assert fixed(answer)[0] == "0"
        assert len(await open_loans(session, barcode=item.barcode)) == 1


class TestRenew:
    async def test_renews_then_refuses_past_the_rule(
        self, logged_in: Kiosk, library: Library, session: AsyncSession
    ) -> None:
        item, card = library.desk.item, library.patron.card_number
        await make_loan(session, item=item, patron=library.patron, now=NOW)
        await session.commit()
        answer = await logged_in.send(renew(card, item.barcode))
        assert fixed(answer)[:2] == ["1", "Y"]
        assert variable(answer)["AH"] == [DUE_RENEWED]
        again = await logged_in.send(renew(card, item.barcode))
        assert fixed(again)[0] == "0"
        assert variable(again)["AF"] == ["The loan has been renewed 1 of 1 times."]
        (loan,) = await open_loans(session, barcode=item.barcode)
        assert loan.renewals == 1

    async def test_only_the_borrower_renews_unless_third_parties_may(
        self, logged_in: Kiosk, library: Library, session: AsyncSession
    ) -> None:
        item = library.desk.item
        other = await make_patron(
            session, category=library.desk.category, branch=library.desk.branch, pin=PIN
        )
        await make_loan(session, item=item, patron=library.patron, now=NOW)
        await session.commit()
        refused = await logged_in.send(renew(other.card_number, item.barcode))
        assert variable(refused)["AF"] == [f"Item {item.barcode} is not on loan to this patron."]
        allowed = await logged_in.send(renew(other.card_number, item.barcode, third_party="Y"))
        assert fixed(allowed)[0] == "1"

    async def test_a_copy_not_on_loan(self, logged_in: Kiosk, library: Library) -> None:
        answer = await logged_in.send(renew(library.patron.card_number, library.desk.item.barcode))
        assert variable(answer)["AF"] == [f"Item {library.desk.item.barcode} is not on loan."]

    async def test_a_wrong_pin(
        self, logged_in: Kiosk, library: Library, session: AsyncSession
    ) -> None:
        await make_loan(session, item=library.desk.item, patron=library.patron, now=NOW)
        await session.commit()
        answer = await logged_in.send(
            renew(library.patron.card_number, library.desk.item.barcode, pin="9999")
        )
        assert variable(answer)["AF"] == [BAD_PIN]


class TestRenewAll:
    async def test_renews_what_it_may_and_lists_the_rest(
        self, logged_in: Kiosk, library: Library, session: AsyncSession
    ) -> None:
        desk = library.desk
        held = await make_item(session, branch=desk.branch)
        await make_loan(session, item=desk.item, patron=library.patron, now=NOW)
        await make_loan(session, item=held, patron=library.patron, now=NOW)
        other = await make_patron(session, category=desk.category, branch=desk.branch)
        await holds.place_hold(
            session, actor=STAFF, now=NOW,
            data=HoldCreate(bib_id=held.bib_id, patron_card=other.card_number,
                            pickup_branch=desk.branch.code),
        )  # fmt: skip
        await session.commit()
        answer = await logged_in.send(
            f"65{DATE}AO{INSTITUTION}|AA{library.patron.card_number}|AD{PIN}|"
        )
        assert fixed(answer)[:3] == ["1", "0001", "0001"]
        fields = variable(answer)
        assert fields["BM"] == [desk.item.barcode]
        assert fields["BN"] == [held.barcode]
        (renewed,) = await open_loans(session, barcode=desk.item.barcode)
        assert renewed.renewals == 1
        (kept,) = await open_loans(session, barcode=held.barcode)
        assert kept.renewals == 0

    async def test_a_wrong_pin_renews_nothing(
        self, logged_in: Kiosk, library: Library, session: AsyncSession
    ) -> None:
        await make_loan(session, item=library.desk.item, patron=library.patron, now=NOW)
        await session.commit()
        answer = await logged_in.send(f"65{DATE}AO|AA{library.patron.card_number}|AD1111|")
        assert fixed(answer)[:3] == ["0", "0000", "0000"]
        (loan,) = await open_loans(session, barcode=library.desk.item.barcode)
        assert loan.renewals == 0


class TestItemInformation:
    def ask(self, barcode: str) -> str:
        return f"17{DATE}AO{INSTITUTION}|AB{barcode}|"

    async def test_an_available_copy(self, logged_in: Kiosk, library: Library) -> None:
        answer = await logged_in.send(self.ask(library.desk.item.barcode))
        status, _, _, _ = fixed(answer)
        assert status == "03"
        fields = variable(answer)
        assert fields["AB"] == [library.desk.item.barcode]
        assert fields["AJ"] == [library.desk.bib.title]
        assert fields["AQ"] == [library.desk.branch.code]
        assert fields["CF"] == ["0"]
        assert "AH" not in fields

    async def test_a_copy_on_loan_with_holds_waiting(
        self, logged_in: Kiosk, library: Library, session: AsyncSession
    ) -> None:
        await make_loan(session, item=library.desk.item, patron=library.patron, now=NOW)
        await hold_for_another(session, library, pickup=library.desk.branch.code)
        await session.commit()
        answer = await logged_in.send(self.ask(library.desk.item.barcode))
        assert fixed(answer)[0] == "04"
        assert variable(answer)["AH"] == ["20260316   Z235959"]
        assert variable(answer)["CF"] == ["1"]

    async def test_a_copy_on_the_hold_shelf_until_when(
        self, logged_in: Kiosk, library: Library, session: AsyncSession
    ) -> None:
        await hold_for_another(session, library, pickup=library.desk.branch.code)
        await loans.check_in(
            session, actor=STAFF, now=NOW,
            data=CheckinCreate(item_barcode=library.desk.item.barcode),
        )  # fmt: skip
        await session.commit()
        answer = await logged_in.send(self.ask(library.desk.item.barcode))
        assert fixed(answer)[0] == "08"
        assert variable(answer)["CM"] == ["20260305   Z235959"]  # 3 pickup days
        assert variable(answer)["CF"] == ["0"]

    async def test_an_unknown_copy(self, logged_in: Kiosk) -> None:
        answer = await logged_in.send(self.ask("NOSUCHITEM"))
        assert fixed(answer)[0] == "01"
        assert variable(answer)["AF"] == ["There is no item with barcode 'NOSUCHITEM'."]
        assert variable(answer)["AJ"] == [""]
