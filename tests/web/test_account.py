"""The patron's account over HTTP: own data only, renew, cancel, notices, holds from the
catalog, and logging in with a library card number."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from factories import (
    PASSWORD,
    STAFF,
    make_item,
    make_loan,
    make_patron,
    make_patron_user,
    make_rule,
    make_user,
)
from shelfmark.audit.models import AuditEvent
from shelfmark.auth.models import User
from shelfmark.auth.roles import SYSTEM, Role
from shelfmark.circulation import fees, holds
from shelfmark.circulation.models import Hold
from shelfmark.circulation.schemas import HoldCreate
from shelfmark.db import utcnow
from shelfmark.patrons.models import Patron
from web.conftest import Scene, make_scene
from web.test_pages import HTML, csrf_of, log_in


@pytest.fixture
async def scene(session: AsyncSession) -> Scene:
    scene = await make_scene(session)
    await session.commit()
    return scene


@pytest.fixture
async def reader(session: AsyncSession, scene: Scene) -> User:
    user = await make_patron_user(session, scene.patron)
    await session.commit()
    return user


async def htmx_as(client: httpx.AsyncClient, user: User) -> dict[str, str]:
    await log_in(client, user.username)
    page = await client.get("/account", headers=HTML)
    return {"HX-Request": "true", "X-CSRF-Token": csrf_of(page)}


async def hold_for(session: AsyncSession, scene: Scene, patron: Patron) -> Hold:
    return await holds.place_hold(
        session, actor=SYSTEM, now=utcnow(),
        data=HoldCreate(bib_id=scene.bib.id, patron_card=patron.card_number,
                        pickup_branch=scene.branch.code),
    )  # fmt: skip


class TestAccountPage:
    async def test_anonymous_visitors_are_sent_to_log_in(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/account", headers=HTML)
        assert response.headers["location"] == "/login?next=/account"

    async def test_staff_without_a_patron_record_get_a_note(
        self, client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        user = await make_user(session, Role.LIBRARIAN)
        await session.commit()
        await log_in(client, user.username)
        page = await client.get("/account", headers=HTML)
        assert page.status_code == 200
        assert "has no patron record" in page.text

    async def test_loans_holds_fees_and_notices_of_the_patron_only(
        self, client: httpx.AsyncClient, session: AsyncSession, scene: Scene, reader: User
    ) -> None:
        loan = await make_loan(session, item=scene.item, patron=scene.patron, now=utcnow())
        first = await make_patron(session, category=scene.category, branch=scene.branch)
        other_bib_item = await make_item(session, branch=scene.branch)
        await holds.place_hold(
            session, actor=SYSTEM, now=utcnow(),
            data=HoldCreate(bib_id=other_bib_item.bib_id, patron_card=first.card_number,
                            pickup_branch=scene.branch.code),
        )  # fmt: skip
        await holds.place_hold(
            session, actor=SYSTEM, now=utcnow(),
            data=HoldCreate(bib_id=other_bib_item.bib_id, patron_card=scene.patron.card_number,
                            pickup_branch=scene.branch.code),
        )  # fmt: skip
        await fees.charge_manual(
            session, actor=STAFF, patron_card=scene.patron.card_number, amount=Decimal("1.25"),
            description="Torn cover", item=None, now=utcnow(),
        )  # fmt: skip
        stranger = await make_patron(session, category=scene.category, branch=scene.branch)
        theirs = await make_item(session, branch=scene.branch, barcode="THEIRS-1")
        await make_loan(session, item=theirs, patron=stranger, now=utcnow())
        await fees.charge_manual(
            session, actor=STAFF, patron_card=stranger.card_number, amount=Decimal("9.99"),
            description="Not yours", item=None, now=utcnow(),
        )  # fmt: skip
        await session.commit()
        await log_in(client, reader.username)
        page = await client.get("/account", headers=HTML)
        assert page.status_code == 200
        text = page.text
        assert "The dispossessed" in text
        assert scene.item.barcode in text
        assert loan.due_at.strftime("%Y-%m-%d") in text
        assert "number 2 in the queue" in text
        assert "Torn cover" in text
        assert "Balance: <strong>1.25</strong>" in text
        assert 'value="email" checked' in text
        assert "THEIRS-1" not in text
        assert "Not yours" not in text
        assert "9.99" not in text


class TestRenew:
    async def test_renew_from_the_account(
        self, client: httpx.AsyncClient, session: AsyncSession, scene: Scene, reader: User
    ) -> None:
        loan = await make_loan(
            session, item=scene.item, patron=scene.patron, now=utcnow() - timedelta(days=3)
        )
        await session.commit()
        due = loan.due_at
        htmx = await htmx_as(client, reader)
        response = await client.post(f"/account/loans/{loan.id}/renew", headers=htmx)
        assert response.status_code == 200
        assert response.text.lstrip().startswith(f'<tr id="loan-{loan.id}">')
        await session.refresh(loan)
        assert loan.renewals == 1
        assert loan.due_at > due
        assert f'Renewed: now due <time datetime="{loan.due_at.isoformat()}"' in response.text

    async def test_a_refusal_shows_the_reason_and_changes_nothing(
        self, client: httpx.AsyncClient, session: AsyncSession, scene: Scene, reader: User
    ) -> None:
        await make_rule(session, branch=scene.branch, category=scene.category, renewals_allowed=0)
        loan = await make_loan(session, item=scene.item, patron=scene.patron, now=utcnow())
        await session.commit()
        due = loan.due_at
        htmx = await htmx_as(client, reader)
        response = await client.post(f"/account/loans/{loan.id}/renew", headers=htmx)
        assert response.status_code == 409
        assert response.headers["hx-retarget"] == f"#loan-{loan.id}-note"
        assert "Not renewed:" in response.text
        assert "renewed 0 of 0 times" in response.text
        await session.refresh(loan)
        assert (loan.renewals, loan.due_at) == (0, due)

    async def test_another_patrons_loan_is_forbidden(
        self, client: httpx.AsyncClient, session: AsyncSession, scene: Scene, reader: User
    ) -> None:
        stranger = await make_patron(session, category=scene.category, branch=scene.branch)
        loan = await make_loan(session, item=scene.item, patron=stranger, now=utcnow())
        await session.commit()
        htmx = await htmx_as(client, reader)
        response = await client.post(f"/account/loans/{loan.id}/renew", headers=htmx)
        assert response.status_code == 403
        await session.refresh(loan)
        assert loan.renewals == 0

    async def test_the_token_is_required(
        self, client: httpx.AsyncClient, session: AsyncSession, scene: Scene, reader: User
    ) -> None:
        loan = await make_loan(session, item=scene.item, patron=scene.patron, now=utcnow())
        await session.commit()
        await log_in(client, reader.username)
        response = await client.post(f"/account/loans/{loan.id}/renew", headers=HTML)
        assert response.status_code == 403
        await session.refresh(loan)
        assert loan.renewals == 0

    async def test_without_javascript_back_to_the_account(
        self, client: httpx.AsyncClient, session: AsyncSession, scene: Scene, reader: User
    ) -> None:
        loan = await make_loan(session, item=scene.item, patron=scene.patron, now=utcnow())
        await session.commit()
        htmx = await htmx_as(client, reader)
        response = await client.post(
            f"/account/loans/{loan.id}/renew", data={"csrf_token": htmx["X-CSRF-Token"]},
            headers=HTML,
        )  # fmt: skip
        assert response.status_code == 303
        assert response.headers["location"] == "/account"


class TestCancelHold:
    async def test_cancel_from_the_account(
        self, client: httpx.AsyncClient, session: AsyncSession, scene: Scene, reader: User
    ) -> None:
        hold = await hold_for(session, scene, scene.patron)
        await session.commit()
        htmx = await htmx_as(client, reader)
        response = await client.post(f"/account/holds/{hold.id}/cancel", headers=htmx)
        assert response.status_code == 200
        assert "Hold cancelled." in response.text
        await session.refresh(hold)
        assert hold.status == "cancelled"
        audit = await session.scalar(
            select(AuditEvent).where(
                AuditEvent.action == "hold.cancel", AuditEvent.object_id == str(hold.id)
            )
        )
        assert audit is not None
        assert audit.actor_name == reader.username

    async def test_another_patrons_hold_is_forbidden(
        self, client: httpx.AsyncClient, session: AsyncSession, scene: Scene, reader: User
    ) -> None:
        stranger = await make_patron(session, category=scene.category, branch=scene.branch)
        hold = await hold_for(session, scene, stranger)
        await session.commit()
        htmx = await htmx_as(client, reader)
        response = await client.post(f"/account/holds/{hold.id}/cancel", headers=htmx)
        assert response.status_code == 403
        await session.refresh(hold)
        assert hold.status == "waiting"

    async def test_a_closed_hold_is_refused(
        self, client: httpx.AsyncClient, session: AsyncSession, scene: Scene, reader: User
    ) -> None:
        hold = await hold_for(session, scene, scene.patron)
        await holds.cancel_hold(session, actor=STAFF, hold_id=hold.id, now=utcnow())
        await session.commit()
        htmx = await htmx_as(client, reader)
        response = await client.post(f"/account/holds/{hold.id}/cancel", headers=htmx)
        assert response.status_code == 409
        assert "Not cancelled:" in response.text


class TestPreferences:
    async def test_the_notice_channel_is_saved(
        self, client: httpx.AsyncClient, session: AsyncSession, scene: Scene, reader: User
    ) -> None:
        htmx = await htmx_as(client, reader)
        response = await client.post(
            "/account/preferences", data={"notice_channel": "sms"}, headers=htmx
        )
        assert response.status_code == 200
        assert "Saved: notices by text message." in response.text
        await session.refresh(scene.patron)
        assert scene.patron.notice_channel == "sms"

    async def test_an_unknown_channel_is_refused(
        self, client: httpx.AsyncClient, session: AsyncSession, scene: Scene, reader: User
    ) -> None:
        htmx = await htmx_as(client, reader)
        response = await client.post(
            "/account/preferences", data={"notice_channel": "pigeon"}, headers=htmx
        )
        assert response.status_code == 422
        assert "Not saved:" in response.text
        await session.refresh(scene.patron)
        assert scene.patron.notice_channel == "email"


class TestPlaceHold:
    async def test_anonymous_visitors_are_asked_to_log_in(
        self, client: httpx.AsyncClient, scene: Scene
    ) -> None:
        page = await client.get(f"/bibs/{scene.bib.id}", headers=HTML)
        assert "Log in to place a hold" in page.text
        assert f"/login?next=/bibs/{scene.bib.id}" in page.text
        assert 'name="pickup_branch"' not in page.text

    async def test_a_patron_places_a_hold_from_the_record(
        self, client: httpx.AsyncClient, session: AsyncSession, scene: Scene, reader: User
    ) -> None:
        borrower = await make_patron(session, category=scene.category, branch=scene.branch)
        await make_loan(session, item=scene.item, patron=borrower, now=utcnow())
        await session.commit()
        await log_in(client, reader.username)
        page = await client.get(f"/bibs/{scene.bib.id}", headers=HTML)
        assert f'<option value="{scene.branch.code}" selected>' in page.text
        response = await client.post(
            f"/bibs/{scene.bib.id}/holds", data={"pickup_branch": scene.branch.code},
            headers={"HX-Request": "true", "X-CSRF-Token": csrf_of(page)},
        )  # fmt: skip
        assert response.status_code == 200
        assert "you are number 1 in the queue" in response.text
        hold = (await session.scalars(select(Hold))).one()
        assert (hold.patron_id, hold.pickup_branch_id) == (scene.patron.id, scene.branch.id)

    async def test_a_refused_hold_shows_why(
        self, client: httpx.AsyncClient, session: AsyncSession, scene: Scene, reader: User
    ) -> None:
        await make_loan(session, item=scene.item, patron=scene.patron, now=utcnow())
        await session.commit()
        await log_in(client, reader.username)
        page = await client.get(f"/bibs/{scene.bib.id}", headers=HTML)
        response = await client.post(
            f"/bibs/{scene.bib.id}/holds", data={"pickup_branch": scene.branch.code},
            headers={"HX-Request": "true", "X-CSRF-Token": csrf_of(page)},
        )  # fmt: skip
        assert response.status_code == 409
        assert response.headers["hx-retarget"] == "#place-hold-result"
        assert "Hold not placed:" in response.text
        assert (await session.scalars(select(Hold))).all() == []

    async def test_staff_without_a_patron_record_cannot(
        self, client: httpx.AsyncClient, session: AsyncSession, scene: Scene
    ) -> None:
        user = await make_user(session, Role.LIBRARIAN)
        await session.commit()
        await log_in(client, user.username)
        page = await client.get(f"/bibs/{scene.bib.id}", headers=HTML)
        assert 'name="pickup_branch"' not in page.text
        response = await client.post(
            f"/bibs/{scene.bib.id}/holds",
            data={"pickup_branch": scene.branch.code, "csrf_token": csrf_of(page)}, headers=HTML,
        )  # fmt: skip
        assert response.status_code == 403


class TestCardLogin:
    async def log_in_as(self, client: httpx.AsyncClient, login: str, password: str) -> int:
        page = await client.get("/login", headers=HTML)
        response = await client.post(
            "/login",
            data={"username": login, "password": password, "csrf_token": csrf_of(page)},
            headers=HTML,
        )
        return response.status_code

    async def test_a_card_number_logs_in_the_patrons_user(
        self, client: httpx.AsyncClient, scene: Scene, reader: User
    ) -> None:
        assert await self.log_in_as(client, scene.patron.card_number, PASSWORD) == 303
        page = await client.get("/account", headers=HTML)
        assert reader.username in page.text
        assert "The dispossessed" not in page.text  # nothing on loan, but it is their page
        assert scene.patron.card_number in page.text

    async def test_every_failure_is_the_same_message(
        self, client: httpx.AsyncClient, session: AsyncSession, scene: Scene, reader: User
    ) -> None:
        unlinked = await make_patron(session, category=scene.category, branch=scene.branch)
        await session.commit()
        answers = set()
        for login, password in [
            (scene.patron.card_number, "wrong"),  # a card with a user, wrong password
            (unlinked.card_number, PASSWORD),  # a card without a user
            ("no-such-card-or-user", PASSWORD),
            (reader.username, "wrong"),
        ]:
            page = await client.get("/login", headers=HTML)
            response = await client.post(
                "/login",
                data={"username": login, "password": password, "csrf_token": csrf_of(page)},
                headers=HTML,
            )
            assert response.status_code == 401
            answers.add(response.text.split('role="alert">')[1].split("<")[0])
        assert answers == {"The user name or password is wrong."}

    async def test_a_user_name_wins_over_a_card_number(
        self, client: httpx.AsyncClient, session: AsyncSession, scene: Scene, reader: User
    ) -> None:
        # A user whose name is the card number: the name is looked up first.
        await make_user(session, Role.LIBRARIAN, username=scene.patron.card_number,
                        password="another password")  # fmt: skip
        await session.commit()
        assert await self.log_in_as(client, scene.patron.card_number, PASSWORD) == 401
        assert await self.log_in_as(client, scene.patron.card_number, "another password") == 303
