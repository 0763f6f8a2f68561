"""The server-rendered pages over HTTP: headers, escaping, login, CSRF (browser tests elsewhere)."""

from __future__ import annotations

import re

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from factories import PASSWORD, make_bib, make_item, make_user
from shelfmark.auth.roles import Role

HTML = {"accept": "text/html,application/xhtml+xml"}


def csrf_of(page: httpx.Response) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert match, "the page has no CSRF field"
    return match.group(1)


async def log_in(client: httpx.AsyncClient, username: str, next_url: str = "/") -> httpx.Response:
    page = await client.get("/login", headers=HTML)
    return await client.post(
        "/login",
        data={"username": username, "password": PASSWORD, "csrf_token": csrf_of(page),
              "next": next_url},
        headers=HTML,
    )  # fmt: skip


class TestHeaders:
    async def test_pages_forbid_inline_scripts_and_framing(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/", headers=HTML)
        assert response.status_code == 200
        policy = response.headers["content-security-policy"]
        assert "script-src 'self'" in policy
        assert "unsafe-inline" not in policy
        assert "frame-ancestors 'none'" in policy
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "same-origin"
        assert 'role="searchbox"' in response.text
        assert 'name="q"' in response.text
        assert "<script>" not in response.text  # no inline script at all

    async def test_static_assets_are_cached_and_local(self, client: httpx.AsyncClient) -> None:
        page = await client.get("/", headers=HTML)
        urls = re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text)
        assert len(urls) >= 3
        for url in urls:
            asset = await client.get(url)
            assert asset.status_code == 200
            assert "immutable" in asset.headers["cache-control"]
        assert "http" not in " ".join(re.findall(r'(?:src|href)="([^"]+)"', page.text))

    async def test_an_unknown_page_is_a_page_and_an_unknown_api_path_a_problem(
        self, client: httpx.AsyncClient
    ) -> None:
        page = await client.get("/no-such-page", headers=HTML)
        assert page.status_code == 404
        assert page.headers["content-type"].startswith("text/html")
        api = await client.get("/api/v1/no-such-thing", headers=HTML)
        assert api.headers["content-type"] == "application/problem+json"


class TestRecordPage:
    async def test_user_text_is_escaped(
        self, client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        bib = await make_bib(session, title="<script>alert(1)</script>", subjects=["<b>bold</b>"])
        await make_item(session, bib=bib, shelfmark="FIC <i>X</i>")
        await session.commit()
        page = await client.get(f"/bibs/{bib.id}", headers=HTML)
        assert page.status_code == 200
        assert "<script>alert(1)</script>" not in page.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
        assert "<b>bold</b>" not in page.text
        assert "<i>X</i>" not in page.text

    async def test_copies_by_branch(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        bib = await make_bib(session, title="Counted copies")
        await make_item(session, bib=bib, shelfmark="SHELF-1")
        await make_item(session, bib=bib, shelfmark="SHELF-2", status="missing")
        await session.commit()
        page = await client.get(f"/bibs/{bib.id}", headers=HTML)
        assert page.text.count("SHELF-") == 2
        assert "missing" in page.text

    async def test_missing_record_is_a_404_page(self, client: httpx.AsyncClient) -> None:
        page = await client.get("/bibs/999999", headers=HTML)
        assert page.status_code == 404
        assert "Bib record not found" in page.text


class TestLogin:
    async def test_log_in_and_out(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        user = await make_user(session, Role.LIBRARIAN)
        await session.commit()
        response = await log_in(client, user.username, next_url="/bibs/1")
        assert response.status_code == 303
        assert response.headers["location"] == "/bibs/1"
        cookie = response.headers["set-cookie"]
        assert "httponly" in cookie.lower()
        assert "samesite=lax" in cookie.lower()
        home = await client.get("/", headers=HTML)
        assert user.username in home.text
        out = await client.post("/logout", data={"csrf_token": csrf_of(home)}, headers=HTML)
        assert out.status_code == 303
        assert user.username not in (await client.get("/", headers=HTML)).text

    async def test_wrong_password(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        user = await make_user(session)
        await session.commit()
        page = await client.get("/login", headers=HTML)
        response = await client.post(
            "/login",
            data={"username": user.username, "password": "wrong", "csrf_token": csrf_of(page)},
            headers=HTML,
        )
        assert response.status_code == 401
        assert "wrong" in response.text
        assert 'role="alert"' in response.text

    async def test_a_form_without_the_token_is_refused(
        self, client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        user = await make_user(session)
        await session.commit()
        await client.get("/login", headers=HTML)
        response = await client.post(
            "/login", data={"username": user.username, "password": PASSWORD}, headers=HTML
        )
        assert response.status_code == 403
        assert "set-cookie" not in response.headers or "user_id" not in response.text

    @pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example", "\\\\evil"])
    async def test_no_open_redirects(
        self, client: httpx.AsyncClient, session: AsyncSession, target: str
    ) -> None:
        user = await make_user(session)
        await session.commit()
        response = await log_in(client, user.username, next_url=target)
        assert response.headers["location"] == "/"
