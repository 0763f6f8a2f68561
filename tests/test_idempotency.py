"""A retried POST with the same Idempotency-Key gets the first answer, never a second write."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from factories import auth, make_user
from shelfmark.auth.models import User
from shelfmark.auth.roles import Role
from shelfmark.catalog.models import Branch


@pytest.fixture
async def librarian(session: AsyncSession) -> User:
    user = await make_user(session, Role.LIBRARIAN)
    await session.commit()
    return user


async def branches(session: AsyncSession, code: str) -> int:
    query = select(func.count()).select_from(Branch).where(Branch.code == code)
    return await session.scalar(query) or 0


async def test_a_replay_returns_the_first_answer_and_writes_once(
    client: httpx.AsyncClient, session: AsyncSession, librarian: User
) -> None:
    headers = auth(librarian) | {"Idempotency-Key": "desk-1-request-42"}
    body = {"code": "IDEM", "name": "Idempotent branch"}
    first = await client.post("/api/v1/branches", json=body, headers=headers)
    again = await client.post("/api/v1/branches", json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["idempotent-replay"] == "true"
    assert await branches(session, "IDEM") == 1


async def test_refusals_are_replayed_too(
    client: httpx.AsyncClient, session: AsyncSession, librarian: User
) -> None:
    headers = auth(librarian) | {"Idempotency-Key": "bad-one"}
    body = {"code": "bad code!", "name": "x"}
    first = await client.post("/api/v1/branches", json=body, headers=headers)
    again = await client.post("/api/v1/branches", json=body, headers=headers)
    assert first.status_code == again.status_code == 422
    assert again.headers["content-type"] == "application/problem+json"


async def test_the_same_key_for_another_request_is_refused(
    client: httpx.AsyncClient, session: AsyncSession, librarian: User
) -> None:
    headers = auth(librarian) | {"Idempotency-Key": "reused"}
    await client.post("/api/v1/branches", json={"code": "R1", "name": "x"}, headers=headers)
    other = await client.post("/api/v1/branches", json={"code": "R2", "name": "y"}, headers=headers)
    assert other.status_code == 422
    assert other.json()["type"] == "/problems/idempotency-key-reused"
    assert await branches(session, "R2") == 0


async def test_keys_belong_to_their_caller(
    client: httpx.AsyncClient, session: AsyncSession, librarian: User
) -> None:
    other = await make_user(session, Role.LIBRARIAN)
    await session.commit()
    body = {"code": "MINE", "name": "x"}
    first = await client.post(
        "/api/v1/branches", json=body, headers=auth(librarian) | {"Idempotency-Key": "k"}
    )
    second = await client.post(
        "/api/v1/branches", json=body, headers=auth(other) | {"Idempotency-Key": "k"}
    )
    assert first.status_code == 201
    assert second.status_code == 409  # ran for real: the code is taken
    assert second.json()["type"] == "/problems/branch-code-taken"


async def test_an_overlong_key_is_refused(client: httpx.AsyncClient, librarian: User) -> None:
    response = await client.post(
        "/api/v1/branches",
        json={"code": "LONG", "name": "x"},
        headers=auth(librarian) | {"Idempotency-Key": "k" * 300},
    )
    assert response.status_code == 422
