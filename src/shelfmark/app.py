"""create_app(): the one place where routers, middleware and resources are wired."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI

from shelfmark import __version__
from shelfmark.admin import bind_admin, install_admin
from shelfmark.audit.api import router as audit_router
from shelfmark.auth.api import router as auth_router
from shelfmark.cache import SESSION_KEY as CACHE_KEY
from shelfmark.cache import create_cache
from shelfmark.catalog.api import router as catalog_router
from shelfmark.circulation.api import router as circulation_router
from shelfmark.circulation.rules_api import router as rules_router
from shelfmark.db import PoolReads, create_engine, create_read_sessionmaker, create_sessionmaker
from shelfmark.docs import install_docs
from shelfmark.errors import install_handlers
from shelfmark.health import router as health_router
from shelfmark.idempotency import IdempotencyMiddleware
from shelfmark.interop.api import router as marc_router
from shelfmark.jobs.api import router as jobs_router
from shelfmark.live.api import EVENTS_PATH, EventStreamHandoff
from shelfmark.live.api import router as live_router
from shelfmark.live.hub import LiveEvents
from shelfmark.logging import AccessLogMiddleware, configure_logging
from shelfmark.metrics import Metrics, MetricsMiddleware
from shelfmark.notices.api import router as notices_router
from shelfmark.patrons.api import router as patrons_router
from shelfmark.ratelimit import create_counter
from shelfmark.search.api import router as search_router
from shelfmark.settings import Settings, get_settings
from shelfmark.web.pages import install_web

API_PREFIX = "/api/v1"
# Allocations between young-generation collections (CPython: 700).
GC_YOUNG_THRESHOLD = 10_000

DESCRIPTION = """
Shelfmark's REST API. Every error is `application/problem+json` (RFC 9457) with a stable
`type` under `/problems/`. Collections page with `limit` and an opaque `cursor`.
Log in at `POST /api/v1/auth/token` and send `Authorization: Bearer <token>`.
"""


# In the order routes are matched: the busiest first (records and copies, then search),
# since every request is matched against the routers before its own (the bib by id spent a
# tenth of its CPU in matching, bench/api_read.py). The MARC exports (two routes) come
# before the records: `/bibs/{bib_id}` would also match `/bibs/12.mrc`.
API_ROUTERS: tuple[APIRouter, ...] = (
    marc_router,
    catalog_router,
    search_router,
    auth_router,
    audit_router,
    live_router,
    patrons_router,
    rules_router,
    circulation_router,
    jobs_router,
    notices_router,
)


def settle_memory() -> None:
    """Put what startup made (modules, routes, schemas, mappers: hundreds of thousands of
    objects) out of the cyclic collector's reach, and collect the young generation less often.

    Otherwise every full collection walks all of it while requests wait. bench/api_read.py
    (granian, one run each way, quiet machine): a page of 50 went from 554 to 747 req/s and
    its p99 from 176 to 91 ms; a cold bib by id from 828 to 1,036 req/s, p99 148 to 85 ms.
    Serving processes only (the tests make many apps).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def create_app(settings: Settings | None = None) -> FastAPI:
    """The ASGI app. Its engine is made at startup, or taken from `app.state` if a caller
    (the tests) put one there first."""
    settings = settings or get_settings()
    configure_logging(settings)
    settings.require_secret_key()  # refused here rather than signing with an empty key

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owns_engine = getattr(app.state, "engine", None) is None
        if owns_engine:
            app.state.engine = create_engine(settings)
            app.state.sessionmaker = create_sessionmaker(
                app.state.engine, info={CACHE_KEY: app.state.cache}
            )
            app.state.read_sessionmaker = create_read_sessionmaker(app.state.engine)
            app.state.reads = PoolReads(app.state.engine)
            bind_admin(app, app.state.engine)
            settle_memory()
        await app.state.live.start()
        try:
            yield
        finally:
            await app.state.live.stop()
            await app.state.cache.close()
            await app.state.rate_counter.close()
            if owns_engine:
                await app.state.reads.close()
                await app.state.engine.dispose()
                app.state.engine = app.state.reads = None

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
    app.state.cache = create_cache(settings.redis_url)
    app.state.rate_counter = create_counter(settings.redis_url)
    app.state.live = LiveEvents(settings.redis_url)
    app.add_middleware(IdempotencyMiddleware)
    if settings.access_log:
        app.add_middleware(AccessLogMiddleware)
    app.add_middleware(
        MetricsMiddleware, metrics=app.state.metrics, prefixes=(API_PREFIX,)
    )  # sees every request (the web's session and headers middleware wrap it)
    install_handlers(app)
    # Routes are matched in order, one pattern after another: the API's (the busiest) first.
    # Included one by one rather than through a parent router: each level of nesting costs
    # route matching time on every request.
    app.include_router(health_router)
    for router in API_ROUTERS:
        app.include_router(router, prefix=API_PREFIX)
    install_docs(app)
    install_web(app, settings)
    install_admin(app)
    return app


def with_event_streams(app: FastAPI) -> EventStreamHandoff:
    """The app as servers run it: wrapped in `EventStreamHandoff`, outside FastAPI itself,
    so that an open event stream holds none of the app's frames, FastAPI's outermost ones
    included (2 KiB of the 19.3 per stream under granian, bench/events.py). Its handshake
    goes through the whole app first."""
    return EventStreamHandoff(app, path=API_PREFIX + EVENTS_PATH)


def create_asgi_app(settings: Settings | None = None) -> EventStreamHandoff:
    """What `shelfmark serve` serves (`shelfmark.asgi:app`)."""
    return with_event_streams(create_app(settings))
