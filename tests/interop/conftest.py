"""SIP2 fixtures: a library with a desk, a staff login for the self-checks, the SIP2 server
on a free port in the test's event loop, and a self-check machine talking to it over TCP."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from circulation.conftest import NOW, Desk, make_desk
from factories import PASSWORD, STAFF, make_user
from shelfmark.auth.models import User
from shelfmark.auth.roles import Role
from shelfmark.interop.sip2.context import Sip2Config
from shelfmark.interop.sip2.protocol import RESPONSE_LAYOUT, checksum
from shelfmark.interop.sip2.server import Sip2Server
from shelfmark.patrons import service as patrons_service
from shelfmark.patrons.models import Patron
from shelfmark.patrons.schemas import PatronUpdate
from shelfmark.ratelimit import MemoryCounter

# The self-checks' clock: an hour after the desk was set up, a Monday.
LATER = NOW + timedelta(hours=1)
PIN = "4321"
INSTITUTION = "TESTLIB"
# A transaction date as SCs send it (local time), and an empty one.
DATE = "20260302    110000"
NO_DATE = " " * 18
ANSWER_WITHIN = 10.0


@dataclass
class Library:
    desk: Desk
    staff: User

    @property
    def patron(self) -> Patron:
        return self.desk.patron


@pytest.fixture
async def library(session: AsyncSession) -> Library:
    """The circulation desk (14-day loans, 1 renewal, 2 loans, 2 holds, blocked above 5.00
    in fees), its patron with PIN 4321, and a librarian for the self-checks to log in as."""
    desk = await make_desk(session)
    await patrons_service.update_patron(
        session, actor=STAFF, patron=desk.patron, data=PatronUpdate(pin=PIN)
    )
    staff = await make_user(session, Role.LIBRARIAN)
    await session.commit()
    return Library(desk, staff)


def clock() -> datetime:
    return LATER


@pytest.fixture
async def sip2(sessionmaker: async_sessionmaker[AsyncSession]) -> AsyncIterator[Sip2Server]:
    server = Sip2Server(
        sessionmaker, config=Sip2Config(institution_id=INSTITUTION, idle_timeout=30),
        counter=MemoryCounter(), clock=clock,
    )  # fmt: skip
    await server.start("127.0.0.1", 0)
    yield server
    await server.close()


class Kiosk:
    """A self-check machine: SIP2 over a real TCP connection, with error detection on."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self._sequence = itertools.count(1)

    @classmethod
    async def connect(cls, server: Sip2Server) -> Kiosk:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        return cls(reader, writer)

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()

    async def exchange(self, data: bytes) -> bytes:
        """Send bytes as they are; the answer up to and including its CR."""
        self.writer.write(data)
        await self.writer.drain()
        return await self.read()

    async def read(self) -> bytes:
        return await asyncio.wait_for(self.reader.readuntil(b"\r"), ANSWER_WITHIN)

    def frame(self, text: str, sequence: int | None = None) -> tuple[bytes, str]:
        number = str((next(self._sequence) if sequence is None else sequence) % 10)
        line = f"{text}AY{number}AZ".encode()
        return line + checksum(line).encode() + b"\r", number

    async def send(self, text: str, *, sequence: int | None = None) -> str:
        """A request with AY and AZ; the answer's text, its AY and AZ checked and removed."""
        line, number = self.frame(text, sequence)
        answer = await self.exchange(line)
        return unframe(answer, number)

    async def login(self, user: User, location: str = "") -> str:
        return await self.send(f"9300CN{user.username}|CO{PASSWORD}|CP{location}|")


def unframe(answer: bytes, sequence: str) -> str:
    assert answer.endswith(b"\r"), answer
    body = answer[:-1]
    assert body[-6:-4] == b"AZ", answer
    assert checksum(body[:-4]) == body[-4:].decode(), f"bad checksum in {answer!r}"
    assert body[-9:-6] == f"AY{sequence}".encode(), f"not sequence {sequence}: {answer!r}"
    return body[:-9].decode()


def fixed(answer: str) -> list[str]:
    """The fixed fields of an answer, by the spec's widths."""
    values, start = [], 2
    for width in RESPONSE_LAYOUT[answer[:2]]:
        values.append(answer[start : start + width])
        start += width
    return values


def variable(answer: str) -> dict[str, list[str]]:
    """The variable fields of an answer, by id (an id may repeat)."""
    rest = answer[2 + sum(RESPONSE_LAYOUT[answer[:2]]) :]
    assert rest == "" or rest.endswith("|"), answer
    found: dict[str, list[str]] = {}
    for piece in rest.split("|")[:-1]:
        found.setdefault(piece[:2], []).append(piece[2:])
    return found


@pytest.fixture
async def kiosk(sip2: Sip2Server) -> AsyncIterator[Kiosk]:
    machine = await Kiosk.connect(sip2)
    yield machine
    await machine.close()


@pytest.fixture
async def logged_in(kiosk: Kiosk, library: Library) -> Kiosk:
    """The kiosk, logged in as the librarian at the desk's branch."""
    assert await kiosk.login(library.staff, library.desk.branch.code) == "941"
    return kiosk
