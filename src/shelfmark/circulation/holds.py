"""Holds: a FIFO queue per title, the hold shelf, and where a copy in hand goes next.

waiting → (a copy is trapped) → in_transit → ready → fulfilled (checked out to the patron),
or cancelled / expired. A copy checked in is trapped for the first waiting hold of its title
(or on itself, for an item-level hold) that it may serve under the rules of the copy's own
branch (`holdable`, for the waiting patron's category and the copy's type). At the hold's
pickup branch it goes to the hold shelf (`ready`, until `ready_until`: `hold_pickup_days`
open days of the pickup branch's rule); elsewhere it is sent there (`in_transit`).
A ready hold that is cancelled or expires passes its copy to the next in line.

A patron may not hold a title they have on loan, nor hold a title twice (a partial unique
index keeps the second); a copy is trapped for one hold at most (another one).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import ColumnElement, and_, bindparam, exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased, joinedload
from sqlalchemy.orm.interfaces import ORMOption

from shelfmark import events, hotpath
from shelfmark.audit import service as audit
from shelfmark.auth.roles import Actor
from shelfmark.catalog import service as catalog_service
from shelfmark.catalog.models import Branch, Item
from shelfmark.circulation import locking, rules
from shelfmark.circulation.calendar import calendar_for, end_of_open_day
from shelfmark.circulation.errors import (
    DuplicateHold,
    HoldClosed,
    HoldLimitReached,
    HoldNotFound,
    NotHoldable,
    Refusal,
    TitleOnLoanToPatron,
)
from shelfmark.circulation.models import ACTIVE_HOLD_STATUSES, TRAPPED_HOLD_STATUSES, Hold, Loan
from shelfmark.circulation.schemas import HoldCreate
from shelfmark.circulation.standing import check_override_allowed, enforce, patron_refusals
from shelfmark.db import flush_or_raise
from shelfmark.errors import Forbidden
from shelfmark.notices import service as notices
from shelfmark.patrons import service as patrons_service
from shelfmark.patrons.models import Patron

HOLD_LOAD: tuple[ORMOption, ...] = (
    joinedload(Hold.patron, innerjoin=True).joinedload(Patron.category, innerjoin=True),
    joinedload(Hold.pickup_branch, innerjoin=True),
)
NextStep = Literal["reshelve", "hold_shelf", "transit"]


@dataclass(frozen=True, slots=True)
class Routing:
    """What the desk does with a copy in hand: put it back on the shelf, on the hold shelf
    (for `hold`), or send it to `transit_to` (for `hold`, or home)."""

    next: NextStep
    hold: Hold | None = None
    transit_to: Branch | None = None

    @property
    def status(self) -> str:
        """The copy's status once routed; the caller sets it (with whatever else it writes
        to the copy's row: a checkin, the time it was seen)."""
        return _ROUTED_STATUS[self.next]


_ROUTED_STATUS = {"reshelve": "available", "hold_shelf": "on_hold_shelf", "transit": "in_transit"}


def _event(name: str, hold: Hold, *, at: datetime, **extra: object) -> events.Event:
    payload = {
        "hold_id": hold.id, "bib_id": hold.bib_id, "item_id": hold.item_id,
        "patron_id": hold.patron_id, "status": hold.status, "branch": hold.pickup_branch.code,
    }  # fmt: skip
    return events.Event(name, at=at, payload=payload | extra)


def queue_position() -> ColumnElement[int]:
    """1 + the waiting holds ahead on the same title (meaningful for a waiting hold only)."""
    ahead = aliased(Hold)
    return (
        select(func.count())
        .where(ahead.bib_id == Hold.bib_id, ahead.status == "waiting", ahead.id <= Hold.id)
        .correlate(Hold)
        .scalar_subquery()
    )


# --- reads ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HoldFilters:
    patron_card: str | None = None
    bib_id: int | None = None
    item_id: int | None = None
    status: str | None = None
    pickup_branch: str | None = None


