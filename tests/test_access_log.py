"""ACCESS_LOG=true: one structured record per request, without the query string."""

from __future__ import annotations

import logging

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from shelfmark.logging import ACCESS_LOGGER, FIELDS, AccessLogMiddleware


async def _created(request: Request) -> PlainTextResponse:
    return PlainTextResponse("made", status_code=201)


async def _broken(request: Request) -> PlainTextResponse:
    raise RuntimeError("boom")


async def test_each_request_is_one_record_with_its_fields(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = Starlette(routes=[Route("/made", _created), Route("/broken", _broken)])
    transport = httpx.ASGITransport(app=AccessLogMiddleware(app), raise_app_exceptions=False)
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            await client.get("/made", params={"q": "what a patron searched"})
            await client.get("/broken")
    # Other loggers (httpx's own request log among them) may be at INFO too, depending
    # on which tests ran before: only the access logger's records are under test.
    records = [record for record in caplog.records if record.name == ACCESS_LOGGER]
    fields = [getattr(record, FIELDS) for record in records]
    assert [(f["method"], f["path"], f["status"]) for f in fields] == [
        ("GET", "/made", 201),
        ("GET", "/broken", 500),
    ]
    assert all(f["duration_ms"] >= 0 for f in fields)
    assert all("searched" not in record.getMessage() for record in records)
    assert all("searched" not in str(f) for f in fields)
