"""Every kind of failure reaches the client as problem+json, never as a stack trace."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from shelfmark import errors


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["type"] == f"/problems/{code}"
    assert body["status"] == status
    assert body["title"]
    assert body["detail"]
    assert "Traceback" not in response.text
    return body


ERROR_CLASSES = [
    (errors.InvalidInput, 422, "invalid-input"),
    (errors.NotFound, 404, "not-found"),
    (errors.Conflict, 409, "conflict"),
    (errors.Unauthenticated, 401, "unauthenticated"),
    (errors.InvalidCredentials, 401, "invalid-credentials"),
    (errors.Forbidden, 403, "forbidden"),
    (errors.PreconditionFailed, 412, "precondition-failed"),
    (errors.PayloadTooLarge, 413, "payload-too-large"),
    (errors.ServiceUnavailable, 503, "service-unavailable"),
    (errors.InternalError, 500, "internal-error"),
]


@pytest.fixture
def failing_app() -> FastAPI:
    app = FastAPI()
    errors.install_handlers(app)

    @app.get("/raise/{index}")
    async def raise_domain(index: int) -> None:
        cls, _, _ = ERROR_CLASSES[index]
        raise cls("it went wrong")

    @app.get("/rate-limited")
    async def rate_limited() -> None:
        raise errors.RateLimited("slow down", retry_after=30)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals /etc/passwd")

    @app.get("/typed/{number}")
    async def typed(number: int) -> int:
        return number

    return app


@pytest.fixture
async def failing_client(failing_app: FastAPI) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=failing_app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


@pytest.mark.parametrize(("index", "case"), list(enumerate(ERROR_CLASSES)))
async def test_every_domain_error_is_a_problem(
    failing_client: httpx.AsyncClient, index: int, case: tuple[type, int, str]
) -> None:
    _, status, code = case
    body = assert_problem(await failing_client.get(f"/raise/{index}"), status, code)
    assert body["detail"] == "it went wrong"
    assert body["instance"] == f"/raise/{index}"


async def test_rate_limited_carries_retry_after(failing_client: httpx.AsyncClient) -> None:
    response = await failing_client.get("/rate-limited")
    assert_problem(response, 429, "rate-limited")
    assert response.headers["retry-after"] == "30"


async def test_unexpected_error_hides_internals(
    failing_client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    response = await failing_client.get("/boom")
    body = assert_problem(response, 500, "internal-error")
    assert "secret" not in response.text
    assert "passwd" not in str(body)
    assert "secret internals" in caplog.text  # logged for the operator


async def test_validation_error_lists_fields(failing_client: httpx.AsyncClient) -> None:
    body = assert_problem(await failing_client.get("/typed/abc"), 422, "invalid-input")
    assert body["errors"] == [
        {
            "field": "number",
            "message": "Input should be a valid integer, unable to parse string as an integer",
        }
    ]


async def test_unknown_route_and_method(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/api/v1/nothing-here"), 404, "not-found")
    assert_problem(await client.put("/healthz"), 405, "method-not-allowed")


async def test_body_that_is_not_json(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/auth/token", content=b"\x00\x01", headers={"content-type": "application/json"}
    )
    assert response.status_code in {401, 422}
    assert response.headers["content-type"] == "application/problem+json"
