"""Response classes shared by every router."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response


class ProblemResponse(JSONResponse):
    media_type = "application/problem+json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def etagged(request: Request, body: bytes, media_type: str = "application/json") -> Response:
    """`body` with a strong ETag, or 304 when the client already has it (If-None-Match)."""
    etag = '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'
    wanted = request.headers.get("if-none-match", "")
    headers = {"etag": etag, "cache-control": "no-cache"}
    if etag in (tag.strip().removeprefix("W/") for tag in wanted.split(",")) or wanted == "*":
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=media_type, headers=headers)