async def list_holds(
    session: AsyncSession, *, actor: Actor, filters: HoldFilters, limit: int,
    after_id: int | None,
) -> Sequence[tuple[Hold, int | None]]:  # fmt: skip
    """(hold, queue position) by id; a patron sees only their own holds."""
    query = select(Hold, queue_position()).options(*HOLD_LOAD).order_by(Hold.id).limit(limit + 1)
    if not actor.is_staff:
        if actor.patron_id is None:
            raise Forbidden("Only staff and patrons see holds.")
        query = query.where(Hold.patron_id == actor.patron_id)
    if filters.patron_card:
        card = select(Patron.id).where(Patron.card_number == filters.patron_card)
        query = query.where(Hold.patron_id == card.scalar_subquery())
    if filters.pickup_branch:
        branch = select(Branch.id).where(Branch.code == filters.pickup_branch)
        query = query.where(Hold.pickup_branch_id == branch.scalar_subquery())
    if after_id is not None:
        query = query.where(Hold.id > after_id)
    if filters.bib_id is not None:
        query = query.where(Hold.bib_id == filters.bib_id)
    if filters.item_id is not None:
        query = query.where(Hold.item_id == filters.item_id)
    if filters.status:
        query = query.where(Hold.status == filters.status)
    rows = (await session.execute(query)).unique().all()
    return [(hold, position if hold.status == "waiting" else None) for hold, position in rows]


async def read_hold(session: AsyncSession, hold_id: int) -> tuple[Hold, int | None]:
    query = (
        select(Hold, queue_position())
        .options(*HOLD_LOAD)
        .where(Hold.id == hold_id)
        .execution_options(populate_existing=True)
    )
    row = (await session.execute(query)).unique().first()
    if row is None:
        raise HoldNotFound(f"There is no hold with id {hold_id}.")
    hold, position = row
    return hold, position if hold.status == "waiting" else None


async def access_hold(
    session: AsyncSession, *, actor: Actor, hold_id: int
) -> tuple[Hold, int | None]:
    hold, position = await read_hold(session, hold_id)
    patrons_service.check_patron_access(actor, hold.patron_id)
    return hold, position


# --- placing ----------------------------------------------------------------------------


async def _holdable(
    session: AsyncSession, *, bib_id: int, item: Item | None, patron: Patron, pickup: Branch
) -> bool:
    """Any copy the patron may hold under its own branch's rule (this copy, item-level);
    a title without copies yet (on order), under the pickup branch's rule."""
    if item is not None:
        copies = [(item.branch_id, item.item_type)]
    else:
        query = select(Item.branch_id, Item.item_type).where(Item.bib_id == bib_id).distinct()
        copies = [(row.branch_id, row.item_type) for row in await session.execute(query)]
    if not copies:
        rule = await rules.rule_for(
            session, branch_id=pickup.id, category_id=patron.category_id, item_type=None
        )
        return rule.holdable
    for branch_id, item_type in copies:
        rule = await rules.rule_for(
            session, branch_id=branch_id, category_id=patron.category_id, item_type=item_type
        )
        if rule.holdable:
            return True
    return False


async def _hold_refusals(
    session: AsyncSession, *, patron: Patron, bib_id: int, item: Item | None, pickup: Branch,
    now: datetime,
) -> list[Refusal]:  # fmt: skip
    refusals = await patron_refusals(session, patron=patron, today=now.date())
    on_loan = await session.scalar(
        select(
            exists().where(
                Loan.patron_id == patron.id, Loan.returned_at.is_(None), Loan.item_id == Item.id,
                Item.bib_id == bib_id,
            )
        )
    )  # fmt: skip
    if on_loan:
        refusals.append(TitleOnLoanToPatron("The patron has a copy of this title on loan."))
    active = Hold.status.in_(ACTIVE_HOLD_STATUSES)
    duplicate = await session.scalar(
        select(exists().where(Hold.patron_id == patron.id, Hold.bib_id == bib_id, active))
    )
    if duplicate:
        refusals.append(DuplicateHold("The patron already has a hold on this title."))
    rule = await rules.rule_for(
        session, branch_id=pickup.id, category_id=patron.category_id,
        item_type=item.item_type if item else None,
    )  # fmt: skip
    if rule.max_holds is not None:
        count = await session.scalar(
            select(func.count()).where(Hold.patron_id == patron.id, active)
        )
        if (count or 0) >= rule.max_holds:
            refusals.append(
                HoldLimitReached(f"The patron has {count} holds; the limit is {rule.max_holds}.")
            )
    if not await _holdable(session, bib_id=bib_id, item=item, patron=patron, pickup=pickup):
        refusals.append(NotHoldable("No copy of this title may be held by this patron."))
    return refusals


