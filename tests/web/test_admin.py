"""/admin: admins only, same login as the web, every change audited."""

from __future__ import annotations

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from factories import make_branch, make_user
from shelfmark.audit.models import AuditEvent
from shelfmark.auth.roles import Role
from web.test_pages import HTML, log_in


async def test_anonymous_visitors_are_sent_to_the_login_page(client: httpx.AsyncClient) -> None:
    response = await client.get("/admin/", headers=HTML)
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=/admin"


async def test_a_librarian_or_patron_cannot_open_it(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    patron = await make_user(session, Role.PATRON)
    await session.commit()
    await log_in(client, patron.username)
    response = await client.get("/admin/", headers=HTML)
    assert response.status_code == 403
    assert "admin role" in response.text


async def test_an_admin_edits_a_branch_and_it_is_audited(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    admin = await make_user(session, Role.ADMIN)
    branch = await make_branch(session, name="Old name")
    await session.commit()
    await log_in(client, admin.username)
    listing = await client.get("/admin/branch/list", headers=HTML)
    assert listing.status_code == 200
    assert branch.code in listing.text
    policy = listing.headers["content-security-policy"]
    assert "script-src 'self' 'sha256-" in policy
    assert "unsafe-inline" not in policy.split("script-src", 1)[1].split(";", 1)[0]
    edited = await client.post(
        f"/admin/branch/edit/{branch.id}",
        data={"code": branch.code, "name": "New name", "address": "", "opening_hours": "{}"},
        headers=HTML,
    )
    assert edited.status_code in {200, 302, 303}, edited.text[:500]
    await session.refresh(branch)
    assert branch.name == "New name"
    events = (
        await session.scalars(
            select(AuditEvent).where(
                AuditEvent.action == "admin.update", AuditEvent.object_id == str(branch.id)
            )
        )
    ).all()
    assert len(events) == 1
    assert events[0].actor_name == admin.username


async def test_password_hashes_are_never_shown(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    admin = await make_user(session, Role.ADMIN)
    await session.commit()
    await log_in(client, admin.username)
    details = await client.get(f"/admin/user/details/{admin.id}", headers=HTML)
    assert details.status_code == 200
    assert "argon2" not in details.text
