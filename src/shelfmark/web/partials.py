"""htmx partial updates: which requests want a fragment, and how an error becomes one.

A failed htmx request is rendered like any other failure — the service raised, the request's
transaction was rolled back, `errors.py` handed the error to the web — but as an alert
fragment instead of a whole page, sent to the page's alert region (`#alerts`) with
`HX-Retarget`. A route that knows better (the desk's checkout offers an override, the
account shows a refused renewal next to its loan) names its own template and target with
`alert_as()` before it calls the service.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from shelfmark.errors import ShelfmarkError
from shelfmark.web.templating import render

ALERTS = "#alerts"


@dataclass(frozen=True, slots=True)
class AlertSpec:
    template: str = "_alert.html"
    target: str = ALERTS
    swap: str = "innerHTML"
    context: dict[str, Any] = field(default_factory=dict)


def is_htmx(request: Request) -> bool:
    """An htmx request for a part of the page (not a history restore, which wants it all)."""
    headers = request.headers
    restoring = headers.get("hx-history-restore-request") == "true"
    return headers.get("hx-request") == "true" and not restoring


def alert_as(
    request: Request, template: str, *, target: str = ALERTS, swap: str = "innerHTML",
    **context: Any,
) -> None:  # fmt: skip
    """Show this request's errors with `template` in `target` (htmx requests only)."""
    request.state.alert = AlertSpec(template, target, swap, context)


def render_alert(
    request: Request, status: int, title: str, detail: str, error: ShelfmarkError | None
) -> Response:
    spec: AlertSpec = getattr(request.state, "alert", None) or AlertSpec()
    extra = error.extra if error is not None else {}
    context = spec.context | {
        "title": title,
        "detail": detail,
        "code": error.code if error is not None else None,
        "overridable": bool(extra.get("overridable")),
    }
    response = render(request, spec.template, context, status_code=status)
    response.headers["HX-Retarget"] = spec.target
    response.headers["HX-Reswap"] = spec.swap
    if error is not None and error.headers:
        response.headers.update(error.headers)
    return response
