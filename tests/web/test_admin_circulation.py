"""/admin for the circulation set-up: categories, rules, closed days, patrons, fees, users.

Each change made through the admin's own forms is audited; a refused change (a form check
or a database constraint) is a readable form error and changes nothing.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import delete as delete_rows
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from factories import PASSWORD, make_branch, make_category, make_patron, make_rule, make_user
from shelfmark.audit.models import AuditEvent
from shelfmark.auth import service as auth_service
from shelfmark.auth.models import User
from shelfmark.auth.roles import SYSTEM, Role
from shelfmark.circulation import fees
from shelfmark.circulation.models import CirculationRule, ClosedDay
from shelfmark.db import IN_USE, constraint_of, utcnow
from shelfmark.patrons import service as patrons_service
from shelfmark.patrons.models import Patron, PatronCategory
from web.test_pages import HTML, log_in

RULE_TERMS = {
    "loan_period": "7", "period_unit": "days", "renewals_allowed": "1",
    "renew_from": "due_date", "max_loans": "5", "max_holds": "", "fine_per_day": "0.20",
    "fine_cap": "", "grace_days": "0", "holdable": "y", "hold_pickup_days": "7",
}  # fmt: skip


@pytest.fixture
async def admin(client: httpx.AsyncClient, session: AsyncSession) -> User:
    user = await make_user(session, Role.ADMIN)
    await session.commit()
    await log_in(client, user.username)
    return user


async def audited(session: AsyncSession, object_type: str, object_id: int) -> list[AuditEvent]:
    """The admin's audit events for one object (the services record theirs too)."""
    return list(
        (
            await session.scalars(
                select(AuditEvent)
                .where(
                    AuditEvent.object_type == object_type,
                    AuditEvent.object_id == str(object_id),
                    AuditEvent.action.startswith("admin."),
                )
                .order_by(AuditEvent.id)
            )
        ).all()
    )


async def count(session: AsyncSession, model: type[Any]) -> int:
    return await session.scalar(select(func.count()).select_from(model)) or 0


async def post(client: httpx.AsyncClient, url: str, data: dict[str, str]) -> httpx.Response:
    return await client.post(url, data=data, headers=HTML)


async def delete(client: httpx.AsyncClient, identity: str, pk: int) -> httpx.Response:
    """As sqladmin's own page does it: DELETE, answered with the list URL to go to."""
    return await client.delete(f"/admin/{identity}/delete", params={"pks": str(pk)}, headers=HTML)


def assert_refused(response: httpx.Response, message: str) -> None:
    assert response.status_code == 400, response.text[:300]
    assert message in response.text
    assert "IntegrityError" not in response.text
    assert "INSERT" not in response.text
    assert "UPDATE" not in response.text


