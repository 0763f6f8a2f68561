"""Patron information and status, block patron, end session and fee paid at a self-check,
end to end; and what a wrong PIN does and does not tell."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from circulation.conftest import NOW
from factories import STAFF, make_item, make_loan, make_patron
from interop.conftest import DATE, INSTITUTION, PIN, Kiosk, Library, fixed, variable
from shelfmark.circulation import fees, holds
from shelfmark.circulation.fees import FeeFilters
from shelfmark.circulation.loans import check_in
from shelfmark.circulation.models import Fee
from shelfmark.circulation.schemas import CheckinCreate, HoldCreate
from shelfmark.interop.sip2.context import BAD_PIN
from shelfmark.patrons import service as patrons_service
from shelfmark.patrons.schemas import PatronUpdate

NO_SUMMARY = " " * 10


def information(card: str, pin: str | None = PIN, summary: str = NO_SUMMARY, **extra: str) -> str:
    ad = f"AD{pin}|" if pin is not None else ""
    more = "".join(f"{key}{value}|" for key, value in extra.items())
    return f"63001{DATE}{summary}AO{INSTITUTION}|AA{card}|AC|{ad}{more}"


def status(card: str, pin: str | None = PIN) -> str:
    ad = f"AD{pin}|" if pin is not None else ""
    return f"23001{DATE}AO{INSTITUTION}|AA{card}|AC|{ad}"


def summary(position: int) -> str:
    return " " * position + "Y" + " " * (9 - position)


async def charge(session: AsyncSession, library: Library, amount: str) -> None:
    await fees.charge_manual(
        session, actor=STAFF, patron_card=library.patron.card_number, amount=Decimal(amount),
        description="Damaged case", item=None, now=NOW,
    )  # fmt: skip


class TestPatronInformation:
    async def test_with_the_right_pin(
        self, logged_in: Kiosk, library: Library, session: AsyncSession
    ) -> None:
        patron, desk = library.patron, library.desk
        await patrons_service.update_patron(
            session, actor=STAFF, patron=patron,
            data=PatronUpdate(language="fre", email="reader@example.org"),
        )  # fmt: skip
        overdue = await make_item(session, branch=desk.branch)
        await make_loan(session, item=desk.item, patron=patron, now=NOW)
        await make_loan(session, item=overdue, patron=patron, now=NOW - timedelta(days=30))
        await charge(session, library, "1.50")
        await session.commit()
        answer = await logged_in.send(information(patron.card_number))
        flags, lang, _, held, late, charged, fined, recalled, pending = fixed(answer)
        assert flags == " " * 5 + "Y" + " " * 8  # at the loan limit (2)
        assert lang == "002"
        assert (held, late, charged, fined, recalled, pending) == (
            "0000", "0001", "0002", "0001", "0000", "0000",
        )  # fmt: skip
        fields = variable(answer)
        assert fields["AE"] == [patron.name]
        assert fields["BL"] == ["Y"]
        assert fields["CQ"] == ["Y"]
        assert fields["BV"] == ["1.50"]
        assert fields["CC"] == ["5.00"]
        assert fields["CB"] == ["0002"]
        assert fields["BZ"] == ["0002"]
        assert fields["BE"] == ["reader@example.org"]
        assert "AU" not in fields  # no list was asked for

    async def test_the_list_the_summary_asks_for(
        self, logged_in: Kiosk, library: Library, session: AsyncSession
    ) -> None:
        patron, desk = library.patron, library.desk
        late = await make_item(session, branch=desk.branch)
        await make_loan(session, item=desk.item, patron=patron, now=NOW)
        await make_loan(session, item=late, patron=patron, now=NOW - timedelta(days=30))
        await charge(session, library, "2.00")
        await session.commit()
        card = patron.card_number
        charged = variable(await logged_in.send(information(card, summary=summary(2))))
        assert sorted(charged["AU"]) == sorted([desk.item.barcode, late.barcode])
        overdue = variable(await logged_in.send(information(card, summary=summary(1))))
        assert overdue["AT"] == [late.barcode]
        fines = variable(await logged_in.send(information(card, summary=summary(3))))
        (fine,) = fines["AV"]
        assert fine.endswith(" 2.00 Damaged case")
        page = variable(await logged_in.send(information(card, summary=summary(2), BP="2", BQ="2")))
        assert page["AU"] == [charged["AU"][1]]

    async def test_holds_ready_and_waiting(
        self, logged_in: Kiosk, library: Library, session: AsyncSession
    ) -> None:
        patron, desk = library.patron, library.desk
        await holds.place_hold(
            session, actor=STAFF, now=NOW,
            data=HoldCreate(bib_id=desk.bib.id, patron_card=patron.card_number,
                            pickup_branch=desk.branch.code),
        )  # fmt: skip
        await check_in(
            session, actor=STAFF, data=CheckinCreate(item_barcode=desk.item.barcode), now=NOW
        )  # the copy is trapped: the hold is ready
        other = await make_item(session, branch=desk.branch)
        await holds.place_hold(
            session, actor=STAFF, now=NOW,
            data=HoldCreate(bib_id=other.bib_id, patron_card=patron.card_number,
                            pickup_branch=desk.branch.code),
        )  # fmt: skip
        await session.commit()
        card = patron.card_number
        answer = await logged_in.send(information(card, summary=summary(0)))
        assert (fixed(answer)[3], fixed(answer)[8]) == ("0001", "0001")
        assert variable(answer)["AS"] == [desk.item.barcode]
        pending = variable(await logged_in.send(information(card, summary=summary(5))))
        assert len(pending["CD"]) == 1

    async def test_a_wrong_pin_tells_nothing_but_that_the_card_exists(
        self, logged_in: Kiosk, library: Library, session: AsyncSession
    ) -> None:
        await make_loan(session, item=library.desk.item, patron=library.patron, now=NOW)
        await session.commit()
        answer = await logged_in.send(
            information(library.patron.card_number, pin="0000", summary=summary(2))
        )
        assert fixed(answer)[0] == "YYYY" + " " * 10
        assert fixed(answer)[3:] == ["0000"] * 6
        fields = variable(answer)
        assert (fields["BL"], fields["CQ"], fields["AE"]) == (["Y"], ["N"], [""])
        assert fields["AF"] == [BAD_PIN]
        assert {"AU", "BV", "BE"}.isdisjoint(fields)

    async def test_no_pin_set_and_a_wrong_pin_look_the_same(
        self, logged_in: Kiosk, library: Library, session: AsyncSession
    ) -> None:
        without = await make_patron(
            session, category=library.desk.category, branch=library.desk.branch
        )
        await session.commit()
        wrong = await logged_in.send(information(library.patron.card_number, pin="0000"))
        unset = await logged_in.send(information(without.card_number, pin="0000"))
        strip = {"AA"}
        assert fixed(wrong) == fixed(unset)
        assert {k: v for k, v in variable(wrong).items() if k not in strip} == {
            k: v for k, v in variable(unset).items() if k not in strip
        }

    async def test_a_patron_with_a_pin_must_give_it(
        self, logged_in: Kiosk, library: Library
    ) -> None:
        answer = await logged_in.send(information(library.patron.card_number, pin=None))
        fields = variable(answer)
        assert fields["BL"] == ["Y"]
        assert "CQ" not in fields  # no PIN was sent, so none is judged
        assert fields["AE"] == [""]

    async def test_an_unknown_card(self, logged_in: Kiosk) -> None:
        fields = variable(await logged_in.send(information("NOSUCHCARD")))
        assert (fields["BL"], fields["CQ"]) == (["N"], ["N"])

    async def test_pin_guessing_is_stopped(self, logged_in: Kiosk, library: Library) -> None:
        card = library.patron.card_number
        for _ in range(25):
            fields = variable(await logged_in.send(information(card, pin="0000")))
            if fields["AF"] != [BAD_PIN]:
                break
        assert fields["AF"][0].startswith("Too many attempts")
        # Even the right PIN now waits out the window.
        fields = variable(await logged_in.send(information(card)))
        assert fields["CQ"] == ["N"]


class TestPatronStatus:
    async def test_a_patron_in_good_standing(
        self, logged_in: Kiosk, library: Library, session: AsyncSession
    ) -> None:
        await charge(session, library, "0.75")
        await session.commit()
        answer = await logged_in.send(status(library.patron.card_number))
        assert fixed(answer)[0] == " " * 14
        fields = variable(answer)
        assert (fields["BL"], fields["CQ"], fields["BV"]) == (["Y"], ["Y"], ["0.75"])
        assert fields["AE"] == [library.patron.name]

    async def test_a_patron_over_the_fee_threshold(
        self, logged_in: Kiosk, library: Library, session: AsyncSession
    ) -> None:
        await charge(session, library, "6.00")
        await session.commit()
        answer = await logged_in.send(status(library.patron.card_number))
        flags = fixed(answer)[0]
        assert flags[:4] == "YYYY"
        assert flags[10:12] == "YY"
        assert "more than the 5.00" in variable(answer)["AF"][0]

    async def test_a_wrong_pin(self, logged_in: Kiosk, library: Library) -> None:
        fields = variable(await logged_in.send(status(library.patron.card_number, pin="1")))
        assert (fields["BL"], fields["CQ"], fields["AE"]) == (["Y"], ["N"], [""])
        assert "BV" not in fields


class TestBlockPatron:
    async def test_blocks_the_card_with_the_scs_message(
        self, logged_in: Kiosk, library: Library, session: AsyncSession
    ) -> None:
        card = library.patron.card_number
        answer = await logged_in.send(f"01Y{DATE}AO{INSTITUTION}|ALCard reported stolen|AA{card}|")
        assert answer.startswith("24YYYY")
        assert variable(answer)["AF"] == ["The card has been blocked."]
        (block,) = await patrons_service.active_blocks(session, library.patron.id)
        assert "Card reported stolen" in block.reason
        assert "retained" in block.reason
        assert block.created_by == library.staff.username
        refused = await logged_in.send(status(card))
        assert fixed(refused)[0][:4] == "YYYY"


async def test_end_patron_session(logged_in: Kiosk, library: Library) -> None:
    answer = await logged_in.send(f"35{DATE}AO{INSTITUTION}|AA{library.patron.card_number}|")
    assert fixed(answer)[0] == "Y"
    assert variable(answer)["AA"] == [library.patron.card_number]


class TestFeePaid:
    def pay(self, card: str, amount: str, **extra: str) -> str:
        more = "".join(f"{key}{value}|" for key, value in extra.items())
        return f"37{DATE}0102EURBV{amount}|AO{INSTITUTION}|AA{card}|{more}"

    async def open_fees(self, session: AsyncSession, library: Library) -> list[Fee]:
        found = await fees.list_fees(
            session, actor=STAFF,
            filters=FeeFilters(patron_card=library.patron.card_number, status="open"),
            limit=10, after_id=None,
        )  # fmt: skip
        return list(found)

    async def test_pays_the_oldest_fees_first(
        self, logged_in: Kiosk, library: Library, session: AsyncSession
    ) -> None:
        await charge(session, library, "1.00")
        await charge(session, library, "2.00")
        await session.commit()
        answer = await logged_in.send(self.pay(library.patron.card_number, "2.50", BK="T-42"))
        assert fixed(answer)[0] == "Y"
        assert variable(answer)["BK"] == ["T-42"]
        (left,) = await self.open_fees(session, library)
        assert left.outstanding == Decimal("0.50")
        assert left.payments[0].method == "card"
        assert left.payments[0].note == "SIP2 self-check payment T-42"

    async def test_pays_the_fee_named(
        self, logged_in: Kiosk, library: Library, session: AsyncSession
    ) -> None:
        await charge(session, library, "1.00")
        await charge(session, library, "2.00")
        await session.commit()
        first, second = await self.open_fees(session, library)
        answer = await logged_in.send(
            self.pay(library.patron.card_number, "2.00", CG=str(second.id))
        )
        assert fixed(answer)[0] == "Y"
        (left,) = await self.open_fees(session, library)
        assert left.id == first.id

    async def test_refuses_more_than_is_owed_and_bad_sums(
        self, logged_in: Kiosk, library: Library, session: AsyncSession
    ) -> None:
        await charge(session, library, "1.00")
        await session.commit()
        card = library.patron.card_number
        for amount in ("1.01", "abc", "-1.00", "0", "1.001", "NaN"):
            answer = await logged_in.send(self.pay(card, amount))
            assert fixed(answer)[0] == "N", amount
        (fee,) = await self.open_fees(session, library)
        assert fee.outstanding == Decimal("1.00")

    async def test_refuses_another_patrons_fee(
        self, logged_in: Kiosk, library: Library, session: AsyncSession
    ) -> None:
        await charge(session, library, "1.00")
        other = await make_patron(
            session, category=library.desk.category, branch=library.desk.branch
        )
        await session.commit()
        (fee,) = await self.open_fees(session, library)
        answer = await logged_in.send(self.pay(other.card_number, "1.00", CG=str(fee.id)))
        assert fixed(answer)[0] == "N"
        assert variable(answer)["AF"] == [f"Patron {other.card_number} has no fee {fee.id}."]