async def place_hold(
    session: AsyncSession, *, actor: Actor, data: HoldCreate, now: datetime
) -> Hold:
    """Staff for any patron, a patron for themselves. The title's row is locked while the
    hold is placed, so that concurrent holds on a title queue in a strict order."""
    check_override_allowed(actor, data.override)
    patron = await patrons_service.require_patron_by_card(session, data.patron_card)
    patrons_service.check_patron_access(actor, patron.id)
    pickup = await catalog_service.require_branch_by_code(session, data.pickup_branch)
    item = None
    if data.item_id is not None:
        item = await catalog_service.require_item(session, data.item_id)
        bib_id = item.bib_id
    else:
        bib_id = (await catalog_service.require_bib(session, data.bib_id or 0)).id
    await locking.lock_bib(session, bib_id)
    patron = await patrons_service.lock_patron(session, patron.id)
    refusals = await _hold_refusals(
        session, patron=patron, bib_id=bib_id, item=item, pickup=pickup, now=now
    )
    overridden = enforce(refusals, override=data.override, actor=actor)
    hold = Hold(
        level="item" if item else "title", bib_id=bib_id, item_id=item.id if item else None,
        patron_id=patron.id, pickup_branch_id=pickup.id, status="waiting", placed_at=now,
    )  # fmt: skip
    hold.patron, hold.pickup_branch = patron, pickup
    session.add(hold)
    await flush_or_raise(session, DuplicateHold("The patron already has a hold on this title."))
    changes: dict[str, object] = {
        "bib_id": bib_id, "item_id": hold.item_id, "patron_card": patron.card_number,
        "pickup": pickup.code,
    }  # fmt: skip
    if overridden and data.override is not None:
        changes["override"] = {"reason": data.override.reason, "refusals": overridden}
    await audit.record(
        session, actor=actor, action="hold.place", object_type="hold", object_id=hold.id,
        changes=changes, now=now,
    )  # fmt: skip
    events.publish(session, _event("hold.placed", hold, at=now))
    return hold


# --- routing copies ---------------------------------------------------------------------


TRAPPED_ITEM_STATUSES = frozenset({"in_transit", "on_hold_shelf"})

# Built once: checkouts and checkins run them (building costs more CPU than executing).
_LOCK_HOLDS = select(Hold).options(*HOLD_LOAD).with_for_update(of=Hold)
_TRAPPED_HOLD = _LOCK_HOLDS.where(
    Hold.item_id == bindparam("item_id"), Hold.status.in_(TRAPPED_HOLD_STATUSES)
).execution_options(populate_existing=True)
_WAITING_HOLDS = _LOCK_HOLDS.where(
    Hold.bib_id == bindparam("bib_id"),
    Hold.status == "waiting",
    or_(Hold.level == "title", Hold.item_id == bindparam("item_id")),
).order_by(Hold.id)
# Most copies come back to no waiting hold: that is asked first, on the hot path (`hotpath`).
# Whether any hold waits that the copy whose bib and id are bound (`bib_id`, `item_id`) may
# serve: a column, for the statement that reads what else a checkin needs (`loans`).
ANY_WAITING = exists().where(
    Hold.bib_id == bindparam("bib_id"),
    Hold.status == "waiting",
    or_(Hold.level == "title", Hold.item_id == bindparam("item_id")),
)
_ANY_WAITING = select(ANY_WAITING.label("waiting"))
_ACTIVE_HOLD = _LOCK_HOLDS.where(
    Hold.patron_id == bindparam("patron_id"),
    Hold.bib_id == bindparam("bib_id"),
    Hold.status.in_(ACTIVE_HOLD_STATUSES),
).execution_options(populate_existing=True)