class TestPatronCategories:
    async def test_created_edited_and_deleted_each_audited(
        self, client: httpx.AsyncClient, session: AsyncSession, admin: User
    ) -> None:
        created = await post(
            client, "/admin/patron-category/create",
            {"code": "TEEN", "name": "Teenagers", "fee_block_threshold": "2.50"},
        )  # fmt: skip
        assert created.status_code == 302, created.text[:500]
        category = await session.scalar(select(PatronCategory).where(PatronCategory.code == "TEEN"))
        assert category is not None
        assert category.fee_block_threshold == Decimal("2.50")

        edited = await post(
            client, f"/admin/patron-category/edit/{category.id}",
            {"code": "TEEN", "name": "Young adults", "fee_block_threshold": ""},
        )  # fmt: skip
        assert edited.status_code == 302, edited.text[:500]
        await session.refresh(category)
        assert (category.name, category.fee_block_threshold) == ("Young adults", None)

        deleted = await delete(client, "patron-category", category.id)
        assert deleted.status_code == 200
        assert "error" not in deleted.text
        assert (
            await session.scalar(select(PatronCategory).where(PatronCategory.code == "TEEN"))
            is None
        )

        events = await audited(session, "patron_category", category.id)
        assert [e.action for e in events] == ["admin.create", "admin.update", "admin.delete"]
        assert {e.actor_name for e in events} == {admin.username}
        assert events[1].changes["name"] == "Young adults"

    async def test_a_duplicate_code_is_a_form_error(
        self, client: httpx.AsyncClient, session: AsyncSession, admin: User
    ) -> None:
        taken = await make_category(session, code="ADULTDUP")
        await session.commit()
        before = await count(session, PatronCategory)
        response = await post(
            client, "/admin/patron-category/create",
            {"code": "ADULTDUP", "name": "Again", "fee_block_threshold": ""},
        )  # fmt: skip
        assert_refused(response, "A patron category with this code exists.")
        assert 'value="Again"' in response.text  # what was typed is kept
        assert await count(session, PatronCategory) == before
        assert await audited(session, "patron_category", taken.id + 1) == []

    async def test_a_negative_threshold_is_refused_beside_the_field(
        self, client: httpx.AsyncClient, session: AsyncSession, admin: User
    ) -> None:
        before = await count(session, PatronCategory)
        response = await post(
            client, "/admin/patron-category/create",
            {"code": "NEG", "name": "Negative", "fee_block_threshold": "-1"},
        )  # fmt: skip
        assert response.status_code == 400
        assert "Must be 0 or more." in response.text
        assert "invalid-feedback" in response.text
        assert await count(session, PatronCategory) == before

    async def test_a_category_with_patrons_stays(
        self, client: httpx.AsyncClient, session: AsyncSession, admin: User
    ) -> None:
        patron = await make_patron(session)
        await session.commit()
        response = await delete(client, "patron-category", patron.category_id)
        assert "move+them+to+another+category" in response.text  # the list shows it
        listing = await client.get(response.text.replace("http://testserver", ""), headers=HTML)
        assert "Patrons belong to this category" in listing.text
        assert await session.get(PatronCategory, patron.category_id) is not None
        assert await audited(session, "patron_category", patron.category_id) == []


