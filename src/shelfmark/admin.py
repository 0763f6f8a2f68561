"""/admin: sqladmin over the models, for users with the admin role, audited.

It shares the web's signed session (log in at /login); anyone else is sent to the login
page, and a logged-in non-admin gets 403. Every create, update and delete made here is
written to the audit trail, as any other staff write.
"""

from __future__ import annotations

from typing import Any, ClassVar

from fastapi import FastAPI
from sqladmin import Admin, ModelView
from sqladmin.audit import AuditBackend, AuditEntry
from sqladmin.authentication import AuthenticationBackend
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, async_sessionmaker
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from shelfmark.audit import service as audit
from shelfmark.auth.models import User
from shelfmark.auth.roles import Actor, Role
from shelfmark.catalog.models import Bib, Branch, Item
from shelfmark.db import session_scope
from shelfmark.errors import Forbidden
from shelfmark.web.session import USER_KEY


class SessionAuth(AuthenticationBackend):
    """The web's own session and login page; admins only."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.middlewares = []  # the app's SessionMiddleware already reads the cookie

    async def login(self, request: Request) -> Response | bool:
        return RedirectResponse("/login?next=/admin", status_code=303)

    async def logout(self, request: Request) -> Response | bool:
        return RedirectResponse("/", status_code=303)

    async def authenticate(self, request: Request) -> Response | bool:
        actor = await _actor(self.app, request)
        if actor is None:
            return RedirectResponse("/login?next=/admin", status_code=303)
        if not actor.is_admin:
            error = Forbidden("The admin pages are for users with the admin role.")
            request.state.web_actor = actor
            page: Response = self.app.state.html_error(
                request, error.status, error.title, error.detail, error
            )
            return page
        return True

    async def get_user_id(self, request: Request) -> Any:
        return request.session.get(USER_KEY)


async def _actor(app: FastAPI, request: Request) -> Actor | None:
    user_id = request.session.get(USER_KEY)
    if not isinstance(user_id, int):
        return None
    async with session_scope(app.state.sessionmaker) as session:
        user = await session.get(User, user_id)
        if user is None or not user.is_active:
            return None
        return Actor(user_id=user.id, username=user.username, role=Role(user.role))


class DatabaseAudit(AuditBackend):
    """Admin changes go to the same audit trail as every other staff write.

    sqladmin reports a change once it is committed; the audit event follows in its own
    transaction (a crash between the two would lose the event, not the change).
    """

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    async def log(self, entry: AuditEntry, request: Request) -> None:
        actor = await _actor(self.app, request)
        if actor is None:
            return
        async with session_scope(self.app.state.sessionmaker) as session:
            await audit.record(
                session, actor=actor, action=f"admin.{entry.action}",
                object_type=entry.identity, object_id=entry.pk,
                changes={k: str(v) for k, v in (entry.changes or {}).items()},
                now=entry.timestamp,
            )  # fmt: skip


class BranchAdmin(ModelView, model=Branch):
    column_list: ClassVar = [Branch.code, Branch.name, Branch.address]
    form_excluded_columns: ClassVar = [Branch.created_at, Branch.updated_at]
    column_searchable_list: ClassVar = [Branch.code, Branch.name]
    icon = "fa-solid fa-building"


class UserAdmin(ModelView, model=User):
    column_list: ClassVar = [User.username, User.role, User.full_name, User.is_active]
    column_searchable_list: ClassVar = [User.username, User.full_name]
    # Passwords are set through the API or `shelfmark createsuperuser`, never seen here.
    form_columns: ClassVar = [User.username, User.role, User.full_name, User.email, User.is_active]
    column_details_exclude_list: ClassVar = [User.password_hash]
    can_create = False
    icon = "fa-solid fa-user"


class BibAdmin(ModelView, model=Bib):
    column_list: ClassVar = [Bib.id, Bib.title, Bib.publication_year, Bib.language]
    column_searchable_list: ClassVar = [Bib.title, Bib.control_number]
    form_excluded_columns: ClassVar = [Bib.marc, Bib.fingerprint, Bib.created_at, Bib.updated_at]
    column_details_exclude_list: ClassVar = [Bib.marc]
    can_create = False  # cataloguing goes through the API or MARC import (ISBN rules, index)
    icon = "fa-solid fa-book"


class ItemAdmin(ModelView, model=Item):
    column_list: ClassVar = [Item.barcode, Item.bib_id, Item.status, Item.shelfmark]
    column_searchable_list: ClassVar = [Item.barcode]
    form_excluded_columns: ClassVar = [Item.created_at, Item.updated_at]
    icon = "fa-solid fa-barcode"


VIEWS: tuple[type[ModelView], ...] = (BranchAdmin, UserAdmin, BibAdmin, ItemAdmin)


def install_admin(app: FastAPI) -> Admin:
    """Mount /admin. Its sessions are bound to the app's engine by `bind_admin` at startup."""
    admin = Admin(
        app, session_maker=async_sessionmaker(expire_on_commit=False), base_url="/admin",
        title="Shelfmark admin", authentication_backend=SessionAuth(app),
        audit_backend=DatabaseAudit(app),
    )  # fmt: skip
    for view in VIEWS:
        admin.add_view(view)
    app.state.admin = admin
    return admin


def bind_admin(app: FastAPI, bind: AsyncEngine | AsyncConnection, **options: Any) -> None:
    app.state.admin.session_maker.configure(bind=bind, **options)
