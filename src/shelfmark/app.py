"""create_app(): the one place where routers, middleware and resources are wired."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI

from shelfmark import __version__
from shelfmark.audit.api import router as audit_router
from shelfmark.auth.api import router as auth_router
from shelfmark.catalog.api import router as catalog_router
from shelfmark.db import create_engine, create_sessionmaker
from shelfmark.docs import install_docs
from shelfmark.errors import install_handlers
from shelfmark.health import router as health_router
from shelfmark.logging import configure_logging
from shelfmark.metrics import Metrics, MetricsMiddleware
from shelfmark.settings import Settings, get_settings

API_PREFIX = "/api/v1"

DESCRIPTION = """
Shelfmark's REST API. Every error is `application/problem+json` (RFC 9457) with a stable
`type` under `/problems/`. Collections page with `limit` and an opaque `cursor`.
Log in at `POST /api/v1/auth/token` and send `Authorization: Bearer <token>`.
"""


def api_router() -> APIRouter:
    router = APIRouter(prefix=API_PREFIX)
    router.include_router(auth_router)
    router.include_router(catalog_router)
    router.include_router(audit_router)
    return router


def create_app(settings: Settings | None = None) -> FastAPI:
    """The ASGI app. Its engine is made at startup, or taken from `app.state` if a caller
    (the tests) put one there first."""
    settings = settings or get_settings()
    configure_logging(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owns_engine = getattr(app.state, "engine", None) is None
        if owns_engine:
            app.state.engine = create_engine(settings)
            app.state.sessionmaker = create_sessionmaker(app.state.engine)
        try:
            yield
        finally:
            if owns_engine:
                await app.state.engine.dispose()
                app.state.engine = None

    app = FastAPI(
        title="Shelfmark",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.metrics = Metrics()
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    install_handlers(app)
    install_docs(app)
    app.include_router(health_router)
    app.include_router(api_router())
    return app
