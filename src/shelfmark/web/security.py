"""What every page needs to be safe: security headers, and CSRF tokens on every form.

Pages carry a Content-Security-Policy without inline scripts or styles, so that a title
with `<script>` in it could not run even if escaping failed. The API documentation pages
(Swagger UI, ReDoc) start themselves with an inline script and get their own policy; the
admin (sqladmin) allows exactly its one inline script, by hash.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from pathlib import Path

import sqladmin
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shelfmark.errors import Forbidden

PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "object-src 'none'"
)
DOCS_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; worker-src 'self' blob:; frame-ancestors 'none'; object-src 'none'"
)
DOCS_PATHS = ("/docs", "/redoc")
ADMIN_PREFIX = "/admin"


def _inline_script_hashes(template: Path) -> str:
    """CSP hashes of the inline scripts of a template we do not own (sqladmin's toasts)."""
    text = template.read_text() if template.exists() else ""
    scripts = re.findall(r"<script>(.*?)</script>", text, re.S)
    return " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode() + "'"
        for body in scripts
    )


ADMIN_POLICY = (
    f"default-src 'self'; script-src 'self' "
    f"{_inline_script_hashes(Path(sqladmin.__file__).parent / 'templates/sqladmin/flash.html')}; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)
_COMMON = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
]


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path in DOCS_PATHS:
            policy = DOCS_POLICY
        elif path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/"):
            policy = ADMIN_POLICY
        else:
            policy = PAGE_POLICY

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"content-security-policy", policy.encode()))
                headers.extend(_COMMON)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


def csrf_token(request: Request) -> str:
    """The session's CSRF token, made on first use."""
    token = request.session.get(CSRF_FIELD)
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        request.session[CSRF_FIELD] = token
    return token


async def check_csrf(request: Request) -> None:
    """A state-changing form must carry the session's token (field or htmx header)."""
    expected = request.session.get(CSRF_FIELD)
    given = request.headers.get(CSRF_HEADER)
    if given is None:
        form = await request.form()
        value = form.get(CSRF_FIELD)
        given = value if isinstance(value, str) else None
    if not isinstance(expected, str) or not given or not hmac.compare_digest(expected, given):
        raise Forbidden("The form has expired or did not come from this site. Reload the page.")
