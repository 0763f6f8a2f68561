"""The SIP2 server: TCP, one conversation per connection, a message at a time.

Lines end with CR (LF and CRLF are taken too). A connection idle for longer than the
configured timeout is closed, a line longer than the limit is dropped unread and answered
with 96. On SIGTERM the server stops accepting, lets each connection finish the message it
is handling and send the answer, closes every connection, and gives up on any still busy
after the grace period; the SCs reconnect to another replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from datetime import datetime
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shelfmark.cache import SESSION_KEY as CACHE_KEY
from shelfmark.cache import create_cache
from shelfmark.db import create_engine, create_sessionmaker, utcnow
from shelfmark.interop.sip2.context import Context, Sip2Config
from shelfmark.interop.sip2.dispatch import Session
from shelfmark.live.hub import LiveEvents
from shelfmark.ratelimit import Counter, MemoryCounter, create_counter
from shelfmark.settings import Settings

log = logging.getLogger(__name__)

READ_CHUNK = 4096
WRITE_TIMEOUT = 30.0


class Overlong:
    """A line longer than the limit, dropped without being kept."""


OVERLONG = Overlong()


class Framer:
    """Cuts a byte stream into lines at CR, LF or CRLF, never holding much more than
    `limit` bytes: a line that grows past it is dropped up to its end."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._buffer = bytearray()
        self._dropping = False

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def pop(self) -> bytes | Overlong | None:
        """The next complete line, OVERLONG for one that was too long, None for none yet.
        Blank lines (the LF of a CRLF, keep-alives) are skipped."""
        while True:
            buffer = self._buffer
            ends = [at for at in (buffer.find(b"\r"), buffer.find(b"\n")) if at != -1]
            if not ends:
                if len(buffer) > self.limit:
                    buffer.clear()
                    self._dropping = True
                return None
            end = min(ends)
            line = bytes(buffer[:end])
            del buffer[: end + 1]
            if self._dropping or len(line) > self.limit:
                self._dropping = False
                return OVERLONG
            if line.strip():
                return line


def _peer(writer: asyncio.StreamWriter) -> str:
    address = writer.get_extra_info("peername")
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address or "unknown")


class Sip2Server:
    """The SIP2 ACS: `start` it on an address, `shutdown` it (from a signal handler too),
    and `wait_closed` for its connections to end."""

    def __init__(
        self, sessionmaker: async_sessionmaker[AsyncSession], *,
        config: Sip2Config | None = None, counter: Counter | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:  # fmt: skip
        self.sessionmaker = sessionmaker
        self.config = config or Sip2Config()
        self.counter: Counter = counter or MemoryCounter()
        self.clock = clock
        self._server: asyncio.Server | None = None
        self._port: int | None = None
        self._closing = asyncio.Event()
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._serve, host, port)
        self._port = int(self._server.sockets[0].getsockname()[1])

    @property
    def port(self) -> int:
        """The port it listens on (the one the system chose, when started on port 0)."""
        if self._port is None:
            raise RuntimeError("the SIP2 server has not been started")
        return self._port

    @property
    def connections(self) -> int:
        return len(self._connections)

    def shutdown(self) -> None:
        """Stop accepting connections and let the open ones finish; safe to call twice."""
        if self._closing.is_set():
            return
        log.info("SIP2 server stopping: %d connection(s) open", len(self._connections))
        self._closing.set()
        if self._server is not None:
            self._server.close()

    async def wait_closed(self) -> None:
        """Wait for `shutdown`, then for every connection to end (at most the grace
        period: what is still running then is cancelled, its transaction rolled back)."""
        await self._closing.wait()
        if self._connections:
            _, late = await asyncio.wait(set(self._connections), timeout=self.config.shutdown_grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def close(self) -> None:
        self.shutdown()
        await self.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        peer = _peer(writer)
        session = Session(
            Context(self.sessionmaker, self.config, self.counter, self.clock, peer=peer)
        )
        framer = Framer(self.config.max_message_bytes)
        closing = asyncio.ensure_future(self._closing.wait())
        log.debug("SIP2 connection from %s", peer)
        try:
            while True:
                line = await self._next_line(reader, framer, closing, peer)
                if line is None:
                    break
                if isinstance(line, Overlong):
                    answer = session.too_long()
                else:
                    answer = await session.answer(line)
                writer.write(answer)
                await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT)
                if self._closing.is_set():
                    break
        except (ConnectionError, TimeoutError) as exc:
            log.info("SIP2 connection from %s lost: %r", peer, exc)
        finally:
            closing.cancel()
            writer.close()
            with contextlib.suppress(ConnectionError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), WRITE_TIMEOUT)
            self._connections.discard(task)
            log.debug("SIP2 connection from %s closed", peer)

    async def _next_line(
        self, reader: asyncio.StreamReader, framer: Framer, closing: asyncio.Task[Literal[True]],
        peer: str,
    ) -> bytes | Overlong | None:  # fmt: skip
        """The next line, or None when the SC hung up, stayed silent too long, or the
        server is stopping. A line complete in the buffer is still answered at shutdown."""
        while True:
            line = framer.pop()
            if line is not None:
                return line
            if closing.done():
                return None
            read = asyncio.ensure_future(reader.read(READ_CHUNK))
            done, _ = await asyncio.wait(
                {read, closing}, timeout=self.config.idle_timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )  # fmt: skip
            if read not in done:
                read.cancel()
                await asyncio.wait({read})
                if not read.cancelled():
                    read.exception()  # retrieved: a reset that raced the cancel is moot
                if not done:
                    log.info("SIP2 connection from %s idle for %s s: closed", peer,
                             self.config.idle_timeout)  # fmt: skip
                return None
            data = read.result()
            if not data:
                return None
            framer.feed(data)


async def run(settings: Settings, *, host: str, port: int, config: Sip2Config) -> None:
    """`shelfmark sip2`: serve until SIGTERM or SIGINT, then stop as `Sip2Server.shutdown`
    says. With REDIS_URL, PIN and login attempts are counted with the API's, the cache is
    invalidated and the staff desks see the self-checks' loans live."""
    engine = create_engine(settings)
    cache = create_cache(settings.redis_url)
    counter = create_counter(settings.redis_url)
    live = LiveEvents(settings.redis_url) if settings.redis_url else None
    server = Sip2Server(
        create_sessionmaker(engine, info={CACHE_KEY: cache}), config=config, counter=counter
    )
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)
    try:
        if live is not None:
            await live.start()
        await server.start(host, port)
        for number in signals:
            loop.add_signal_handler(number, server.shutdown)
        log.info("SIP2 server listening on %s:%d", host, server.port)
        await server.wait_closed()
        log.info("SIP2 server stopped")
    finally:
        for number in signals:
            loop.remove_signal_handler(number)
        if live is not None:
            await live.stop()
        await counter.close()
        await cache.close()
        await engine.dispose()
