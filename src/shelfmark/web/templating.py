"""Jinja2 templates (auto-escaped) and versioned static files with long cache lifetimes."""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path
from typing import Any

from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from shelfmark.web.security import csrf_token

HERE = Path(__file__).parent
STATIC = HERE / "static"
templates = Jinja2Templates(
    env=Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
    )
)


@cache
def _version(name: str) -> str:
    return hashlib.sha256((STATIC / name).read_bytes()).hexdigest()[:12]


def static_url(name: str) -> str:
    """`/static/<name>?v=<content hash>`: cached for a year, new URL when the file changes."""
    return f"/static/{name}?v={_version(name)}"


templates.env.globals["static_url"] = static_url


class CachedStatic(StaticFiles):
    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        if response.status_code == 200:
            response.headers["cache-control"] = "public, max-age=31536000, immutable"
        return response


def render(
    request: Request, name: str, context: dict[str, Any] | None = None, status_code: int = 200
) -> Response:
    base = {"csrf_token": csrf_token(request), "actor": request.state.web_actor}
    return templates.TemplateResponse(
        request, name, base | (context or {}), status_code=status_code
    )
