"""What a SIP2 connection knows: the shared parts of the server and its own login.

One TCP connection is one SC (a self-check machine, a sorter) logged in as one Shelfmark
staff user; everything it asks is done as that user, in one transaction per message.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shelfmark.auth.roles import Actor
from shelfmark.catalog import service as catalog_service
from shelfmark.db import session_scope, utcnow
from shelfmark.errors import Forbidden, InvalidInput
from shelfmark.interop.sip2.protocol import Message
from shelfmark.patrons import service as patrons_service
from shelfmark.patrons.errors import PatronNotFound
from shelfmark.patrons.models import Patron
from shelfmark.ratelimit import Counter, Limit, check

# PIN guessing at a self-check: checked per card, whichever machine or connection guesses.
# A PIN verified once on a connection is not checked (nor counted) again there for the same
# patron, so a patron borrowing ten items spends one attempt, not eleven.
PIN_PER_CARD = Limit("sip2-pin", attempts=10, seconds=300)
NOT_LOGGED_IN = "Please log in first (SIP2 message 93)."
BAD_PIN = "The card or PIN was not accepted."
PAGE = 100
T = TypeVar("T")


class PinNotAccepted(Forbidden):
    code = "pin-not-accepted"
    title = "Card or PIN not accepted"


@dataclass(frozen=True, slots=True)
class Sip2Config:
    """How the server presents itself and what it tolerates from a connection."""

    institution_id: str = "shelfmark"
    library_name: str = "Shelfmark"
    encoding: str = "utf-8"
    # A connection that sends nothing for this long is closed (the SC reconnects).
    idle_timeout: float = 600.0
    # A longer line is refused unread (96), so that no client can make the server buffer
    # without bound.
    max_message_bytes: int = 8192
    # On SIGTERM: how long messages in hand may take before their connections are cut.
    shutdown_grace: float = 25.0


@dataclass(frozen=True, slots=True)
class Location:
    """The branch the SC stands in, if its location code (login CP, checkin AP) names one:
    checkouts are lent, and returns received, there."""

    code: str
    branch_id: int


@dataclass(eq=False)
class Context:
    sessionmaker: async_sessionmaker[AsyncSession]
    config: Sip2Config
    counter: Counter
    clock: Callable[[], datetime] = utcnow
    peer: str = "unknown"
    actor: Actor | None = None
    location: Location | None = None
    terminal: str | None = None  # the login's CP, as the SC sent it
    _verified: tuple[str, str, bytes] | None = None
    _key: bytes = field(default_factory=lambda: secrets.token_bytes(32))

    def now(self) -> datetime:
        return self.clock()

    @property
    def staff(self) -> Actor:
        """The logged-in user; the dispatcher lets no message through before login."""
        if self.actor is None:
            raise RuntimeError("SIP2 message handled before login")
        return self.actor

    @property
    def branch(self) -> str | None:
        return self.location.code if self.location else None

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        async with session_scope(self.sessionmaker) as session:
            yield session

    def _digest(self, pin: str) -> bytes:
        return hmac.new(self._key, pin.encode(), hashlib.sha256).digest()

    async def check_pin(self, patron: Patron, pin: str | None) -> bool:
        """Whether the patron may act with this PIN (AD). A patron who has a PIN must give
        it; one who has none must give none (or an empty AD). Wrong PIN and no PIN at all
        look the same from outside. Raises `RateLimited` past `PIN_PER_CARD`."""
        if not pin:
            return patron.pin_hash is None
        if patron.pin_hash is None:
            return False
        card, digest = patron.card_number, self._digest(pin)
        if self._verified is not None:
            known_card, known_hash, known_digest = self._verified
            if (known_card, known_hash) == (card, patron.pin_hash) and hmac.compare_digest(
                known_digest, digest
            ):
                return True
        await check(self.counter, PIN_PER_CARD, card)
        if not patrons_service.verify_pin(patron, pin):
            return False
        self._verified = (card, patron.pin_hash, digest)
        return True

    def forget_patron(self) -> None:
        """End of a patron's session at the SC: their PIN must be given again."""
        self._verified = None


def required(message: Message, field_id: str, name: str) -> str:
    value = message.get(field_id)
    if not value:
        raise InvalidInput(f"The {name} ({field_id}) is missing.")
    return value


async def patron_with_pin(session: AsyncSession, ctx: Context, message: Message) -> Patron:
    """The patron of AA, if the PIN in AD is accepted for them (see `Context.check_pin`)."""
    card = required(message, "AA", "patron identifier")
    patron = await patrons_service.get_patron_by_card(session, card)
    if patron is None:
        raise PatronNotFound(f"There is no patron with card number {card!r}.")
    if not await ctx.check_pin(patron, message.get("AD")):
        raise PinNotAccepted(BAD_PIN)
    return patron


async def branch_code(session: AsyncSession, location: str | None) -> str | None:
    """The code of the branch a location code (CP, AP) names, if it names one."""
    if not location:
        return None
    branch = await catalog_service.get_branch_by_code(session, location)
    return branch.code if branch is not None else None


async def every(
    fetch: Callable[[int | None], Awaitable[Sequence[T]]], key: Callable[[T], int]
) -> list[T]:
    """All rows of a keyset-paged service read (`limit` + 1 rows say that more follow)."""
    found: list[T] = []
    after: int | None = None
    while True:
        rows = await fetch(after)
        found.extend(rows[:PAGE])
        if len(rows) <= PAGE:
            return found
        after = key(rows[PAGE - 1])
