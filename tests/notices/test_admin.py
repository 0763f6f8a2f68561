"""/admin for notices: an admin writes a kind's template in a language (checked, audited);
notices are listed, never written."""

from __future__ import annotations

import html

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from factories import make_user
from shelfmark.audit.models import AuditEvent
from shelfmark.auth.models import User
from shelfmark.auth.roles import Role
from shelfmark.notices.models import NoticeTemplate
from web.test_pages import HTML, log_in

TEMPLATE = {
    "kind": "hold-ready", "language": "fre", "subject": "À retirer : {{ hold.title }}",
    "text_body": "Bonjour {{ patron.name }}, {{ hold.title }} vous attend.",
    "html_body": "",
}  # fmt: skip


@pytest.fixture
async def admin(client: httpx.AsyncClient, session: AsyncSession) -> User:
    user = await make_user(session, Role.ADMIN)
    await session.commit()
    await log_in(client, user.username)
    return user


async def templates(session: AsyncSession) -> list[NoticeTemplate]:
    return list(await session.scalars(select(NoticeTemplate).order_by(NoticeTemplate.id)))


class TestNoticeTemplates:
    async def test_an_admin_writes_one_and_it_is_audited(
        self, client: httpx.AsyncClient, session: AsyncSession, admin: User
    ) -> None:
        created = await client.post("/admin/notice-template/create", data=TEMPLATE, headers=HTML)
        assert created.status_code in {302, 303}, created.text[:500]
        (row,) = await templates(session)
        assert (row.kind, row.language, row.subject) == ("hold-ready", "fre", TEMPLATE["subject"])
        assert row.html_body is None  # left empty: the notice goes as text only
        event = await session.scalar(
            select(AuditEvent).where(
                AuditEvent.action == "admin.create", AuditEvent.object_id == str(row.id)
            )
        )
        assert event is not None
        assert event.actor_name == admin.username
        listing = await client.get("/admin/notice-template/list", headers=HTML)
        assert listing.status_code == 200
        assert "hold-ready" in listing.text

    @pytest.mark.parametrize(
        ("change", "message"),
        [
            ({"text_body": "{{ hold.titel }}"}, "titel"),
            ({"subject": "{% if %}"}, "does not render"),
            ({"language": "French"}, "three lowercase letters"),
        ],
    )
    async def test_a_broken_template_is_a_form_error_and_saves_nothing(
        self, client: httpx.AsyncClient, session: AsyncSession, admin: User,
        change: dict[str, str], message: str,
    ) -> None:  # fmt: skip
        response = await client.post(
            "/admin/notice-template/create", data=TEMPLATE | change, headers=HTML
        )
        assert response.status_code == 400, response.text[:300]
        assert message in html.unescape(response.text)
        assert await templates(session) == []

    async def test_one_template_per_kind_and_language(
        self, client: httpx.AsyncClient, session: AsyncSession, admin: User
    ) -> None:
        first = await client.post("/admin/notice-template/create", data=TEMPLATE, headers=HTML)
        assert first.status_code in {302, 303}
        again = await client.post("/admin/notice-template/create", data=TEMPLATE, headers=HTML)
        assert again.status_code == 400
        assert "has a template in this language already" in html.unescape(again.text)
        assert len(await templates(session)) == 1


class TestNotices:
    async def test_notices_are_listed_read_only(
        self, client: httpx.AsyncClient, session: AsyncSession, admin: User
    ) -> None:
        listing = await client.get("/admin/notice/list", headers=HTML)
        assert listing.status_code == 200
        assert (await client.get("/admin/notice/create", headers=HTML)).status_code in {403, 404}

    async def test_a_librarian_cannot_open_them(
        self, client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        librarian = await make_user(session, Role.LIBRARIAN)
        await session.commit()
        await log_in(client, librarian.username)
        assert (await client.get("/admin/notice/list", headers=HTML)).status_code == 403
