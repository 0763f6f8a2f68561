"""The SIP2 server over real TCP: login, status, what a damaged or malformed message gets,
resends, line endings and limits, idle connections and a graceful shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from factories import PASSWORD, make_patron_user, make_user
from interop.conftest import (
    DATE,
    INSTITUTION,
    NO_DATE,
    PIN,
    Kiosk,
    Library,
    clock,
    fixed,
    variable,
)
from shelfmark.auth.roles import Role
from shelfmark.circulation.models import Loan
from shelfmark.interop.sip2.answers import SUPPORTED_MESSAGES
from shelfmark.interop.sip2.context import NOT_LOGGED_IN, Sip2Config
from shelfmark.interop.sip2.protocol import parse_datetime
from shelfmark.interop.sip2.server import Sip2Server
from shelfmark.ratelimit import MemoryCounter


class TestStatus:
    async def test_sc_status_is_answered_before_login(self, kiosk: Kiosk) -> None:
        answer = await kiosk.send("9900302.00")
        assert answer.startswith("98")
        online, checkin, checkout, renewal, update, offline, timeout, retries, sync, version = (
            fixed(answer)
        )
        assert (online, checkin, checkout, renewal, update, offline) == tuple("YYYYNY")
        assert (timeout, retries, version) == ("100", "003", "2.00")
        assert sync == "20260302   Z110000"
        assert parse_datetime(sync) == clock()
        fields = variable(answer)
        assert fields["AO"] == [INSTITUTION]
        assert fields["BX"] == [SUPPORTED_MESSAGES]
        assert len(SUPPORTED_MESSAGES) == 16

    async def test_the_terminal_location_after_login(
        self, logged_in: Kiosk, library: Library
    ) -> None:
        answer = await logged_in.send("9900302.00")
        assert variable(answer)["AN"] == [library.desk.branch.code]


class TestLogin:
    async def test_a_librarian_logs_in(self, kiosk: Kiosk, library: Library) -> None:
        assert await kiosk.login(library.staff, library.desk.branch.code) == "941"
        assert (await kiosk.send(f"17{DATE}AO|AB{library.desk.item.barcode}|")).startswith("1803")

    async def test_a_location_that_is_no_branch_still_logs_in(
        self, kiosk: Kiosk, library: Library
    ) -> None:
        assert await kiosk.login(library.staff, "Self-check by the door") == "941"

    async def test_a_wrong_password_is_refused(self, kiosk: Kiosk, library: Library) -> None:
        answer = await kiosk.send(f"9300CN{library.staff.username}|COwrong password|CP|")
        assert answer == "940"
        assert (await kiosk.send(f"17{DATE}AB{library.desk.item.barcode}|")).startswith("1801")

    async def test_an_unknown_user_is_refused_alike(self, kiosk: Kiosk) -> None:
        assert await kiosk.send(f"9300CNnobody|CO{PASSWORD}|") == "940"

    async def test_a_patron_user_is_no_self_check(
        self, kiosk: Kiosk, library: Library, session: AsyncSession
    ) -> None:
        user = await make_patron_user(session, library.patron)
        await session.commit()
        assert await kiosk.login(user) == "940"

    async def test_an_inactive_librarian_is_refused(
        self, kiosk: Kiosk, library: Library, session: AsyncSession
    ) -> None:
        user = await make_user(session, Role.LIBRARIAN)
        user.is_active = False
        await session.commit()
        assert await kiosk.login(user) == "940"

    async def test_only_plain_text_credentials_are_defined(
        self, kiosk: Kiosk, library: Library
    ) -> None:
        answer = await kiosk.send(f"9311CN{library.staff.username}|CO{PASSWORD}|")
        assert answer == "940"

    async def test_a_failed_login_logs_the_connection_out(
        self, logged_in: Kiosk, library: Library
    ) -> None:
        assert await logged_in.send(f"9300CN{library.staff.username}|COnope|") == "940"
        answer = await logged_in.send(f"17{DATE}AB{library.desk.item.barcode}|")
        assert variable(answer)["AF"] == [NOT_LOGGED_IN]


class TestBeforeLogin:
    @pytest.mark.parametrize(
        ("request_", "answer_command"),
        [
            (f"63001{DATE}          AO|AA{{card}}|AD{PIN}|", "64"),
            (f"23001{DATE}AO|AA{{card}}|AD{PIN}|", "24"),
            (f"11NN{DATE}{NO_DATE}AO|AA{{card}}|AB{{item}}|AD{PIN}|", "12"),
            (f"09N{DATE}{DATE}AP|AO|AB{{item}}|", "10"),
            (f"29NN{DATE}{NO_DATE}AO|AA{{card}}|AB{{item}}|", "30"),
            (f"65{DATE}AO|AA{{card}}|", "66"),
            (f"17{DATE}AO|AB{{item}}|", "18"),
            (f"35{DATE}AO|AA{{card}}|", "36"),
            ("3720260302    1100000100USDBV1.00|AO|AA{card}|", "38"),
            (f"01Y{DATE}AO|ALstolen|AA{{card}}|", "24"),
        ],
    )
    async def test_every_message_is_refused_in_its_own_form(
        self, kiosk: Kiosk, library: Library, session: AsyncSession, request_: str,
        answer_command: str,
    ) -> None:  # fmt: skip
        text = request_.format(card=library.patron.card_number, item=library.desk.item.barcode)
        answer = await kiosk.send(text)
        assert answer[:2] == answer_command
        assert variable(answer)["AF"] == [NOT_LOGGED_IN]
        assert answer[2] in {"0", "N", "Y", "1"}  # a well-formed, negative answer
        if answer_command in {"12", "30", "10"}:
            assert answer[2] == "0"
        assert await session.scalar(select(func.count()).select_from(Loan)) == 0


class TestDamagedAndMalformed:
    async def test_a_bad_checksum_asks_for_a_resend(self, logged_in: Kiosk) -> None:
        line, _ = logged_in.frame("9900302.00")
        damaged = line.replace(b"302.00", b"302.01")
        assert await logged_in.exchange(damaged) == b"96AZFEF6\r"

    async def test_an_unknown_message_asks_for_a_resend(self, kiosk: Kiosk) -> None:
        assert await kiosk.exchange(b"XXsomething\r") == b"96\r"
        line, _ = kiosk.frame("42whatever")
        assert await kiosk.exchange(line) == b"96AZFEF6\r"
        # Once the SC has used checksums, every 96 carries one.
        assert await kiosk.exchange(b"XXsomething\r") == b"96AZFEF6\r"

    async def test_a_short_message_gets_a_negative_answer_of_its_type(
        self, logged_in: Kiosk
    ) -> None:
        answer = await logged_in.send("11YN2026")
        assert fixed(answer)[0] == "0"
        assert variable(answer)["AF"][0].startswith("Malformed message")

    async def test_a_bad_field_gets_a_negative_answer_of_its_type(self, logged_in: Kiosk) -> None:
        answer = await logged_in.send(f"17{DATE}AO|X|")
        assert answer.startswith("1801")
        assert "Malformed message" in variable(answer)["AF"][0]

    async def test_a_malformed_status_request_is_still_answered(self, kiosk: Kiosk) -> None:
        assert (await kiosk.send("99")).startswith("98")

    async def test_a_missing_identifier_is_named(self, logged_in: Kiosk) -> None:
        answer = await logged_in.send(f"17{DATE}AO|")
        assert variable(answer)["AF"] == ["The item identifier (AB) is missing."]

    async def test_an_identifier_the_services_refuse(
        self, logged_in: Kiosk, library: Library
    ) -> None:
        card = library.patron.card_number
        answer = await logged_in.send(f"11NN{DATE}{NO_DATE}AO|AA{card}|AB{'x' * 300}|AD{PIN}|")
        assert fixed(answer)[0] == "0"
        assert variable(answer)["AF"] == ["The item or patron identifier is not valid."]

    async def test_a_message_the_acs_does_not_offer_is_refused_in_its_form(
        self, logged_in: Kiosk, library: Library
    ) -> None:
        answer = await logged_in.send(f"15+{DATE}AO|AA{library.patron.card_number}|")
        assert fixed(answer)[:2] == ["0", "N"]
        assert "does not support" in variable(answer)["AF"][0]

    async def test_messages_without_error_detection_are_answered_without(
        self, kiosk: Kiosk
    ) -> None:
        answer = await kiosk.exchange(b"9900302.00\r")
        assert answer.startswith(b"98")
        assert b"AY" not in answer
        assert b"AZ" not in answer


class TestResend:
    async def test_97_gets_the_last_answer_again(self, logged_in: Kiosk, library: Library) -> None:
        line, _ = logged_in.frame(f"17{DATE}AO|AB{library.desk.item.barcode}|")
        first = await logged_in.exchange(line)
        again = await logged_in.exchange(b"97AZFEF5\r")
        assert again == first

    async def test_97_before_any_answer_asks_for_the_message(self, kiosk: Kiosk) -> None:
        assert await kiosk.exchange(b"97\r") == b"96\r"

    async def test_a_message_sent_twice_with_its_sequence_is_done_once(
        self, logged_in: Kiosk, library: Library, session: AsyncSession
    ) -> None:
        """An SC that heard no answer sends the same message again: the checkout is not
        tried twice (it would be refused as on loan the second time)."""
        text = (
            f"11NN{DATE}{NO_DATE}AO|AA{library.patron.card_number}|"
            f"AB{library.desk.item.barcode}|AD{PIN}|"
        )
        line, _ = logged_in.frame(text, sequence=5)
        first = await logged_in.exchange(line)
        assert first.startswith(b"121")
        assert await logged_in.exchange(line) == first
        loans = select(func.count()).where(Loan.item_id == library.desk.item.id)
        assert await session.scalar(loans) == 1


class TestFraming:
    @pytest.mark.parametrize("ending", [b"\r", b"\r\n", b"\n"])
    async def test_each_line_ending(self, kiosk: Kiosk, ending: bytes) -> None:
        kiosk.writer.write(b"9900302.00" + ending + b"9900302.00" + ending)
        first, second = await kiosk.read(), await kiosk.read()
        assert first.startswith(b"98")
        assert second == first

    async def test_a_message_in_pieces(self, kiosk: Kiosk) -> None:
        line, _ = kiosk.frame("9900302.00")
        for at in range(0, len(line), 3):
            kiosk.writer.write(line[at : at + 3])
            await kiosk.writer.drain()
            await asyncio.sleep(0.01)
        answer = await kiosk.read()
        assert answer.startswith(b"98")

    async def test_an_overlong_line_is_dropped_and_the_connection_lives_on(
        self, kiosk: Kiosk
    ) -> None:
        assert await kiosk.exchange(b"17" + b"x" * 20_000 + b"\r") == b"96\r"
        assert (await kiosk.send("9900302.00")).startswith("98")


@pytest.fixture
async def quick_server(sessionmaker: async_sessionmaker[AsyncSession]) -> AsyncIterator[Sip2Server]:
    server = Sip2Server(sessionmaker, config=Sip2Config(idle_timeout=1), clock=clock)
    await server.start("127.0.0.1", 0)
    yield server
    await server.close()


async def test_an_idle_connection_is_closed(quick_server: Sip2Server) -> None:
    kiosk = await Kiosk.connect(quick_server)
    assert (await kiosk.send("9900302.00")).startswith("98")
    assert await asyncio.wait_for(kiosk.reader.read(), 10) == b""
    await kiosk.close()


async def test_a_half_sent_message_does_not_hold_the_connection(
    quick_server: Sip2Server,
) -> None:
    kiosk = await Kiosk.connect(quick_server)
    kiosk.writer.write(b"9900")
    assert await asyncio.wait_for(kiosk.reader.read(), 10) == b""
    await kiosk.close()


# --- graceful shutdown ------------------------------------------------------------------


@dataclass
class Slowness:
    """Makes commits slow once armed, and says when one has started."""

    armed: bool = False
    committing: asyncio.Event = field(default_factory=asyncio.Event)


class SlowSession(AsyncSession):
    async def commit(self) -> None:
        slowness: Slowness = self.info["slowness"]
        if slowness.armed:
            slowness.committing.set()
            await asyncio.sleep(0.5)
        await super().commit()


async def test_shutdown_answers_the_message_in_hand_then_closes(
    connection: AsyncConnection, library: Library
) -> None:
    slowness = Slowness()
    maker = async_sessionmaker(
        bind=connection, class_=SlowSession, expire_on_commit=False, autoflush=False,
        join_transaction_mode="create_savepoint", info={"slowness": slowness},
    )  # fmt: skip
    server = Sip2Server(maker, config=Sip2Config(), counter=MemoryCounter(), clock=clock)
    await server.start("127.0.0.1", 0)
    busy, idle = await Kiosk.connect(server), await Kiosk.connect(server)
    try:
        assert await busy.login(library.staff) == "941"
        assert (await idle.send("9900302.00")).startswith("98")
        slowness.armed = True
        line, _ = busy.frame(f"17{DATE}AO|AB{library.desk.item.barcode}|")
        busy.writer.write(line)
        await asyncio.wait_for(slowness.committing.wait(), 10)

        server.shutdown()
        answer = await busy.read()
        assert answer.startswith(b"1803"), answer  # the whole answer, then the end
        assert await asyncio.wait_for(busy.reader.read(), 10) == b""
        assert await asyncio.wait_for(idle.reader.read(), 10) == b""
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", server.port)
        await asyncio.wait_for(server.wait_closed(), 10)
        assert server.connections == 0
    finally:
        await busy.close()
        await idle.close()
        await server.close()


async def test_the_kiosk_frames_as_the_spec_does() -> None:
    """The test kiosk sends what a spec-conformant SC sends (the spec's own example)."""
    kiosk = Kiosk(asyncio.StreamReader(), writer=None)  # type: ignore[arg-type]
    assert kiosk.frame("990 402.00") == (b"990 402.00AY1AZFCB4\r", "1")