class TestCirculationRules:
    async def test_created_edited_and_deleted_each_audited(
        self, client: httpx.AsyncClient, session: AsyncSession, admin: User
    ) -> None:
        branch = await make_branch(session)
        category = await make_category(session)
        await session.commit()
        scope = {"branch": str(branch.id), "patron_category": str(category.id), "item_type": "dvd"}
        created = await post(client, "/admin/circulation-rule/create", scope | RULE_TERMS)
        assert created.status_code == 302, created.text[:500]
        rule = await session.scalar(
            select(CirculationRule).where(CirculationRule.branch_id == branch.id)
        )
        assert rule is not None
        assert (rule.patron_category_id, rule.item_type, rule.loan_period) == (
            category.id,
            "dvd",
            7,
        )
        assert (rule.max_loans, rule.max_holds, rule.fine_cap) == (5, None, None)
        assert rule.fine_per_day == Decimal("0.20")

        # The scope is fixed once made: the edit form has no scope fields, and sent ones
        # change nothing.
        form = await client.get(f"/admin/circulation-rule/edit/{rule.id}", headers=HTML)
        assert 'name="loan_period"' in form.text
        assert 'name="branch"' not in form.text
        terms = RULE_TERMS | {"loan_period": "21", "max_holds": "0", "fine_cap": "3.00"}
        edited = await post(
            client, f"/admin/circulation-rule/edit/{rule.id}", terms | {"item_type": "book"}
        )
        assert edited.status_code == 302, edited.text[:500]
        await session.refresh(rule)
        assert (rule.loan_period, rule.max_holds, rule.fine_cap) == (21, 0, Decimal("3.00"))
        assert (rule.branch_id, rule.item_type) == (branch.id, "dvd")

        deleted = await delete(client, "circulation-rule", rule.id)
        assert "error" not in deleted.text
        assert await count_rules_of(session, branch.id) == 0
        events = await audited(session, "circulation_rule", rule.id)
        assert [e.action for e in events] == ["admin.create", "admin.update", "admin.delete"]
        assert events[1].changes["loan_period"] == "21"

    async def test_an_invalid_rule_shows_errors_and_changes_nothing(
        self, client: httpx.AsyncClient, session: AsyncSession, admin: User
    ) -> None:
        branch = await make_branch(session)
        await session.commit()
        before = (await count(session, CirculationRule), await count(session, AuditEvent))
        bad = RULE_TERMS | {
            "branch": str(branch.id), "patron_category": "__None", "item_type": "dvd",
            "loan_period": "-3", "fine_per_day": "-0.10", "hold_pickup_days": "0",
        }  # fmt: skip
        response = await post(client, "/admin/circulation-rule/create", bad)
        assert response.status_code == 400
        for message in ("Between 1 and 10,000.", "Must be 0 or more.", "Between 1 and 365 days."):
            assert message in response.text
        assert (await count(session, CirculationRule), await count(session, AuditEvent)) == before

    async def test_an_invalid_edit_changes_nothing(
        self, client: httpx.AsyncClient, session: AsyncSession, admin: User
    ) -> None:
        rule = await make_rule(session, branch=await make_branch(session), loan_period=14)
        await session.commit()
        response = await post(
            client, f"/admin/circulation-rule/edit/{rule.id}",
            RULE_TERMS | {"loan_period": "0", "item_type": "no spaces allowed"},
        )  # fmt: skip
        assert response.status_code == 400
        assert "Between 1 and 10,000." in response.text
        await session.refresh(rule)
        assert rule.loan_period == 14
        assert await audited(session, "circulation_rule", rule.id) == []

    async def test_a_second_rule_for_one_scope_is_a_form_error(
        self, client: httpx.AsyncClient, session: AsyncSession, admin: User
    ) -> None:
        branch = await make_branch(session)
        await make_rule(session, branch=branch, item_type="dvd")
        await session.commit()
        before = await count(session, CirculationRule)
        scope = {"branch": str(branch.id), "patron_category": "__None", "item_type": "dvd"}
        response = await post(client, "/admin/circulation-rule/create", scope | RULE_TERMS)
        assert_refused(response, "A rule for this branch, patron category and item type exists")
        assert await count(session, CirculationRule) == before

    async def test_the_default_rule_cannot_be_deleted(
        self, client: httpx.AsyncClient, session: AsyncSession, admin: User
    ) -> None:
        default = await session.scalar(
            select(CirculationRule).where(
                CirculationRule.branch_id.is_(None),
                CirculationRule.patron_category_id.is_(None),
                CirculationRule.item_type.is_(None),
            )
        )
        assert default is not None
        response = await delete(client, "circulation-rule", default.id)
        listing = await client.get(response.text.replace("http://testserver", ""), headers=HTML)
        assert "The default rule always exists" in listing.text
        assert await session.get(CirculationRule, default.id) is not None

    async def test_the_matrix_is_filtered_and_searched(
        self, client: httpx.AsyncClient, session: AsyncSession, admin: User
    ) -> None:
        north = await make_branch(session, code="NORTHMTX", name="Northside")
        kids = await make_category(session, code="KIDSMTX")
        by_branch = await make_rule(session, branch=north, loan_period=10)
        by_category = await make_rule(session, category=kids, loan_period=11)
        by_type = await make_rule(session, item_type="zinemtx", loan_period=12)
        await session.commit()

        def row(rule: CirculationRule) -> str:
            return f"/admin/circulation-rule/details/{rule.id}"

        async def listing(**params: str) -> str:
            response = await client.get("/admin/circulation-rule/list", params=params, headers=HTML)
            assert response.status_code == 200
            return response.text

        page = await listing(branch_id=str(north.id))
        assert row(by_branch) in page
        assert row(by_category) not in page
        page = await listing(branch_id="__open", item_type="zinemtx")
        assert row(by_type) in page
        assert row(by_branch) not in page
        assert row(by_type) not in await listing(branch_id="not-a-key")
        page = await listing(search="northside")
        assert row(by_branch) in page
        assert row(by_type) not in page
        page = await listing(search="KIDSMTX")  # rules open on the branch match too
        assert row(by_category) in page
        assert "KIDSMTX" in page  # the category's code, not <PatronCategory object …>
        assert "object at 0x" not in page

        form = await client.get("/admin/circulation-rule/create", headers=HTML)
        assert "NORTHMTX — Northside" in form.text
        details = await client.get(row(by_type), headers=HTML)  # open on branch and category
        assert details.status_code == 200
        assert "zinemtx" in details.text


