"""The staff circulation desk: check out to a patron and check in, by scanner or keyboard.

A scanner types the code and presses Enter: each scan is one htmx POST that calls the
circulation service and replaces a part of the page. A refusal, like any error, rolls the
request back and comes back as an alert dialog (see `partials`); while one is open the scan
fields are disabled (shelfmark.js), so it must be acknowledged before the next scan. An
overridable refusal offers the override form; the service audits the override.

The desk's branch (where loans are made and copies come back) is kept in the session.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import RedirectResponse, Response

from shelfmark.auth.roles import Actor, require_staff
from shelfmark.catalog import service as catalog_service
from shelfmark.catalog.models import Branch
from shelfmark.circulation import fees, standing
from shelfmark.circulation import loans as loans_service
from shelfmark.circulation.errors import Refusal
from shelfmark.circulation.loans import Checkin, LoanFilters
from shelfmark.circulation.models import Loan
from shelfmark.circulation.schemas import CheckinCreate, CheckoutCreate
from shelfmark.db import utcnow
from shelfmark.deps import SessionDep
from shelfmark.patrons import service as patrons_service
from shelfmark.patrons.models import Patron
from shelfmark.web import forms, partials
from shelfmark.web.auth import safe_next
from shelfmark.web.security import check_csrf
from shelfmark.web.session import LoggedInDep
from shelfmark.web.templating import render
from shelfmark.web.titles import titles_of

router = APIRouter(include_in_schema=False)
BRANCH_KEY = "desk_branch"
LOANS_SHOWN = 200
LABELS = {"item_barcode": "Item barcode", "patron_card": "Patron card",
          "override": "Reason for the override", "branch": "Desk branch"}  # fmt: skip


async def desk_actor(actor: LoggedInDep) -> Actor:
    """Librarians and admins; a patron gets the 403 page."""
    return require_staff(actor)


StaffDep = Annotated[Actor, Depends(desk_actor)]


@dataclass(frozen=True, slots=True)
class Desk:
    branches: Sequence[Branch]
    branch: Branch | None  # None only while the library has no branch at all

    @property
    def code(self) -> str | None:
        return self.branch.code if self.branch else None


async def current_desk(request: Request, session: AsyncSession) -> Desk:
    """The branch chosen for this browser's desk, else the first branch."""
    branches = await catalog_service.list_branches(session)
    chosen = request.session.get(BRANCH_KEY)
    branch = next((b for b in branches if b.code == chosen), branches[0] if branches else None)
    return Desk(branches, branch)


@dataclass(frozen=True, slots=True)
class PatronPanel:
    patron: Patron
    refusals: list[Refusal]
    balance: Decimal
    loans: list[Loan]
    titles: dict[int, str]
    now: datetime

    @property
    def expired(self) -> bool:
        return self.patron.is_expired(self.now.date())


async def patron_panel(
    session: AsyncSession, *, actor: Actor, patron: Patron, now: datetime
) -> PatronPanel:
    """What the desk shows of a patron: standing (why they would be refused), balance and
    the loans they have out, soonest due first. `patron` is loaded with `PATRON_LOAD`."""
    refusals = await standing.patron_refusals(session, patron=patron, today=now.date())
    balance, _ = await fees.balance_of(session, patron.id)
    filters = LoanFilters(patron_card=patron.card_number, open=True)
    loans = await loans_service.list_loans(
        session, actor=actor, filters=filters, now=now, limit=LOANS_SHOWN, after_id=None
    )
    ordered = sorted(loans[:LOANS_SHOWN], key=lambda loan: (loan.due_at, loan.id))
    titles = await titles_of(session, (loan.item.bib_id for loan in ordered))
    return PatronPanel(patron, refusals, balance, ordered, titles, now)


def _page(request: Request, page: str, fragment: str, context: dict[str, Any]) -> Response:
    """The part of the page for htmx, the whole page otherwise (a scan without JavaScript,
    a reload, a bookmark)."""
    return render(request, fragment if partials.is_htmx(request) else page, context)


