"""Test data, made through the services (so the rules hold for test data too)."""

from __future__ import annotations

import itertools
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from shelfmark.auth import service as auth_service
from shelfmark.auth.models import User
from shelfmark.auth.roles import SYSTEM, Actor, Role
from shelfmark.catalog import service as catalog_service
from shelfmark.catalog.models import Bib, Branch, Item
from shelfmark.catalog.schemas import BibCreate, BranchCreate, ItemCreate
from shelfmark.db import utcnow

SECRET = "test-secret-key-of-at-least-32-bytes!"
PASSWORD = "correct horse battery staple"
_sequence = itertools.count(1)


def unique(prefix: str) -> str:
    return f"{prefix}{next(_sequence):06d}"


async def make_user(session: AsyncSession, role: Role = Role.LIBRARIAN, **kwargs: Any) -> User:
    kwargs.setdefault("username", unique(role.value))
    kwargs.setdefault("password", PASSWORD)
    return await auth_service.create_user(session, actor=SYSTEM, role=role, **kwargs)


def token_for(user: User) -> str:
    return auth_service.issue_token(user, secret=SECRET, now=utcnow(), minutes=60)


def auth(user: User) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(user)}"}


async def make_branch(session: AsyncSession, **kwargs: Any) -> Branch:
    kwargs.setdefault("code", unique("BR"))
    kwargs.setdefault("name", f"Branch {kwargs['code']}")
    return await catalog_service.create_branch(session, actor=SYSTEM, data=BranchCreate(**kwargs))


async def make_bib(session: AsyncSession, **kwargs: Any) -> Bib:
    kwargs.setdefault("title", unique("Title "))
    return await catalog_service.create_bib(session, actor=SYSTEM, data=BibCreate(**kwargs))


async def make_item(
    session: AsyncSession, *, bib: Bib | None = None, branch: Branch | None = None, **kwargs: Any
) -> Item:
    bib = bib or await make_bib(session)
    branch = branch or await make_branch(session)
    kwargs.setdefault("barcode", unique("3900"))
    data = ItemCreate(bib_id=bib.id, branch=branch.code, **kwargs)
    return await catalog_service.create_item(session, actor=SYSTEM, data=data)


STAFF = Actor(user_id=None, username="test-librarian", role=Role.LIBRARIAN)
