"""Middleware that watches each HTTP request go by: its status and how long it took.

Pure ASGI (no BaseHTTPMiddleware): it sits on every request's path. The metrics and the
access log both build on it.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class ObservedRequests(ABC):
    """Runs the app, then `observe(scope, status, seconds)` once per HTTP request (status
    500 if the app raised before it answered)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.observe(scope, status, time.perf_counter() - start)

    @abstractmethod
    def observe(self, scope: Scope, status: int, seconds: float) -> None:
        """What to do with one request's status and duration (metrics, a log record)."""