async def trapped_hold(session: AsyncSession, item: Item) -> Hold | None:
    """The hold a copy is trapped for (in transit to it, or on its shelf), locked. Only a
    copy in transit or on the hold shelf can have one: others are not looked up."""
    if item.status not in TRAPPED_ITEM_STATUSES:
        return None
    found = await session.scalars(_TRAPPED_HOLD, {"item_id": item.id})
    return found.unique().one_or_none()


async def _make_ready(session: AsyncSession, *, hold: Hold, item: Item, now: datetime) -> None:
    rule = await rules.rule_for(
        session, branch_id=hold.pickup_branch_id, category_id=hold.patron.category_id,
        item_type=item.item_type,
    )  # fmt: skip
    calendar = await calendar_for(session, hold.pickup_branch)
    until = now.date() + timedelta(days=rule.hold_pickup_days)
    hold.status, hold.item_id, hold.ready_at = "ready", item.id, now
    hold.ready_until = end_of_open_day(day=until, calendar=calendar)
    await notices.announce(
        session, kind="hold-ready", patron_id=hold.patron_id, object_id=hold.id, now=now
    )
    events.publish(session, _event("hold.ready", hold, at=now, item_barcode=item.barcode))


async def _trap(
    session: AsyncSession, *, hold: Hold, item: Item, at_branch: Branch, now: datetime
) -> Routing:
    if hold.pickup_branch_id == at_branch.id:
        await _make_ready(session, hold=hold, item=item, now=now)
        return Routing("hold_shelf", hold)
    hold.status, hold.item_id = "in_transit", item.id
    hold.ready_at = hold.ready_until = None
    events.publish(session, _event("hold.in_transit", hold, at=now, item_barcode=item.barcode))
    return Routing("transit", hold, hold.pickup_branch)


async def route_item(
    session: AsyncSession, *, item: Item, at_branch: Branch, now: datetime,
    any_waiting: bool | None = None,
) -> Routing:  # fmt: skip
    """Trap a free copy in hand at `at_branch` for the first waiting hold it may serve, or
    send it home, or back on the shelf. The copy's row must be locked; the caller sets the
    routing's status on it. `any_waiting`, if the caller read `ANY_WAITING` already (after
    locking the copy), saves reading it again."""
    holdable: dict[int, bool] = {}  # by patron category
    params = {"bib_id": item.bib_id, "item_id": item.id}
    if any_waiting is None:
        (found,) = await hotpath.rows(session, _ANY_WAITING, params)
        any_waiting = bool(found["waiting"])
    waiting = (await session.scalars(_WAITING_HOLDS, params)).unique() if any_waiting else ()
    for hold in waiting:
        category_id = hold.patron.category_id
        if category_id not in holdable:
            rule = await rules.rule_for(
                session, branch_id=item.branch_id, category_id=category_id,
                item_type=item.item_type,
            )  # fmt: skip
            holdable[category_id] = rule.holdable
        if holdable[category_id]:
            return await _trap(session, hold=hold, item=item, at_branch=at_branch, now=now)
    if at_branch.id == item.branch_id:
        return Routing("reshelve")
    return Routing("transit", None, item.branch)


async def route_on_checkin(
    session: AsyncSession, *, item: Item, at_branch: Branch, now: datetime,
    any_waiting: bool | None = None,
) -> Routing:  # fmt: skip
    """A copy already trapped goes on (or stays on) its hold's shelf, or on to its pickup
    branch; any other copy is routed afresh (`route_item`). The caller sets the routing's
    status on it."""
    hold = await trapped_hold(session, item)
    if hold is None:
        return await route_item(
            session, item=item, at_branch=at_branch, now=now, any_waiting=any_waiting
        )
    if hold.pickup_branch_id == at_branch.id:
        if hold.status == "in_transit":
            await _make_ready(session, hold=hold, item=item, now=now)
        return Routing("hold_shelf", hold)
    hold.status, hold.ready_at, hold.ready_until = "in_transit", None, None
    return Routing("transit", hold, hold.pickup_branch)


