"""What a patron and a librarian do, in a real Chromium against a live server."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path

from axe_playwright_python.async_playwright import Axe
from playwright.async_api import Page, expect
from sqlalchemy import select

from factories import (
    PASSWORD,
    make_bib,
    make_item,
    make_loan,
    make_patron,
    make_patron_user,
    make_user,
    unique,
)
from shelfmark.auth.roles import SYSTEM, Role
from shelfmark.circulation import fees, holds, loans
from shelfmark.circulation.models import Loan
from shelfmark.circulation.schemas import CheckinCreate, HoldCreate
from shelfmark.db import session_scope, utcnow
from shelfmark.patrons import service as patrons_service
from web.conftest import LiveServer, make_scene

axe = Axe()


async def assert_accessible(page: Page) -> None:
    results = await axe.run(page)
    serious = [v for v in results.response["violations"] if v["impact"] in {"serious", "critical"}]
    assert serious == [], [(v["id"], v["help"], [n["target"] for n in v["nodes"]]) for v in serious]


async def test_a_visitor_reads_a_record_and_logs_in(
    page: Page, live_server: LiveServer, screenshots: Path
) -> None:
    username = unique("reader")
    async with session_scope(live_server.sessionmaker) as session:
        bib = await make_bib(
            session, title="The left hand of darkness", subtitle="a novel",
            contributors=[{"name": "Le Guin, Ursula K.", "role": "author"}],
            subjects=["Science fiction"], isbns=["0441478123"],
        )  # fmt: skip
        await make_item(session, bib=bib, shelfmark="FIC LEG")
        await make_user(session, Role.PATRON, username=username)

    await page.goto(live_server.url + "/")
    await expect(page.get_by_role("searchbox")).to_be_visible()
    await assert_accessible(page)
    await page.screenshot(path=screenshots / "opac-home.png", full_page=True)

    await page.goto(f"{live_server.url}/bibs/{bib.id}")
    await expect(page.get_by_role("heading", level=1)).to_contain_text("The left hand of darkness")
    await expect(page.get_by_role("cell", name="FIC LEG")).to_be_visible()
    await assert_accessible(page)
    await page.screenshot(path=screenshots / "opac-record.png", full_page=True)

    await page.get_by_role("link", name="Log in", exact=True).click()
    await page.get_by_label("User name").fill(username)
    await page.get_by_label("Password").fill(PASSWORD)
    await assert_accessible(page)
    await page.get_by_role("button", name="Log in").click()
    await expect(page.get_by_role("link", name=username)).to_be_visible()


async def test_pages_work_at_360_pixels(
    browser_page_360: Page, live_server: LiveServer, screenshots: Path
) -> None:
    page = browser_page_360
    await page.goto(live_server.url + "/")
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 360
    await page.screenshot(path=screenshots / "opac-home-360.png", full_page=True)


# --- the patron's account and the staff desk ---------------------------------------------


async def log_in_as(page: Page, login: str, password: str = PASSWORD) -> None:
    """On the login page: fill it in and send it (a scanner-free keyboard: Enter)."""
    await page.get_by_label("User name").fill(login)
    await page.get_by_label("Password").fill(password)
    await page.get_by_label("Password").press("Enter")


async def no_horizontal_scroll(page: Page) -> None:
    assert await page.evaluate("document.documentElement.scrollWidth") <= 360


async def test_a_patron_places_a_hold_and_sees_it_in_the_account(
    page: Page, live_server: LiveServer, screenshots: Path
) -> None:
    async with session_scope(live_server.sessionmaker) as session:
        scene = await make_scene(session, title="A wizard of Earthsea")
        borrower = await make_patron(session, category=scene.category, branch=scene.branch)
        await make_loan(session, item=scene.item, patron=borrower, now=utcnow())
        await make_patron_user(session, scene.patron)

    await page.goto(f"{live_server.url}/bibs/{scene.bib.id}")
    await page.get_by_role("link", name="Log in to place a hold").click()
    await log_in_as(page, scene.patron.card_number)  # the library card number as user name
    await expect(page).to_have_url(f"{live_server.url}/bibs/{scene.bib.id}")
    await expect(page.get_by_label("Pick up at")).to_have_value(scene.branch.code)
    await assert_accessible(page)
    await page.get_by_role("button", name="Place hold").click()
    await expect(page.get_by_role("status")).to_contain_text("you are number 1 in the queue")
    await page.screenshot(path=screenshots / "opac-record-hold.png", full_page=True)

    await page.get_by_role("link", name="See your holds").click()
    holds = page.get_by_role("table", name="Your holds")
    await expect(holds.get_by_role("row", name="A wizard of Earthsea")).to_contain_text(
        "number 1 in the queue"
    )
    await assert_accessible(page)
    await page.screenshot(path=screenshots / "account.png", full_page=True)


async def test_a_patron_renews_a_loan(page: Page, live_server: LiveServer) -> None:
    async with session_scope(live_server.sessionmaker) as session:
        scene = await make_scene(session, title="The lathe of heaven")
        loan = await make_loan(
            session, item=scene.item, patron=scene.patron, now=utcnow() - timedelta(days=5)
        )
        user = await make_patron_user(session, scene.patron)
        bib = await make_bib(session, title="The word for world is forest")
        read = await make_item(session, branch=scene.branch, bib=bib)
        await make_loan(session, item=read, patron=scene.patron, now=utcnow() - timedelta(days=9))
        await loans.check_in(session, actor=SYSTEM, now=utcnow() - timedelta(days=2),
                             data=CheckinCreate(item_barcode=read.barcode))  # fmt: skip

    await page.goto(f"{live_server.url}/account")
    await log_in_as(page, user.username)
    row = page.get_by_role("row", name="The lathe of heaven")
    await expect(row).to_contain_text(loan.due_at.strftime("%Y-%m-%d"))
    await row.get_by_role("button", name="Renew The lathe of heaven").click()
    await expect(row.get_by_role("status")).to_contain_text("Renewed: now due")
    await expect(row).to_contain_text("renewed 1 time")
    await assert_accessible(page)

    # The reading history: kept once the patron says so, then listed on its own page.
    await page.get_by_label("Yes, keep my reading history").check()
    await page.get_by_role("button", name="Save reading history choice").click()
    await expect(page.locator("#reading-history-note")).to_contain_text("history is kept")
    await page.get_by_role("link", name="See your reading history").click()
    history = page.get_by_role("table", name="What you have borrowed and returned")
    await expect(history.get_by_role("row", name="The word for world is forest")).to_be_visible()
    await assert_accessible(page)


async def test_a_librarian_checks_a_copy_out_and_in_at_the_desk(
    page: Page, live_server: LiveServer, screenshots: Path
) -> None:
    async with session_scope(live_server.sessionmaker) as session:
        scene = await make_scene(session, title="Always coming home")
        waiting = await make_patron(
            session, category=scene.category, branch=scene.branch, name="Wendy Waiting"
        )
        await holds.place_hold(
            session, actor=SYSTEM, now=utcnow(),
            data=HoldCreate(bib_id=scene.bib.id, patron_card=waiting.card_number,
                            pickup_branch=scene.branch.code),
        )  # fmt: skip
        librarian = await make_user(session, Role.LIBRARIAN)

    console_errors: list[str] = []  # a script refused by the CSP would show here
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    await page.goto(f"{live_server.url}/desk")
    await expect(page).to_have_url(f"{live_server.url}/login?next=/desk")
    await log_in_as(page, librarian.username)
    await page.get_by_label("Desk branch").select_option(scene.branch.code)
    await page.get_by_role("button", name="Use this branch").click()
    await expect(page.get_by_label("Patron card")).to_be_focused()

    # Another desk of the branch, open on the same user's check-in page, sees the checkout.
    other_desk = await page.context.new_page()
    await other_desk.goto(f"{live_server.url}/desk/checkin")

    await page.get_by_label("Patron card").type(scene.patron.card_number)
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("heading", name="Ada Reader")).to_be_visible()
    barcode_field = page.get_by_label("Item barcode")
    await expect(barcode_field).to_be_focused()
    await barcode_field.type(scene.item.barcode)
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("status")).to_contain_text(f"Checked out {scene.item.barcode}")
    async with session_scope(live_server.sessionmaker) as session:
        loan = await session.scalar(select(Loan).where(Loan.item_id == scene.item.id))
        assert loan is not None
    loans = page.get_by_role("table", name="Loans of Ada Reader")
    await expect(loans.get_by_role("row", name=scene.item.barcode)).to_contain_text(
        loan.due_at.strftime("%Y-%m-%d")
    )
    await expect(barcode_field).to_be_focused()  # ready for the next scan
    await expect(other_desk.locator("#activity")).to_contain_text(
        f"Checked out {scene.item.barcode}"
    )
    await assert_accessible(page)
    await page.screenshot(path=screenshots / "desk.png", full_page=True)
    await other_desk.close()

    await page.get_by_role("link", name="Check in").click()
    barcode_field = page.get_by_label("Item barcode")
    await expect(barcode_field).to_be_focused()
    await barcode_field.type(scene.item.barcode)
    await page.keyboard.press("Enter")
    alert = page.get_by_role("alertdialog")
    await expect(alert).to_contain_text("Put on the hold shelf")
    await expect(alert).to_contain_text(f"Wendy Waiting ({waiting.card_number})")
    await expect(alert).to_contain_text(f"pickup at {scene.branch.name}")
    await expect(barcode_field).to_be_disabled()  # no next scan before it is acknowledged
    await expect(page.locator("#checkin-lines")).to_contain_text("Returned by Ada Reader")
    await assert_accessible(page)
    await page.screenshot(path=screenshots / "desk-checkin.png", full_page=True)
    await page.keyboard.press("Enter")  # the alert's button has the focus
    await expect(alert).to_have_count(0)
    await expect(barcode_field).to_be_enabled()
    await expect(barcode_field).to_be_focused()
    assert console_errors == []


async def test_a_refusal_is_acknowledged_then_overridden_at_the_desk(
    page: Page, live_server: LiveServer
) -> None:
    async with session_scope(live_server.sessionmaker) as session:
        scene = await make_scene(session, title="The word for world is forest")
        await patrons_service.add_block(
            session, actor=SYSTEM, patron=scene.patron, reason="Card reported stolen",
            now=utcnow(),
        )  # fmt: skip
        librarian = await make_user(session, Role.LIBRARIAN)

    await page.goto(f"{live_server.url}/login?next=/desk%3Fcard%3D{scene.patron.card_number}")
    await log_in_as(page, librarian.username)
    alert = page.get_by_role("alertdialog")
    await expect(alert).to_contain_text("Card reported stolen")
    barcode_field = page.get_by_label("Item barcode")
    await expect(barcode_field).to_be_disabled()
    await alert.get_by_role("button", name="OK, noted").press("Enter")
    await expect(barcode_field).to_be_focused()

    await barcode_field.type(scene.item.barcode)
    await page.keyboard.press("Enter")
    await expect(alert).to_contain_text("Patron blocked")
    reason = alert.get_by_label("Reason for the override")
    await expect(reason).to_be_focused()
    await assert_accessible(page)
    await reason.type("Police report seen; card replaced")
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("status")).to_contain_text("override recorded")
    await expect(alert).to_have_count(0)
    await expect(page.get_by_label("Item barcode")).to_be_focused()


async def test_anonymous_visitors_are_sent_to_log_in(page: Page, live_server: LiveServer) -> None:
    for path in ("/desk", "/admin", "/account"):
        await page.goto(live_server.url + path)
        await expect(page).to_have_url(f"{live_server.url}/login?next={path}")
        await expect(page.get_by_label("User name")).to_be_visible()


async def test_a_patron_cannot_open_the_admin_or_the_desk(
    page: Page, live_server: LiveServer
) -> None:
    async with session_scope(live_server.sessionmaker) as session:
        user = await make_user(session, Role.PATRON)
    await page.goto(f"{live_server.url}/login")
    await log_in_as(page, user.username)
    await expect(page.get_by_role("link", name=user.username)).to_be_visible()
    for path, role in (("/admin/", "admin role"), ("/desk", "librarian role")):
        response = await page.goto(live_server.url + path)
        assert response is not None
        assert response.status == 403
        await expect(page.get_by_role("main")).to_contain_text(role)


async def test_the_desk_and_the_account_work_at_360_pixels(
    browser_page_360: Page, live_server: LiveServer, screenshots: Path
) -> None:
    page = browser_page_360
    async with session_scope(live_server.sessionmaker) as session:
        scene = await make_scene(session, title="The telling: a very long title to wrap")
        await make_loan(session, item=scene.item, patron=scene.patron, now=utcnow())
        await fees.charge_manual(
            session, actor=SYSTEM, patron_card=scene.patron.card_number,
            amount=Decimal("2.50"), description="Damaged barcode label", item=None,
            now=utcnow(),
        )  # fmt: skip
        reader = await make_patron_user(session, scene.patron)
        librarian = await make_user(session, Role.LIBRARIAN)

    await page.goto(f"{live_server.url}/login?next=/desk%3Fcard%3D{scene.patron.card_number}")
    await log_in_as(page, librarian.username)
    await expect(page.get_by_role("heading", name="Ada Reader")).to_be_visible()
    await no_horizontal_scroll(page)
    await assert_accessible(page)
    await page.screenshot(path=screenshots / "desk-360.png", full_page=True)
    await page.get_by_role("button", name="Log out").click()

    await page.goto(f"{live_server.url}/login?next=/account")
    await log_in_as(page, reader.username)
    await expect(page.get_by_role("heading", name="Your account")).to_be_visible()
    await expect(page.get_by_text("Damaged barcode label")).to_be_visible()
    await no_horizontal_scroll(page)
    await assert_accessible(page)
    await page.screenshot(path=screenshots / "account-360.png", full_page=True)
