from __future__ import annotations

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from factories import PASSWORD, auth, make_user
from shelfmark.auth.roles import Role


class TestToken:
    async def test_password_gives_a_working_token(
        self, client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        user = await make_user(session, Role.LIBRARIAN)
        await session.commit()
        response = await client.post(
            "/api/v1/auth/token", data={"username": user.username, "password": PASSWORD}
        )
        assert response.status_code == 200
        body = response.json()
        assert body["token_type"] == "bearer"
        me = await client.get(
            "/api/v1/auth/me", headers={"Authorization": f"Bearer {body['access_token']}"}
        )
        assert me.status_code == 200
        assert me.json()["username"] == user.username

    async def test_wrong_password_and_unknown_user_read_the_same(
        self, client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        user = await make_user(session)
        await session.commit()
        wrong = await client.post(
            "/api/v1/auth/token", data={"username": user.username, "password": "not it at all"}
        )
        unknown = await client.post(
            "/api/v1/auth/token", data={"username": "nobody-here", "password": "not it at all"}
        )
        assert wrong.status_code == unknown.status_code == 401
        assert wrong.headers["content-type"] == "application/problem+json"
        assert wrong.json() == unknown.json() | {"instance": wrong.json()["instance"]}
        assert wrong.json()["type"] == "/problems/invalid-credentials"

    async def test_inactive_user_cannot_log_in(
        self, client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        user = await make_user(session)
        user.is_active = False
        await session.commit()
        response = await client.post(
            "/api/v1/auth/token", data={"username": user.username, "password": PASSWORD}
        )
        assert response.status_code == 401


class TestRoles:
    async def test_no_token_is_401(self, client: httpx.AsyncClient) -> None:
        response = await client.post("/api/v1/branches", json={"code": "X", "name": "X"})
        assert response.status_code == 401
        assert response.json()["type"] == "/problems/unauthenticated"
        assert response.headers["www-authenticate"] == "Bearer"

    async def test_garbage_token_is_401(self, client: httpx.AsyncClient) -> None:
        response = await client.post(
            "/api/v1/branches",
            json={"code": "X", "name": "X"},
            headers={"Authorization": "Bearer not.a.token"},
        )
        assert response.status_code == 401

    async def test_patron_token_on_staff_route_is_403_and_writes_nothing(
        self, client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        patron = await make_user(session, Role.PATRON)
        await session.commit()
        response = await client.post(
            "/api/v1/branches", json={"code": "PATRONS", "name": "Nope"}, headers=auth(patron)
        )
        assert response.status_code == 403
        assert response.json()["type"] == "/problems/forbidden"
        listing = await client.get("/api/v1/branches")
        assert all(b["code"] != "PATRONS" for b in listing.json()["items"])

    async def test_only_admins_create_users(
        self, client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        librarian = await make_user(session, Role.LIBRARIAN)
        admin = await make_user(session, Role.ADMIN)
        await session.commit()
        body = {"username": "newbie", "password": "long enough pass", "role": "librarian"}
        assert (
            await client.post("/api/v1/users", json=body, headers=auth(librarian))
        ).status_code == 403
        created = await client.post("/api/v1/users", json=body, headers=auth(admin))
        assert created.status_code == 201
        again = await client.post("/api/v1/users", json=body, headers=auth(admin))
        assert again.status_code == 409
        assert again.json()["type"] == "/problems/username-taken"


class TestAudit:
    async def test_staff_writes_are_audited_and_readable_by_admins(
        self, client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        librarian = await make_user(session, Role.LIBRARIAN)
        admin = await make_user(session, Role.ADMIN)
        await session.commit()
        created = await client.post(
            "/api/v1/branches", json={"code": "AUD1", "name": "Audited"}, headers=auth(librarian)
        )
        branch_id = created.json()["id"]
        await client.patch(
            f"/api/v1/branches/{branch_id}", json={"name": "Renamed"}, headers=auth(librarian)
        )
        assert (await client.get("/api/v1/audit", headers=auth(librarian))).status_code == 403
        response = await client.get(
            "/api/v1/audit",
            params={"object_type": "branch", "object_id": str(branch_id)},
            headers=auth(admin),
        )
        assert response.status_code == 200
        events = response.json()["items"]
        assert [e["action"] for e in events] == ["branch.update", "branch.create"]
        assert events[0]["actor_name"] == librarian.username
        assert events[0]["changes"] == {"name": ["Audited", "Renamed"]}