# --- check out --------------------------------------------------------------------------


@router.get("/desk")
async def checkout_page(
    request: Request, session: SessionDep, actor: StaffDep, card: str | None = None
) -> Response:
    desk = await current_desk(request, session)
    card = (card or "").strip()
    context: dict[str, Any] = {"desk": desk, "mode": "checkout", "card": card, "panel": None}
    if card:
        patron = await patrons_service.get_patron_by_card(session, card)
        if patron is None:
            context["lookup_error"] = f"No patron has the card number {card}."
        else:
            context["panel"] = await patron_panel(session, actor=actor, patron=patron, now=utcnow())
            context["announce_standing"] = True  # once, when the patron comes to the desk
    return _page(request, "desk/checkout.html", "desk/_work.html", context)


@router.post("/desk/checkout", dependencies=[Depends(check_csrf)])
async def checkout(
    request: Request,
    session: SessionDep,
    actor: StaffDep,
    card: Annotated[str, Form()],
    barcode: Annotated[str, Form()],
    override_reason: Annotated[str | None, Form()] = None,
) -> Response:
    """Lend the scanned copy to the patron on the desk, at the desk's branch. Sent with
    `override_reason`, the refusals a librarian may set aside are set aside."""
    partials.alert_as(request, "desk/_refused.html", card=card, barcode=barcode)
    desk = await current_desk(request, session)
    override = {"reason": override_reason} if override_reason is not None else None
    data = forms.parse(
        CheckoutCreate, LABELS, item_barcode=barcode, patron_card=card, branch=desk.code,
        override=override,
    )  # fmt: skip
    now = utcnow()
    loan = await loans_service.check_out(session, actor=actor, data=data, now=now)
    patron = await patrons_service.require_patron(session, loan.borrower_id)
    panel = await patron_panel(session, actor=actor, patron=patron, now=now)
    context = {
        "desk": desk, "mode": "checkout", "card": patron.card_number, "panel": panel,
        "new_loan": loan, "overridden": override is not None,
    }  # fmt: skip
    return _page(request, "desk/checkout.html", "desk/_work.html", context)


# --- check in ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CheckinLine:
    """One scan's result: what was returned, what it cost, where the copy goes now."""

    checkin: Checkin
    title: str
    at: datetime

    @property
    def needs_attention(self) -> bool:
        """The copy does not simply go back on the shelf: the librarian must act."""
        return self.checkin.routing.next != "reshelve"


@router.get("/desk/checkin")
async def checkin_page(request: Request, session: SessionDep, actor: StaffDep) -> Response:
    desk = await current_desk(request, session)
    return render(request, "desk/checkin.html", {"desk": desk, "mode": "checkin", "lines": []})


@router.post("/desk/checkin", dependencies=[Depends(check_csrf)])
async def checkin(
    request: Request, session: SessionDep, actor: StaffDep, barcode: Annotated[str, Form()]
) -> Response:
    """Take the scanned copy back at the desk's branch; say where it goes next."""
    desk = await current_desk(request, session)
    data = forms.parse(CheckinCreate, LABELS, item_barcode=barcode, branch=desk.code)
    now = utcnow()
    result = await loans_service.check_in(session, actor=actor, data=data, now=now)
    titles = await titles_of(session, [result.item.bib_id])
    line = CheckinLine(result, titles.get(result.item.bib_id, ""), now)
    context = {"desk": desk, "mode": "checkin", "lines": [line], "line": line}
    return _page(request, "desk/checkin.html", "desk/_checkin_line.html", context)


# --- the desk's branch ------------------------------------------------------------------


@router.post("/desk/branch", dependencies=[Depends(check_csrf)])
async def choose_branch(
    request: Request,
    session: SessionDep,
    actor: StaffDep,
    branch: Annotated[str, Form()],
    next: Annotated[str, Form()] = "/desk",
) -> Response:
    chosen = await catalog_service.require_branch_by_code(session, branch)
    request.session[BRANCH_KEY] = chosen.code
    return RedirectResponse(safe_next(next), status_code=303)
