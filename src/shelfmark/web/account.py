"""The patron's own account: loans to renew, holds to cancel, fees, notice preferences, the
reading-history choice and the history itself, and holds placed from a record page. A patron
sees and changes only their own record: the services check it (`check_patron_access`), these
routes only pass the actor on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Query, Request
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import RedirectResponse, Response

from shelfmark.auth.roles import Actor
from shelfmark.catalog import service as catalog_service
from shelfmark.catalog.models import Branch
from shelfmark.circulation import fees as fees_service
from shelfmark.circulation import history as history_service
from shelfmark.circulation import holds as holds_service
from shelfmark.circulation import loans as loans_service
from shelfmark.circulation.fees import FeeFilters
from shelfmark.circulation.holds import HoldFilters
from shelfmark.circulation.loans import LoanFilters
from shelfmark.circulation.models import ACTIVE_HOLD_STATUSES, Fee, Hold, Loan
from shelfmark.circulation.schemas import HoldCreate
from shelfmark.db import utcnow
from shelfmark.deps import PathId as Id
from shelfmark.deps import SessionDep, SettingsDep
from shelfmark.errors import Forbidden
from shelfmark.pagination import decode_int_cursor, next_cursor_of
from shelfmark.patrons import service as patrons_service
from shelfmark.patrons.models import NOTICE_CHANNELS, Patron
from shelfmark.patrons.schemas import PatronUpdate
from shelfmark.web import forms, partials
from shelfmark.web.security import check_csrf
from shelfmark.web.session import LoggedInDep
from shelfmark.web.templating import render
from shelfmark.web.titles import titles_of

router = APIRouter(include_in_schema=False)
SHOWN = 200
CHANNEL_LABELS = {"email": "E-mail", "sms": "Text message", "print": "Letter by post",
                  "none": "No notices"}  # fmt: skip
LABELS = {"pickup_branch": "Pick up at", "notice_channel": "Send notices by",
          "keep_reading_history": "Keep my reading history"}  # fmt: skip
HISTORY_PAGE = 25


async def own_patron(session: AsyncSession, actor: Actor) -> Patron:
    """The actor's own patron record; a user without one has no account to act on."""
    if actor.patron_id is None:
        raise Forbidden("Your user has no patron record: there is no account to change.")
    return await patrons_service.access_patron(session, actor=actor, patron_id=actor.patron_id)


@dataclass(frozen=True, slots=True)
class Account:
    patron: Patron
    loans: Sequence[Loan]
    holds: Sequence[tuple[Hold, int | None]]
    fees: Sequence[Fee]
    balance: Decimal
    titles: dict[int, str]
    now: datetime


async def account_of(session: AsyncSession, *, actor: Actor, now: datetime) -> Account:
    patron = await own_patron(session, actor)
    loans = await loans_service.list_loans(
        session, actor=actor, filters=LoanFilters(open=True), now=now, limit=SHOWN,
        after_id=None,
    )  # fmt: skip
    holds: list[tuple[Hold, int | None]] = []
    for status in ACTIVE_HOLD_STATUSES:
        holds += await holds_service.list_holds(
            session, actor=actor, filters=HoldFilters(status=status), limit=SHOWN, after_id=None
        )
    fees = await fees_service.list_fees(
        session, actor=actor, filters=FeeFilters(status="open"), limit=SHOWN, after_id=None
    )
    balance, _ = await fees_service.balance_of(session, patron.id)
    bib_ids = [loan.item.bib_id for loan in loans] + [hold.bib_id for hold, _ in holds]
    return Account(
        patron=patron, loans=sorted(loans[:SHOWN], key=lambda loan: (loan.due_at, loan.id)),
        holds=sorted(holds, key=lambda row: row[0].id), fees=fees[:SHOWN], balance=balance,
        titles=await titles_of(session, bib_ids), now=now,
    )  # fmt: skip


def _done(request: Request, fragment: str, context: dict[str, Any]) -> Response:
    """htmx gets the changed part; a plain form post goes back to the account page."""
    if partials.is_htmx(request):
        return render(request, fragment, context)
    return RedirectResponse("/account", status_code=303)


@router.get("/account")
async def account_page(
    request: Request, session: SessionDep, actor: LoggedInDep, settings: SettingsDep
) -> Response:
    if actor.patron_id is None:
        return render(request, "account/no_patron.html")
    account = await account_of(session, actor=actor, now=utcnow())
    channels = {channel: CHANNEL_LABELS.get(channel, channel) for channel in NOTICE_CHANNELS}
    context = {"account": account, "channels": channels,
               "retention_days": settings.loan_retention_days}  # fmt: skip
    return render(request, "account/index.html", context)


@router.post("/account/loans/{loan_id}/renew", dependencies=[Depends(check_csrf)])
async def renew(request: Request, session: SessionDep, actor: LoggedInDep, loan_id: Id) -> Response:
    partials.alert_as(
        request, "account/_refused.html", target=f"#loan-{loan_id}-note", action="Not renewed"
    )
    now = utcnow()
    loan = await loans_service.renew(session, actor=actor, loan_id=loan_id, override=None, now=now)
    titles = await titles_of(session, [loan.item.bib_id])
    context = {"loan": loan, "titles": titles, "now": now, "renewed": True}
    return _done(request, "account/_loan_row.html", context)


