"""The Celery app, its configuration and beat schedule, and each worker process's event loop.

Configuration comes from the settings when the app is first used (a worker starting, a job
being sent), never at import: `configure()` hands it settings explicitly (the CLI, tests),
otherwise `get_settings()` is read then. Without `BROKER_URL` the broker is embedded: kombu's
SQLAlchemy transport over a SQLite file in SHELFMARK_HOME, so nothing else is installed.

Celery tasks are plain functions while the services are async. Each worker process owns one
event loop, run by a thread of its own, and one engine, both made when the process starts —
at `worker_process_init` in a prefork child, at `worker_init` for the solo and threads pools
— never at import and never per task. A task hands its service coroutine to that loop with
`run()`, so connections are pooled across the tasks of a process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import sys
import threading
from collections.abc import Coroutine
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import celery.apps.worker
from celery import Celery
from celery.concurrency import get_implementation
from celery.concurrency.prefork import TaskPool as PreforkPool
from celery.schedules import crontab
from celery.signals import (
    setup_logging,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)
from celery.utils.log import get_multiprocessing_logger
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

import shelfmark.models  # noqa: F401 - every model, so that foreign keys across domains resolve
from shelfmark.db import create_engine, create_sessionmaker
from shelfmark.logging import JsonFormatter, configure_logging
from shelfmark.settings import Settings, get_settings

T = TypeVar("T")

# Task names: the services send by name, so that they need not import the tasks.
RUN_JOB = "shelfmark.jobs.run"
RECOVER_JOBS = "shelfmark.jobs.recover"
START_SCHEDULED_JOB = "shelfmark.jobs.start_scheduled"
PURGE_BROKER = "shelfmark.broker.purge"
DELIVER_NOTICES = "shelfmark.notices.deliver"

# What a retry may cure: a database or broker that is briefly unreachable, a busy SQLite.
# Anything else fails the job at once with its error.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    OperationalError,
    InterfaceError,
    ConnectionError,
    TimeoutError,
)
RETRY_BACKOFF = 2  # seconds before the first retry, doubled each time (with jitter)...
RETRY_BACKOFF_MAX = 300  # ...up to this
MAX_RETRIES = 5
RECOVER_EVERY = 60.0  # seconds between sweeps for jobs whose worker died
PURGE_EVERY = 3600.0  # seconds between purges of the embedded broker's delivered messages
EMBEDDED_SCHEME = "sqla+sqlite:///"

celery_app = Celery("shelfmark", include=["shelfmark.jobs.tasks", "shelfmark.notices.tasks"])


@dataclass(frozen=True, slots=True)
class ScheduledJob:
    """A job kind that beat starts on a schedule: once per period, however often it fires
    (the job's dedupe key is the kind and the period)."""

    kind: str
    schedule: crontab
    period: Literal["hour", "day"]


SCHEDULED_JOBS: tuple[ScheduledJob, ...] = (
    # Notices (shelfmark.notices.jobs): mornings, UTC; the hourly expiry also sends whatever
    # notices are still pending (an SMTP outage, SMTP_URL newly set).
    ScheduledJob("overdue-notices", crontab(minute=0, hour=7), "day"),
    ScheduledJob("due-soon-notices", crontab(minute=15, hour=7), "day"),
    ScheduledJob("hold-expiry", crontab(minute=5), "hour"),
    # Circulation (shelfmark.circulation.jobs): fines accrue just after midnight, UTC, so that
    # the day just begun counts; loans past the retention period forget their patron.
    ScheduledJob("fee-accrual", crontab(minute=20, hour=0), "day"),
    ScheduledJob("anonymise", crontab(minute=40, hour=2), "day"),
)


def embedded_broker_url(home: Path) -> str:
    return f"{EMBEDDED_SCHEME}{home / 'broker.db'}"


def beat_schedule(*, embedded: bool) -> dict[str, dict[str, Any]]:
    schedule: dict[str, dict[str, Any]] = {
        "recover-stalled-jobs": {"task": RECOVER_JOBS, "schedule": RECOVER_EVERY},
    }
    if embedded:
        schedule["purge-embedded-broker"] = {"task": PURGE_BROKER, "schedule": PURGE_EVERY}
    for job in SCHEDULED_JOBS:
        schedule[job.kind] = {
            "task": START_SCHEDULED_JOB,
            "schedule": job.schedule,
            "args": (job.kind, job.period),
        }
    return schedule


def celery_config(settings: Settings) -> dict[str, Any]:
    broker = settings.broker_url or embedded_broker_url(settings.shelfmark_home)
    config: dict[str, Any] = {
        "broker_url": broker,
        "broker_connection_retry_on_startup": True,
        # The jobs table holds every result: no result backend.
        "result_backend": None,
        "task_ignore_result": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_default_queue": settings.jobs_queue,
        # A message is acknowledged when its task has finished, and given back when the
        # process running it dies, so that no job is lost with a worker; the job's guarded
        # start makes the second delivery harmless.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # A running job goes on when the broker connection drops: its message comes again,
        # and the job's guarded start makes that delivery a no-op, whereas cancelling would
        # stall the job until the sweep. (Celery warns of this choice at each connection loss.)
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        # Jobs are long: a worker takes one at a time rather than hoarding the queue.
        "worker_prefetch_multiplier": 1,
        "enable_utc": True,
        "timezone": "UTC",
        "beat_schedule": beat_schedule(embedded=broker.startswith(EMBEDDED_SCHEME)),
        "beat_schedule_filename": str(settings.shelfmark_home / "celerybeat-schedule"),
    }
    if broker.startswith(EMBEDDED_SCHEME):
        settings.shelfmark_home.mkdir(parents=True, exist_ok=True)
        # The API, the worker and beat share the file: wait for its lock rather than fail.
        config["broker_transport_options"] = {"connect_args": {"timeout": 30}}
    return config


class Runtime:
    """One process's event loop, run by a daemon thread, and its database engine."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="shelfmark-loop", daemon=True
        )
        self._thread.start()
        self.engine: AsyncEngine = create_engine(settings)
        self.sessionmaker: async_sessionmaker[AsyncSession] = create_sessionmaker(self.engine)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the process's loop and wait for its result (from any thread)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def close(self) -> None:
        try:
            self.run(self.engine.dispose())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)
            if not self._thread.is_alive():
                self.loop.close()


class _Process:
    """What this process knows: the settings it was given, and its runtime once started."""

    settings: Settings | None = None
    runtime: Runtime | None = None


_process = _Process()


def configure(settings: Settings) -> None:
    """Configure the app from `settings` rather than from `get_settings()`."""
    used = bool(getattr(celery_app, "configured", False))  # (missing from the type stubs)
    _process.settings = settings
    celery_app.conf.update(celery_config(settings))
    if used:
        # An app already used keeps what it made of its old configuration (connection pools,
        # queues): drop them, so that the next message goes where these settings say. Only
        # tests move an app between brokers.
        celery_app.close()
        celery_app.__dict__.pop("amqp", None)


def _lazy_config() -> dict[str, Any]:
    return celery_config(_process.settings or get_settings())


# Evaluated by Celery when its configuration is first needed, not now.
celery_app.add_defaults(_lazy_config)


def start_runtime() -> Runtime:
    if _process.runtime is None:
        _process.runtime = Runtime(_process.settings or get_settings())
    return _process.runtime


def stop_runtime() -> None:
    runtime, _process.runtime = _process.runtime, None
    if runtime is not None:
        runtime.close()


def runtime() -> Runtime:
    if _process.runtime is None:
        raise RuntimeError("No event loop here: this process was not started as a worker.")
    return _process.runtime


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a service coroutine on this worker process's loop: how a task calls async code."""
    try:
        current = runtime()
    except RuntimeError:
        coro.close()  # never awaited, and said so by the error rather than a warning
        raise
    return current.run(coro)


# --- worker lifecycle -------------------------------------------------------------------


def _is_prefork(pool_cls: Any) -> bool:
    pool = get_implementation(pool_cls) if isinstance(pool_cls, str) else pool_cls
    return isinstance(pool, type) and issubclass(pool, PreforkPool)


@worker_init.connect
def _on_worker_init(sender: Any = None, **_: Any) -> None:
    # A prefork parent only supervises; each child makes its own loop after the fork (a
    # thread does not survive a fork). The solo and threads pools run tasks right here.
    if getattr(sender, "app", None) is celery_app and not _is_prefork(sender.pool_cls):
        start_runtime()


@worker_process_init.connect
def _on_child_init(**_: Any) -> None:
    start_runtime()


@worker_process_shutdown.connect
def _on_child_shutdown(**_: Any) -> None:
    stop_runtime()


@worker_shutdown.connect
def _on_worker_shutdown(**_: Any) -> None:
    stop_runtime()


@setup_logging.connect
def _on_setup_logging(loglevel: int | str | None = None, **_: Any) -> None:
    # Connected, this stops Celery from taking the root logger over (its own format, on
    # stderr): the worker and beat log like every Shelfmark process, JSON with LOG_FORMAT=json.
    settings = _process.settings or get_settings()
    configure_logging(settings, level=loglevel or "INFO")
    # The pool's supervisor logs through billiard's logger, which does not propagate: its
    # errors (a child killed) would reach stderr as bare text. Only errors, as Celery does.
    pool_logger = get_multiprocessing_logger()
    if pool_logger is not None:
        pool_logger.propagate = True
        pool_logger.setLevel(logging.ERROR)
    if settings.log_format == "json":
        # Celery's shutdown notices bypass logging (celery.apps.worker.safe_say): said as
        # JSON instead. setattr: the stubs do not know the function.
        setattr(celery.apps.worker, "safe_say", _say_as_json)  # noqa: B010


def _say_as_json(msg: str, f: Any = sys.__stderr__) -> None:
    """Celery's `safe_say`, one JSON object per line. It runs in signal handlers, hence a
    bare `os.write` as in Celery's own (logging's lock could be held by the code it
    interrupted)."""
    record = logging.makeLogRecord(
        {"name": "celery.apps.worker", "levelname": "INFO", "msg": msg.strip()}
    )
    with contextlib.suppress(OSError, ValueError):
        os.write(f.fileno(), JsonFormatter().format(record).encode() + b"\n")


@worker_ready.connect
def _on_worker_ready(**_: Any) -> None:
    # A worker that starts again after a crash picks up the jobs it was running at once,
    # rather than at beat's next sweep (and the embedded broker does not redeliver them).
    celery_app.send_task(RECOVER_JOBS)


# --- the embedded broker ------------------------------------------------------------------


def purge_delivered(broker_url: str) -> int:
    """Delete the messages that the embedded broker has delivered; how many.

    Kombu's SQL transport marks a message invisible when it delivers it and keeps the row
    for ever (acknowledging changes nothing in the table; a message given back is written
    anew), so the file would only grow. An invisible row is never read again.
    """
    path = broker_url.removeprefix(EMBEDDED_SCHEME)
    with closing(sqlite3.connect(path, timeout=30)) as connection, connection:
        return connection.execute("DELETE FROM kombu_message WHERE visible = 0").rowcount


@celery_app.task(name=PURGE_BROKER)
def purge_embedded_broker() -> int:
    broker_url = str(celery_app.conf.broker_url)
    return purge_delivered(broker_url) if broker_url.startswith(EMBEDDED_SCHEME) else 0
