"""Loans: check out, check in, renew, declare lost.

Check-then-act on a copy is race-proof: the copy's row is locked before anything is checked
(see `locking`), and the partial unique index "one open loan per item" is the last word —
its violation becomes `item-not-available`, never a 500. A refused action writes nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Select,
    Table,
    and_,
    bindparam,
    exists,
    func,
    literal,
    null,
    select,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import joinedload
from sqlalchemy.orm.interfaces import ORMOption

from shelfmark import events, hotpath
from shelfmark.audit import service as audit
from shelfmark.auth.roles import Actor, require_staff
from shelfmark.catalog import service as catalog_service
from shelfmark.catalog.models import Branch, Item
from shelfmark.circulation import fees, holds, locking, rules
from shelfmark.circulation.calendar import (
    Calendar,
    calendar_for,
    calendar_of,
    closed_days_column,
    due_at_for,
)
from shelfmark.circulation.errors import (
    HoldsWaiting,
    ItemNotAvailable,
    ItemOnHoldForAnother,
    ItemOnLoan,
    LoanClosed,
    LoanLimitReached,
    LoanLost,
    LoanNotFound,
    Refusal,
    RenewalsExhausted,
)
from shelfmark.circulation.holds import Routing
from shelfmark.circulation.models import ACTIVE_HOLD_STATUSES, CirculationRule, Fee, Hold, Loan
from shelfmark.circulation.schemas import CheckinCreate, CheckoutCreate, Override
from shelfmark.circulation.standing import (
    Standing,
    check_override_allowed,
    enforce,
    patron_refusals,
    standing_columns,
    standing_of,
)
from shelfmark.db import constraint_of
from shelfmark.errors import Forbidden
from shelfmark.patrons import service as patrons_service
from shelfmark.patrons.models import Patron, PatronCategory

LOAN_LOAD: tuple[ORMOption, ...] = (
    joinedload(Loan.item, innerjoin=True),
    joinedload(Loan.patron),  # an outer join: an anonymised loan names no patron
    joinedload(Loan.branch, innerjoin=True),
)
# Built once: every checkin runs it, on the hot path (see `hotpath`).
_LOAN = hotpath.Loader(Loan)
_BORROWER = hotpath.Loader(Patron, prefix="borrower__")
_BORROWER_CATEGORY = hotpath.Loader(PatronCategory, prefix="category__")
# One row: whether holds wait for the copy, and its open loan (NULLs if none) with the
# borrower and their category; read after the copy is locked (see `locking`).
_ONE = select(literal(1).label("one")).subquery("one")
_CHECKIN_COLUMNS = (
    holds.ANY_WAITING.label("holds_waiting"),
    *_LOAN.columns, *_BORROWER.columns, *_BORROWER_CATEGORY.columns,
)  # fmt: skip
_CHECKIN_FACTS: Select[Any] = (
    select(*_CHECKIN_COLUMNS)
    .select_from(_ONE)
    .outerjoin(Loan, and_(Loan.item_id == bindparam("item_id"), Loan.returned_at.is_(None)))
    .outerjoin(Patron, Loan.patron_id == Patron.id)
    .outerjoin(PatronCategory, Patron.category_id == PatronCategory.id)
)
_LOANS = cast(Table, Loan.__table__)
# The partial unique index "one open loan per copy", as `constraint_of` names it: SQLite
# reports a unique index by its columns, from which only the plain name can be rebuilt.
_ONE_OPEN_LOAN = frozenset({"uq_loans_item_id_open", "uq_loans_item_id"})
UNAVAILABLE = frozenset({"on_loan", "lost", "missing", "withdrawn"})


def _event(name: str, loan: Loan, *, branch: str, at: datetime, **extra: object) -> events.Event:
    payload = {
        "loan_id": loan.id, "item_id": loan.item_id, "item_barcode": loan.item.barcode,
        "patron_id": loan.patron_id, "due_at": loan.due_at.isoformat(), "branch": branch,
    }  # fmt: skip
    return events.Event(name, at=at, payload=payload | extra)


async def _checkin_facts(session: AsyncSession, item: Item) -> tuple[Loan | None, bool]:
    """The copy's open loan, with the copy, its patron and their category (an open loan
    always names its patron), and whether any hold waits that the copy may serve."""
    params = {"item_id": item.id, "bib_id": item.bib_id}
    (row,) = await hotpath.rows(session, _CHECKIN_FACTS, params)
    any_waiting = bool(row["holds_waiting"])
    if row["id"] is None:
        return None, any_waiting
    category = _BORROWER_CATEGORY.instance(session, row)
    patron = _BORROWER.instance(session, row, category=category)
    return _LOAN.instance(session, row, patron=patron, item=item), any_waiting


async def _loan_rule(
    session: AsyncSession, *, branch_id: int, patron: Patron, item: Item
) -> CirculationRule:
    return await rules.rule_for(
        session, branch_id=branch_id, category_id=patron.category_id, item_type=item.item_type
    )


# --- check out --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _CheckoutFacts:
    """What a checkout decides on besides the locked rows, read in one statement once the
    copy and the patron are locked (so that it sees every commit that took those locks
    before: a loan of the copy, the patron's loans for the limit, their holds): the rule,
    the lending branch's calendar, and the patron's and the copy's state."""

    rule: CirculationRule
    calendar: Calendar
    standing: Standing
    on_loan: bool  # the copy has an open loan
    loans: int | None  # the patron's open loans that count against the rule's limit, if any
    has_hold: bool  # the patron has an active hold on the copy's title


@functools.cache
def _checkout_facts_query(*, dialect: str, with_balance: bool, item_type: bool) -> Select[Any]:
    """Built once per shape: the database's (for the calendar), whether the balance is summed
    (the patron's category has a fee threshold), whether the copy has an item type. A row
    per matching rule; the other columns are scalar subqueries, the same on every row (and
    run once)."""
    blocked, balance = standing_columns(with_balance=with_balance)
    open_loan = Loan.returned_at.is_(None)
    on_loan = exists().where(Loan.item_id == bindparam("item_id"), open_loan)
    # Every open loan of the patron, and those of the copy's item type: the count the limit
    # is held to is the second when the winning rule names the item type (it is the copy's).
    loans = select(func.count()).where(Loan.patron_id == bindparam("patron_id"), open_loan)
    of_type: ColumnElement[Any] = null()
    if item_type:
        of_type = loans.where(
            exists().where(Item.id == Loan.item_id, Item.item_type == bindparam("item_type"))
        ).scalar_subquery()
    has_hold = exists().where(
        Hold.patron_id == bindparam("patron_id"),
        Hold.bib_id == bindparam("bib_id"),
        Hold.status.in_([literal(status) for status in ACTIVE_HOLD_STATUSES]),  # see hotpath
    )
    matching = rules.matching_rules(branch=True, category=True, item_type=item_type)
    return matching.add_columns(
        blocked.label("blocked"), balance.label("balance"), on_loan.label("on_loan"),
        loans.scalar_subquery().label("loans"), of_type.label("loans_of_type"),
        has_hold.label("has_hold"), closed_days_column(dialect).label("closed_days"),
    )  # fmt: skip


async def _checkout_facts(
    session: AsyncSession, *, item: Item, patron: Patron, branch: Branch
) -> _CheckoutFacts:
    query = _checkout_facts_query(
        dialect=hotpath.dialect_name(session),
        with_balance=patron.category.fee_block_threshold is not None,
        item_type=item.item_type is not None,
    )
    params = {
        "patron_id": patron.id, "item_id": item.id, "bib_id": item.bib_id,
        "item_type": item.item_type, "branch_id": branch.id, "category_id": patron.category_id,
    }  # fmt: skip
    found = await hotpath.rows(session, query, params)
    rule, row = rules.best_of(session, found), found[0]
    loans = None
    if rule.max_loans is not None:
        loans = int(row["loans_of_type"] if rule.item_type is not None else row["loans"])
    return _CheckoutFacts(
        rule=rule, calendar=calendar_of(branch, row["closed_days"]), standing=standing_of(row),
        on_loan=bool(row["on_loan"]), loans=loans, has_hold=bool(row["has_hold"]),
    )  # fmt: skip


async def _checkout_refusals(
    session: AsyncSession, *, item: Item, patron: Patron, trapped: Hold | None,
    rule: CirculationRule, facts: _CheckoutFacts, now: datetime,
) -> list[Refusal]:  # fmt: skip
    """In the order they are reported: the patron's standing, then the copy, then the limit."""
    refusals = await patron_refusals(
        session, patron=patron, today=now.date(), standing=facts.standing
    )
    if facts.on_loan:
        refusals.append(ItemOnLoan(f"Item {item.barcode} is on loan.", status=item.status))
    elif item.status in UNAVAILABLE:
        refusals.append(
            ItemNotAvailable(f"Item {item.barcode} is {item.status}.", status=item.status)
        )
    if trapped is not None and trapped.patron_id != patron.id:
        refusals.append(
            ItemOnHoldForAnother(
                f"Item {item.barcode} is {trapped.status.replace('_', ' ')} for another patron.",
                hold_id=trapped.id,
            )
        )
    if rule.max_loans is not None and facts.loans is not None and facts.loans >= rule.max_loans:
        refusals.append(
            LoanLimitReached(f"The patron has {facts.loans} loans; the limit is {rule.max_loans}.")
        )
    return refusals


async def check_out(
    session: AsyncSession, *, actor: Actor, data: CheckoutCreate, now: datetime
) -> Loan:
    """Lend a copy to a patron (staff). Refusals other than "on loan" may be overridden with
    a reason; a given `due_at` replaces the rule's. Lending the copy trapped for the
    patron's hold fulfils the hold; lending it over another patron's hold puts that hold
    back in the queue."""
    require_staff(actor)
    item, patron = await locking.lock_item_and_patron(
        session, barcode=data.item_barcode, card_number=data.patron_card
    )
    branch = item.branch
    if data.branch is not None:
        branch = await catalog_service.require_branch_by_code(session, data.branch)
    trapped = await holds.trapped_hold(session, item)
    facts = await _checkout_facts(session, item=item, patron=patron, branch=branch)
    rule = facts.rule
    refusals = await _checkout_refusals(
        session, item=item, patron=patron, trapped=trapped, rule=rule, facts=facts, now=now
    )
    overridden = enforce(refusals, override=data.override, actor=actor)
    due_at = data.due_at
    if due_at is None:
        due_at = due_at_for(
            start=now, period=rule.loan_period, unit=rule.period_unit, calendar=facts.calendar
        )
    if trapped is not None and trapped.patron_id != patron.id:
        await holds.requeue(session, hold=trapped, now=now)
    values: dict[str, Any] = {
        "item_id": item.id, "patron_id": patron.id, "branch_id": branch.id,
        "checked_out_at": now, "due_at": due_at, "renewals": 0, "returned_at": None,
        "lost_at": None,
    }  # fmt: skip
    lending = hotpath.inserting(_LOANS, values, keyed=True)
    # The loan, the copy and the audit event are written at once (on PostgreSQL in one
    # statement), not by the unit of work's flush, which would cost a checkout more CPU than
    # the rest of its statements; but a hold fulfilled names its loan: then the loan first.
    loan_first, hold = facts.has_hold, None
    if loan_first:
        (loan_id,) = await _lend(session, lending, item=item)
        loan = _loaded(session, values | {"id": loan_id}, item=item, patron=patron, branch=branch)
        hold = await holds.fulfil_on_checkout(
            session, item=item, patron_id=patron.id, loan=loan, now=now
        )
    changes = _checkout_changes(
        item=item, patron=patron, branch=branch, due_at=due_at, hold=hold,
        override=data.override, overridden=overridden,
    )  # fmt: skip
    written = await _lend(
        session,
        *([] if loan_first else [lending]),
        hotpath.updating(item, {"status": "on_loan", "last_seen_at": now}),
        audit.event_row(
            actor=actor, action="loan.checkout", object_type="loan",
            object_id=loan.id if loan_first else hotpath.KeyOf(lending), changes=changes,
            now=now,
        ),
        item=item,
    )  # fmt: skip
    if not loan_first:
        loan = _loaded(
            session, values | {"id": written[0]}, item=item, patron=patron, branch=branch
        )
    await session.flush()  # a hold fulfilled or requeued
    events.publish(session, _event("loan.created", loan, branch=branch.code, at=now))
    return loan


async def _lend(session: AsyncSession, *writes: hotpath.Write, item: Item) -> list[Any]:
    """`hotpath.write`, where the partial unique index has the last word on "one open loan
    per copy": a second loan is `ItemOnLoan`. No savepoint: a loan it refuses ends the
    request (and its transaction), there is nothing to go on with."""
    try:
        return await hotpath.write(session, *writes)
    except IntegrityError as exc:
        if constraint_of(exc) not in _ONE_OPEN_LOAN:
            raise
        raise ItemOnLoan(f"Item {item.barcode} is on loan.", status="on_loan") from exc


def _loaded(
    session: AsyncSession, values: dict[str, Any], *, item: Item, patron: Patron, branch: Branch
) -> Loan:
    """The new loan, written already, in the session as if loaded: nothing to flush."""
    return _LOAN.instance(session, values, item=item, patron=patron, branch=branch)


def _checkout_changes(
    *, item: Item, patron: Patron, branch: Branch, due_at: datetime, hold: Hold | None,
    override: Override | None, overridden: list[str],
) -> dict[str, object]:  # fmt: skip
    changes: dict[str, object] = {
        "item_barcode": item.barcode, "patron_card": patron.card_number, "due_at": due_at,
        "branch": branch.code,
    }  # fmt: skip
    if hold is not None:
        changes["fulfilled_hold_id"] = hold.id
    if overridden and override is not None:
        changes["override"] = {"reason": override.reason, "refusals": overridden}
    return changes


# --- check in ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Checkin:
    item: Item
    loan: Loan | None
    fee: Fee | None
    routing: Routing


async def _close_loan(
    session: AsyncSession, *, loan: Loan, item: Item, at_branch: Branch, now: datetime
) -> Fee | None:
    """Charge what the returned loan owes: the overdue fine, to the day it was declared
    lost if it was; a lost item coming back has its lost fee waived. `loan.patron` must be
    loaded with its category. (Its row is written with the copy's: `check_in`.)"""
    patron = loan.borrower
    branch = await catalog_service.require_branch(session, loan.branch_id)
    hotpath.relate(loan, branch=branch)
    until = min(now, loan.lost_at) if loan.lost_at is not None else now
    fee = None
    # Back by the due date, it owes nothing (`days_late` is 0): the rule and the calendar
    # are read only for a loan that may owe a fine.
    if until > loan.due_at:
        rule = await _loan_rule(session, branch_id=loan.branch_id, patron=patron, item=item)
        calendar = await calendar_for(session, loan.branch)
        fee = await fees.charge_overdue(
            session, loan=loan, rule=rule, calendar=calendar, until=until,
            branch=at_branch.code, now=now,
        )  # fmt: skip
    if loan.lost_at is not None:
        await fees.waive_lost_on_return(session, loan=loan, branch=at_branch.code, now=now)
    return fee


async def check_in(
    session: AsyncSession, *, actor: Actor, data: CheckinCreate, now: datetime
) -> Checkin:
    """Take a copy back at a desk (staff): close its loan if it has one, charge any fine,
    and say where it goes next. A copy that was not on loan is no error: it is recorded as
    seen, found if it was lost or missing, and routed like any other."""
    require_staff(actor)
    item = await locking.lock_item_by_barcode(session, data.item_barcode)
    at_branch = item.branch
    if data.branch is not None:
        at_branch = await catalog_service.require_branch_by_code(session, data.branch)
    loan, any_waiting = await _checkin_facts(session, item)
    fee = None
    if loan is not None:
        fee = await _close_loan(session, loan=loan, item=item, at_branch=at_branch, now=now)
    if item.status == "withdrawn":
        routing = Routing("reshelve")  # out of circulation: never trapped, status kept
        seen: dict[str, object] = {"last_seen_at": now}
    else:
        routing = await holds.route_on_checkin(
            session, item=item, at_branch=at_branch, now=now, any_waiting=any_waiting
        )
        seen = {"status": routing.status, "last_seen_at": now}
    event = audit.event_row(
        actor=actor, action="item.checkin", object_type="item", object_id=item.id,
        changes={
            "barcode": item.barcode, "branch": at_branch.code,
            "loan_id": loan.id if loan else None, "fee": fee.amount if fee else None,
            "next": routing.next, "hold_id": routing.hold.id if routing.hold else None,
        },
        now=now,
    )  # fmt: skip
    # The copy, the loan and the event: one statement on PostgreSQL (`hotpath.write`).
    closed = [hotpath.updating(loan, {"returned_at": now})] if loan is not None else []
    await hotpath.write(session, *closed, hotpath.updating(item, seen), event)
    await session.flush()  # a trapped hold, a fee
    if loan is not None:
        events.publish(session, _event("item.returned", loan, branch=at_branch.code, at=now))
    return Checkin(item=item, loan=loan, fee=fee, routing=routing)


# --- renew ------------------------------------------------------------------------------


async def _renew_refusals(
    session: AsyncSession, *, loan: Loan, item: Item, patron: Patron, rule: CirculationRule,
    now: datetime,
) -> list[Refusal]:  # fmt: skip
    refusals = await patron_refusals(session, patron=patron, today=now.date())
    if loan.renewals >= rule.renewals_allowed:
        refusals.append(
            RenewalsExhausted(
                f"The loan has been renewed {loan.renewals} of {rule.renewals_allowed} times."
            )
        )
    waiting = await session.scalar(
        select(
            exists().where(
                Hold.bib_id == item.bib_id, Hold.status == "waiting",
                Hold.patron_id != loan.patron_id,
                (Hold.level == "title") | (Hold.item_id == item.id),
            )
        )
    )  # fmt: skip
    if waiting:
        refusals.append(HoldsWaiting("Another patron is waiting for this title."))
    return refusals


async def renew(
    session: AsyncSession, *, actor: Actor, loan_id: int, override: Override | None,
    now: datetime,
) -> Loan:  # fmt: skip
    """Staff, or the patron for their own loan. The new due date counts from the old one or
    from today (the rule's `renew_from`; from today when the loan is already overdue) and is
    never earlier than the old one. Renewing an overdue loan charges the fine accrued."""
    check_override_allowed(actor, override)
    query = select(Loan.patron_id, Loan.item_id).where(Loan.id == loan_id)
    row = (await session.execute(query)).first()
    if row is None:
        raise LoanNotFound(f"There is no loan with id {loan_id}.")
    patrons_service.check_patron_access(actor, row.patron_id)
    item = await locking.lock_item(session, row.item_id)
    loan = await locking.lock_loan(session, loan_id)
    if loan.returned_at is not None:
        raise LoanClosed(f"Loan {loan.id} was returned on {loan.returned_at.date()}.")
    if loan.lost_at is not None:
        raise LoanLost(f"Item {item.barcode} was declared lost; it cannot be renewed.")
    patron = await patrons_service.require_patron_with_category(session, loan.borrower_id)
    loan.item, loan.patron = item, patron
    loan.branch = await catalog_service.require_branch(session, loan.branch_id)
    rule = await _loan_rule(session, branch_id=loan.branch_id, patron=patron, item=item)
    refusals = await _renew_refusals(
        session, loan=loan, item=item, patron=patron, rule=rule, now=now
    )
    overridden = enforce(refusals, override=override, actor=actor)
    calendar = await calendar_for(session, loan.branch)
    fee = None
    if now > loan.due_at:
        fee = await fees.charge_overdue(
            session, loan=loan, rule=rule, calendar=calendar, until=now,
            branch=loan.branch.code, now=now,
        )  # fmt: skip
    start = loan.due_at if rule.renew_from == "due_date" and loan.due_at > now else now
    new_due = due_at_for(
        start=start, period=rule.loan_period, unit=rule.period_unit, calendar=calendar
    )
    before = loan.due_at
    loan.due_at, loan.renewals = max(new_due, before), loan.renewals + 1
    await session.flush()
    changes: dict[str, object] = {"due_at": [before, loan.due_at], "renewals": loan.renewals,
                                  "fee": fee.amount if fee else None}  # fmt: skip
    if overridden and override is not None:
        changes["override"] = {"reason": override.reason, "refusals": overridden}
    await audit.record(
        session, actor=actor, action="loan.renew", object_type="loan", object_id=loan.id,
        changes=changes, now=now,
    )  # fmt: skip
    events.publish(session, _event("loan.renewed", loan, branch=loan.branch.code, at=now))
    return loan


# --- lost -------------------------------------------------------------------------------


async def declare_lost(
    session: AsyncSession, *, actor: Actor, loan_id: int, now: datetime
) -> tuple[Loan, Fee | None]:
    """Staff mark the copy of an open loan lost: the loan stays open (the patron still has
    it), the copy's price is charged. Checking it in later closes the loan and waives what
    is still owed on the lost fee."""
    require_staff(actor)
    loan = await require_loan(session, loan_id)
    item = await locking.lock_item(session, loan.item_id)
    loan = await locking.lock_loan(session, loan_id)
    if loan.returned_at is not None:
        raise LoanClosed(f"Loan {loan.id} was returned on {loan.returned_at.date()}.")
    if loan.lost_at is not None:
        raise LoanLost(f"Item {item.barcode} was already declared lost.")
    loan = await require_loan(session, loan_id)
    loan.lost_at, item.status = now, "lost"
    fee = await fees.charge_lost(session, loan=loan, item=item, branch=loan.branch.code, now=now)
    await session.flush()
    await audit.record(
        session, actor=actor, action="loan.lost", object_type="loan", object_id=loan.id,
        changes={"item_barcode": item.barcode, "fee": fee.amount if fee else None}, now=now,
    )  # fmt: skip
    events.publish(session, _event("item.lost", loan, branch=loan.branch.code, at=now))
    return loan, fee


# --- reads ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoanFilters:
    patron_card: str | None = None
    item_barcode: str | None = None
    open: bool | None = None
    overdue: bool | None = None
    branch: str | None = None


async def list_loans(
    session: AsyncSession, *, actor: Actor, filters: LoanFilters, now: datetime, limit: int,
    after_id: int | None,
) -> Sequence[Loan]:  # fmt: skip
    """Loans by id; a patron sees only their own (another patron's card is a 403)."""
    query = select(Loan).options(*LOAN_LOAD).order_by(Loan.id).limit(limit + 1)
    if not actor.is_staff:
        if actor.patron_id is None:
            raise Forbidden("Only staff and patrons see loans.")
        query = query.where(Loan.patron_id == actor.patron_id)
    if filters.patron_card:
        patron = await patrons_service.get_patron_by_card(session, filters.patron_card)
        if patron is None:
            return []
        patrons_service.check_patron_access(actor, patron.id)
        query = query.where(Loan.patron_id == patron.id)
    if filters.item_barcode:
        item = select(Item.id).where(Item.barcode == filters.item_barcode)
        query = query.where(Loan.item_id == item.scalar_subquery())
    if filters.branch:
        branch = select(Branch.id).where(Branch.code == filters.branch)
        query = query.where(Loan.branch_id == branch.scalar_subquery())
    if after_id is not None:
        query = query.where(Loan.id > after_id)
    if filters.open is not None:
        returned = Loan.returned_at.is_(None) if filters.open else Loan.returned_at.is_not(None)
        query = query.where(returned)
    if filters.overdue:
        query = query.where(Loan.returned_at.is_(None), Loan.due_at < now)
    return (await session.scalars(query)).unique().all()


async def require_loan(session: AsyncSession, loan_id: int) -> Loan:
    query = (
        select(Loan)
        .options(*LOAN_LOAD)
        .where(Loan.id == loan_id)
        .execution_options(populate_existing=True)
    )
    loan = (await session.scalars(query)).unique().one_or_none()
    if loan is None:
        raise LoanNotFound(f"There is no loan with id {loan_id}.")
    return loan


async def access_loan(session: AsyncSession, *, actor: Actor, loan_id: int) -> Loan:
    """The loan, for staff or its own patron; another patron's loan is a 403."""
    loan = await require_loan(session, loan_id)
    patrons_service.check_patron_access(actor, loan.patron_id)
    return loan
