"""Whether a patron may borrow, renew or place holds, and how a librarian overrides a refusal."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy import BindParameter, ColumnElement, Select, bindparam, exists, null, select
from sqlalchemy.ext.asyncio import AsyncSession

from shelfmark.auth.roles import Actor
from shelfmark.circulation import fees
from shelfmark.circulation.errors import FeesOverThreshold, PatronBlocked, PatronExpired, Refusal
from shelfmark.circulation.schemas import Override
from shelfmark.errors import Forbidden
from shelfmark.patrons.models import Patron, PatronBlock


@dataclass(frozen=True, slots=True)
class Standing:
    """What a patron's standing depends on besides the card: an unlifted block, and what they
    owe (None where their category sets no threshold, so it was not summed)."""

    blocked: bool
    balance: Decimal | None


def standing_columns(*, with_balance: bool) -> tuple[ColumnElement[bool], ColumnElement[Any]]:
    """(blocked, balance) of the patron whose id is bound as `patron_id`, as columns: for
    reading a patron's standing in one statement along with whatever else an action needs.
    The balance is summed only `with_balance` (the patron's category sets a threshold)."""
    patron_id: BindParameter[int] = bindparam("patron_id")
    blocked = exists().where(PatronBlock.patron_id == patron_id, PatronBlock.lifted_at.is_(None))
    return blocked, fees.balance_column(patron_id) if with_balance else null()


@functools.cache
def _standing_query(*, with_balance: bool) -> Select[Any]:
    blocked, balance = standing_columns(with_balance=with_balance)
    return select(blocked.label("blocked"), balance.label("balance"))


def standing_of(row: Mapping[str, Any]) -> Standing:
    """The `Standing` from a row holding the `standing_columns` as `blocked` and `balance`."""
    balance = None if row["balance"] is None else fees.money(Decimal(row["balance"]))
    return Standing(blocked=bool(row["blocked"]), balance=balance)


async def read_standing(session: AsyncSession, patron: Patron) -> Standing:
    """`patron.category` must be loaded."""
    query = _standing_query(with_balance=patron.category.fee_block_threshold is not None)
    return standing_of((await session.execute(query, {"patron_id": patron.id})).mappings().one())


async def patron_refusals(
    session: AsyncSession, *, patron: Patron, today: date, standing: Standing | None = None
) -> list[Refusal]:
    """Expired card, a manual block, open fees above the category's threshold. `standing`,
    if the caller read it already (after taking its locks), saves reading it again.

    `patron.category` must be loaded.
    """
    if standing is None:
        standing = await read_standing(session, patron)
    refusals: list[Refusal] = []
    if patron.is_expired(today):
        refusals.append(
            PatronExpired(f"The card of {patron.card_number} expired on {patron.expires_on}.")
        )
    if standing.blocked:
        refusals.append(PatronBlocked(f"Patron {patron.card_number} is blocked."))
    threshold = patron.category.fee_block_threshold
    if threshold is not None:
        balance = standing.balance
        if balance is None:  # read before the threshold was set: read it now
            balance, _ = await fees.balance_of(session, patron.id)
        if balance > threshold:
            refusals.append(
                FeesOverThreshold(
                    f"Patron {patron.card_number} owes {balance}, more than the {threshold} "
                    "their category allows.",
                    balance=str(balance),
                    threshold=str(threshold),
                )
            )
    return refusals


def check_override_allowed(actor: Actor, override: Override | None) -> None:
    if override is not None and not actor.is_staff:
        raise Forbidden("Only library staff may override a refusal.")


def enforce(refusals: Sequence[Refusal], *, override: Override | None, actor: Actor) -> list[str]:
    """Raise the first refusal that stands; return the codes a staff override set aside.

    A refusal that no override lifts (the copy is on loan, a duplicate hold) stands whatever
    the request says; the others stand unless a librarian gave an override with a reason.
    """
    for refusal in refusals:
        if not refusal.overridable:
            raise refusal
    if not refusals:
        return []
    if override is None:
        raise refusals[0]
    check_override_allowed(actor, override)
    return [refusal.code for refusal in refusals]
