from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from factories import (
    auth,
    make_branch,
    make_category,
    make_item,
    make_loan,
    make_patron,
    make_patron_user,
    make_user,
)
from shelfmark.audit.models import AuditEvent
from shelfmark.auth.models import User
from shelfmark.auth.roles import Role
from shelfmark.patrons import service
from shelfmark.patrons.models import Patron


@pytest.fixture
async def librarian(session: AsyncSession) -> User:
    user = await make_user(session, Role.LIBRARIAN)
    await session.commit()
    return user


class TestCategories:
    async def test_admins_manage_categories(
        self, client: httpx.AsyncClient, session: AsyncSession, librarian: User
    ) -> None:
        admin = await make_user(session, Role.ADMIN)
        await session.commit()
        body = {"code": "CHILD", "name": "Child", "fee_block_threshold": "2.50"}
        refused = await client.post("/api/v1/patron-categories", json=body, headers=auth(librarian))
        assert refused.status_code == 403
        created = await client.post("/api/v1/patron-categories", json=body, headers=auth(admin))
        assert created.status_code == 201, created.text
        assert created.json()["fee_block_threshold"] == "2.50"
        taken = await client.post("/api/v1/patron-categories", json=body, headers=auth(admin))
        assert taken.json()["type"] == "/problems/patron-category-code-taken"
        patched = await client.patch(
            f"/api/v1/patron-categories/{created.json()['id']}",
            json={"fee_block_threshold": None}, headers=auth(admin),
        )  # fmt: skip
        assert patched.json()["fee_block_threshold"] is None
        listed = await client.get("/api/v1/patron-categories")
        assert "CHILD" in [c["code"] for c in listed.json()["items"]]


class TestPatrons:
    async def test_create_read_update_list(
        self, client: httpx.AsyncClient, session: AsyncSession, librarian: User
    ) -> None:
        branch = await make_branch(session)
        category = await make_category(session)
        await session.commit()
        body = {
            "card_number": "21234000056789", "name": "Ada Lovelace", "email": "ada@example.org",
            "category": category.code, "home_branch": branch.code, "expires_on": "2030-12-31",
            "pin": "1234", "language": "eng",
        }  # fmt: skip
        created = await client.post("/api/v1/patrons", json=body, headers=auth(librarian))
        assert created.status_code == 201, created.text
        patron = created.json()
        assert (patron["category"], patron["home_branch"]) == (category.code, branch.code)
        assert (patron["has_pin"], patron["notice_channel"], patron["blocks"]) == (
            True, "email", [],
        )  # fmt: skip
        assert "pin" not in patron
        stored = await session.get(Patron, patron["id"])
        assert stored is not None
        assert stored.pin_hash is not None
        assert stored.pin_hash.startswith("$argon2")
        assert service.verify_pin(stored, "1234")
        assert not service.verify_pin(stored, "4321")
        audit = await session.scalar(
            select(AuditEvent).where(AuditEvent.action == "patron.create",
                                     AuditEvent.object_id == str(patron["id"]))
        )  # fmt: skip
        assert audit is not None
        assert audit.changes["pin"] is True
        taken = await client.post("/api/v1/patrons", json=body, headers=auth(librarian))
        assert taken.status_code == 409
        assert taken.json()["type"] == "/problems/card-number-taken"
        url = f"/api/v1/patrons/{patron['id']}"
        patched = await client.patch(
            url, json={"phone": "+44 20 7946 0000", "notice_channel": "sms"},
            headers=auth(librarian),
        )  # fmt: skip
        assert (patched.json()["phone"], patched.json()["notice_channel"]) == (
            "+44 20 7946 0000", "sms",
        )  # fmt: skip
        assert (await client.get(url, headers=auth(librarian))).json()["name"] == "Ada Lovelace"
        found = await client.get(
            "/api/v1/patrons", params={"name": "lovelace", "category": category.code},
            headers=auth(librarian),
        )  # fmt: skip
        assert [p["id"] for p in found.json()["items"]] == [patron["id"]]

    async def test_unknown_category_is_404(
        self, client: httpx.AsyncClient, session: AsyncSession, librarian: User
    ) -> None:
        branch = await make_branch(session)
        await session.commit()
        body = {"card_number": "X1", "name": "X", "category": "NOPE", "home_branch": branch.code,
                "expires_on": "2030-01-01"}  # fmt: skip
        response = await client.post("/api/v1/patrons", json=body, headers=auth(librarian))
        assert response.status_code == 404
        assert response.json()["type"] == "/problems/patron-category-not-found"

    async def test_a_patron_with_history_cannot_be_deleted(
        self, client: httpx.AsyncClient, session: AsyncSession, librarian: User
    ) -> None:
        fresh = await make_patron(session)
        reader = await make_patron(session)
        await make_loan(
            session, item=await make_item(session), patron=reader,
            now=datetime(2026, 1, 5, tzinfo=UTC),
        )  # fmt: skip
        await session.commit()
        busy = await client.delete(f"/api/v1/patrons/{reader.id}", headers=auth(librarian))
        assert busy.status_code == 409
        assert busy.json()["type"] == "/problems/still-referenced"
        gone = await client.delete(f"/api/v1/patrons/{fresh.id}", headers=auth(librarian))
        assert gone.status_code == 204


class TestSelfService:
    async def test_a_patron_sees_and_changes_only_their_own_record(
        self, client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        patron = await make_patron(session)
        other = await make_patron(session)
        user = await make_patron_user(session, patron)
        await session.commit()
        me = await client.get("/api/v1/patrons/me", headers=auth(user))
        assert me.status_code == 200
        assert me.json()["card_number"] == patron.card_number
        assert (
            await client.get(f"/api/v1/patrons/{other.id}", headers=auth(user))
        ).status_code == 403
        assert (await client.get("/api/v1/patrons", headers=auth(user))).status_code == 403
        url = f"/api/v1/patrons/{patron.id}"
        ok = await client.patch(url, json={"email": "me@example.org", "pin": "9876"},
                                headers=auth(user))  # fmt: skip
        assert ok.status_code == 200, ok.text
        assert ok.json()["email"] == "me@example.org"
        denied = await client.patch(url, json={"expires_on": "2099-01-01"}, headers=auth(user))
        assert denied.status_code == 403
        assert "expires_on" in denied.json()["detail"]

    async def test_a_user_without_a_patron_record_has_no_me(
        self, client: httpx.AsyncClient, librarian: User
    ) -> None:
        assert (await client.get("/api/v1/patrons/me", headers=auth(librarian))).status_code == 403


class TestBlocks:
    async def test_block_and_lift(
        self, client: httpx.AsyncClient, session: AsyncSession, librarian: User
    ) -> None:
        patron = await make_patron(session)
        await session.commit()
        url = f"/api/v1/patrons/{patron.id}"
        block = await client.post(f"{url}/blocks", json={"reason": "Card stolen"},
                                  headers=auth(librarian))  # fmt: skip
        assert block.status_code == 201, block.text
        assert block.json()["created_by"] == librarian.username
        read = await client.get(url, headers=auth(librarian))
        assert [b["reason"] for b in read.json()["blocks"]] == ["Card stolen"]
        lift = f"{url}/blocks/{block.json()['id']}"
        assert (await client.delete(lift, headers=auth(librarian))).status_code == 204
        assert (await client.get(url, headers=auth(librarian))).json()["blocks"] == []
        again = await client.delete(lift, headers=auth(librarian))
        assert again.json()["type"] == "/problems/patron-block-not-found"
