"""Response classes shared by every router."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse


class ProblemResponse(JSONResponse):
    media_type = "application/problem+json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)
