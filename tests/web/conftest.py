"""A live Shelfmark for browser tests: a real HTTP server in a thread, on its own database.

The browser is Debian's Chromium (/usr/bin/chromium) driven by Playwright; no browser is ever
downloaded. Screenshots of the pages go to var/screenshots/ (not committed).
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI
from playwright.async_api import Browser, Page, async_playwright
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from conftest import unreachable
from factories import make_bib, make_branch, make_category, make_item, make_patron, make_rule
from shelfmark.app import create_asgi_app
from shelfmark.catalog.models import Bib, Branch, Item
from shelfmark.db import create_engine, create_sessionmaker
from shelfmark.migrate import upgrade
from shelfmark.patrons.models import Patron, PatronCategory
from shelfmark.settings import Settings

CHROMIUM = Path("/usr/bin/chromium")
HAVE_CHROMIUM = CHROMIUM.exists()
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic",
]  # fmt: skip
SCREENSHOTS = Path(__file__).resolve().parents[2] / "var" / "screenshots"


@dataclass
class LiveServer:
    url: str
    sessionmaker: async_sessionmaker[AsyncSession]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
async def live_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LiveServer]:
    home = tmp_path_factory.mktemp("live")
    settings = Settings(
        shelfmark_home=home,
        database_url=f"sqlite+aiosqlite:///{home / 'live.db'}",
        secret_key="live-server-secret-key-for-browser-tests",
    )
    engine = create_engine(settings)
    await upgrade(engine)
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_asgi_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(100):
        if server.started:
            break
        await asyncio.sleep(0.05)
    yield LiveServer(f"http://127.0.0.1:{port}", create_sessionmaker(engine))
    server.should_exit = True
    thread.join(timeout=10)
    await engine.dispose()


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    if not HAVE_CHROMIUM:
        unreachable(f"{CHROMIUM} is missing: apt-get install chromium")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        yield browser
        await browser.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    yield page
    await context.close()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


@pytest.fixture
async def browser_page_360(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 360, "height": 740})
    page = await context.new_page()
    yield page
    await context.close()


@pytest.fixture
def app(app: FastAPI, connection: AsyncConnection) -> FastAPI:
    """Read sessions join the test's transaction without a savepoint of their own. A page
    that reads with both kinds of session (the record page for a logged-in user: the user
    by the request's session, the record by the read session) would otherwise release its
    savepoints out of order on the one test connection ("no such savepoint"). Read
    sessions never commit, so there is nothing for a savepoint of theirs to keep apart."""
    app.state.read_sessionmaker = async_sessionmaker(
        bind=connection, expire_on_commit=False, autoflush=False,
        join_transaction_mode="rollback_only",
    )  # fmt: skip
    return app


@dataclass
class Scene:
    """A branch with its own terms (14 days, 1 renewal, 3 loans), a patron of a category
    blocked above 5.00 owed, and a title with one copy there."""

    branch: Branch
    category: PatronCategory
    patron: Patron
    bib: Bib
    item: Item


async def make_scene(session: AsyncSession, *, title: str = "The dispossessed") -> Scene:
    branch = await make_branch(session)
    category = await make_category(session, fee_block_threshold="5.00")
    await make_rule(
        session, branch=branch, loan_period=14, renewals_allowed=1, max_loans=3,
        fine_per_day="0.50", fine_cap="3.00",
    )  # fmt: skip
    patron = await make_patron(session, category=category, branch=branch, name="Ada Reader")
    bib = await make_bib(session, title=title)
    item = await make_item(session, bib=bib, branch=branch, shelfmark="FIC LEG")
    return Scene(branch, category, patron, bib, item)
