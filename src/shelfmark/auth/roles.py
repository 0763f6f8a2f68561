"""Who is acting, and what their role lets them do. Services check this, not the routers."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from shelfmark.errors import Forbidden


class Role(StrEnum):
    ADMIN = "admin"
    LIBRARIAN = "librarian"
    PATRON = "patron"


STAFF_ROLES = frozenset({Role.ADMIN, Role.LIBRARIAN})


@dataclass(frozen=True, slots=True)
class Actor:
    """The authenticated user on whose behalf a service acts (None for anonymous reads)."""

    user_id: int | None
    username: str
    role: Role
    patron_id: int | None = None

    @property
    def is_staff(self) -> bool:
        return self.role in STAFF_ROLES

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


# The actor for work the system does by itself: migrations, the demo loader, scheduled jobs.
SYSTEM = Actor(user_id=None, username="system", role=Role.ADMIN)


def require_staff(actor: Actor | None) -> Actor:
    """Librarians and admins only."""
    if actor is None or not actor.is_staff:
        raise Forbidden("This action needs the librarian role.")
    return actor


def require_admin(actor: Actor | None) -> Actor:
    if actor is None or not actor.is_admin:
        raise Forbidden("This action needs the admin role.")
    return actor
