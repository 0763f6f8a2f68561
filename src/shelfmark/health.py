"""Probes: /healthz (the process answers), /readyz (what it depends on answers), /metrics."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from redis.asyncio import Redis
from sqlalchemy import text
from starlette.responses import Response

from shelfmark.metrics import CONTENT_TYPE

router = APIRouter(include_in_schema=True, tags=["operations"])
CHECK_TIMEOUT = 2.0


class Health(BaseModel):
    status: str


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is alive (no dependency is checked)."""
    return Health(status="ok")


async def _check_database(request: Request) -> None:
    async with request.app.state.engine.connect() as connection:
        await connection.execute(text("SELECT 1"))


async def _check_redis(url: str) -> None:
    client = Redis.from_url(url, socket_connect_timeout=CHECK_TIMEOUT)
    try:
        await client.ping()
    finally:
        await client.aclose()


async def _check_tcp(url: str) -> None:
    """Reachability of a broker: its port accepts a connection."""
    parts = urlsplit(url)
    default_port = {"amqp": 5672, "amqps": 5671, "redis": 6379, "rediss": 6379}
    port = parts.port or default_port.get(parts.scheme, 5672)
    _reader, writer = await asyncio.open_connection(parts.hostname or "127.0.0.1", port)
    writer.close()
    await writer.wait_closed()


@router.get("/readyz", responses={503: {"description": "A dependency is unreachable"}})
async def readyz(request: Request) -> JSONResponse:
    """The database, and Redis and the broker when configured, answer within 2 s."""
    settings = request.app.state.settings
    checks = {"database": _check_database(request)}
    if settings.redis_url:
        checks["redis"] = _check_redis(settings.redis_url)
    if settings.broker_url and not settings.broker_url.startswith("sqla+"):
        checks["broker"] = _check_tcp(settings.broker_url)
    results: dict[str, str] = {}
    for name, check in checks.items():
        try:
            await asyncio.wait_for(check, CHECK_TIMEOUT)
            results[name] = "ok"
        except Exception as exc:
            results[name] = f"unreachable: {type(exc).__name__}"
    failing = [name for name, result in results.items() if result != "ok"]
    if failing:
        body = {
            "type": "/problems/not-ready",
            "title": "Not ready",
            "status": 503,
            "detail": "Unreachable: " + ", ".join(failing),
            "checks": results,
        }
        return JSONResponse(body, status_code=503, media_type="application/problem+json")
    return JSONResponse({"status": "ready", "checks": results})


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    body = request.app.state.metrics.render(request.app.state.engine)
    return Response(body, media_type=CONTENT_TYPE)