async def requeue(session: AsyncSession, *, hold: Hold, now: datetime) -> None:
    """A librarian lent the copy trapped for `hold` to someone else: the hold waits again, in
    its old place (the queue is by id)."""
    hold.status, hold.ready_at, hold.ready_until = "waiting", None, None
    if hold.level == "title":
        hold.item_id = None
    events.publish(session, _event("hold.requeued", hold, at=now))


async def fulfil_on_checkout(
    session: AsyncSession, *, item: Item, patron_id: int, loan: Loan, now: datetime
) -> Hold | None:
    """The patron's active hold on the title ends fulfilled by this loan, unless it has
    trapped another copy (which then waits for them on its own)."""
    found = await session.scalars(_ACTIVE_HOLD, {"patron_id": patron_id, "bib_id": item.bib_id})
    hold = found.unique().one_or_none()
    if hold is None:
        return None
    if hold.status in TRAPPED_HOLD_STATUSES and hold.item_id != item.id:
        return None
    hold.status, hold.closed_at, hold.loan_id, hold.item_id = "fulfilled", now, loan.id, item.id
    events.publish(session, _event("hold.fulfilled", hold, at=now, loan_id=loan.id))
    return hold


# --- ending holds -----------------------------------------------------------------------


async def cancel_hold(session: AsyncSession, *, actor: Actor, hold_id: int, now: datetime) -> Hold:
    """Staff, or the patron, cancel an active hold. A copy on the hold shelf passes to the
    next in line; a copy in transit travels on and is routed when it is checked in."""
    hold, _ = await read_hold(session, hold_id)
    patrons_service.check_patron_access(actor, hold.patron_id)
    hold, item = await locking.lock_hold_and_item(session, hold_id)
    hold, _ = await read_hold(session, hold_id)
    if hold.status not in ACTIVE_HOLD_STATUSES:
        raise HoldClosed(f"Hold {hold.id} is {hold.status}.")
    was_ready = hold.status == "ready"
    hold.status, hold.closed_at = "cancelled", now
    if was_ready and item is not None:
        routing = await route_item(session, item=item, at_branch=hold.pickup_branch, now=now)
        item.status = routing.status
    await session.flush()
    await audit.record(
        session, actor=actor, action="hold.cancel", object_type="hold", object_id=hold.id,
        changes={"was": "ready" if was_ready else "active"}, now=now,
    )  # fmt: skip
    events.publish(session, _event("hold.cancelled", hold, at=now))
    return hold


async def expire_holds(session: AsyncSession, *, now: datetime) -> list[Hold]:
    """Expire the ready holds not collected by their `ready_until`, passing each copy to the
    next in line. Run by the scheduler; safe to run twice or concurrently."""
    due = (
        select(Hold.id)
        .where(and_(Hold.status == "ready", Hold.ready_until < now))
        .order_by(Hold.id)
    )
    expired: list[Hold] = []
    for hold_id in (await session.scalars(due)).all():
        hold, item = await locking.lock_hold_and_item(session, hold_id)
        if hold.status != "ready" or hold.ready_until is None or hold.ready_until >= now:
            continue  # collected or expired meanwhile
        hold, _ = await read_hold(session, hold_id)
        hold.status, hold.closed_at = "expired", now
        await notices.announce(
            session, kind="hold-expired", patron_id=hold.patron_id, object_id=hold.id, now=now
        )
        if item is not None:
            routing = await route_item(session, item=item, at_branch=hold.pickup_branch, now=now)
            item.status = routing.status
        events.publish(session, _event("hold.expired", hold, at=now))
        expired.append(hold)
    await session.flush()
    return expired
