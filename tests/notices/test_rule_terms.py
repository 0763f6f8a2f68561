"""The notice terms of circulation rules, through /api/v1/rules: set, read, checked."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from factories import auth, make_user
from shelfmark.audit.models import AuditEvent
from shelfmark.auth.models import User
from shelfmark.auth.roles import Role


@pytest.fixture
async def admin(session: AsyncSession) -> User:
    user = await make_user(session, Role.ADMIN)
    await session.commit()
    return user


async def test_a_rule_gets_default_terms_and_they_can_be_changed(
    client: httpx.AsyncClient, session: AsyncSession, admin: User
) -> None:
    created = await client.post(
        "/api/v1/rules", json={"item_type": "dvd", "loan_period": 7}, headers=auth(admin)
    )
    assert created.status_code == 201, created.text
    rule = created.json()
    assert (rule["due_soon_days"], rule["overdue_notice_days"]) == (2, [1, 7, 14])

    url = f"/api/v1/rules/{rule['id']}"
    changed = await client.patch(
        url, json={"due_soon_days": None, "overdue_notice_days": [3, 10]}, headers=auth(admin)
    )
    assert changed.status_code == 200, changed.text
    assert (changed.json()["due_soon_days"], changed.json()["overdue_notice_days"]) == (
        None,
        [3, 10],
    )
    again = await client.get(url)
    assert again.json()["overdue_notice_days"] == [3, 10]
    none = await client.patch(url, json={"overdue_notice_days": []}, headers=auth(admin))
    assert none.json()["overdue_notice_days"] == []

    audit = await session.scalar(
        select(AuditEvent)
        .where(AuditEvent.action == "rule.update", AuditEvent.object_id == str(rule["id"]))
        .order_by(AuditEvent.id)
    )
    assert audit is not None
    assert audit.changes["overdue_notice_days"] == [[1, 7, 14], [3, 10]]


async def test_a_rule_may_be_created_with_its_terms(client: httpx.AsyncClient, admin: User) -> None:
    body = {"item_type": "kit", "loan_period": 7, "due_soon_days": 5, "overdue_notice_days": [2]}
    created = await client.post("/api/v1/rules", json=body, headers=auth(admin))
    assert created.status_code == 201, created.text
    assert (created.json()["due_soon_days"], created.json()["overdue_notice_days"]) == (5, [2])


@pytest.mark.parametrize(
    ("terms", "field"),
    [
        ({"overdue_notice_days": [7, 3]}, "overdue_notice_days"),
        ({"overdue_notice_days": [1, 1]}, "overdue_notice_days"),
        ({"overdue_notice_days": [1, 2, 3, 4]}, "overdue_notice_days"),
        ({"overdue_notice_days": [0]}, "overdue_notice_days.0"),
        ({"due_soon_days": 0}, "due_soon_days"),
        ({"due_soon_days": 61}, "due_soon_days"),
    ],
)
async def test_bad_terms_are_422_and_change_nothing(
    client: httpx.AsyncClient, admin: User, terms: dict[str, object], field: str
) -> None:
    body = {"item_type": "map", "loan_period": 7} | terms
    response = await client.post("/api/v1/rules", json=body, headers=auth(admin))
    assert response.status_code == 422
    assert response.json()["type"] == "/problems/invalid-input"
    assert [e["field"] for e in response.json()["errors"]] == [field]
    listed = await client.get("/api/v1/rules", params={"limit": 500})
    assert "map" not in {r["item_type"] for r in listed.json()["items"]}
