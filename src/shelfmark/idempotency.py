"""`Idempotency-Key` on POST: a client that retries a request gets the first answer again.

A desk whose checkout request timed out cannot know whether the loan was made; it retries
with the same key and gets the same 201 (or the same refusal), never a second loan. The key
is scoped to the caller (a hash of the Authorization header) and bound to the request: the
same key with another body or path is refused. The first request claims the key in its own
transaction before running, so that a concurrent duplicate is refused with 409 rather than
run twice; answers of 5xx are not kept, so the request can be retried for real.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from sqlalchemy import Integer, LargeBinary, String, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shelfmark.db import Base, JSONType, UTCDateTime, session_scope, utcnow
from shelfmark.errors import Conflict, InvalidInput, ShelfmarkError
from shelfmark.responses import ProblemResponse

HEADER = b"idempotency-key"
MAX_KEY_LENGTH = 255
KEEP_FOR = timedelta(hours=24)


class IdempotencyRecord(Base):
    __tablename__ = "idempotency_keys"

    scope: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(MAX_KEY_LENGTH), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[int | None] = mapped_column(Integer)  # None while the first one runs
    headers: Mapped[list[list[str]]] = mapped_column(JSONType, default=list)
    body: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class KeyInUse(Conflict):
    code = "idempotency-key-in-use"
    title = "A request with this Idempotency-Key is still running"


class KeyReused(InvalidInput):
    code = "idempotency-key-reused"
    title = "This Idempotency-Key was used for another request"


_REPLAYED_HEADERS = {"content-type", "location", "etag"}


class IdempotencyMiddleware:
    """Pure ASGI: it must see the whole request body and the whole response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = _header(scope, HEADER) if scope["type"] == "http" else None
        if key is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        body, receive = await _buffer(receive)
        maker: async_sessionmaker[AsyncSession] = scope["app"].state.sessionmaker
        owner = hashlib.sha256((_header(scope, b"authorization") or "").encode()).hexdigest()
        request_hash = hashlib.sha256(scope["path"].encode() + b"\0" + body).hexdigest()
        try:
            replay = await _claim(maker, owner, key, request_hash, now=utcnow())
        except ShelfmarkError as error:
            response = ProblemResponse(error.problem(instance=scope["path"]), error.status)
            await response(scope, receive, send)
            return
        if replay is not None:
            await _send_stored(replay, send)
            return
        await self._run_and_keep(scope, receive, send, maker, owner, key)

    async def _run_and_keep(
        self, scope: Scope, receive: Receive, send: Send,
        maker: async_sessionmaker[AsyncSession], owner: str, key: str,
    ) -> None:  # fmt: skip
        status = 500
        headers: list[list[str]] = []
        chunks: list[bytes] = []

        async def keep(message: Message) -> None:
            nonlocal status, headers
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [
                    [name.decode("latin-1"), value.decode("latin-1")]
                    for name, value in message.get("headers", [])
                    if name.decode("latin-1").lower() in _REPLAYED_HEADERS
                ]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, keep)
        finally:
            async with session_scope(maker) as session:
                record = await session.get(IdempotencyRecord, (owner, key))
                if record is not None:
                    if status >= 500:
                        await session.delete(record)  # not an answer: let the client retry
                    else:
                        record.status, record.headers = status, headers
                        record.body = b"".join(chunks)


def _header(scope: Scope, name: bytes) -> str | None:
    for header, value in scope["headers"]:
        if header == name:
            return str(value.decode("latin-1"))
    return None


async def _buffer(receive: Receive) -> tuple[bytes, Receive]:
    chunks = []
    more = True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    body = b"".join(chunks)
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()  # a disconnect, later
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return body, replay


async def _claim(
    maker: async_sessionmaker[AsyncSession], owner: str, key: str, request_hash: str,
    *, now: datetime,
) -> IdempotencyRecord | None:  # fmt: skip
    """Claim the key for this request; the stored answer when it was already given."""
    if not key or len(key) > MAX_KEY_LENGTH:
        raise InvalidInput(f"An Idempotency-Key has 1 to {MAX_KEY_LENGTH} characters.")
    async with session_scope(maker) as session:
        await session.execute(
            delete(IdempotencyRecord).where(IdempotencyRecord.created_at < now - KEEP_FOR)
        )
        try:
            async with session.begin_nested():  # a duplicate rolls back only this savepoint
                session.add(
                    IdempotencyRecord(
                        scope=owner, key=key, request_hash=request_hash, created_at=now
                    )
                )
                await session.flush()
        except IntegrityError:
            existing = await session.scalar(
                select(IdempotencyRecord).where(
                    IdempotencyRecord.scope == owner, IdempotencyRecord.key == key
                )
            )
            if existing is None:  # expired between the two statements: treat as new
                raise KeyInUse("Retry the request.") from None
            if existing.request_hash != request_hash:
                raise KeyReused(
                    "This Idempotency-Key was first used with another request body or path."
                ) from None
            if existing.status is None:
                raise KeyInUse("The first request with this key has not finished yet.") from None
            return existing
    return None


async def _send_stored(record: IdempotencyRecord, send: Send) -> None:
    headers: list[tuple[bytes, bytes]] = [
        (name.encode("latin-1"), value.encode("latin-1")) for name, value in record.headers
    ]
    headers.append((b"idempotent-replay", b"true"))
    body = record.body or b""
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": record.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
