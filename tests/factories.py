"""Test data, made through the services (so the rules hold for test data too)."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from shelfmark.auth import service as auth_service
from shelfmark.auth.models import User
from shelfmark.auth.roles import SYSTEM, Actor, Role
from shelfmark.catalog import service as catalog_service
from shelfmark.catalog.models import Bib, Branch, Item
from shelfmark.catalog.schemas import BibCreate, BranchCreate, ItemCreate
from shelfmark.circulation import loans as loans_service
from shelfmark.circulation import rules as rules_service
from shelfmark.circulation.models import CirculationRule, Loan
from shelfmark.circulation.schemas import CheckoutCreate, RuleCreate
from shelfmark.db import utcnow
from shelfmark.jobs import service as jobs_service
from shelfmark.jobs.models import Job
from shelfmark.patrons import service as patrons_service
from shelfmark.patrons.models import Patron, PatronCategory
from shelfmark.patrons.schemas import CategoryCreate, PatronCreate

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


# --- patrons and circulation ------------------------------------------------------------

LONG_AGO = datetime(2020, 1, 1, tzinfo=UTC)


async def make_category(session: AsyncSession, **kwargs: Any) -> PatronCategory:
    kwargs.setdefault("code", unique("CAT"))
    kwargs.setdefault("name", f"Category {kwargs['code']}")
    return await patrons_service.create_category(
        session, actor=SYSTEM, data=CategoryCreate(**kwargs)
    )


async def make_patron(
    session: AsyncSession,
    *,
    category: PatronCategory | None = None,
    branch: Branch | None = None,
    **kwargs: Any,
) -> Patron:
    category = category or await make_category(session)
    branch = branch or await make_branch(session)
    kwargs.setdefault("card_number", unique("2100"))
    kwargs.setdefault("name", f"Patron {kwargs['card_number']}")
    kwargs.setdefault("expires_on", date(2099, 12, 31))
    data = PatronCreate(category=category.code, home_branch=branch.code, **kwargs)
    return await patrons_service.create_patron(session, actor=SYSTEM, data=data)


async def make_patron_user(session: AsyncSession, patron: Patron) -> User:
    return await make_user(session, Role.PATRON, patron_id=patron.id)


async def make_rule(
    session: AsyncSession,
    *,
    branch: Branch | None = None,
    category: PatronCategory | None = None,
    now: datetime = LONG_AGO,
    **kwargs: Any,
) -> CirculationRule:
    kwargs.setdefault("loan_period", 14)
    data = RuleCreate(
        branch=branch.code if branch else None,
        category=category.code if category else None,
        **kwargs,
    )
    return await rules_service.create_rule(session, actor=SYSTEM, data=data, now=now)


async def make_loan(
    session: AsyncSession, *, item: Item, patron: Patron, now: datetime, **kwargs: Any
) -> Loan:
    data = CheckoutCreate(item_barcode=item.barcode, patron_card=patron.card_number, **kwargs)
    return await loans_service.check_out(session, actor=SYSTEM, data=data, now=now)


# --- jobs -------------------------------------------------------------------------------


async def make_job(
    session: AsyncSession,
    *,
    status: str = "queued",
    kind: str = "marc-import",
    params: dict[str, Any] | None = None,
    actor: Actor = STAFF,
    now: datetime | None = None,
) -> Job:
    """A job in `status`, moved there by the service's own steps (nothing is sent: the test
    session runs no after-commit work)."""
    now = now or utcnow()
    params = {"file": "1.mrc"} if params is None else params
    job = await jobs_service.create_job(session, actor=actor, kind=kind, params=params, now=now)
    if status == "queued":
        return job
    started = await jobs_service.start_run(session, job_id=job.id, now=now)
    assert started is not None
    if status == "succeeded":
        await jobs_service.finish_run(
            session, job_id=job.id, attempt=started.attempts, result={}, done=0, now=now
        )
    elif status == "failed":
        await jobs_service.fail_run(
            session, job_id=job.id, attempt=started.attempts, error="it broke", now=now
        )
    await session.refresh(job)
    return job
