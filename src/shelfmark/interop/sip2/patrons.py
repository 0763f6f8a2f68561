"""Patron information (63), patron status (23), block patron (01), end patron session (35)
and fee paid (37).

What a patron's account holds is told only once their PIN is accepted: otherwise the answer
says the card exists (BL Y) and the PIN was not accepted (CQ N) — the same whether the PIN
was wrong or the patron has none — and nothing else about them.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from sqlalchemy.ext.asyncio import AsyncSession

from shelfmark.catalog import service as catalog_service
from shelfmark.circulation import fees, holds, loans, rules
from shelfmark.circulation.errors import FeeNotFound, PaymentTooLarge, Refusal
from shelfmark.circulation.fees import Balance, FeeFilters
from shelfmark.circulation.holds import HoldFilters
from shelfmark.circulation.loans import LoanFilters
from shelfmark.circulation.models import Fee, Hold, Loan
from shelfmark.circulation.standing import patron_refusals
from shelfmark.errors import InvalidInput, RateLimited
from shelfmark.interop.sip2.answers import DENIED, PAYMENT_METHODS, UNKNOWN_LANGUAGE, language
from shelfmark.interop.sip2.context import BAD_PIN, PAGE, Context, every, required
from shelfmark.interop.sip2.protocol import Message, Reply, count, flag, format_datetime, repeated
from shelfmark.patrons import service as patrons_service
from shelfmark.patrons.errors import PatronNotFound
from shelfmark.patrons.models import Patron

# The most entries one item list of a patron information answer carries (BP/BQ page it).
MAX_LIST = 50
Fields = tuple[tuple[str, str | None], ...]


@dataclass(frozen=True, slots=True)
class Account:
    patron: Patron
    refusals: list[Refusal]
    loans: list[Loan]
    overdue: list[Loan]
    ready: list[Hold]  # on the hold shelf: SIP2's "hold items"
    pending: list[Hold]  # waiting or in transit: "unavailable holds"
    balance: Balance
    loan_limit: int | None
    hold_limit: int | None

    def status(self) -> str:
        """The 14 patron status flags: privileges denied when the patron may not borrow,
        too many items charged at the loan limit, excessive fines over the threshold."""
        flags = list(DENIED if self.refusals else " " * 14)
        if self.loan_limit is not None and len(self.loans) >= self.loan_limit:
            flags[5] = "Y"
        if self.balance.over_threshold:
            flags[10] = flags[11] = "Y"
        return "".join(flags)


async def _holds(session: AsyncSession, ctx: Context, card: str, status: str) -> list[Hold]:
    filters = HoldFilters(patron_card=card, status=status)
    rows = await every(
        lambda after: holds.list_holds(
            session, actor=ctx.staff, filters=filters, limit=PAGE, after_id=after
        ),
        lambda row: row[0].id,
    )
    return [hold for hold, _ in rows]


async def _account(session: AsyncSession, ctx: Context, patron: Patron) -> Account:
    now, card = ctx.now(), patron.card_number
    filters = LoanFilters(patron_card=card, open=True)
    current = await every(
        lambda after: loans.list_loans(
            session, actor=ctx.staff, filters=filters, now=now, limit=PAGE, after_id=after
        ),
        lambda loan: loan.id,
    )
    branch_id = ctx.location.branch_id if ctx.location else patron.home_branch_id
    rule = await rules.rule_for(
        session, branch_id=branch_id, category_id=patron.category_id, item_type=None
    )
    return Account(
        patron=patron,
        refusals=await patron_refusals(session, patron=patron, today=now.date()),
        loans=current,
        overdue=[loan for loan in current if loan.due_at < now],
        ready=await _holds(session, ctx, card, "ready"),
        pending=[
            *await _holds(session, ctx, card, "waiting"),
            *await _holds(session, ctx, card, "in_transit"),
        ],
        balance=await fees.balance(session, actor=ctx.staff, patron_id=patron.id),
        loan_limit=rule.max_loans,
        hold_limit=rule.max_holds,
    )


async def _find(
    session: AsyncSession, ctx: Context, message: Message
) -> tuple[Patron | None, bool, str | None]:
    """(the patron of AA or None, whether their PIN is accepted, why not)."""
    card = required(message, "AA", "patron identifier")
    patron = await patrons_service.get_patron_by_card(session, card)
    if patron is None:
        return None, False, f"There is no patron with card number {card!r}."
    try:
        accepted = await ctx.check_pin(patron, message.get("AD"))
    except RateLimited as exc:
        return patron, False, exc.detail
    return patron, accepted, None if accepted else BAD_PIN


def _cq(message: Message, accepted: bool) -> str | None:
    """CQ answers a PIN the SC sent; with no AD, there is nothing to answer."""
    return flag(accepted) if "AD" in message.fields else None


def _withheld(command: str, message: Message, ctx: Context, *, found: bool,
              reason: str | None) -> Reply:  # fmt: skip
    counts = ("0000",) * 6 if command == "64" else ()
    return Reply(
        command, (DENIED, UNKNOWN_LANGUAGE, format_datetime(ctx.now()), *counts),
        (("AO", message.get("AO") or ctx.config.institution_id), ("AA", message.get("AA")),
         ("AE", ""), ("BL", flag(found)), ("CQ", _cq(message, False)), ("AF", reason)),
    )  # fmt: skip


def _window(message: Message, values: list[str]) -> list[str]:
    """The entries BP (first, from 1) to BQ (last) ask for, at most MAX_LIST."""
    try:
        start = max(int(message.get("BP") or 1), 1)
        end = int(message.get("BQ") or start + MAX_LIST - 1)
    except ValueError as exc:
        raise InvalidInput("BP and BQ are item numbers.") from exc
    return values[start - 1 : min(end, start + MAX_LIST - 1)]


async def _item_list(
    session: AsyncSession, ctx: Context, message: Message, account: Account
) -> Fields:
    """The one list the summary field asks for (its first Y): hold items (AS), overdue
    (AT), charged (AU), fines (AV) or unavailable holds (CD)."""
    summary = message.fixed[2]
    wanted = summary.find("Y")
    if wanted == 0:
        barcodes = [
            (await catalog_service.require_item(session, hold.item_id)).barcode
            for hold in account.ready
            if hold.item_id is not None
        ]
        return repeated("AS", _window(message, barcodes))
    if wanted in (1, 2):
        listed = account.overdue if wanted == 1 else account.loans
        return repeated("AT" if wanted == 1 else "AU",
                        _window(message, [loan.item.barcode for loan in listed]))  # fmt: skip
    if wanted == 3:
        filters = FeeFilters(patron_card=account.patron.card_number, status="open")
        open_fees = await every(
            lambda after: fees.list_fees(
                session, actor=ctx.staff, filters=filters, limit=PAGE, after_id=after
            ),
            lambda fee: fee.id,
        )
        return repeated("AV", _window(message, [_fine(fee) for fee in open_fees]))
    if wanted == 5:
        titles = [await _hold_title(session, hold) for hold in account.pending]
        return repeated("CD", _window(message, titles))
    return ()


def _fine(fee: Fee) -> str:
    # The fee's id first: it is what fee paid (37) takes as the fee identifier (CG).
    return f"{fee.id} {fee.outstanding} {fee.description or fee.kind}"


async def _hold_title(session: AsyncSession, hold: Hold) -> str:
    bib = await catalog_service.get_bib(session, hold.bib_id)
    return bib.title if bib is not None else str(hold.bib_id)


def _contact(patron: Patron) -> Fields:
    return (("BE", patron.email), ("BF", patron.phone))


def _limit(value: int | None) -> str | None:
    return count(value) if value is not None else None


async def patron_information(ctx: Context, message: Message) -> Reply:
    """The patron's standing, item counts, fees and, if the summary asks, one item list."""
    async with ctx.transaction() as session:
        patron, accepted, reason = await _find(session, ctx, message)
        if patron is None or not accepted:
            return _withheld("64", message, ctx, found=patron is not None, reason=reason)
        account = await _account(session, ctx, patron)
        listed = await _item_list(session, ctx, message, account)
    threshold = patron.category.fee_block_threshold
    return Reply(
        "64",
        (account.status(), language(patron.language), format_datetime(ctx.now()),
         count(len(account.ready)), count(len(account.overdue)), count(len(account.loans)),
         count(account.balance.open_fees), "0000", count(len(account.pending))),
        (("AO", message.get("AO") or ctx.config.institution_id), ("AA", patron.card_number),
         ("AE", patron.name), ("BZ", _limit(account.hold_limit)),
         ("CB", _limit(account.loan_limit)), ("BL", "Y"), ("CQ", _cq(message, True)),
         ("BV", str(account.balance.balance)),
         ("CC", str(threshold) if threshold is not None else None), *listed,
         *_contact(patron), *repeated("AF", [r.detail for r in account.refusals])),
    )  # fmt: skip


