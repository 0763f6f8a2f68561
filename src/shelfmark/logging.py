"""Logging: readable text by default, one JSON object per line on stdout when LOG_FORMAT=json.

Every Shelfmark process logs through here, so that a log collector can parse every line of
its output: the API (`create_app`), the ASGI servers (their own loggers, configured by
`server_log_config`), Celery's worker and beat (its `setup_logging` signal, in worker.py, which
stops Celery from taking the root logger over) and the access log (`AccessLogMiddleware`,
with `ACCESS_LOG=true`). Nothing else writes to stdout.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.types import Scope

from shelfmark.observed import ObservedRequests
from shelfmark.settings import Settings

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# The ASGI servers' own loggers: granian's (its Rust core logs through `_granian` too) and
# uvicorn's. They get the same handler as the root logger, and do not propagate to it.
SERVER_LOGGERS = ("_granian", "granian.access", "uvicorn", "uvicorn.error", "uvicorn.access")
ACCESS_LOGGER = "shelfmark.access"
# A record carries its structured fields (the access log's method, path, status...) here.
FIELDS = "fields"

access_log = logging.getLogger(ACCESS_LOGGER)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "at": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, FIELDS, None)
        if isinstance(fields, Mapping):
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # default=str: a message argument orjson cannot encode must not lose the line.
        return orjson.dumps(entry, default=str).decode()


def make_formatter(settings: Settings) -> logging.Formatter:
    if settings.log_format == "json":
        return JsonFormatter()
    return logging.Formatter(TEXT_FORMAT)


def configure_logging(settings: Settings, level: int | str = logging.INFO) -> None:
    """Send the root logger's records to stdout in the configured format; once per process
    (later calls only change the level)."""
    root = logging.getLogger()
    root.setLevel(level)
    if getattr(root, "_shelfmark_configured", False):
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(make_formatter(settings))
    root.addHandler(handler)
    if settings.log_format == "json":
        # Warnings (a deprecation in a library, Celery's superuser warning) would otherwise
        # be printed as text on stderr.
        logging.captureWarnings(True)
    root._shelfmark_configured = True  # type: ignore[attr-defined]


def server_log_config(settings: Settings) -> dict[str, Any]:
    """A `logging.config.dictConfig` for the ASGI servers' loggers (granian's
    `log_dictconfig`, uvicorn's `log_config`): stdout, in the configured format. Existing
    loggers and the root logger are left alone."""
    formatter: dict[str, Any] = (
        {"()": f"{__name__}.JsonFormatter"}
        if settings.log_format == "json"
        else {"format": TEXT_FORMAT}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"shelfmark": formatter},
        "handlers": {
            "stdout": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stdout",
                "formatter": "shelfmark",
            }
        },
        "loggers": {
            name: {"handlers": ["stdout"], "level": "INFO", "propagate": False}
            for name in SERVER_LOGGERS
        },
    }


class AccessLogMiddleware(ObservedRequests):
    """One record per HTTP request, whichever server runs the app, with its fields
    structured (`method`, `path`, `status`, `duration_ms`, `client`) rather than in a line
    to parse. The query string is left out: it holds what patrons search for. Installed only
    with ACCESS_LOG=true."""

    def observe(self, scope: Scope, status: int, seconds: float) -> None:
        duration_ms = round(seconds * 1000, 3)
        client = scope.get("client")
        fields = {
            "method": scope["method"],
            "path": scope["path"],
            "status": status,
            "duration_ms": duration_ms,
            "client": client[0] if client else None,
            "http_version": scope.get("http_version"),
        }
        access_log.info(
            "%s %s %s %.1f ms", scope["method"], scope["path"], status, duration_ms,
            extra={FIELDS: fields},
        )  # fmt: skip
