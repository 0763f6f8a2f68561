"""The staff desk over HTTP: who may use it, checkouts, refusals and overrides, checkins."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from factories import STAFF, make_item, make_loan, make_patron, make_patron_user, make_user
from shelfmark.audit.models import AuditEvent
from shelfmark.auth.models import User
from shelfmark.auth.roles import SYSTEM, Role
from shelfmark.circulation import holds
from shelfmark.circulation.models import Fee, Hold, Loan
from shelfmark.circulation.schemas import HoldCreate
from shelfmark.db import utcnow
from shelfmark.patrons import service as patrons_service
from web.conftest import Scene, make_scene
from web.test_pages import HTML, csrf_of, log_in


@pytest.fixture
async def scene(session: AsyncSession) -> Scene:
    scene = await make_scene(session)
    await session.commit()
    return scene


@pytest.fixture
async def librarian(session: AsyncSession) -> User:
    user = await make_user(session, Role.LIBRARIAN)
    await session.commit()
    return user


async def at_desk(client: httpx.AsyncClient, user: User, scene: Scene) -> dict[str, str]:
    """Log in, choose the scene's branch for the desk; the headers of an htmx request."""
    await log_in(client, user.username)
    page = await client.get("/desk", headers=HTML)
    token = csrf_of(page)
    chosen = await client.post(
        "/desk/branch", data={"branch": scene.branch.code, "csrf_token": token}, headers=HTML
    )
    assert chosen.status_code == 303
    return {"HX-Request": "true", "X-CSRF-Token": token}


async def scan_out(
    client: httpx.AsyncClient, htmx: dict[str, str], card: str, barcode: str, **extra: str
) -> httpx.Response:
    data = {"card": card, "barcode": barcode} | extra
    return await client.post("/desk/checkout", data=data, headers=htmx)


async def count(session: AsyncSession, model: type, *where: object) -> int:
    query = select(func.count()).select_from(model)
    if where:
        query = query.where(*where)  # type: ignore[arg-type]
    return await session.scalar(query) or 0