async def count_rules_of(session: AsyncSession, branch_id: int) -> int:
    query = select(func.count()).where(CirculationRule.branch_id == branch_id)
    return await session.scalar(query) or 0


class TestClosedDays:
    async def test_created_edited_and_deleted_each_audited(
        self, client: httpx.AsyncClient, session: AsyncSession, admin: User
    ) -> None:
        branch = await make_branch(session)
        await session.commit()
        created = await post(
            client, "/admin/closed-day/create",
            {"branch": str(branch.id), "first_day": "2031-12-25", "last_day": "2031-12-26",
             "yearly": "y", "description": "Christmas"},
        )  # fmt: skip
        assert created.status_code == 302, created.text[:500]
        closed = await session.scalar(select(ClosedDay).where(ClosedDay.branch_id == branch.id))
        assert closed is not None
        assert (closed.first_day, closed.last_day, closed.yearly) == (
            date(2031, 12, 25), date(2031, 12, 26), True,
        )  # fmt: skip

        edited = await post(
            client, f"/admin/closed-day/edit/{closed.id}",
            {"branch": "__None", "first_day": "2031-12-24", "last_day": "2031-12-26",
             "description": "Christmas, every branch"},
        )  # fmt: skip
        assert edited.status_code == 302, edited.text[:500]
        await session.refresh(closed)
        assert (closed.branch_id, closed.first_day, closed.yearly) == (
            None,
            date(2031, 12, 24),
            False,
        )

        deleted = await delete(client, "closed-day", closed.id)
        assert "error" not in deleted.text
        assert await session.scalar(select(ClosedDay).where(ClosedDay.id == closed.id)) is None
        events = await audited(session, "closed_day", closed.id)
        assert [e.action for e in events] == ["admin.create", "admin.update", "admin.delete"]

    async def test_a_range_out_of_order_changes_nothing(
        self, client: httpx.AsyncClient, session: AsyncSession, admin: User
    ) -> None:
        before = await count(session, ClosedDay)
        response = await post(
            client, "/admin/closed-day/create",
            {"branch": "__None", "first_day": "2031-05-02", "last_day": "2031-05-01",
             "description": ""},
        )  # fmt: skip
        assert response.status_code == 400
        assert "The last day cannot be before the first day." in response.text
        assert await count(session, ClosedDay) == before


