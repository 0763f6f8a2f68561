"""Prometheus metrics: request counts and latencies by route template, database pool use."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import ASGIApp, Scope

from shelfmark.observed import ObservedRequests

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    """One registry per app, so that several apps in one process (tests) never collide."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "shelfmark_http_requests",
            "HTTP requests by method, route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "shelfmark_http_request_duration_seconds",
            "HTTP request latency by method and route template",
            ["method", "route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.pool = Gauge(
            "shelfmark_db_pool_connections",
            "Database pool connections by state",
            ["state"],
            registry=self.registry,
        )

    def render(self, engine: AsyncEngine | None) -> bytes:
        if engine is not None:
            self._read_pool(engine)
        return generate_latest(self.registry)

    def _read_pool(self, engine: AsyncEngine) -> None:
        pool: Any = engine.sync_engine.pool
        for state in ("size", "checkedout", "checkedin", "overflow"):
            reader = getattr(pool, state, None)
            if callable(reader):
                self.pool.labels(state).set(reader())


class MetricsMiddleware(ObservedRequests):
    """Counts requests and their latency per method, route template and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics, prefixes: tuple[str, ...] = ()) -> None:
        super().__init__(app)
        self.metrics = metrics
        self.prefixes = prefixes

    def observe(self, scope: Scope, status: int, seconds: float) -> None:
        template = self._template(scope)
        method = scope["method"]
        self.metrics.requests.labels(method, template, str(status)).inc()
        self.metrics.latency.labels(method, template).observe(seconds)

    def _template(self, scope: Scope) -> str:
        """The route's path template: one label per route, whatever the ids in the URL."""
        template = getattr(scope.get("route"), "path", None)
        if template is None:
            return "<unmatched>"
        # A router included with a prefix reports its own paths without the prefix.
        for prefix in self.prefixes:
            if scope["path"].startswith(prefix + "/") and not template.startswith(prefix + "/"):
                return f"{prefix}{template}"
        return str(template)
