"""What a patron and a librarian do, in a real Chromium against a live server."""

from __future__ import annotations

from pathlib import Path

from axe_playwright_python.async_playwright import Axe
from playwright.async_api import Page, expect

from factories import PASSWORD, make_bib, make_item, make_user, unique
from shelfmark.auth.roles import Role
from shelfmark.db import session_scope
from web.conftest import LiveServer

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

    await page.get_by_role("link", name="Log in").click()
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
