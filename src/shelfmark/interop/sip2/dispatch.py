"""One SIP2 conversation: from the bytes of a request line to the bytes of its answer.

Every line gets an answer, and never an exception: a damaged or unrecognisable line gets 96
(request SC resend), 97 gets the last answer again, a request before login or one the
services refuse gets the negative answer of its type with the reason on screen (AF), and
an unexpected failure is logged and answered the same way with a neutral message.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

from pydantic import ValidationError

from shelfmark.auth import service as auth_service
from shelfmark.catalog import service as catalog_service
from shelfmark.errors import InvalidCredentials, ShelfmarkError
from shelfmark.interop.sip2 import circulation, patrons
from shelfmark.interop.sip2.answers import SUPPORTED_MESSAGES, negative
from shelfmark.interop.sip2.context import NOT_LOGGED_IN, Context, Location
from shelfmark.interop.sip2.protocol import (
    PROTOCOL_VERSION,
    MalformedMessage,
    Message,
    Reply,
    Sip2Error,
    bit,
    encode,
    format_datetime,
    parse,
)
from shelfmark.ratelimit import LOGIN_PER_ADDRESS, LOGIN_PER_USER, check

log = logging.getLogger(__name__)

Handler = Callable[[Context, Message], Awaitable[Reply]]
HANDLERS: Mapping[str, Handler] = {
    "01": patrons.block_patron,
    "09": circulation.checkin,
    "11": circulation.checkout,
    "17": circulation.item_information,
    "23": patrons.patron_status,
    "29": circulation.renew,
    "35": patrons.end_patron_session,
    "37": patrons.fee_paid,
    "63": patrons.patron_information,
    "65": circulation.renew_all,
}
REQUEST_SC_RESEND = Reply("96")
# What the SC may send before it has logged in.
BEFORE_LOGIN = frozenset({"93", "97", "99"})
BAD_IDENTIFIER = "The item or patron identifier is not valid."
SYSTEM_ERROR = "The library system could not do this; please ask the staff."
# 98: timeout the SC waits for an answer (tenths of a second) and retries it may make.
TIMEOUT_PERIOD = "100"
RETRIES_ALLOWED = "003"


class Session:
    """The server side of one connection: its login, and the last exchange for resends."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.last_request: bytes | None = None
        self.last_answer: bytes | None = None
        self.checksums = False  # whether the SC has used checksums: 96 is sent in kind

    async def answer(self, line: bytes) -> bytes:
        """The bytes to send back for one request line (without its terminator)."""
        try:
            return await self._answer(line)
        except Exception:  # a bug here must cost the SC one message, not its connection
            log.exception("SIP2 line from %s could not be answered", self.ctx.peer)
            return self._resend_request(self.checksums)

    async def _answer(self, line: bytes) -> bytes:
        encoding = self.ctx.config.encoding
        try:
            message = parse(line, encoding=encoding)
        except MalformedMessage as exc:
            self.checksums = self.checksums or exc.checksummed
            return self._remember(line, self._refusal_of(exc), exc.sequence, exc.checksummed)
        except Sip2Error as exc:
            self.checksums = self.checksums or exc.checksummed
            log.info("SIP2 %s from %s: %s; asking for a resend", self._who, self.ctx.peer,
                     exc.reason)  # fmt: skip
            return self._resend_request(exc.checksummed or self.checksums)
        self.checksums = self.checksums or message.checksummed
        if message.command == "97":
            return self.last_answer or self._resend_request(self.checksums)
        if message.sequence is not None and line == self.last_request and self.last_answer:
            return self.last_answer  # the SC sent it again, not having heard the answer
        reply = await self._reply(message)
        return self._remember(line, reply, message.sequence, message.checksummed)

    @property
    def _who(self) -> str:
        return self.ctx.actor.username if self.ctx.actor else "(not logged in)"

    def _remember(
        self, line: bytes, reply: Reply, sequence: str | None, checksummed: bool
    ) -> bytes:
        data = encode(reply, sequence=sequence, checksummed=checksummed,
                      encoding=self.ctx.config.encoding)  # fmt: skip
        self.last_request, self.last_answer = line, data
        return data

    def too_long(self) -> bytes:
        """96 for a line over the length limit, which was dropped unread."""
        log.info("SIP2 line over %d bytes from %s dropped; asking for a resend",
                 self.ctx.config.max_message_bytes, self.ctx.peer)  # fmt: skip
        return self._resend_request(self.checksums)

    def _resend_request(self, checksummed: bool) -> bytes:
        return encode(REQUEST_SC_RESEND, sequence=None, checksummed=checksummed)

    def _refusal_of(self, error: MalformedMessage) -> Reply:
        command = error.command or ""
        if command == "99":
            return self._status()  # a status request needs nothing from its fields
        reply = self._negative(command, f"Malformed message: {error.reason}.", None)
        return reply or REQUEST_SC_RESEND

    def _negative(self, command: str, reason: str, message: Message | None) -> Reply | None:
        return negative(command, reason, message=message, now=self.ctx.now(),
                        institution=self.ctx.config.institution_id)  # fmt: skip

    async def _reply(self, message: Message) -> Reply:
        command = message.command
        if command == "99":
            return self._status()
        if command == "93":
            return await self._login(message)
        if self.ctx.actor is None and command not in BEFORE_LOGIN:
            return self._negative(command, NOT_LOGGED_IN, message) or REQUEST_SC_RESEND
        handler = HANDLERS.get(command)
        if handler is None:
            reason = f"This library does not support SIP2 message {command} here."
            return self._negative(command, reason, message) or REQUEST_SC_RESEND
        try:
            return await handler(self.ctx, message)
        except ShelfmarkError as exc:
            reason = exc.detail
        except ValidationError:
            reason = BAD_IDENTIFIER
        except Exception:
            log.exception("SIP2 message %s from %s failed", command, self.ctx.peer)
            reason = SYSTEM_ERROR
        return self._negative(command, reason, message) or REQUEST_SC_RESEND

    def _status(self) -> Reply:
        """98, the ACS status: what the SC may do here, and the time to set its clock to."""
        ctx = self.ctx
        return Reply(
            "98",
            ("Y", "Y", "Y", "Y", "N", "Y", TIMEOUT_PERIOD, RETRIES_ALLOWED,
             format_datetime(ctx.now()), PROTOCOL_VERSION),
            (("AO", ctx.config.institution_id), ("AM", ctx.config.library_name),
             ("BX", SUPPORTED_MESSAGES), ("AN", ctx.terminal)),
        )  # fmt: skip

    async def _login(self, message: Message) -> Reply:
        """93: the SC logs in as a Shelfmark librarian or admin (CN, CO), from a location
        (CP) that, if it is a branch code, is where it lends and takes back. A failed login
        logs the connection out. Attempts count against the same limits as the API's."""
        ctx = self.ctx
        ctx.actor, ctx.location, ctx.terminal = None, None, None
        ctx.forget_patron()
        username, password = message.get("CN") or "", message.get("CO") or ""
        # Only plain text is defined for the UID and PWD algorithms ("0").
        plain = message.fixed == ("0", "0")
        try:
            await check(ctx.counter, LOGIN_PER_ADDRESS, ctx.peer)
            await check(ctx.counter, LOGIN_PER_USER, username.casefold())
            async with ctx.transaction() as session:
                user = await auth_service.authenticate(
                    session, username=username, password=password
                )
                actor = auth_service.actor_of(user)
                if not (plain and actor.is_staff):
                    raise InvalidCredentials("Not a staff login.")
                terminal = message.get("CP")
                branch = (
                    await catalog_service.get_branch_by_code(session, terminal)
                    if terminal else None
                )  # fmt: skip
        except ShelfmarkError as exc:
            log.warning("SIP2 login of %r from %s refused: %s", username, ctx.peer, exc.detail)
            return Reply("94", (bit(False),))
        except Exception:
            log.exception("SIP2 login of %r from %s failed", username, ctx.peer)
            return Reply("94", (bit(False),))
        ctx.actor, ctx.terminal = actor, terminal
        ctx.location = Location(branch.code, branch.id) if branch is not None else None
        log.info("SIP2 login of %r from %s at %s", username, ctx.peer,
                 ctx.branch or "the items' own branches")  # fmt: skip
        return Reply("94", (bit(True),))
