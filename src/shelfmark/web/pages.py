"""Wiring of the web into the app: middleware, static files, routers, HTML error pages."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import FastAPI
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from shelfmark.errors import ShelfmarkError
from shelfmark.settings import Settings
from shelfmark.web import auth, opac
from shelfmark.web.security import SecurityHeadersMiddleware
from shelfmark.web.session import LoginRequired
from shelfmark.web.templating import STATIC, CachedStatic, render

SESSION_COOKIE = "shelfmark_session"
SESSION_DAYS = 14


def wants_html(request: Request) -> bool:
    """Pages answer errors with pages; the API (and anything asking for JSON) with problems."""
    if request.url.path.startswith(("/api/", "/problems/")):
        return False
    return "text/html" in request.headers.get("accept", "")  # browsers always say so


def html_error(
    request: Request, status: int, title: str, detail: str, error: ShelfmarkError | None
) -> Response:
    if isinstance(error, LoginRequired):
        target = quote(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
        return RedirectResponse(f"/login?next={target}", status_code=303)
    if not hasattr(request.state, "web_actor"):
        request.state.web_actor = None
    page = render(request, "error.html", {"title": title, "detail": detail}, status_code=status)
    if error is not None and error.headers:
        page.headers.update(error.headers)
    return page


def install_web(app: FastAPI, settings: Settings) -> None:
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(
        SessionMiddleware,
        secret_key=settings.secret_key,
        session_cookie=SESSION_COOKIE,
        max_age=SESSION_DAYS * 24 * 3600,
        same_site="lax",
        https_only=settings.secure_cookies,
    )
    app.mount("/static", CachedStatic(directory=STATIC), name="static")
    app.state.html_error = html_error
    app.state.wants_html = wants_html
    app.include_router(auth.router)
    app.include_router(opac.router)
