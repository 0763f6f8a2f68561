"""/admin: sqladmin over the models, for users with the admin role, audited.

It shares the web's signed session (log in at /login); anyone else is sent to the login
page, and a logged-in non-admin gets 403. Every create, update and delete made here is
written to the audit trail, as any other staff write.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from fastapi import FastAPI
from pydantic import ValidationError as PydanticValidationError
from sqladmin import Admin, ModelView
from sqladmin.audit import AuditBackend, AuditEntry
from sqladmin.authentication import AuthenticationBackend
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, async_sessionmaker
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from wtforms import Form, PasswordField, SelectField
from wtforms.validators import Length, Optional

from shelfmark.admin_base import ChangeRefused, ShelfmarkView, choices
from shelfmark.admin_circulation import CIRCULATION_VIEWS
from shelfmark.admin_notices import NOTICE_VIEWS
from shelfmark.audit import service as audit
from shelfmark.auth.models import User
from shelfmark.auth.roles import Actor, Role
from shelfmark.cache import bib_key, invalidate, item_key
from shelfmark.catalog import service as catalog_service
from shelfmark.catalog.models import Bib, Branch, Item
from shelfmark.catalog.schemas import BibUpdate
from shelfmark.db import IN_USE, session_scope
from shelfmark.errors import Forbidden
from shelfmark.search.index import index_bibs
from shelfmark.web.session import USER_KEY, log_out
from shelfmark.web.templating import static_url


class SessionAuth(AuthenticationBackend):
    """The web's own session and login page; admins only."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.middlewares = []  # the app's SessionMiddleware already reads the cookie

    async def login(self, request: Request) -> Response | bool:
        return RedirectResponse("/login?next=/admin", status_code=303)

    async def logout(self, request: Request) -> Response | bool:
        # sqladmin's "Logout" is a plain link (a GET): it ends the web session, the one the
        # admin shares with the OPAC and the desk, as the web's own logout does.
        log_out(request)
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
        # The services' name for the type ("circulation_rule", not sqladmin's slug
        # "circulation-rule"), so that one object's history reads from one place.
        object_type = entry.identity.replace("-", "_")
        async with session_scope(self.app.state.sessionmaker) as session:
            await audit.record(
                session, actor=actor, action=f"admin.{entry.action}",
                object_type=object_type, object_id=entry.pk,
                changes={k: str(v) for k, v in (entry.changes or {}).items()},
                now=entry.timestamp,
            )  # fmt: skip


class BranchAdmin(ShelfmarkView, model=Branch):
    column_list: ClassVar = [Branch.code, Branch.name, Branch.address]
    form_excluded_columns: ClassVar = [Branch.created_at, Branch.updated_at]
    column_searchable_list: ClassVar = [Branch.code, Branch.name]
    icon = "fa-solid fa-building"
    constraint_messages: ClassVar = {
        "uq_branches_code": "A branch with this code exists.",
        IN_USE: "Copies, patrons or loans still belong to this branch.",
    }


class UserForm(Form):
    password = PasswordField(
        "New password",
        [Optional(), Length(min=8, max=1024, message="8 to 1024 characters.")],
        description="Stored as an argon2 hash, never shown; leave empty to keep the current one.",
    )


class UserAdmin(ShelfmarkView, model=User):
    column_list: ClassVar = [User.username, User.role, User.full_name, User.is_active]
    column_searchable_list: ClassVar = [User.username, User.full_name]
    # A password is never shown: only a new one can be typed, and it is stored hashed.
    form_columns: ClassVar = [User.username, User.role, User.full_name, User.email, User.is_active]
    form_base_class = UserForm
    form_overrides: ClassVar = {"role": SelectField}
    form_args: ClassVar = {"role": {"choices": choices([role.value for role in Role])}}
    secret_fields: ClassVar = {"password": "password_hash"}
    column_details_exclude_list: ClassVar = [User.password_hash]
    column_export_exclude_list: ClassVar = [User.password_hash]
    constraint_messages: ClassVar = {"uq_users_username": "This user name is taken."}
    # Users are created through the API or `shelfmark createsuperuser` (a patron's user is
    # linked to their patron record there).
    can_create = False
    icon = "fa-solid fa-user"