async def patron_status(ctx: Context, message: Message) -> Reply:
    """The patron's standing and what they owe."""
    async with ctx.transaction() as session:
        patron, accepted, reason = await _find(session, ctx, message)
        if patron is None or not accepted:
            return _withheld("24", message, ctx, found=patron is not None, reason=reason)
        account = await _account(session, ctx, patron)
    return Reply(
        "24", (account.status(), language(patron.language), format_datetime(ctx.now())),
        (("AO", message.get("AO") or ctx.config.institution_id), ("AA", patron.card_number),
         ("AE", patron.name), ("BL", "Y"), ("CQ", _cq(message, True)),
         ("BV", str(account.balance.balance)),
         *repeated("AF", [r.detail for r in account.refusals])),
    )  # fmt: skip


async def block_patron(ctx: Context, message: Message) -> Reply:
    """The SC blocks a card (typically one reported stolen, which it may have kept): a
    manual block, with the SC's message (AL) as its reason, until staff lift it."""
    card = required(message, "AA", "patron identifier")
    retained = " The SC retained the card." if message.flag(0) else ""
    reason = f"Blocked by self-check {ctx.terminal or ctx.peer}: " \
             f"{message.get('AL') or 'no reason given'}.{retained}"  # fmt: skip
    async with ctx.transaction() as session:
        patron = await patrons_service.get_patron_by_card(session, card)
        if patron is None:
            raise PatronNotFound(f"There is no patron with card number {card!r}.")
        await patrons_service.add_block(
            session, actor=ctx.staff, patron=patron, reason=reason, now=ctx.now()
        )
    return _withheld("24", message, ctx, found=True, reason="The card has been blocked.")


