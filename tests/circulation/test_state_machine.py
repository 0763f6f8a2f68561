"""Random sequences of desk actions keep circulation's invariants, checked after every step.

The machine drives the service layer (checkout, checkin, renew, lost, hold, cancel, expire,
pay, waive, and the clock) on a small library: two branches, two titles, three copies, three
patrons. Each action runs in a savepoint, as a request runs in a transaction: a refusal
leaves nothing behind. Each example runs in an outer transaction that is rolled back.

Hypothesis drives plain functions, the services are coroutines: the machine runs in a worker
thread with an event loop (and an engine) of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar

from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from factories import (
    STAFF,
    make_bib,
    make_branch,
    make_category,
    make_item,
    make_patron,
    make_rule,
)
from shelfmark.circulation import fees, holds, loans
from shelfmark.circulation.models import Fee, Hold, Loan, Payment
from shelfmark.circulation.schemas import CheckinCreate, CheckoutCreate, HoldCreate, Override
from shelfmark.db import create_engine
from shelfmark.errors import ShelfmarkError
from shelfmark.settings import Settings

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
OVERRIDE = Override(reason="Desk decision")
MACHINE_SETTINGS = hypothesis_settings(
    max_examples=15,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

copies = st.integers(min_value=0, max_value=2)
readers = st.integers(min_value=0, max_value=2)
branches = st.integers(min_value=0, max_value=1)


class CirculationMachine(RuleBasedStateMachine):
    runner: ClassVar[asyncio.Runner]
    engine: ClassVar[AsyncEngine]

    def __init__(self) -> None:
        super().__init__()
        self.now = START
        self.fulfilled: dict[int, int] = {}  # hold id -> the loan that fulfilled it
        self.connection: AsyncConnection = self.run(self.engine.connect())
        self.run(self.connection.begin())
        self.session = AsyncSession(
            bind=self.connection, expire_on_commit=False, autoflush=False,
            join_transaction_mode="create_savepoint",
        )  # fmt: skip
        self.run(self._library())

    def run(self, awaitable: Awaitable[Any]) -> Any:
        async def wrapped() -> Any:
            return await awaitable

        return self.runner.run(wrapped())

    async def _library(self) -> None:
        session = self.session
        self.branches = [await make_branch(session) for _ in range(2)]
        category = await make_category(session, fee_block_threshold="3.00")
        for branch in self.branches:
            await make_rule(
                session, branch=branch, loan_period=7, renewals_allowed=1, max_loans=2,
                max_holds=2, fine_per_day="0.50", fine_cap="4.00", hold_pickup_days=2,
            )  # fmt: skip
        self.bibs = [await make_bib(session) for _ in range(2)]
        self.items = [
            await make_item(session, bib=self.bibs[0], branch=self.branches[0], price="7.00"),
            await make_item(session, bib=self.bibs[0], branch=self.branches[1], price="7.00"),
            await make_item(session, bib=self.bibs[1], branch=self.branches[0], price="9.00"),
        ]
        self.patrons = [
            await make_patron(session, category=category, branch=self.branches[i % 2])
            for i in range(3)
        ]
        await session.flush()

    def teardown(self) -> None:
        async def close() -> None:
            await self.session.close()
            await self.connection.rollback()
            await self.connection.close()

        self.run(close())

    def attempt(self, action: Callable[[], Awaitable[object]]) -> None:
        """One request: committed if it succeeds, rolled back to nothing if refused."""

        async def step() -> None:
            try:
                async with self.session.begin_nested():
                    await action()
            except ShelfmarkError:
                pass

        self.run(step())

    # --- the clock ----------------------------------------------------------------------

    @rule(hours=st.integers(min_value=1, max_value=24 * 9))
    def time_passes(self, hours: int) -> None:
        """The clock moves on, and the scheduler expires uncollected holds."""
        self.now += timedelta(hours=hours)
        self.attempt(lambda: holds.expire_holds(self.session, now=self.now))

    # --- desk actions -------------------------------------------------------------------

    @rule(copy=copies, reader=readers, branch=branches, override=st.booleans())
    def check_out(self, copy: int, reader: int, branch: int, override: bool) -> None:
        data = CheckoutCreate(
            item_barcode=self.items[copy].barcode, patron_card=self.patrons[reader].card_number,
            branch=self.branches[branch].code, override=OVERRIDE if override else None,
        )  # fmt: skip
        self.attempt(lambda: loans.check_out(self.session, actor=STAFF, data=data, now=self.now))

    @rule(copy=copies, branch=branches)
    def check_in(self, copy: int, branch: int) -> None:
        data = CheckinCreate(item_barcode=self.items[copy].barcode,
                             branch=self.branches[branch].code)  # fmt: skip
        self.attempt(lambda: loans.check_in(self.session, actor=STAFF, data=data, now=self.now))

    @rule(copy=copies)
    def transit_arrives(self, copy: int) -> None:
        """A copy in transit reaches where it was sent: its hold's pickup branch, or home."""
        item = self.items[copy]
        destination = self.run(
            self.session.scalar(
                select(Hold.pickup_branch_id).where(
                    Hold.item_id == item.id, Hold.status == "in_transit"
                )
            )
        )
        branch_id = destination or item.branch_id
        code = next(b.code for b in self.branches if b.id == branch_id)
        data = CheckinCreate(item_barcode=item.barcode, branch=code)
        self.attempt(lambda: loans.check_in(self.session, actor=STAFF, data=data, now=self.now))

    @rule(copy=copies, override=st.booleans())
    def renew(self, copy: int, override: bool) -> None:
        loan_id = self.open_loan_id(copy)
        if loan_id is not None:
            self.attempt(
                lambda: loans.renew(self.session, actor=STAFF, loan_id=loan_id,
                                    override=OVERRIDE if override else None, now=self.now)
            )  # fmt: skip

    @rule(copy=copies)
    def declare_lost(self, copy: int) -> None:
        loan_id = self.open_loan_id(copy)
        if loan_id is not None:
            self.attempt(
                lambda: loans.declare_lost(self.session, actor=STAFF, loan_id=loan_id,
                                           now=self.now)
            )  # fmt: skip

    @rule(title=st.integers(0, 1), copy=st.none() | copies, reader=readers, pickup=branches)
    def place_hold(self, title: int, copy: int | None, reader: int, pickup: int) -> None:
        target = {"item_id": self.items[copy].id} if copy is not None else {
            "bib_id": self.bibs[title].id
        }  # fmt: skip
        data = HoldCreate.model_validate(
            target | {"patron_card": self.patrons[reader].card_number,
                      "pickup_branch": self.branches[pickup].code}
        )  # fmt: skip
        self.attempt(lambda: holds.place_hold(self.session, actor=STAFF, data=data, now=self.now))

    @rule(pick=st.integers(min_value=0, max_value=10))
    def cancel_hold(self, pick: int) -> None:
        active = self.run(self.ids(Hold, Hold.status.in_(("waiting", "in_transit", "ready"))))
        if active:
            hold_id = active[pick % len(active)]
            self.attempt(
                lambda: holds.cancel_hold(self.session, actor=STAFF, hold_id=hold_id, now=self.now)
            )

    @rule(pick=st.integers(0, 10), cents=st.integers(min_value=1, max_value=800))
    def pay(self, pick: int, cents: int) -> None:
        open_fees = self.run(self.ids(Fee, Fee.status == "open"))
        if open_fees:
            fee_id = open_fees[pick % len(open_fees)]
            amount = Decimal(cents) / 100
            self.attempt(
                lambda: fees.pay(self.session, actor=STAFF, fee_id=fee_id, amount=amount,
                                 method="cash", note=None, now=self.now)
            )  # fmt: skip

    @rule(pick=st.integers(0, 10))
    def waive(self, pick: int) -> None:
        open_fees = self.run(self.ids(Fee, Fee.status == "open"))
        if open_fees:
            fee_id = open_fees[pick % len(open_fees)]
            self.attempt(
                lambda: fees.waive(self.session, actor=STAFF, fee_id=fee_id, reason="Kind",
                                   now=self.now)
            )  # fmt: skip

    # --- helpers ------------------------------------------------------------------------

    def open_loan_id(self, copy: int) -> int | None:
        query = select(Loan.id).where(
            Loan.item_id == self.items[copy].id, Loan.returned_at.is_(None)
        )
        return self.run(self.session.scalar(query))  # type: ignore[no-any-return]

    async def ids(self, model: Any, *where: Any) -> list[int]:
        patron_ids = [p.id for p in self.patrons]
        query = select(model.id).where(model.patron_id.in_(patron_ids), *where)
        return list((await self.session.scalars(query.order_by(model.id))).all())

    # --- invariants ---------------------------------------------------------------------

    @invariant()
    def copies_agree_with_their_loans_and_holds(self) -> None:
        self.run(self._check_copies())

    async def _check_copies(self) -> None:
        for item in self.items:
            status = await self.session.scalar(
                select(type(item).status).where(type(item).id == item.id)
            )
            open_loans = (
                await self.session.scalars(
                    select(Loan).where(Loan.item_id == item.id, Loan.returned_at.is_(None))
                )
            ).all()
            trapped = (
                await self.session.scalars(
                    select(Hold.status).where(
                        Hold.item_id == item.id, Hold.status.in_(("in_transit", "ready"))
                    )
                )
            ).all()
            assert len(open_loans) <= 1
            assert len(trapped) <= 1
            if open_loans:
                assert not trapped, f"{item.barcode} on loan and trapped for a hold"
                expected = "lost" if open_loans[0].lost_at else "on_loan"
                assert status == expected
            else:
                assert status != "on_loan"
            assert (status == "on_hold_shelf") == (trapped == ["ready"])
            if trapped == ["in_transit"]:
                assert status == "in_transit"
            if status == "available":
                assert not trapped

    @invariant()
    def a_hold_is_fulfilled_once(self) -> None:
        rows = self.run(self._fulfilled())
        for hold_id, loan_id in self.fulfilled.items():
            assert rows.get(hold_id) == loan_id, f"hold {hold_id} changed after fulfilment"
        assert len(set(rows.values())) == len(rows)
        self.fulfilled = rows

    async def _fulfilled(self) -> dict[int, int]:
        patron_ids = [p.id for p in self.patrons]
        query = select(Hold.id, Hold.loan_id, Hold.status).where(
            Hold.patron_id.in_(patron_ids), Hold.loan_id.is_not(None)
        )
        rows = (await self.session.execute(query)).all()
        assert all(row.status == "fulfilled" for row in rows)
        return {row.id: row.loan_id for row in rows}

    @invariant()
    def balance_is_fees_less_payments_and_waivers(self) -> None:
        self.run(self._check_money())

    async def _check_money(self) -> None:
        for patron in self.patrons:
            balance, _ = await fees.balance_of(self.session, patron.id)
            charged, waived = (
                await self.session.execute(
                    select(
                        func.coalesce(func.sum(Fee.amount), 0),
                        func.coalesce(func.sum(Fee.waived), 0),
                    ).where(Fee.patron_id == patron.id)
                )
            ).one()
            paid = await self.session.scalar(
                select(func.coalesce(func.sum(Payment.amount), 0))
                .join(Fee, Fee.id == Payment.fee_id)
                .where(Fee.patron_id == patron.id)
            )
            expected = fees.money(Decimal(charged) - Decimal(paid or 0) - Decimal(waived))
            assert balance == expected, (balance, charged, paid, waived)
            assert balance >= 0


def _run_machine(test_settings: Settings) -> None:
    with asyncio.Runner() as runner:
        CirculationMachine.runner = runner
        CirculationMachine.engine = create_engine(test_settings)
        try:
            run_state_machine_as_test(CirculationMachine, settings=MACHINE_SETTINGS)
        finally:
            runner.run(CirculationMachine.engine.dispose())


async def test_random_desk_sessions_keep_the_invariants(
    settings: Settings, engine: AsyncEngine
) -> None:
    """`engine` migrates the database; the machine makes an engine of its own."""
    await asyncio.to_thread(_run_machine, settings)