class CatalogView(ShelfmarkView):
    """A view of bibs or copies. sqladmin writes them directly, not through the catalog
    service: once its transaction has committed, the search index and the cache hear of the
    change here, as they would from the service (an edited title is found by its new words;
    a cached record or copy is read afresh)."""

    @staticmethod
    def _bib_ids(model: Any) -> set[int]:
        return {model.id} if isinstance(model, Bib) else {model.bib_id}

    @staticmethod
    def _keys(model: Any, bib_ids: set[int]) -> list[str]:
        keys = [bib_key(bib_id) for bib_id in bib_ids]
        return keys if isinstance(model, Bib) else [*keys, item_key(model.id)]

    async def on_model_change(
        self, data: dict[str, Any], model: Any, is_created: bool, request: Request
    ) -> None:
        await super().on_model_change(data, model, is_created, request)
        # A copy moved to another bib changes both bibs' records.
        request.state.admin_bibs_before = set() if is_created else self._bib_ids(model)

    async def after_model_change(
        self, data: dict[str, Any], model: Any, is_created: bool, request: Request
    ) -> None:
        await super().after_model_change(data, model, is_created, request)
        before: set[int] = getattr(request.state, "admin_bibs_before", set())
        await self._catalog_changed(request, model, before | self._bib_ids(model))

    async def after_model_delete(self, model: Any, request: Request) -> None:
        await super().after_model_delete(model, request)
        await self._catalog_changed(request, model, self._bib_ids(model))

    async def _catalog_changed(self, request: Request, model: Any, bib_ids: set[int]) -> None:
        # The app's sessions (request.app is sqladmin's own sub-application): they carry
        # the cache to invalidate. sqladmin binds every view to the last Admin made, as it
        # does its session_maker.
        app = self._admin_ref.app
        async with session_scope(app.state.sessionmaker) as session:
            await index_bibs(session, bib_ids)
            invalidate(session, self._keys(model, bib_ids))


def checked_bib_fields(data: dict[str, Any]) -> dict[str, Any]:
    """The bib fields of an admin form, checked and normalised by the API's own rules
    (`BibUpdate`: ISBNs as ISBN-13, a contributor's role, no empty subject). A record is
    sent by the API as it was stored, unchecked (`catalog.api.bib_json`): so every writer
    checks what it stores, sqladmin's JSON fields as much as the API."""
    # A text box left empty is a field left empty (NULL), not an empty string.
    fields = {
        name: None if isinstance(value, str) and not value.strip() else value
        for name, value in data.items()
        if name in BibUpdate.model_fields
    }
    try:
        checked = BibUpdate.model_validate(fields)
    except PydanticValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
            for error in exc.errors()
        )
        raise ChangeRefused(f"The record was not saved: {problems}.") from exc
    return catalog_service.bib_values(checked, partial=True)


class BibAdmin(CatalogView, model=Bib):
    column_list: ClassVar = [Bib.id, Bib.title, Bib.publication_year, Bib.language]
    column_searchable_list: ClassVar = [Bib.title, Bib.control_number]
    form_excluded_columns: ClassVar = [Bib.marc, Bib.fingerprint, Bib.created_at, Bib.updated_at]
    column_details_exclude_list: ClassVar = [Bib.marc]
    can_create = False  # cataloguing goes through the API or MARC import (ISBN rules, index)
    icon = "fa-solid fa-book"

    async def on_model_change(
        self, data: dict[str, Any], model: Any, is_created: bool, request: Request
    ) -> None:
        data.update(checked_bib_fields(data))
        await super().on_model_change(data, model, is_created, request)

    async def after_model_change(
        self, data: dict[str, Any], model: Any, is_created: bool, request: Request
    ) -> None:
        # Its ISBNs may have changed: the lookup the `isbn` filter reads follows.
        async with session_scope(self._admin_ref.app.state.sessionmaker) as session:
            await catalog_service.index_isbns(
                session, await catalog_service.require_bib(session, model.id)
            )
        await super().after_model_change(data, model, is_created, request)


class ItemAdmin(CatalogView, model=Item):
    column_list: ClassVar = [Item.barcode, Item.bib_id, Item.status, Item.shelfmark]
    column_searchable_list: ClassVar = [Item.barcode]
    form_excluded_columns: ClassVar = [Item.created_at, Item.updated_at]
    icon = "fa-solid fa-barcode"

    async def on_model_change(
        self, data: dict[str, Any], model: Any, is_created: bool, request: Request
    ) -> None:
        # The API's rule: on loan, on the hold shelf and in transit are set and cleared by
        # circulation only, or a copy would say "on loan" with no loan (or the reverse).
        status = data.get("status")
        if status is not None and is_created:
            catalog_service.check_initial_status(status)
        elif status is not None and status != model.status:
            catalog_service.check_manual_status(model, status)
        await super().on_model_change(data, model, is_created, request)


VIEWS: tuple[type[ModelView], ...] = (
    BranchAdmin, UserAdmin, BibAdmin, ItemAdmin, *CIRCULATION_VIEWS, *NOTICE_VIEWS,
)  # fmt: skip


# Our overrides of sqladmin's templates (same names win; each says why it exists). Also
# sqladmin's default, a relative "templates", would read whatever the working directory has.
TEMPLATES = Path(__file__).parent / "admin_templates"


def install_admin(app: FastAPI) -> Admin:
    """Mount /admin. Its sessions are bound to the app's engine by `bind_admin` at startup."""
    admin = Admin(
        app, session_maker=async_sessionmaker(expire_on_commit=False), base_url="/admin",
        title="Shelfmark admin", authentication_backend=SessionAuth(app),
        audit_backend=DatabaseAudit(app), templates_dir=str(TEMPLATES),
    )  # fmt: skip
    admin.templates.env.globals["static_url"] = static_url
    for view in VIEWS:
        admin.add_view(view)
    app.state.admin = admin
    return admin


def bind_admin(app: FastAPI, bind: AsyncEngine | AsyncConnection, **options: Any) -> None:
    app.state.admin.session_maker.configure(bind=bind, **options)