class TestPatrons:
    async def test_a_pin_is_set_hashed_never_shown_and_the_card_is_searchable(
        self, client: httpx.AsyncClient, session: AsyncSession, admin: User
    ) -> None:
        patron = await make_patron(session, card_number="21009998887", name="Pin Holder")
        await patrons_service.add_block(
            session, actor=SYSTEM, patron=patron, reason="Card reported lost", now=utcnow()
        )
        await session.commit()
        found = await client.get("/admin/patron/list", params={"search": "2100999"}, headers=HTML)
        assert f"/admin/patron/details/{patron.id}" in found.text

        form = {
            "card_number": patron.card_number, "name": patron.name, "email": "", "phone": "",
            "category": str(patron.category_id), "home_branch": str(patron.home_branch_id),
            "expires_on": "2099-12-31", "notice_channel": "print", "language": "",
        }  # fmt: skip
        edited = await post(client, f"/admin/patron/edit/{patron.id}", form | {"pin": "4321"})
        assert edited.status_code == 302, edited.text[:500]
        await session.refresh(patron)
        assert patron.pin_hash is not None
        assert patron.pin_hash.startswith("$argon2")
        assert auth_service.verify_password(patron.pin_hash, "4321")
        assert patron.notice_channel == "print"
        pin_hash = patron.pin_hash

        unchanged = await post(client, f"/admin/patron/edit/{patron.id}", form | {"pin": ""})
        assert unchanged.status_code == 302
        await session.refresh(patron)
        assert patron.pin_hash == pin_hash

        for page in (f"/admin/patron/details/{patron.id}", f"/admin/patron/edit/{patron.id}"):
            text = (await client.get(page, headers=HTML)).text
            assert "Pin Holder" in text
            assert "$argon2" not in text
            assert "pin_hash" not in text
        details = await client.get(f"/admin/patron/details/{patron.id}", headers=HTML)
        assert "Card reported lost" in details.text
        changes = [e.changes for e in await audited(session, "patron", patron.id)]
        assert changes[0]["pin"] == "(changed)"
        assert "pin" not in changes[1]
        assert "4321" not in str(changes)

    async def test_a_bad_pin_and_a_taken_card_are_form_errors(
        self, client: httpx.AsyncClient, session: AsyncSession, admin: User
    ) -> None:
        other = await make_patron(session)
        patron = await make_patron(session)
        await session.commit()
        form = {
            "card_number": other.card_number, "name": patron.name,
            "category": str(patron.category_id), "home_branch": str(patron.home_branch_id),
            "expires_on": "2099-12-31", "notice_channel": "email",
        }  # fmt: skip
        taken = await post(client, f"/admin/patron/edit/{patron.id}", form)
        assert_refused(taken, "This card number belongs to another patron.")
        bad_pin = await post(
            client, f"/admin/patron/edit/{patron.id}",
            form | {"card_number": patron.card_number, "pin": "12ab"},
        )  # fmt: skip
        assert bad_pin.status_code == 400
        assert "4 to 12 digits." in bad_pin.text
        bad_contact = await post(
            client, f"/admin/patron/edit/{patron.id}",
            form | {"card_number": "has space", "email": "nobody", "language": "English"},
        )  # fmt: skip
        assert bad_contact.status_code == 400
        for message in ("Printable characters", "Not an e-mail address.", "Three lowercase"):
            assert message in bad_contact.text
        await session.refresh(patron)
        assert patron.pin_hash is None
        assert await session.scalar(select(Patron.card_number).where(Patron.id == patron.id)) != (
            other.card_number
        )


class TestFees:
    async def test_fees_can_be_read_not_written(
        self, client: httpx.AsyncClient, session: AsyncSession, admin: User
    ) -> None:
        patron = await make_patron(session, name="Owing Reader")
        fee = await fees.charge_manual(
            session, actor=SYSTEM, patron_card=patron.card_number, amount=Decimal("4.00"),
            description="Torn cover", item=None, now=utcnow(),
        )  # fmt: skip
        await fees.pay(
            session, actor=SYSTEM, fee_id=fee.id, amount=Decimal("1.50"), method="cash",
            note=None, now=utcnow(),
        )  # fmt: skip
        await session.commit()

        listing = await client.get("/admin/fee/list", params={"search": patron.card_number},
                                   headers=HTML)  # fmt: skip
        assert f"/admin/fee/details/{fee.id}" in listing.text
        details = await client.get(f"/admin/fee/details/{fee.id}", headers=HTML)
        assert details.status_code == 200
        assert "Torn cover" in details.text
        assert "1.50 by cash" in details.text
        assert f"{patron.card_number} — Owing Reader" in details.text

        assert (await client.get("/admin/fee/create", headers=HTML)).status_code == 403
        edit = await post(client, f"/admin/fee/edit/{fee.id}", {"amount": "0.01"})
        assert edit.status_code == 403
        assert (await delete(client, "fee", fee.id)).status_code == 403
        await session.refresh(fee)
        assert (fee.amount, fee.outstanding) == (Decimal("4.00"), Decimal("2.50"))
        assert await audited(session, "fee", fee.id) == []


