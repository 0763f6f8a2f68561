"""SMTP for notices: the `SMTP_URL`, one connection reused for a whole delivery run, and a
message handed over in two steps, so that the notice can be marked sent in between.

aiosmtplib rather than smtplib in a thread: a worker's services run on its one event loop
(see `shelfmark.worker`), and an asyncio client lets a run interleave its database commits
with the SMTP conversation on that loop, with no thread hop per command.

`Mailer.transmit` sends MAIL, RCPT, DATA and the whole message but its final line; waits
until those bytes have left the process; calls `commit` (which marks the notice sent); and
only then writes the final "." that makes the server take the message. A server never
delivers a message whose final "." it did not receive, so a worker that dies before the
commit leaves a notice that was not delivered and is still marked so (it is sent again),
and one that dies after it leaves a notice that was. See `shelfmark.notices.delivery`.
"""

from __future__ import annotations

import asyncio
import binascii
import re
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from email.header import Header
from email.utils import format_datetime, formataddr, parseaddr
from typing import Literal
from urllib.parse import parse_qs, unquote, urlsplit

from aiosmtplib import SMTP, SMTPDataError, SMTPResponseException, SMTPServerDisconnected

from shelfmark.notices.errors import InvalidSmtpUrl
from shelfmark.notices.rendering import Rendered

Security = Literal["none", "starttls", "tls"]
DEFAULT_PORTS: dict[Security, int] = {"none": 25, "starttls": 587, "tls": 465}
SCHEMES: dict[str, Security] = {"smtp": "none", "smtp+starttls": "starttls", "smtps": "tls"}
TIMEOUT = 30.0  # seconds for any one reply
_FLUSH_WAIT = 5.0  # seconds for a message's bytes to leave the process before the commit
_LINE_ENDS = re.compile(rb"\r\n|\n|\r(?!\n)")
_LEADING_DOT = re.compile(rb"(?m)^\.")
_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True, slots=True)
class SmtpTarget:
    """Where and how to connect, as `SMTP_URL` says."""

    hostname: str
    port: int
    security: Security
    username: str | None = None
    password: str | None = None

    def __str__(self) -> str:
        """The server as logs and notices may show it: never the password."""
        user = f"{self.username}@" if self.username else ""
        return f"{self.hostname}:{self.port} ({self.security}, {user or 'no login'})"


def parse_smtp_url(url: str) -> SmtpTarget:
    """`smtp://`, `smtp+starttls://` or `smtps://`, with optional `user:password@` and, for
    smtp://, `?starttls=true` (see `Settings.smtp_url`)."""
    parts = urlsplit(url)
    security = SCHEMES.get(parts.scheme.lower())
    if security is None:
        raise InvalidSmtpUrl(
            f"SMTP_URL must start with one of {', '.join(s + '://' for s in SCHEMES)}."
        )
    if not parts.hostname:
        raise InvalidSmtpUrl("SMTP_URL names no host.")
    query = parse_qs(parts.query)
    if security == "none" and query.get("starttls", [""])[-1].lower() in _TRUE:
        security = "starttls"
    try:
        port = parts.port or DEFAULT_PORTS[security]
    except ValueError as exc:
        raise InvalidSmtpUrl(f"SMTP_URL has a bad port: {exc}.") from exc
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    return SmtpTarget(parts.hostname, port, security, username, password)


# BCP 47 tags of the ISO 639-2 codes that patrons' languages use, for Content-Language.
_LANGUAGE_TAGS = {
    "eng": "en", "fre": "fr", "ger": "de", "spa": "es", "ita": "it", "dut": "nl", "por": "pt",
}  # fmt: skip


def sender_address(sender: str) -> str:
    """The bare address of `NOTICE_FROM` (the envelope's MAIL FROM)."""
    return parseaddr(sender)[1] or sender


def message_id(notice_id: int, sender: str) -> str:
    """The notice's Message-ID: its id, at the sender's domain; the same on every try, so
    that a retransmission is recognisably the same message (RFC 5322 §3.6.4)."""
    _, at, domain = sender_address(sender).rpartition("@")
    return f"<notice-{notice_id}@{domain if at and domain else 'localhost'}>"


def _header(name: str, value: str) -> bytes:
    """`Name: value`, folded, in RFC 2047 encoded words where the value is not ASCII."""
    value = " ".join(value.split())  # one line: no header can be smuggled in
    charset = "us-ascii" if value.isascii() else "utf-8"
    folded = Header(value, charset, header_name=name).encode(linesep="\r\n")
    return f"{name}: {folded}\r\n".encode("ascii")


def _address_header(name: str, display: str, address: str) -> bytes:
    """`Name: display <address>`, the display name in an RFC 2047 encoded word if need be."""
    value = formataddr((" ".join(display.split()), address), charset="utf-8")
    return f"{name}: {value}\r\n".encode("ascii")


def _part(subtype: str, content: str) -> bytes:
    """A text part, quoted-printable, with CRLF line ends."""
    body = binascii.b2a_qp(content.replace("\r\n", "\n").encode("utf-8"), istext=True)
    head = (
        f'Content-Type: text/{subtype}; charset="utf-8"\r\n'
        "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
    )
    return head.encode("ascii") + body.rstrip(b"\n").replace(b"\n", b"\r\n") + b"\r\n"


