"""Whether a patron may borrow, renew or place holds, and how a librarian overrides a refusal."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from sqlalchemy import exists, select
from sqlalchemy.ext.asyncio import AsyncSession

from shelfmark.auth.roles import Actor
from shelfmark.circulation import fees
from shelfmark.circulation.errors import FeesOverThreshold, PatronBlocked, PatronExpired, Refusal
from shelfmark.circulation.schemas import Override
from shelfmark.errors import Forbidden
from shelfmark.patrons.models import Patron, PatronBlock


async def patron_refusals(session: AsyncSession, *, patron: Patron, today: date) -> list[Refusal]:
    """Expired card, a manual block, open fees above the category's threshold.

    `patron.category` must be loaded.
    """
    refusals: list[Refusal] = []
    if patron.is_expired(today):
        refusals.append(
            PatronExpired(f"The card of {patron.card_number} expired on {patron.expires_on}.")
        )
    blocked = await session.scalar(
        select(exists().where(PatronBlock.patron_id == patron.id, PatronBlock.lifted_at.is_(None)))
    )
    if blocked:
        refusals.append(PatronBlocked(f"Patron {patron.card_number} is blocked."))
    threshold = patron.category.fee_block_threshold
    if threshold is not None:
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
