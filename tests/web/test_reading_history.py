"""The reading-history choice in the patron's account, and the history page it opens."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from factories import STAFF, make_bib, make_item, make_loan, make_patron_user
from shelfmark.audit.models import AuditEvent
from shelfmark.auth.models import User
from shelfmark.catalog.models import Item
from shelfmark.circulation import history, loans
from shelfmark.circulation.models import Loan
from shelfmark.circulation.schemas import CheckinCreate
from shelfmark.db import utcnow
from web.conftest import Scene, make_scene
from web.test_account import htmx_as
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


async def borrowed_and_returned(
    session: AsyncSession, scene: Scene, item: Item, days_ago: int
) -> Loan:
    start = utcnow() - timedelta(days=days_ago)
    loan = await make_loan(session, item=item, patron=scene.patron, now=start)
    await loans.check_in(session, actor=STAFF, data=CheckinCreate(item_barcode=item.barcode),
                         now=start + timedelta(days=2))  # fmt: skip
    return loan


async def keeps(session: AsyncSession, scene: Scene) -> bool:
    await session.refresh(scene.patron)
    return scene.patron.keep_reading_history


class TestChoice:
    async def test_off_by_default_and_turned_on(
        self, client: httpx.AsyncClient, session: AsyncSession, scene: Scene, reader: User
    ) -> None:
        await log_in(client, reader.username)
        page = await client.get("/account", headers=HTML)
        assert 'id="reading-history-title">Reading history' in page.text
        assert 'id="history-off" name="keep" value="off" checked' in page.text
        assert "forget who borrowed an item 30 days after its return" in page.text

        htmx = await htmx_as(client, reader)
        saved = await client.post("/account/reading-history", data={"keep": "on"}, headers=htmx)
        assert saved.status_code == 200
        assert "Saved: your reading history is kept." in saved.text
        assert await keeps(session, scene)
        audit = await session.scalar(
            select(AuditEvent).where(AuditEvent.action == "patron.update",
                                     AuditEvent.object_id == str(scene.patron.id))
        )  # fmt: skip
        assert audit is not None
        assert audit.changes == {"keep_reading_history": [False, True]}

        again = await client.get("/account", headers=HTML)
        assert 'id="history-on" name="keep" value="on" checked' in again.text

    async def test_a_plain_form_post_goes_back_to_the_account(
        self, client: httpx.AsyncClient, session: AsyncSession, scene: Scene, reader: User
    ) -> None:
        await log_in(client, reader.username)
        token = csrf_of(await client.get("/account", headers=HTML))
        done = await client.post("/account/reading-history", headers=HTML,
                                 data={"keep": "on", "csrf_token": token})  # fmt: skip
        assert (done.status_code, done.headers["location"]) == (303, "/account")
        assert await keeps(session, scene)

    async def test_without_the_csrf_token_nothing_changes(
        self, client: httpx.AsyncClient, session: AsyncSession, scene: Scene, reader: User
    ) -> None:
        await log_in(client, reader.username)
        refused = await client.post("/account/reading-history", data={"keep": "on"}, headers=HTML)
        assert refused.status_code == 403
        assert not await keeps(session, scene)

    async def test_a_value_that_is_neither_is_refused(
        self, client: httpx.AsyncClient, session: AsyncSession, scene: Scene, reader: User
    ) -> None:
        htmx = await htmx_as(client, reader)
        refused = await client.post(
            "/account/reading-history", data={"keep": "sometimes"}, headers=htmx
        )
        assert refused.status_code == 422
        assert "Not saved:" in refused.text
        assert not await keeps(session, scene)


class TestHistoryPage:
    async def test_anonymous_visitors_are_sent_to_log_in(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/account/history", headers=HTML)
        assert response.headers["location"] == "/login?next=/account/history"

    async def test_off_it_lists_nothing_and_says_why(
        self, client: httpx.AsyncClient, session: AsyncSession, scene: Scene, reader: User
    ) -> None:
        await borrowed_and_returned(session, scene, scene.item, days_ago=5)
        await session.commit()
        await log_in(client, reader.username)
        page = await client.get("/account/history", headers=HTML)
        assert page.status_code == 200
        assert "Your reading history is off" in page.text
        assert scene.bib.title not in page.text

    async def test_on_it_pages_through_returned_loans_newest_first(
        self, client: httpx.AsyncClient, session: AsyncSession, scene: Scene, reader: User,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:  # fmt: skip
        monkeypatch.setattr("shelfmark.web.account.HISTORY_PAGE", 2)
        scene.patron.keep_reading_history = True
        await session.flush()
        titles = ["First read", "Second read", "Third read"]
        for age, title in zip((30, 20, 10), titles, strict=True):
            bib = await make_bib(session, title=title)
            item = await make_item(session, branch=scene.branch, bib=bib)
            await borrowed_and_returned(session, scene, item, days_ago=age)
        await make_loan(session, item=scene.item, patron=scene.patron, now=utcnow())  # still out
        await session.commit()
        await log_in(client, reader.username)

        first = await client.get("/account/history", headers=HTML)
        assert first.status_code == 200
        assert first.text.index("Third read") < first.text.index("Second read")
        assert "First read" not in first.text
        assert scene.bib.title not in first.text
        older = first.text.split('rel="next"')[0].rsplit('href="', 1)[1].split('"')[0]
        second = await client.get(older.replace("&amp;", "&"), headers=HTML)
        assert "First read" in second.text
        assert "Second read" not in second.text
        assert 'rel="next"' not in second.text

    async def test_an_anonymised_loan_leaves_every_page_working(
        self, client: httpx.AsyncClient, session: AsyncSession, scene: Scene, reader: User
    ) -> None:
        loan = await borrowed_and_returned(session, scene, scene.item, days_ago=60)
        forgotten = await history.anonymise_loans(
            session, before=utcnow() - timedelta(days=30), now=utcnow()
        )
        assert forgotten == 1
        scene.patron.keep_reading_history = True
        await session.commit()
        await log_in(client, reader.username)
        for url in ("/account", "/account/history"):
            page = await client.get(url, headers=HTML)
            assert page.status_code == 200, url
        assert "Nothing returned yet" in page.text
        assert await session.scalar(select(Loan.patron_id).where(Loan.id == loan.id)) is None
