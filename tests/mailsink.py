"""A real SMTP server for tests: aiosmtpd on 127.0.0.1, in a thread of its own, keeping every
message it accepts. It can be stopped and started again on the same port (an SMTP outage),
made to refuse recipients (4xx or 5xx), and asked to log in its clients."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session


@dataclass(frozen=True)
class Received:
    sender: str
    recipients: list[str]
    data: bytes
    arrived: float = 0.0  # time.perf_counter() when the server took it

    @property
    def message(self) -> EmailMessage:
        parsed = message_from_bytes(self.data, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed

    @property
    def message_id(self) -> str:
        return str(self.message["Message-ID"])

    def text(self) -> str:
        body = self.message.get_body(preferencelist=("plain",))
        assert body is not None
        return str(body.get_content())

    def html(self) -> str | None:
        body = self.message.get_body(preferencelist=("html",))
        return None if body is None else str(body.get_content())


class _Handler:
    def __init__(self, sink: MailSink) -> None:
        self.sink = sink

    async def handle_MAIL(
        self, server: SMTPServer, session: Session, envelope: Envelope, address: str,
        mail_options: list[str],
    ) -> str:  # fmt: skip
        # Logging in is required when the sink has a login (aiosmtpd's own `auth_required`
        # warns without TLS, and warnings are errors here).
        if self.sink.login is not None and not session.authenticated:
            return "530 5.7.0 Authentication required"
        envelope.mail_from = address
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTPServer, session: Session, envelope: Envelope, address: str,
        rcpt_options: list[str],
    ) -> str:  # fmt: skip
        refusal = self.sink.refuse.get(address)
        if refusal:
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        with self.sink.lock:
            self.sink.received.append(
                Received(
                    str(envelope.mail_from),
                    list(envelope.rcpt_tos),
                    bytes(content),
                    time.perf_counter(),
                )
            )
        return "250 Message accepted for delivery"


class MailSink:
    """`url` is the SMTP_URL that reaches it (with `user:password@` when `login` is set)."""

    def __init__(self, *, login: tuple[str, str] | None = None) -> None:
        self.port = _free_port()
        self.login = login
        self.received: list[Received] = []
        self.refuse: dict[str, str] = {}  # recipient -> the reply that refuses it
        self.lock = threading.Lock()
        self._controller: Controller | None = None

    @property
    def url(self) -> str:
        user = f"{self.login[0]}:{self.login[1]}@" if self.login else ""
        return f"smtp://{user}127.0.0.1:{self.port}"

    def _authenticate(
        self, server: SMTPServer, session: Session, envelope: Envelope, mechanism: str,
        auth_data: Any,
    ) -> AuthResult:  # fmt: skip
        ok = (
            isinstance(auth_data, LoginPassword)
            and self.login is not None
            and (auth_data.login.decode(), auth_data.password.decode()) == self.login
        )
        return AuthResult(success=ok, handled=False)

    def start(self) -> None:
        options: dict[str, Any] = {}
        if self.login:
            options = {"authenticator": self._authenticate, "auth_require_tls": False}
        self._controller = Controller(
            _Handler(self), hostname="127.0.0.1", port=self.port, **options
        )
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def messages(self) -> list[Received]:
        with self.lock:
            return list(self.received)

    def wait_for(self, count: int, within: float = 30) -> list[Received]:
        deadline = time.monotonic() + within
        while len(self.messages()) < count:
            assert time.monotonic() < deadline, f"{len(self.messages())} of {count} mails came"
            time.sleep(0.01)
        return self.messages()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