class TestWhoMayUseIt:
    async def test_anonymous_visitors_are_sent_to_log_in(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/desk", headers=HTML)
        assert response.status_code == 303
        assert response.headers["location"] == "/login?next=/desk"

    async def test_a_patron_gets_a_403_page(
        self, client: httpx.AsyncClient, session: AsyncSession, scene: Scene
    ) -> None:
        user = await make_patron_user(session, scene.patron)
        await session.commit()
        await log_in(client, user.username)
        for path in ("/desk", "/desk/checkin"):
            response = await client.get(path, headers=HTML)
            assert response.status_code == 403
            assert "librarian role" in response.text
        token = csrf_of(await client.get("/", headers=HTML))
        response = await client.post(
            "/desk/checkout",
            data={"card": scene.patron.card_number, "barcode": scene.item.barcode,
                  "csrf_token": token},
            headers=HTML,
        )  # fmt: skip
        assert response.status_code == 403
        assert await count(session, Loan) == 0

    async def test_a_scan_after_logging_out_sends_the_page_to_log_in(
        self, client: httpx.AsyncClient
    ) -> None:
        token = csrf_of(await client.get("/login", headers=HTML))  # a session, no user
        response = await client.post(
            "/desk/checkin",
            data={"barcode": "X"},
            headers={"HX-Request": "true", "X-CSRF-Token": token,
                     "HX-Current-URL": "http://testserver/desk/checkin"},
        )  # fmt: skip
        assert response.headers["hx-redirect"] == "/login?next=/desk/checkin"


class TestCheckoutPage:
    async def test_the_patron_panel(
        self, client: httpx.AsyncClient, session: AsyncSession, scene: Scene, librarian: User
    ) -> None:
        await make_loan(session, item=scene.item, patron=scene.patron, now=utcnow())
        await session.commit()
        await at_desk(client, librarian, scene)
        page = await client.get(f"/desk?card={scene.patron.card_number}", headers=HTML)
        assert page.status_code == 200
        text = page.text
        for fact in ("Ada Reader", scene.category.name, "2099-12-31", scene.item.barcode,
                     "The dispossessed", 'id="barcode"', "Balance"):  # fmt: skip
            assert fact in text
        assert 'role="alertdialog"' not in text  # in good standing: nothing to acknowledge
        assert f'<option value="{scene.branch.code}" selected>' in text

    async def test_htmx_gets_the_panel_alone(
        self, client: httpx.AsyncClient, scene: Scene, librarian: User
    ) -> None:
        htmx = await at_desk(client, librarian, scene)
        part = await client.get(f"/desk?card={scene.patron.card_number}", headers=htmx)
        assert "Ada Reader" in part.text
        assert "<html" not in part.text
        assert "data-autofocus" in part.text

    async def test_an_unknown_card_is_an_alert(
        self, client: httpx.AsyncClient, scene: Scene, librarian: User
    ) -> None:
        await at_desk(client, librarian, scene)
        page = await client.get("/desk?card=NOPE-1", headers=HTML)
        assert "No patron has the card number NOPE-1" in page.text
        assert 'role="alertdialog"' in page.text

    async def test_a_blocked_patron_must_be_acknowledged(
        self, client: httpx.AsyncClient, session: AsyncSession, scene: Scene, librarian: User
    ) -> None:
        await patrons_service.add_block(
            session, actor=STAFF, patron=scene.patron, reason="Lost card", now=utcnow()
        )
        await session.commit()
        await at_desk(client, librarian, scene)
        page = await client.get(f"/desk?card={scene.patron.card_number}", headers=HTML)
        assert 'role="alertdialog"' in page.text
        assert "Patron blocked" in page.text
        assert "Lost card" in page.text
        assert "data-acknowledge" in page.text


class TestCheckout:
    async def test_a_scan_lends_the_copy(
        self, client: httpx.AsyncClient, session: AsyncSession, scene: Scene, librarian: User
    ) -> None:
        htmx = await at_desk(client, librarian, scene)
        response = await scan_out(client, htmx, scene.patron.card_number, scene.item.barcode)
        assert response.status_code == 200
        loans = (await session.scalars(select(Loan))).all()
        assert len(loans) == 1
        assert loans[0].patron_id == scene.patron.id
        assert loans[0].branch_id == scene.branch.id
        due = loans[0].due_at.strftime("%Y-%m-%d")
        assert f"Checked out {scene.item.barcode}" in response.text
        assert due in response.text
        assert 'class="new"' in response.text
        assert "data-autofocus" in response.text  # focus goes back to the barcode field

    async def test_without_javascript_the_form_posts_and_the_page_comes_back(
        self, client: httpx.AsyncClient, session: AsyncSession, scene: Scene, librarian: User
    ) -> None:
        await at_desk(client, librarian, scene)
        page = await client.get(f"/desk?card={scene.patron.card_number}", headers=HTML)
        response = await client.post(
            "/desk/checkout",
            data={"card": scene.patron.card_number, "barcode": scene.item.barcode,
                  "csrf_token": csrf_of(page)},
            headers=HTML,
        )  # fmt: skip
        assert response.status_code == 200
        assert "<html" in response.text
        assert await count(session, Loan) == 1

    async def test_the_token_is_required(
        self, client: httpx.AsyncClient, session: AsyncSession, scene: Scene, librarian: User
    ) -> None:
        await at_desk(client, librarian, scene)
        response = await client.post(
            "/desk/checkout",
            data={"card": scene.patron.card_number, "barcode": scene.item.barcode},
            headers={"HX-Request": "true"},
        )
        assert response.status_code == 403
        assert 'role="alertdialog"' in response.text
        assert response.headers["hx-retarget"] == "#alerts"
        assert await count(session, Loan) == 0

    async def test_a_refusal_shows_the_reason_offers_an_override_and_writes_nothing(
        self, client: httpx.AsyncClient, session: AsyncSession, scene: Scene, librarian: User
    ) -> None:
        await patrons_service.add_block(
            session, actor=STAFF, patron=scene.patron, reason="Conduct", now=utcnow()
        )
        await session.commit()
        audited = await count(session, AuditEvent)
        htmx = await at_desk(client, librarian, scene)
        response = await scan_out(client, htmx, scene.patron.card_number, scene.item.barcode)
        assert response.status_code == 409
        assert response.headers["hx-retarget"] == "#alerts"
        assert "Patron blocked" in response.text
        assert f"Patron {scene.patron.card_number} is blocked." in response.text
        assert 'name="override_reason"' in response.text
        assert "Traceback" not in response.text
        assert await count(session, Loan) == 0
        assert await count(session, AuditEvent) == audited
        await session.refresh(scene.item)
        assert scene.item.status == "available"

    async def test_an_override_lends_and_is_audited(
        self, client: httpx.AsyncClient, session: AsyncSession, scene: Scene, librarian: User
    ) -> None:
        await patrons_service.add_block(
            session, actor=STAFF, patron=scene.patron, reason="Conduct", now=utcnow()
        )
        await session.commit()
        htmx = await at_desk(client, librarian, scene)
        response = await scan_out(
            client, htmx, scene.patron.card_number, scene.item.barcode,
            override_reason="Manager agreed",
        )  # fmt: skip
        assert response.status_code == 200
        assert "override recorded" in response.text
        loan = (await session.scalars(select(Loan))).one()
        event = (
            await session.scalars(
                select(AuditEvent).where(
                    AuditEvent.action == "loan.checkout", AuditEvent.object_id == str(loan.id)
                )
            )
        ).one()
        assert event.actor_name == librarian.username
        assert event.changes["override"]["reason"] == "Manager agreed"
        assert event.changes["override"]["refusals"] == ["patron-blocked"]

    async def test_an_override_needs_a_reason(
        self, client: httpx.AsyncClient, session: AsyncSession, scene: Scene, librarian: User
    ) -> None:
        await patrons_service.add_block(
            session, actor=STAFF, patron=scene.patron, reason="Conduct", now=utcnow()
        )
        await session.commit()
        htmx = await at_desk(client, librarian, scene)
        response = await scan_out(
            client, htmx, scene.patron.card_number, scene.item.barcode, override_reason="  "
        )
        assert response.status_code == 422
        assert "Reason for the override" in response.text
        assert await count(session, Loan) == 0

    async def test_a_copy_on_loan_cannot_be_overridden(
        self, client: httpx.AsyncClient, session: AsyncSession, scene: Scene, librarian: User
    ) -> None:
        other = await make_patron(session, category=scene.category, branch=scene.branch)
        await make_loan(session, item=scene.item, patron=other, now=utcnow())
        await session.commit()
        htmx = await at_desk(client, librarian, scene)
        response = await scan_out(client, htmx, scene.patron.card_number, scene.item.barcode)
        assert response.status_code == 409
        assert "is on loan" in response.text
        assert "override_reason" not in response.text
        assert await count(session, Loan, Loan.patron_id == scene.patron.id) == 0

    @pytest.mark.parametrize(("barcode", "status"), [("no such copy", 422), ("NOPE-2", 404)])
    async def test_a_bad_barcode_is_an_alert(
        self, client: httpx.AsyncClient, session: AsyncSession, scene: Scene, librarian: User,
        barcode: str, status: int,
    ) -> None:  # fmt: skip
        htmx = await at_desk(client, librarian, scene)
        response = await scan_out(client, htmx, scene.patron.card_number, barcode)
        assert response.status_code == status
        assert 'role="alertdialog"' in response.text
        assert await count(session, Loan) == 0


class TestCheckin:
    async def test_the_page(self, client: httpx.AsyncClient, scene: Scene, librarian: User) -> None:
        await at_desk(client, librarian, scene)
        page = await client.get("/desk/checkin", headers=HTML)
        assert page.status_code == 200
        assert 'id="barcode"' in page.text
        assert f'data-events="/api/v1/events?branch={scene.branch.code}"' in page.text
        assert "desk.js" in page.text

    async def test_a_copy_with_nothing_waiting_is_reshelved(
        self, client: httpx.AsyncClient, session: AsyncSession, scene: Scene, librarian: User
    ) -> None:
        loan = await make_loan(session, item=scene.item, patron=scene.patron, now=utcnow())
        await session.commit()
        htmx = await at_desk(client, librarian, scene)
        response = await client.post(
            "/desk/checkin", data={"barcode": scene.item.barcode}, headers=htmx
        )
        assert response.status_code == 200
        assert "Reshelve it." in response.text
        assert "Returned by Ada Reader" in response.text
        assert "alertdialog" not in response.text
        await session.refresh(loan)
        assert loan.returned_at is not None

    async def test_a_copy_held_for_another_patron_goes_to_the_hold_shelf(
        self, client: httpx.AsyncClient, session: AsyncSession, scene: Scene, librarian: User
    ) -> None:
        await make_loan(session, item=scene.item, patron=scene.patron, now=utcnow())
        waiting = await make_patron(
            session, category=scene.category, branch=scene.branch, name="Bea Waiting"
        )
        await holds.place_hold(
            session, actor=SYSTEM, now=utcnow(),
            data=HoldCreate(bib_id=scene.bib.id, patron_card=waiting.card_number,
                            pickup_branch=scene.branch.code),
        )  # fmt: skip
        await session.commit()
        htmx = await at_desk(client, librarian, scene)
        response = await client.post(
            "/desk/checkin", data={"barcode": scene.item.barcode}, headers=htmx
        )
        assert response.status_code == 200
        assert 'hx-swap-oob="true"' in response.text
        assert 'role="alertdialog"' in response.text
        assert "Put on the hold shelf" in response.text
        assert f"Bea Waiting ({waiting.card_number}), pickup at {scene.branch.name}" in (
            response.text
        )
        hold = (await session.scalars(select(Hold))).one()
        await session.refresh(hold)
        assert hold.status == "ready"

    async def test_a_copy_from_another_branch_goes_home_in_transit(
        self, client: httpx.AsyncClient, session: AsyncSession, scene: Scene, librarian: User
    ) -> None:
        elsewhere = await make_item(session, bib=scene.bib)
        await session.commit()
        htmx = await at_desk(client, librarian, scene)
        response = await client.post(
            "/desk/checkin", data={"barcode": elsewhere.barcode}, headers=htmx
        )
        assert "Transit to" in response.text
        assert "It was not on loan." in response.text

    async def test_an_overdue_copy_is_charged(
        self, client: httpx.AsyncClient, session: AsyncSession, scene: Scene, librarian: User
    ) -> None:
        await make_loan(
            session, item=scene.item, patron=scene.patron, now=utcnow() - timedelta(days=40)
        )
        await session.commit()
        htmx = await at_desk(client, librarian, scene)
        response = await client.post(
            "/desk/checkin", data={"barcode": scene.item.barcode}, headers=htmx
        )
        assert "Fee charged: 3.00" in response.text
        assert await count(session, Fee) == 1

    async def test_an_unknown_copy_is_an_alert_and_writes_nothing(
        self, client: httpx.AsyncClient, session: AsyncSession, scene: Scene, librarian: User
    ) -> None:
        audited = await count(session, AuditEvent)
        htmx = await at_desk(client, librarian, scene)
        response = await client.post("/desk/checkin", data={"barcode": "NOPE-3"}, headers=htmx)
        assert response.status_code == 404
        assert "Item not found" in response.text
        assert await count(session, AuditEvent) == audited


class TestDeskBranch:
    async def test_an_unknown_branch_is_refused(
        self, client: httpx.AsyncClient, scene: Scene, librarian: User
    ) -> None:
        htmx = await at_desk(client, librarian, scene)
        response = await client.post(
            "/desk/branch",
            data={"branch": "NOWHERE", "csrf_token": htmx["X-CSRF-Token"]},
            headers=HTML,
        )
        assert response.status_code == 404

    async def test_checkouts_are_made_at_the_desk_branch(
        self, client: httpx.AsyncClient, session: AsyncSession, scene: Scene, librarian: User
    ) -> None:
        elsewhere = await make_item(session, bib=scene.bib)
        await session.commit()
        htmx = await at_desk(client, librarian, scene)
        await scan_out(client, htmx, scene.patron.card_number, elsewhere.barcode)
        loan = (await session.scalars(select(Loan))).one()
        assert loan.branch_id == scene.branch.id
