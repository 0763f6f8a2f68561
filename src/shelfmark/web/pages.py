"""Wiring of the web into the app: middleware, static files, routers, HTML error pages."""

from __future__ import annotations

from urllib.parse import quote, urlsplit

from fastapi import FastAPI
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from shelfmark.errors import ShelfmarkError
from shelfmark.settings import Settings
from shelfmark.web import account, auth, desk, opac, partials, search
from shelfmark.web.security import SecurityHeadersMiddleware
from shelfmark.web.session import LoginRequired
from shelfmark.web.templating import STATIC, CachedStatic, render

SESSION_COOKIE = "shelfmark_session"
SESSION_DAYS = 14


def wants_html(request: Request) -> bool:
    """Pages answer errors with pages; the API (and anything asking for JSON) with problems."""
    if request.url.path.startswith(("/api/", "/problems/")):
        return False
    if request.headers.get("hx-request") == "true":
        return True  # htmx sends no Accept header of its own
    return "text/html" in request.headers.get("accept", "")  # browsers always say so


def html_error(
    request: Request, status: int, title: str, detail: str, error: ShelfmarkError | None
) -> Response:
    if isinstance(error, LoginRequired):
        return _to_login(request)
    if not hasattr(request.state, "web_actor"):
        request.state.web_actor = None
    if partials.is_htmx(request):
        return partials.render_alert(request, status, title, detail, error)
    page = render(request, "error.html", {"title": title, "detail": detail}, status_code=status)
    if error is not None and error.headers:
        page.headers.update(error.headers)
    return page


def _to_login(request: Request) -> Response:
    """To the login page, and back here after it; an htmx request (the session ran out
    while the page was open) sends the whole page there, back to the page it was on."""
    if partials.is_htmx(request):
        page = urlsplit(request.headers.get("hx-current-url", "/"))
        target = quote(page.path + (f"?{page.query}" if page.query else ""))
        return Response(status_code=401, headers={"HX-Redirect": f"/login?next={target}"})
    target = quote(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
    return RedirectResponse(f"/login?next={target}", status_code=303)


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
    app.include_router(search.router)
    app.include_router(desk.router)
    app.include_router(account.router)