@router.post("/account/holds/{hold_id}/cancel", dependencies=[Depends(check_csrf)])
async def cancel_hold(
    request: Request, session: SessionDep, actor: LoggedInDep, hold_id: Id
) -> Response:
    partials.alert_as(
        request, "account/_refused.html", target=f"#hold-{hold_id}-note", action="Not cancelled"
    )
    hold = await holds_service.cancel_hold(session, actor=actor, hold_id=hold_id, now=utcnow())
    titles = await titles_of(session, [hold.bib_id])
    return _done(request, "account/_hold_row.html", {"hold": hold, "position": None,
                                                     "titles": titles})  # fmt: skip


@router.post("/account/preferences", dependencies=[Depends(check_csrf)])
async def save_preferences(
    request: Request,
    session: SessionDep,
    actor: LoggedInDep,
    notice_channel: Annotated[str, Form()],
) -> Response:
    partials.alert_as(
        request, "account/_refused.html", target="#preferences-note", action="Not saved"
    )
    patron = await own_patron(session, actor)
    data = forms.parse(PatronUpdate, LABELS, notice_channel=notice_channel)
    await patrons_service.update_patron(
        session, actor=actor, patron=patron, data=data, now=utcnow()
    )
    label = CHANNEL_LABELS.get(patron.notice_channel, patron.notice_channel)
    by = "" if patron.notice_channel == "none" else "notices by "
    notice = f"Saved: {by}{label.lower()}."
    return _done(request, "account/_saved.html", {"notice": notice})


@router.post("/account/reading-history", dependencies=[Depends(check_csrf)])
async def save_reading_history(
    request: Request,
    session: SessionDep,
    actor: LoggedInDep,
    settings: SettingsDep,
    keep: Annotated[str, Form()],
) -> Response:
    """Turn the reading history on ("on") or off ("off"): off, the next nightly run makes
    the loans returned before the retention period forget the patron."""
    partials.alert_as(
        request, "account/_refused.html", target="#reading-history-note", action="Not saved"
    )
    patron = await own_patron(session, actor)
    choice = {"on": True, "off": False}.get(keep, keep)
    data = forms.parse(PatronUpdate, LABELS, keep_reading_history=choice)
    await patrons_service.update_patron(
        session, actor=actor, patron=patron, data=data, now=utcnow()
    )
    if patron.keep_reading_history:
        notice = "Saved: your reading history is kept."
    else:
        notice = (f"Saved: returned loans stop naming you {settings.loan_retention_days} days "
                  "after their return.")  # fmt: skip
    return _done(request, "account/_saved.html", {"notice": notice})


@router.get("/account/history")
async def reading_history(
    request: Request,
    session: SessionDep,
    actor: LoggedInDep,
    settings: SettingsDep,
    cursor: Annotated[str | None, Query()] = None,
) -> Response:
    """What the patron has borrowed and returned, newest first, a page at a time."""
    if actor.patron_id is None:
        return render(request, "account/no_patron.html")
    history = await history_service.reading_history(
        session, actor=actor, limit=HISTORY_PAGE, before_id=decode_int_cursor(cursor)
    )
    loans = history.loans[:HISTORY_PAGE]
    context = {
        "history": history, "loans": loans,
        "next_cursor": next_cursor_of(history.loans, HISTORY_PAGE),
        "titles": await titles_of(session, [loan.item.bib_id for loan in loans]),
        "retention_days": settings.loan_retention_days, "first_page": cursor is None,
    }  # fmt: skip
    return render(request, "account/history.html", context)


# --- holds from the catalog -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HoldForm:
    branches: Sequence[Branch]
    pickup: str  # the patron's home branch, chosen first


async def hold_form(session: AsyncSession, actor: Actor | None) -> HoldForm | None:
    """What the record page needs to offer a patron user the "Place hold" form."""
    if actor is None or actor.patron_id is None:
        return None
    patron = await patrons_service.get_patron(session, actor.patron_id)
    if patron is None:
        return None
    return HoldForm(await catalog_service.list_branches(session), patron.home_branch.code)


@router.post("/bibs/{bib_id}/holds", dependencies=[Depends(check_csrf)])
async def place_hold(
    request: Request,
    session: SessionDep,
    actor: LoggedInDep,
    bib_id: Id,
    pickup_branch: Annotated[str, Form()],
) -> Response:
    """The patron holds the title (any copy) for pickup at the branch of their choice."""
    partials.alert_as(request, "account/_refused.html", target="#place-hold-result",
                      action="Hold not placed")  # fmt: skip
    patron = await own_patron(session, actor)
    data = forms.parse(
        HoldCreate, LABELS, bib_id=bib_id, patron_card=patron.card_number,
        pickup_branch=pickup_branch,
    )  # fmt: skip
    hold = await holds_service.place_hold(session, actor=actor, data=data, now=utcnow())
    hold, position = await holds_service.read_hold(session, hold.id)
    return _done(request, "account/_hold_placed.html", {"hold": hold, "position": position})