async def end_patron_session(ctx: Context, message: Message) -> Reply:
    """The patron is done at the SC: their PIN is asked again next time."""
    ctx.forget_patron()
    return Reply(
        "36", ("Y", format_datetime(ctx.now())),
        (("AO", message.get("AO") or ctx.config.institution_id), ("AA", message.get("AA"))),
    )  # fmt: skip


def _amount(message: Message) -> Decimal:
    text = required(message, "BV", "fee amount")
    try:
        amount = Decimal(text)
    except InvalidOperation as exc:
        raise InvalidInput(f"The fee amount {text!r} is not a sum of money.") from exc
    if not amount.is_finite() or amount <= 0 or amount != amount.quantize(Decimal("0.01")):
        raise InvalidInput(f"The fee amount {text!r} is not a sum of money.")
    return amount


async def _pay_fee(session: AsyncSession, ctx: Context, patron: Patron, fee_id: str,
                   amount: Decimal, method: str, note: str) -> None:  # fmt: skip
    try:
        fee = await fees.access_fee(session, actor=ctx.staff, fee_id=int(fee_id))
    except ValueError as exc:
        raise FeeNotFound(f"There is no fee {fee_id!r}.") from exc
    if fee.patron_id != patron.id:
        raise FeeNotFound(f"Patron {patron.card_number} has no fee {fee_id}.")
    await fees.pay(session, actor=ctx.staff, fee_id=fee.id, amount=amount, method=method,
                   note=note, now=ctx.now())  # fmt: skip


async def _pay_oldest_first(session: AsyncSession, ctx: Context, patron: Patron,
                            amount: Decimal, method: str, note: str) -> None:  # fmt: skip
    filters = FeeFilters(patron_card=patron.card_number, status="open")
    open_fees = await every(
        lambda after: fees.list_fees(
            session, actor=ctx.staff, filters=filters, limit=PAGE, after_id=after
        ),
        lambda fee: fee.id,
    )
    owed = sum((fee.outstanding for fee in open_fees), Decimal("0.00"))
    if amount > owed:
        raise PaymentTooLarge(f"{amount} is more than the {owed} owed.")
    left = amount
    for fee in open_fees:
        if left <= 0:
            break
        part = min(left, fee.outstanding)
        await fees.pay(session, actor=ctx.staff, fee_id=fee.id, amount=part, method=method,
                       note=note, now=ctx.now())  # fmt: skip
        left -= part


async def fee_paid(ctx: Context, message: Message) -> Reply:
    """Record money taken by the SC: against the fee CG (its id, as listed in AV), or the
    patron's open fees oldest first. No PIN is needed to pay; the answer tells nothing of
    the account beyond the payment."""
    amount = _amount(message)
    method = PAYMENT_METHODS.get(message.fixed[2], "other")
    transaction = message.get("BK")
    note = f"SIP2 self-check payment {transaction}" if transaction else "SIP2 self-check payment"
    card = required(message, "AA", "patron identifier")
    async with ctx.transaction() as session:
        patron = await patrons_service.get_patron_by_card(session, card)
        if patron is None:
            raise PatronNotFound(f"There is no patron with card number {card!r}.")
        fee_id = message.get("CG")
        if fee_id:
            await _pay_fee(session, ctx, patron, fee_id, amount, method, note)
        else:
            await _pay_oldest_first(session, ctx, patron, amount, method, note)
    return Reply(
        "38", ("Y", format_datetime(ctx.now())),
        (("AO", message.get("AO") or ctx.config.institution_id), ("AA", card),
         ("BK", transaction), ("AF", f"Payment of {amount} received.")),
    )  # fmt: skip
