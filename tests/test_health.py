"""Probes and metrics, against the real Redis of the machine and a port nobody listens on."""

from __future__ import annotations

import socket

import httpx
import pytest
from fastapi import FastAPI

from conftest import unreachable

REDIS_URL = "redis://127.0.0.1:6379/15"


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def redis_is_up() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=1).close()
    except OSError:
        return False
    return True


async def test_readyz_names_every_failing_part(app: FastAPI, client: httpx.AsyncClient) -> None:
    port = closed_port()
    app.state.settings = app.state.settings.model_copy(
        update={
            "redis_url": f"redis://127.0.0.1:{port}/0",
            "broker_url": f"amqp://127.0.0.1:{port}//",
        }
    )
    response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["type"] == "/problems/not-ready"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["redis"].startswith("unreachable")
    assert body["checks"]["broker"].startswith("unreachable")
    assert "redis" in body["detail"]
    assert "broker" in body["detail"]


async def test_readyz_with_a_real_redis(app: FastAPI, client: httpx.AsyncClient) -> None:
    if not redis_is_up():
        unreachable("Redis at 127.0.0.1:6379 is unreachable")
    app.state.settings = app.state.settings.model_copy(update={"redis_url": REDIS_URL})
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"] == {"database": "ok", "redis": "ok"}


async def test_metrics_count_requests_by_route_template(client: httpx.AsyncClient) -> None:
    await client.get("/api/v1/bibs/999999")
    await client.get("/api/v1/bibs/999998")
    text = (await client.get("/metrics")).text
    assert "# TYPE shelfmark_http_requests_total counter" in text
    wanted = (
        'shelfmark_http_requests_total{method="GET",route="/api/v1/bibs/{bib_id}",status="404"} 2.0'
    )
    assert wanted in text, [line for line in text.splitlines() if "requests_total{" in line]
    assert "shelfmark_http_request_duration_seconds_bucket" in text
    assert "shelfmark_db_pool_connections" in text


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/docs", "/openapi.json"])
async def test_probes_need_no_login(client: httpx.AsyncClient, path: str) -> None:
    assert (await client.get(path)).status_code == 200
