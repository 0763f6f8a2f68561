"""Users, passwords (argon2) and bearer tokens (signed JWTs)."""

from __future__ import annotations

from datetime import datetime, timedelta

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from shelfmark.audit import service as audit
from shelfmark.auth.errors import UsernameTaken
from shelfmark.auth.models import User
from shelfmark.auth.roles import Actor, Role, require_admin
from shelfmark.db import flush_or_raise
from shelfmark.errors import InvalidCredentials, Unauthenticated

_hasher = PasswordHasher()
# Verified against when the user does not exist, so that an unknown user name takes as long
# as a wrong password and the two cannot be told apart.
_DUMMY_HASH = _hasher.hash("not a real password")
_BAD_LOGIN = "The user name or password is wrong."
TOKEN_ALGORITHM = "HS256"  # noqa: S105 - an algorithm name, not a secret


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def actor_of(user: User) -> Actor:
    return Actor(
        user_id=user.id, username=user.username, role=Role(user.role), patron_id=user.patron_id
    )


async def get_user_by_username(session: AsyncSession, username: str) -> User | None:
    return await session.scalar(select(User).where(User.username == username))


async def authenticate(session: AsyncSession, *, username: str, password: str) -> User:
    """The active user with this name and password; one error for every way it can fail."""
    user = await get_user_by_username(session, username)
    if user is None:
        verify_password(_DUMMY_HASH, password)
        raise InvalidCredentials(_BAD_LOGIN)
    if not verify_password(user.password_hash, password) or not user.is_active:
        raise InvalidCredentials(_BAD_LOGIN)
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    return user


async def create_user(
    session: AsyncSession,
    *,
    actor: Actor,
    username: str,
    password: str,
    role: Role,
    full_name: str | None = None,
    email: str | None = None,
    patron_id: int | None = None,
) -> User:
    """Admins create users of any role; `patron_id` links a patron user to their record."""
    require_admin(actor)
    user = User(
        username=username,
        password_hash=hash_password(password),
        role=role.value,
        full_name=full_name,
        email=email,
        patron_id=patron_id,
    )
    session.add(user)
    await flush_or_raise(session, UsernameTaken(f"The user name {username!r} is taken."))
    await audit.record(
        session, actor=actor, action="user.create", object_type="user", object_id=user.id,
        changes={"username": username, "role": role.value, "patron_id": patron_id},
    )  # fmt: skip
    return user


async def set_password(session: AsyncSession, *, actor: Actor, user: User, password: str) -> None:
    require_admin(actor)
    user.password_hash = hash_password(password)
    await audit.record(
        session, actor=actor, action="user.set_password", object_type="user", object_id=user.id
    )


def issue_token(user: User, *, secret: str, now: datetime, minutes: int) -> str:
    claims = {
        "sub": str(user.id),
        "name": user.username,
        "role": user.role,
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(minutes=minutes)).timestamp()),
    }
    return jwt.encode(claims, secret, algorithm=TOKEN_ALGORITHM)


async def actor_from_token(session: AsyncSession, token: str, *, secret: str) -> Actor:
    """The actor a bearer token stands for, checked against the user's current state."""
    try:
        claims = jwt.decode(
            token, secret, algorithms=[TOKEN_ALGORITHM], options={"require": ["exp", "sub"]}
        )
        user_id = int(claims["sub"])
    except (jwt.PyJWTError, ValueError) as exc:
        raise Unauthenticated("The access token is invalid or has expired.") from exc
    user = await session.get(User, user_id)
    if user is None or not user.is_active:
        raise Unauthenticated("The access token is invalid or has expired.")
    return actor_of(user)
