"""SMTP for notices, against a real SMTP server: the URL, the message, the two-step handover."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from aiosmtplib import SMTPAuthenticationError, SMTPRecipientRefused, SMTPSenderRefused

from mailsink import MailSink
from shelfmark.notices.errors import InvalidSmtpUrl
from shelfmark.notices.mail import (
    Mailer,
    SmtpTarget,
    compose,
    message_id,
    on_the_wire,
    parse_smtp_url,
)
from shelfmark.notices.rendering import Renderer, sample_context

WRITTEN = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)


class TestSmtpUrl:
    @pytest.mark.parametrize(
        ("url", "target"),
        [
            ("smtp://mail.example.org", SmtpTarget("mail.example.org", 25, "none")),
            ("smtp://mail.example.org:2525", SmtpTarget("mail.example.org", 2525, "none")),
            ("smtp://mail.example.org?starttls=true",
             SmtpTarget("mail.example.org", 587, "starttls")),
            ("smtp+starttls://u:p@mail.example.org",
             SmtpTarget("mail.example.org", 587, "starttls", "u", "p")),
            ("smtps://lib%40example.org:s%3Acret@mail.example.org",
             SmtpTarget("mail.example.org", 465, "tls", "lib@example.org", "s:cret")),
            ("SMTPS://mail.example.org:10465", SmtpTarget("mail.example.org", 10465, "tls")),
        ],
    )  # fmt: skip
    def test_schemes(self, url: str, target: SmtpTarget) -> None:
        assert parse_smtp_url(url) == target

    @pytest.mark.parametrize(
        "url", ["http://mail.example.org", "smtp://", "mail.example.org", "smtp://h:port"]
    )
    def test_bad_urls_say_so(self, url: str) -> None:
        with pytest.raises(InvalidSmtpUrl):
            parse_smtp_url(url)

    def test_the_password_is_never_shown(self) -> None:
        target = parse_smtp_url("smtp+starttls://lib:hunter2@mail.example.org")
        assert "hunter2" not in str(target)
        assert "lib@" in str(target)


class TestCompose:
    def _message(self, language: str = "fre") -> bytes:
        rendered = Renderer().render("overdue", language, sample_context("overdue"))
        return compose(
            notice_id=42, sender="Bibliothèque <library@example.org>", to_name="Zoë Ñandú",
            to_address="zoe@example.org", rendered=rendered, written_at=WRITTEN,
        )  # fmt: skip

    def test_the_message_id_is_the_notices_at_the_senders_domain(self) -> None:
        assert message_id(42, "Library <library@example.org>") == "<notice-42@example.org>"
        assert message_id(42, "nobody") == "<notice-42@localhost>"
        assert b"Message-ID: <notice-42@example.org>" in self._message()

    def test_every_try_is_the_same_message(self) -> None:
        first, again = self._message(), self._message()
        # The MIME boundary is random; everything else, Date and Message-ID included, is not.
        assert first.split(b"boundary")[0] == again.split(b"boundary")[0]

    def test_headers_and_parts(self) -> None:
        from mailsink import Received  # noqa: PLC0415 - the sink's parser

        message = Received("x", ["y"], self._message()).message
        assert message["To"] == "Zoë Ñandú <zoe@example.org>"
        assert message["Subject"] == "En retard : The Analytical Engine"
        assert message["Content-Language"] == "fr"
        assert message["Auto-Submitted"] == "auto-generated"
        assert message["Date"] == "Mon, 02 Mar 2026 07:00:00 +0000"
        assert message.get_content_type() == "multipart/alternative"
        assert max(len(line) for line in self._message().splitlines()) <= 78
        assert all(byte < 128 for byte in self._message())  # 7-bit clean

    def test_on_the_wire_lines_end_in_crlf_and_leading_dots_are_doubled(self) -> None:
        body, end = on_the_wire(b"one\n.two\r\n..three\rfour")
        assert body == b"one\r\n..two\r\n...three\r\nfour\r\n"
        assert end == b".\r\n"


async def _commit_yes() -> bool:
    return True


class TestMailer:
    async def test_a_message_is_handed_over_once_committed(self, smtp: MailSink) -> None:
        mailer = Mailer(parse_smtp_url(smtp.url))
        steps: list[str] = []

        async def commit() -> bool:
            steps.append(f"commit with {len(smtp.messages())} delivered")
            return True

        data = b"Subject: one\r\nMessage-ID: <1@example.org>\r\n\r\n.a line with a dot\r\n"
        assert await mailer.transmit(
            sender="library@example.org", recipient="a@example.org", message=data,
            commit=commit,
        )  # fmt: skip
        await mailer.close()
        assert steps == ["commit with 0 delivered"]
        (received,) = smtp.messages()
        assert received.recipients == ["a@example.org"]
        assert received.data == data  # dot-stuffing undone by the server

    async def test_one_connection_carries_many_messages(self, smtp: MailSink) -> None:
        mailer = Mailer(parse_smtp_url(smtp.url))
        for index in range(5):
            await mailer.transmit(
                sender="library@example.org", recipient=f"r{index}@example.org",
                message=f"Subject: {index}\r\n\r\nhi\r\n".encode(), commit=_commit_yes,
            )  # fmt: skip
        connection = mailer._smtp
        await mailer.transmit(
            sender="library@example.org", recipient="last@example.org",
            message=b"Subject: last\r\n\r\nhi\r\n", commit=_commit_yes,
        )  # fmt: skip
        assert mailer._smtp is connection
        await mailer.close()
        assert len(smtp.messages()) == 6

    async def test_a_refused_commit_abandons_the_message(self, smtp: MailSink) -> None:
        mailer = Mailer(parse_smtp_url(smtp.url))

        async def commit_refused() -> bool:
            return False

        sent = await mailer.transmit(
            sender="library@example.org", recipient="a@example.org",
            message=b"Subject: x\r\n\r\nhi\r\n", commit=commit_refused,
        )  # fmt: skip
        assert sent is False
        # The next message goes out on a new connection; the abandoned one never arrives.
        await mailer.transmit(
            sender="library@example.org", recipient="b@example.org",
            message=b"Subject: y\r\n\r\nhi\r\n", commit=_commit_yes,
        )  # fmt: skip
        await mailer.close()
        assert [m.recipients for m in smtp.messages()] == [["b@example.org"]]

    async def test_a_failing_commit_delivers_nothing(self, smtp: MailSink) -> None:
        mailer = Mailer(parse_smtp_url(smtp.url))

        async def commit_fails() -> bool:
            raise RuntimeError("the database went away")

        with pytest.raises(RuntimeError):
            await mailer.transmit(
                sender="library@example.org", recipient="a@example.org",
                message=b"Subject: x\r\n\r\nhi\r\n", commit=commit_fails,
            )  # fmt: skip
        await mailer.close()
        assert smtp.messages() == []

    async def test_a_refused_recipient_leaves_the_connection_usable(self, smtp: MailSink) -> None:
        smtp.refuse["gone@example.org"] = "550 5.1.1 No such user"
        mailer = Mailer(parse_smtp_url(smtp.url))
        with pytest.raises(SMTPRecipientRefused) as refused:
            await mailer.transmit(
                sender="library@example.org", recipient="gone@example.org",
                message=b"Subject: x\r\n\r\nhi\r\n", commit=_commit_yes,
            )  # fmt: skip
        assert refused.value.code == 550
        await mailer.transmit(
            sender="library@example.org", recipient="here@example.org",
            message=b"Subject: y\r\n\r\nhi\r\n", commit=_commit_yes,
        )  # fmt: skip
        await mailer.close()
        assert [m.recipients for m in smtp.messages()] == [["here@example.org"]]

    async def test_an_unreachable_server_is_a_connection_error(self, smtp: MailSink) -> None:
        smtp.stop()
        mailer = Mailer(parse_smtp_url(smtp.url))
        with pytest.raises(ConnectionError):
            await mailer.open()


@pytest.mark.filterwarnings("ignore:Session.login_data is deprecated")  # aiosmtpd's own
class TestLogin:
    async def test_user_and_password_from_the_url_log_in(self) -> None:
        sink = MailSink(login=("library", "s3cret:!"))
        sink.start()
        try:
            url = f"smtp://library:s3cret%3A%21@127.0.0.1:{sink.port}"
            mailer = Mailer(parse_smtp_url(url))
            await mailer.transmit(
                sender="library@example.org", recipient="a@example.org",
                message=b"Subject: x\r\n\r\nhi\r\n", commit=_commit_yes,
            )  # fmt: skip
            await mailer.close()
            assert len(sink.messages()) == 1

            anonymous = Mailer(parse_smtp_url(f"smtp://127.0.0.1:{sink.port}"))
            with pytest.raises(SMTPSenderRefused):
                await anonymous.transmit(
                    sender="library@example.org", recipient="a@example.org",
                    message=b"Subject: x\r\n\r\nhi\r\n", commit=_commit_yes,
                )  # fmt: skip
            await anonymous.close()
            wrong = Mailer(parse_smtp_url(f"smtp://library:wrong@127.0.0.1:{sink.port}"))
            with pytest.raises(SMTPAuthenticationError):
                await wrong.open()
        finally:
            sink.stop()
        assert len(sink.messages()) == 1
