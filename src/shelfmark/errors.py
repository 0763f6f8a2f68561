"""Domain errors and their one rendering: RFC 9457 `application/problem+json`.

Each error carries its HTTP status and a stable code; the problem `type` is `/problems/<code>`.
Handlers here turn every failure — ours, FastAPI's validation, Starlette's HTTP errors and
anything unexpected — into a problem document. No stack trace ever reaches a client.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from shelfmark.responses import ProblemResponse

log = logging.getLogger(__name__)

PROBLEM_BASE = "/problems/"


class ShelfmarkError(Exception):
    """Base of every domain error: a status, a stable code and a title."""

    status: ClassVar[int] = 400
    code: ClassVar[str] = "bad-request"
    title: ClassVar[str] = "Bad request"

    def __init__(
        self,
        detail: str | None = None,
        *,
        errors: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        self.detail = detail or self.title
        self.errors = errors
        self.headers = headers
        self.extra = extra
        super().__init__(self.detail)

    @property
    def type(self) -> str:
        return PROBLEM_BASE + self.code

    def problem(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": self.type,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            body["instance"] = instance
        if self.errors:
            body["errors"] = self.errors
        body.update(self.extra)
        return body


class InvalidInput(ShelfmarkError):
    status = 422
    code = "invalid-input"
    title = "Invalid input"


class NotFound(ShelfmarkError):
    status = 404
    code = "not-found"
    title = "Not found"


class Conflict(ShelfmarkError):
    status = 409
    code = "conflict"
    title = "Conflict"


class Unauthenticated(ShelfmarkError):
    status = 401
    code = "unauthenticated"
    title = "Authentication required"

    def __init__(self, detail: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("headers", {"WWW-Authenticate": "Bearer"})
        super().__init__(detail, **kwargs)


class InvalidCredentials(Unauthenticated):
    code = "invalid-credentials"
    title = "Invalid credentials"


class Forbidden(ShelfmarkError):
    status = 403
    code = "forbidden"
    title = "Forbidden"


class RateLimited(ShelfmarkError):
    status = 429
    code = "rate-limited"
    title = "Too many requests"

    def __init__(self, detail: str | None = None, *, retry_after: int, **kwargs: Any) -> None:
        kwargs.setdefault("headers", {"Retry-After": str(retry_after)})
        super().__init__(detail, **kwargs)


class PreconditionFailed(ShelfmarkError):
    status = 412
    code = "precondition-failed"
    title = "Precondition failed"


class PayloadTooLarge(ShelfmarkError):
    status = 413
    code = "payload-too-large"
    title = "Payload too large"


class ServiceUnavailable(ShelfmarkError):
    status = 503
    code = "service-unavailable"
    title = "Service unavailable"


class InternalError(ShelfmarkError):
    status = 500
    code = "internal-error"
    title = "Internal server error"


# Starlette raises HTTPException for routing failures; give them stable codes too.
_HTTP_CODES: dict[int, tuple[str, str]] = {
    400: ("bad-request", "Bad request"),
    401: ("unauthenticated", "Authentication required"),
    403: ("forbidden", "Forbidden"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    406: ("not-acceptable", "Not acceptable"),
    409: ("conflict", "Conflict"),
    413: ("payload-too-large", "Payload too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
    422: ("invalid-input", "Invalid input"),
    429: ("rate-limited", "Too many requests"),
}


def _page(
    request: Request, status: int, title: str, detail: str, error: ShelfmarkError | None
) -> Response | None:
    """The error as an HTML page when a browser asked for a page (the web installs this)."""
    wants_html = getattr(request.app.state, "wants_html", None)
    if wants_html is None or not wants_html(request):
        return None
    page: Response = request.app.state.html_error(request, status, title, detail, error)
    return page


def problem_response(error: ShelfmarkError, request: Request) -> Response:
    """The error as problem+json, or as a page for a browser on a page (see shelfmark.web)."""
    page = _page(request, error.status, error.title, error.detail, error)
    if page is not None:
        return page
    return ProblemResponse(
        error.problem(instance=request.url.path), status_code=error.status, headers=error.headers
    )


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    # ("body", "items", 0, "barcode") -> "items.0.barcode"; the location kind is noise.
    parts = [str(p) for p in loc]
    if parts and parts[0] in {"body", "query", "path", "header", "cookie", "form"}:
        parts = parts[1:] or parts
    return ".".join(parts)


async def _on_domain_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ShelfmarkError)
    return problem_response(exc, request)


async def _on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = [{"field": _field(e["loc"]), "message": e["msg"]} for e in exc.errors()]
    summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:3])
    return problem_response(
        InvalidInput(f"The request is not valid: {summary}", errors=errors), request
    )


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code, title = _HTTP_CODES.get(exc.status_code, ("http-error", "HTTP error"))
    headers = dict(exc.headers) if exc.headers else None
    error = ShelfmarkError(str(exc.detail) if exc.detail else title, headers=headers)
    page = _page(request, exc.status_code, title, error.detail, None)
    if page is not None:
        return page
    body = error.problem(instance=request.url.path) | {
        "type": PROBLEM_BASE + code,
        "title": title,
        "status": exc.status_code,
    }
    return ProblemResponse(body, status_code=exc.status_code, headers=headers)


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    error = InternalError("An unexpected error occurred; it has been logged.")
    return problem_response(error, request)


def install_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ShelfmarkError, _on_domain_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(Exception, _on_unexpected)