def compose(
    *, notice_id: int, sender: str, to_name: str, to_address: str, rendered: Rendered,
    written_at: datetime,
) -> bytes:  # fmt: skip
    """The notice as an RFC 5322 message: text, and HTML as its alternative where there is
    one; 7-bit clean (quoted-printable), so any server takes it.

    Written by hand rather than with `email.message.EmailMessage`, which bench/notices.py
    found to cost more than the SMTP conversation itself; and deterministic (dated when the
    notice was written, a boundary named after it), so that every try of a notice is the
    same message, byte for byte. A boundary starting with "=_" cannot occur in
    quoted-printable text, where "=" is always followed by hex digits or a line end.
    """
    sender_name, sender_address_ = parseaddr(sender)
    head = b"".join((
        _address_header("From", sender_name, sender_address_ or sender),
        _address_header("To", to_name, to_address),
        _header("Subject", rendered.subject),
        _header("Date", format_datetime(written_at)),
        _header("Message-ID", message_id(notice_id, sender)),
        # Automatic: out-of-office replies and the like should not answer it (RFC 3834).
        _header("Auto-Submitted", "auto-generated"),
        _header("Content-Language", tag) if (tag := _LANGUAGE_TAGS.get(rendered.language))
        else b"",
        b"MIME-Version: 1.0\r\n",
    ))  # fmt: skip
    if rendered.html is None:
        return head + _part("plain", rendered.text)
    boundary = f"=_notice-{notice_id}"
    return b"".join((
        head,
        f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n'.encode(),
        f"--{boundary}\r\n".encode(), _part("plain", rendered.text),
        f"--{boundary}\r\n".encode(), _part("html", rendered.html),
        f"--{boundary}--\r\n".encode(),
    ))  # fmt: skip


def on_the_wire(message: bytes) -> tuple[bytes, bytes]:
    """A message as DATA carries it: CRLF line ends, lines that start with "." doubled
    (RFC 5321 §4.5.2); split into (everything, the final line that ends it)."""
    data = _LINE_ENDS.sub(b"\r\n", message)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return _LEADING_DOT.sub(b"..", data), b".\r\n"


def is_permanent(error: SMTPResponseException) -> bool:
    """A 5xx reply refuses for good (RFC 5321 §4.2.1); a 4xx one asks to try again later."""
    return 500 <= error.code < 600


class Mailer:
    """One SMTP connection, opened at the first message and kept for the ones after it."""

    def __init__(self, target: SmtpTarget, *, local_hostname: str | None = None) -> None:
        self.target = target
        self._local_hostname = local_hostname
        self._smtp: SMTP | None = None

    async def _connection(self) -> SMTP:
        if self._smtp is not None and self._smtp.is_connected:
            return self._smtp
        target = self.target
        smtp = SMTP(
            hostname=target.hostname, port=target.port, timeout=TIMEOUT,
            use_tls=target.security == "tls", start_tls=target.security == "starttls",
            tls_context=ssl.create_default_context() if target.security != "none" else None,
            local_hostname=self._local_hostname,
        )  # fmt: skip
        await smtp.connect()
        if target.username is not None:
            await smtp.login(target.username, target.password or "")
        self._smtp = smtp
        return smtp

    async def open(self) -> None:
        """Connect (and log in) now, so that an unreachable server shows before any work."""
        await self._connection()

    async def close(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is None or not smtp.is_connected:
            return
        try:
            await smtp.quit()
        except Exception:  # the run is over: a rude goodbye loses nothing
            smtp.close()

    def _drop(self) -> None:
        """Cut the connection mid-message: the server discards what it got of it."""
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            smtp.close()

    async def transmit(
        self, *, sender: str, recipient: str, message: bytes,
        commit: Callable[[], Awaitable[bool]],
    ) -> bool:  # fmt: skip
        """Hand `message` over, calling `commit` just before the final line.

        False if `commit` said no (another run holds the notice): the message is abandoned
        unfinished. Raises `SMTPResponseException` when the server refuses — before the
        commit (the connection is reset and stays usable) or after it (the caller undoes
        its commit) — and `ConnectionError`/`TimeoutError` when the connection fails.
        """
        smtp = await self._connection()
        body, end = on_the_wire(message)
        try:
            await smtp.mail(sender)
            await smtp.rcpt(recipient)
            start = await smtp.execute_command(b"DATA")
            if start.code != 354:
                raise SMTPDataError(start.code, start.message)
        except SMTPResponseException:
            await smtp.rset()
            raise
        protocol = smtp.protocol
        if protocol is None:
            raise SMTPServerDisconnected("Connection lost")
        try:
            protocol.write(body)
            await _flushed(protocol.transport)
            committed = await commit()
        except BaseException:
            self._drop()
            raise
        if not committed:
            self._drop()
            return False
        # The final line, and its reply read at once: no await in between, so the reply
        # cannot arrive before the protocol expects it.
        protocol.write(end)
        reply = await protocol.read_response(timeout=TIMEOUT)
        if reply.code != 250:
            raise SMTPDataError(reply.code, reply.message)
        return True


async def _flushed(transport: asyncio.BaseTransport | None) -> None:
    """Wait until what was written has gone to the kernel: after that, the final line is
    written straight to the socket by the same call that writes it."""
    if not isinstance(transport, asyncio.WriteTransport):
        raise SMTPServerDisconnected("Connection lost")
    deadline = time.monotonic() + _FLUSH_WAIT
    while transport.get_write_buffer_size():
        if transport.is_closing():
            raise SMTPServerDisconnected("Connection lost")
        if time.monotonic() > deadline:
            raise TimeoutError("The SMTP server stopped reading the message.")
        await asyncio.sleep(0.001)
