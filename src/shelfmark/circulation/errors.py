"""Circulation errors. Each refusal of a desk action is its own class with a stable code.

A `Refusal` says in its problem document whether a librarian may override it
(`"overridable": true`): a checkout, renewal or hold refused for such a reason goes through
when the request carries `override: {reason}`, and the override is audited.
"""

from __future__ import annotations

from typing import Any, ClassVar

from shelfmark.errors import Conflict, InvalidInput, NotFound


class Refusal(Conflict):
    overridable: ClassVar[bool] = True

    def __init__(self, detail: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("overridable", self.overridable)
        super().__init__(detail, **kwargs)


class PatronExpired(Refusal):
    code = "patron-expired"
    title = "Patron card expired"


class PatronBlocked(Refusal):
    code = "patron-blocked"
    title = "Patron blocked"


class FeesOverThreshold(Refusal):
    code = "fees-over-threshold"
    title = "Open fees over the limit"


class LoanLimitReached(Refusal):
    code = "loan-limit-reached"
    title = "Loan limit reached"


class ItemNotAvailable(Refusal):
    """Lost, missing, withdrawn… (overridable), or on loan (never overridable)."""

    code = "item-not-available"
    title = "Item not available"


class ItemOnLoan(ItemNotAvailable):
    overridable = False


class ItemOnHoldForAnother(Refusal):
    code = "item-on-hold-for-another"
    title = "Item on hold for another patron"


class RenewalsExhausted(Refusal):
    code = "renewals-exhausted"
    title = "No renewals left"


class HoldsWaiting(Refusal):
    code = "holds-waiting"
    title = "Another patron is waiting for this title"


class HoldLimitReached(Refusal):
    code = "hold-limit-reached"
    title = "Hold limit reached"


class NotHoldable(Refusal):
    code = "not-holdable"
    title = "Not holdable"


class TitleOnLoanToPatron(Refusal):
    overridable = False
    code = "title-on-loan-to-patron"
    title = "The patron has this title on loan"


class DuplicateHold(Refusal):
    overridable = False
    code = "duplicate-hold"
    title = "The patron already holds this title"


class LoanClosed(Conflict):
    code = "loan-closed"
    title = "Loan already closed"


class LoanAnonymised(Conflict):
    code = "loan-anonymised"
    title = "Loan no longer names its patron"


class LoanLost(Conflict):
    code = "loan-lost"
    title = "Item declared lost"


class HoldClosed(Conflict):
    code = "hold-closed"
    title = "Hold no longer active"


class FeeClosed(Conflict):
    code = "fee-closed"
    title = "Fee already settled"


class PaymentTooLarge(InvalidInput):
    code = "payment-exceeds-outstanding"
    title = "Payment larger than what is owed"


class DefaultRuleProtected(Conflict):
    code = "default-rule-protected"
    title = "The default rule cannot be deleted"


class RuleScopeTaken(Conflict):
    code = "rule-scope-taken"
    title = "A rule for this scope exists"


class CalendarAlwaysClosed(Conflict):
    code = "calendar-always-closed"
    title = "No open day found"


class RuleNotFound(NotFound):
    code = "rule-not-found"
    title = "Circulation rule not found"


class ClosedDayNotFound(NotFound):
    code = "closed-day-not-found"
    title = "Closed day not found"


class LoanNotFound(NotFound):
    code = "loan-not-found"
    title = "Loan not found"


class HoldNotFound(NotFound):
    code = "hold-not-found"
    title = "Hold not found"


class FeeNotFound(NotFound):
    code = "fee-not-found"
    title = "Fee not found"
