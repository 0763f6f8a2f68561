"""Anonymisation of returned loans, and the reading history of the patrons who keep one."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from circulation.conftest import NOW, Desk
from factories import (
    STAFF,
    auth,
    make_item,
    make_job,
    make_loan,
    make_patron,
    make_patron_user,
    make_user,
)
from shelfmark.audit.models import AuditEvent
from shelfmark.auth.roles import Role
from shelfmark.auth.service import actor_of
from shelfmark.catalog.models import Item
from shelfmark.circulation import history, loans
from shelfmark.circulation.errors import LoanAnonymised, LoanClosed
from shelfmark.circulation.models import Fee, Loan
from shelfmark.circulation.schemas import CheckinCreate
from shelfmark.db import utcnow
from shelfmark.errors import Forbidden
from shelfmark.jobs.models import Job
from shelfmark.jobs.runner import execute_job
from shelfmark.models import Base
from shelfmark.patrons.models import Patron
from shelfmark.settings import Settings

RETURNED = NOW + timedelta(days=20)  # 6 days late: a 2.50 fine
LATER = RETURNED + timedelta(days=31)  # past a 30-day retention


async def returned_loan(session: AsyncSession, *, item: Item, patron: Patron) -> Loan:
    loan = await make_loan(session, item=item, patron=patron, now=NOW)
    data = CheckinCreate(item_barcode=item.barcode)
    await loans.check_in(session, actor=STAFF, data=data, now=RETURNED)
    return loan


async def patron_of(session: AsyncSession, loan: Loan) -> int | None:
    query = select(Loan.patron_id).where(Loan.id == loan.id)
    return await session.scalar(query.execution_options(populate_existing=True))


async def forget(session: AsyncSession) -> int:
    return await history.anonymise_loans(session, before=LATER - timedelta(days=30), now=LATER)


class TestAnonymiseLoans:
    async def test_old_returned_loans_forget_their_patron_and_fees_do_not(
        self, session: AsyncSession, desk: Desk
    ) -> None:
        old = await returned_loan(session, item=desk.item, patron=desk.patron)
        recent_item = await make_item(session, branch=desk.branch)
        recent = await make_loan(session, item=recent_item, patron=desk.patron, now=LATER)
        await loans.check_in(session, actor=STAFF, now=LATER,
                             data=CheckinCreate(item_barcode=recent_item.barcode))  # fmt: skip
        still_out = await make_loan(
            session, item=await make_item(session, branch=desk.branch), patron=desk.patron,
            now=NOW,
        )  # fmt: skip

        assert await forget(session) == 1

        assert await patron_of(session, old) is None
        assert await patron_of(session, recent) == desk.patron.id
        assert await patron_of(session, still_out) == desk.patron.id
        fee = await session.scalar(select(Fee).where(Fee.loan_id == old.id))
        assert fee is not None
        assert (fee.patron_id, fee.amount) == (desk.patron.id, Decimal("2.50"))
        await session.flush()
        audit = await session.scalar(
            select(AuditEvent).where(AuditEvent.action == "loan.anonymise")
        )
        assert audit is not None
        assert audit.changes["loans"] == 1
        assert await forget(session) == 0  # nothing left to do

    async def test_a_patron_who_keeps_a_reading_history_keeps_it_until_they_stop(
        self, session: AsyncSession, desk: Desk
    ) -> None:
        desk.patron.keep_reading_history = True
        await session.flush()
        kept = await returned_loan(session, item=desk.item, patron=desk.patron)
        other = await make_patron(session, category=desk.category, branch=desk.branch)
        theirs = await returned_loan(
            session, item=await make_item(session, branch=desk.branch), patron=other
        )
        await session.flush()

        assert await forget(session) == 1
        assert (await patron_of(session, kept), await patron_of(session, theirs)) == (
            desk.patron.id, None,
        )  # fmt: skip

        desk.patron.keep_reading_history = False
        await session.flush()
        assert await forget(session) == 1
        assert await patron_of(session, kept) is None

    async def test_in_batches(self, session: AsyncSession, desk: Desk) -> None:
        for _ in range(3):
            await returned_loan(
                session, item=await make_item(session, branch=desk.branch), patron=desk.patron
            )
        before = LATER - timedelta(days=30)
        assert await history.count_forgettable(session, before=before) == 3
        counts = [
            await history.anonymise_loans(session, before=before, now=LATER, limit=2)
            for _ in range(3)
        ]
        assert counts == [2, 1, 0]

    async def test_the_database_refuses_an_open_loan_without_a_patron(
        self, session: AsyncSession, desk: Desk
    ) -> None:
        loan = await make_loan(session, item=desk.item, patron=desk.patron, now=NOW)
        with pytest.raises(IntegrityError):
            async with session.begin_nested():
                await session.execute(update(Loan).where(Loan.id == loan.id).values(patron_id=None))


class TestAnonymisedLoans:
    """A loan that names no patron still shows wherever loans show."""

    async def test_staff_see_it_without_a_patron_and_patrons_do_not_see_it(
        self, client: httpx.AsyncClient, session: AsyncSession, desk: Desk
    ) -> None:
        loan = await returned_loan(session, item=desk.item, patron=desk.patron)
        await forget(session)
        librarian = await make_user(session, Role.LIBRARIAN)
        reader = await make_patron_user(session, desk.patron)
        await session.commit()

        listed = await client.get(
            "/api/v1/loans", params={"open": "false"}, headers=auth(librarian)
        )
        assert listed.status_code == 200, listed.text
        [item] = [row for row in listed.json()["items"] if row["id"] == loan.id]
        assert (item["patron_id"], item["patron_card"], item["item_id"]) == (
            None, None, desk.item.id,
        )  # fmt: skip
        one = await client.get(f"/api/v1/loans/{loan.id}", headers=auth(librarian))
        assert (one.status_code, one.json()["patron_card"]) == (200, None)

        own = await client.get("/api/v1/loans", params={"open": "false"}, headers=auth(reader))
        assert own.json()["items"] == []
        theirs = await client.get(f"/api/v1/loans/{loan.id}", headers=auth(reader))
        assert theirs.status_code == 403
        assert theirs.headers["content-type"] == "application/problem+json"

    async def test_renewing_it_is_refused_as_closed(
        self, session: AsyncSession, desk: Desk
    ) -> None:
        loan = await returned_loan(session, item=desk.item, patron=desk.patron)
        await forget(session)
        with pytest.raises(LoanClosed):
            await loans.renew(session, actor=STAFF, loan_id=loan.id, override=None, now=LATER)
        with pytest.raises(LoanAnonymised):
            _ = (await loans.require_loan(session, loan.id)).borrower


class TestReadingHistory:
    async def test_only_while_kept_newest_first_in_pages(
        self, session: AsyncSession, desk: Desk
    ) -> None:
        user = await make_patron_user(session, desk.patron)
        actor = actor_of(user)
        lent = [await returned_loan(session, item=await make_item(session, branch=desk.branch),
                                    patron=desk.patron) for _ in range(3)]  # fmt: skip
        off = await history.reading_history(session, actor=actor, limit=2, before_id=None)
        assert (off.kept, list(off.loans)) == (False, [])

        desk.patron.keep_reading_history = True
        await session.flush()
        first = await history.reading_history(session, actor=actor, limit=2, before_id=None)
        assert first.kept
        assert [loan.id for loan in first.loans] == [lent[2].id, lent[1].id, lent[0].id]
        rest = await history.reading_history(session, actor=actor, limit=2, before_id=lent[1].id)
        assert [loan.id for loan in rest.loans] == [lent[0].id]

    async def test_staff_have_none(self, session: AsyncSession) -> None:
        with pytest.raises(Forbidden):
            await history.reading_history(session, actor=STAFF, limit=5, before_id=None)


class TestAnonymiseJob:
    async def test_a_run_uses_the_retention_setting(
        self, sessionmaker: async_sessionmaker[AsyncSession], settings: Settings, desk: Desk
    ) -> None:
        now = utcnow()
        async with sessionmaker() as session:
            items = [await make_item(session, branch=desk.branch) for _ in range(2)]
            for item, days_ago in zip(items, (12, 8), strict=True):
                await make_loan(session, item=item, patron=desk.patron,
                                now=now - timedelta(days=days_ago + 1))  # fmt: skip
                await loans.check_in(session, actor=STAFF, now=now - timedelta(days=days_ago),
                                     data=CheckinCreate(item_barcode=item.barcode))  # fmt: skip
            job = await make_job(session, kind="anonymise", params={})
            await session.commit()

        ten_days = settings.model_copy(update={"loan_retention_days": 10})
        assert await execute_job(sessionmaker, job.id, settings=ten_days, last_try=False) == (
            "succeeded"
        )

        async with sessionmaker() as session:
            done = await session.get(Job, job.id, populate_existing=True)
            assert done is not None
            assert done.result is not None
            assert (done.result["anonymised"], done.result["retention_days"]) == (1, 10)
            assert (done.progress_done, done.progress_total) == (1, 1)
            named = await session.scalars(
                select(Loan.patron_id).where(Loan.item_id.in_([i.id for i in items]))
                .order_by(Loan.returned_at)
            )  # fmt: skip
            assert list(named) == [None, desk.patron.id]


# --- migration 0007 ---------------------------------------------------------------------


def _differences(connection: Connection) -> list[Any]:
    tables = {"loans", "patrons"}

    def include_name(name: str | None, type_: str, _parent: Any) -> bool:
        return type_ != "table" or name in tables

    def include_object(obj: Any, _name: str | None, type_: str, *_: Any) -> bool:
        table = obj if type_ == "table" else getattr(obj, "table", None)
        return table is None or table.name in tables

    options = {"compare_type": True, "include_name": include_name,
               "include_object": include_object}  # fmt: skip
    context = MigrationContext.configure(connection, opts=options)
    diffs = compare_metadata(context, Base.metadata)
    sqlite = connection.dialect.name == "sqlite"
    # SQLite does not reflect the names of foreign keys declared with a column.
    unnamed_fk = {"add_fk", "remove_fk"}
    return [d for d in diffs if not (sqlite and not isinstance(d, list) and d[0] in unnamed_fk)]


async def test_the_loans_and_patrons_tables_match_the_models(session: AsyncSession) -> None:
    connection = await session.connection()
    assert await connection.run_sync(_differences) == []


class TestTheChoiceOverTheApi:
    async def test_a_patron_turns_it_on_for_themselves_only(
        self, client: httpx.AsyncClient, session: AsyncSession, desk: Desk
    ) -> None:
        reader = await make_patron_user(session, desk.patron)
        other = await make_patron(session, category=desk.category, branch=desk.branch)
        await session.commit()
        me = await client.get("/api/v1/patrons/me", headers=auth(reader))
        assert me.json()["keep_reading_history"] is False

        url = f"/api/v1/patrons/{desk.patron.id}"
        on = await client.patch(url, json={"keep_reading_history": True}, headers=auth(reader))
        assert (on.status_code, on.json()["keep_reading_history"]) == (200, True)
        theirs = await client.patch(f"/api/v1/patrons/{other.id}", headers=auth(reader),
                                    json={"keep_reading_history": True})  # fmt: skip
        assert (theirs.status_code, theirs.headers["content-type"]) == (
            403, "application/problem+json",
        )  # fmt: skip
        wrong = await client.patch(url, json={"keep_reading_history": "often"},
                                   headers=auth(reader))  # fmt: skip
        assert (wrong.status_code, wrong.json()["errors"][0]["field"]) == (
            422, "keep_reading_history",
        )  # fmt: skip
        await session.refresh(other)
        assert other.keep_reading_history is False