class TestUsers:
    async def test_setting_a_password_hashes_it_and_never_shows_it(
        self, client: httpx.AsyncClient, session: AsyncSession, admin: User
    ) -> None:
        user = await make_user(session, Role.LIBRARIAN)
        await session.commit()
        form = {"username": user.username, "role": "librarian", "full_name": "Desk Person",
                "email": "", "is_active": "y"}  # fmt: skip
        edited = await post(
            client, f"/admin/user/edit/{user.id}", form | {"password": "a new secret!"}
        )
        assert edited.status_code == 302, edited.text[:500]
        await session.refresh(user)
        assert user.password_hash.startswith("$argon2")
        assert auth_service.verify_password(user.password_hash, "a new secret!")
        assert not auth_service.verify_password(user.password_hash, PASSWORD)

        short = await post(client, f"/admin/user/edit/{user.id}", form | {"password": "short"})
        assert short.status_code == 400
        assert "8 to 1024 characters." in short.text
        bad_role = await post(client, f"/admin/user/edit/{user.id}", form | {"role": "root"})
        assert bad_role.status_code == 400
        await session.refresh(user)
        assert user.role == "librarian"
        assert auth_service.verify_password(user.password_hash, "a new secret!")

        for page in (f"/admin/user/edit/{user.id}", f"/admin/user/details/{user.id}"):
            assert "$argon2" not in (await client.get(page, headers=HTML)).text
        edit_page = await client.get(f"/admin/user/edit/{user.id}", headers=HTML)
        assert 'type="password"' in edit_page.text
        (event,) = await audited(session, "user", user.id)
        assert event.changes["password"] == "(changed)"
        assert "a new secret!" not in str(event.changes)


class TestAccess:
    async def test_a_librarian_gets_403_and_changes_nothing(
        self, client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        librarian = await make_user(session, Role.LIBRARIAN)
        await session.commit()
        await log_in(client, librarian.username)
        before = await count(session, PatronCategory)
        for identity in ("patron-category", "circulation-rule", "closed-day", "patron", "fee"):
            page = await client.get(f"/admin/{identity}/list", headers=HTML)
            assert page.status_code == 403, identity
        created = await post(
            client, "/admin/patron-category/create", {"code": "SNEAK", "name": "Sneaky"}
        )
        assert created.status_code == 403
        assert await count(session, PatronCategory) == before


class TestConstraintNames:
    """The database's refusals are recognised by name on PostgreSQL and on SQLite."""

    @pytest.mark.parametrize(
        ("values", "name"),
        [
            ({"loan_period": 0}, "ck_circulation_rules_loan_period_positive"),
            ({"loan_period": 7, "fine_per_day": Decimal("-1")},
             "ck_circulation_rules_fines_not_negative"),
            ({"loan_period": 7, "item_type": "dup"}, "uq_circulation_rules_scope"),
        ],
    )  # fmt: skip
    async def test_rules(self, session: AsyncSession, values: dict[str, Any], name: str) -> None:
        await make_rule(session, item_type="dup")
        terms: dict[str, Any] = {"renewals_allowed": 0, "fine_per_day": Decimal(0)}
        session.add(CirculationRule(**(terms | values)))
        with pytest.raises(IntegrityError) as caught:
            async with session.begin_nested():
                await session.flush()
        assert constraint_of(caught.value) == name

    async def test_a_unique_column(self, session: AsyncSession) -> None:
        await make_category(session, code="UNIQ")
        session.add(PatronCategory(code="UNIQ", name="again"))
        with pytest.raises(IntegrityError) as caught:
            async with session.begin_nested():
                await session.flush()
        assert constraint_of(caught.value) == "uq_patron_categories_code"

    async def test_a_reference(self, session: AsyncSession) -> None:
        patron = await make_patron(session)
        with pytest.raises(IntegrityError) as caught:
            async with session.begin_nested():
                await session.execute(
                    delete_rows(PatronCategory).where(PatronCategory.id == patron.category_id)
                )
        assert constraint_of(caught.value) == IN_USE
