"""The `shelfmark` command: thin adapters over the services, one per operator task."""

from __future__ import annotations

import asyncio
import ctypes
import json
import logging
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from types import FrameType
from typing import Annotated, Any, BinaryIO

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

import shelfmark.models  # noqa: F401 - every model, so that foreign keys across domains resolve
from shelfmark.auth import service as auth_service
from shelfmark.auth.roles import SYSTEM, Role
from shelfmark.db import (
    create_engine,
    create_read_sessionmaker,
    create_sessionmaker,
    session_scope,
)
from shelfmark.demo.loader import DemoSummary, load_demo
from shelfmark.errors import ShelfmarkError
from shelfmark.interop import marc_export
from shelfmark.interop.marc_import import ImportSummary, import_file
from shelfmark.interop.marc_read import MarcFileError
from shelfmark.interop.sip2 import server as sip2_server
from shelfmark.interop.sip2.context import Sip2Config
from shelfmark.logging import configure_logging, server_log_config
from shelfmark.migrate import upgrade
from shelfmark.search.index import reindex_all
from shelfmark.settings import MissingSecretKey, get_settings
from shelfmark.worker import celery_app
from shelfmark.worker import configure as configure_celery

app = typer.Typer(
    help="Shelfmark, a library management system.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
console = Console(stderr=True)
log = logging.getLogger(__name__)


class Server(StrEnum):
    GRANIAN = "granian"
    UVICORN = "uvicorn"


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Server processes")] = 1,
    reload: Annotated[bool, typer.Option(help="Restart on code changes (development)")] = False,
    server: Annotated[Server, typer.Option(help="ASGI server")] = Server.GRANIAN,
    worker: Annotated[
        bool, typer.Option(help="Also run a worker and beat as child processes (embedded mode)")
    ] = True,
) -> None:
    """Serve the API, the OPAC and the staff desk (and, by default, the background jobs)."""
    settings = get_settings()
    # Logged, not printed: with LOG_FORMAT=json every line of output is a JSON object.
    configure_logging(settings)
    try:
        settings.require_secret_key()
    except MissingSecretKey as exc:
        log.critical("%s", exc)
        raise typer.Exit(2) from exc
    log.info(
        "Shelfmark on http://%s:%s (database: %s)", host, port, _redacted(settings.database_url)
    )
    with _supervised(_EMBEDDED_WORKER if worker else ()):
        _serve(
            host=host, port=port, workers=workers, reload=reload, server=server,
            log_config=server_log_config(settings),
        )  # fmt: skip


def _serve(
    *, host: str, port: int, workers: int, reload: bool, server: Server, log_config: dict[str, Any]
) -> None:
    open_files = _raise_open_files_limit()
    if server is Server.GRANIAN:
        from granian import Granian  # noqa: PLC0415 - only the chosen server is loaded
        from granian.constants import HTTPModes, Interfaces  # noqa: PLC0415

        # backpressure: requests served at once per worker, 1024 by default, which would
        # also cap the live event streams (each an open request); the open files bound them.
        # HTTP/1.1 only: "auto" (which also takes HTTP/2 without TLS, a thing browsers never
        # speak) cost 32.4 KiB per open event stream, HTTP/1.1 20.6 KiB (bench/events.py,
        # 10,000 streams). TLS and HTTP/2 end at the proxy in front.
        Granian(
            "shelfmark.asgi:app", address=host, port=port, interface=Interfaces.ASGI,
            workers=workers, reload=reload, log_access=False, log_dictconfig=log_config,
            backpressure=open_files, http=HTTPModes.http1,
        ).serve()  # fmt: skip
    else:
        import uvicorn  # noqa: PLC0415

        uvicorn.run(
            "shelfmark.asgi:app", host=host, port=port, workers=workers, reload=reload,
            proxy_headers=True, timeout_graceful_shutdown=25, access_log=False,
            log_config=log_config,
        )  # fmt: skip


def _raise_open_files_limit() -> int:
    """Raise the soft limit of open files to the hard one, and return it: every connection
    is a file, and live event streams stay open (soft limits are often 1024)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard and hard != resource.RLIM_INFINITY:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return soft


# `serve`'s children: one worker (one job at a time: SQLite has one writer) and beat.
_EMBEDDED_WORKER = (
    (sys.executable, "-m", "shelfmark", "worker", "--concurrency", "1"),
    (sys.executable, "-m", "shelfmark", "beat"),
)
STOP_GRACE_SECONDS = 30.0
_PR_SET_PDEATHSIG = 1


def _spawn(command: Sequence[str]) -> subprocess.Popen[bytes]:
    # preexec_fn is unsafe once threads run; `serve` starts its children before any does.
    return subprocess.Popen(  # noqa: S603 - our own commands, no shell
        command,
        start_new_session=True,
        preexec_fn=_die_with_parent,  # noqa: PLW1509
    )


def _die_with_parent() -> None:
    # In the child, before exec: the kernel sends it SIGTERM should `serve` die without
    # stopping it (SIGKILL, a crash), so that no worker outlives its server.
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _exit_on_sigterm(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


@contextmanager
def _supervised(commands: Sequence[Sequence[str]]) -> Iterator[None]:
    """Run `commands` as child processes for as long as the block runs.

    However the block ends (SIGTERM, Ctrl-C, an error), each child gets SIGTERM — a worker
    then finishes its current job — and SIGKILL if it is still there after a grace period.
    The children are in sessions of their own, so that a Ctrl-C in the terminal reaches the
    server only and the children are stopped here, in order.
    """
    # SIGTERM must unwind the stack like Ctrl-C does, for the `finally` below to run (the
    # ASGI servers re-raise the signal once they have shut down).
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    children: list[subprocess.Popen[bytes]] = []
    try:
        for command in commands:
            child = _spawn(command)
            children.append(child)
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)  # a second SIGTERM stops us at once
        for child in children:
            if child.poll() is None:
                child.terminate()
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for child in children:
            try:
                child.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


class Pool(StrEnum):
    PREFORK = "prefork"
    SOLO = "solo"
    THREADS = "threads"


@app.command()
def worker(
    concurrency: Annotated[
        int | None, typer.Option(min=1, help="Jobs run at once (default: the CPU count)")
    ] = None,
    pool: Annotated[Pool, typer.Option(help="prefork (processes), solo or threads")] = Pool.PREFORK,
    loglevel: Annotated[str, typer.Option(help="debug, info, warning or error")] = "info",
) -> None:
    """Run a Celery worker: it runs the background jobs (BROKER_URL, or the embedded one)."""
    settings = get_settings()
    configure_celery(settings)
    configure_logging(settings, level=loglevel.upper())  # before Celery warns of anything
    # No mingle or gossip: they sync revoked tasks and worker events between workers, which
    # the jobs table makes unneeded, and mingle alone adds a second to every start.
    argv = [
        *_celery_options(settings.log_format),
        "worker",
        f"--pool={pool}",
        f"--loglevel={loglevel}",
        "--without-mingle",
        "--without-gossip",
    ]
    if concurrency is not None:
        argv.append(f"--concurrency={concurrency}")
    celery_app.worker_main(argv)


@app.command()
def beat(
    loglevel: Annotated[str, typer.Option(help="debug, info, warning or error")] = "info",
) -> None:
    """Run Celery beat, which starts the scheduled work. Run exactly one."""
    settings = get_settings()
    configure_celery(settings)
    configure_logging(settings, level=loglevel.upper())
    celery_app.start([*_celery_options(settings.log_format), "beat", f"--loglevel={loglevel}"])


def _celery_options(log_format: str) -> list[str]:
    # Celery prints a banner to stdout, outside logging; with JSON logs nothing but JSON may
    # be there. (Its logging is Shelfmark's anyway: see worker.py, `setup_logging`.)
    return ["--quiet"] if log_format == "json" else []


def _redacted(url: str) -> str:
    if "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"


@app.command()
def migrate(revision: Annotated[str, typer.Argument(help="Target revision")] = "head") -> None:
    """Create or upgrade the database schema."""

    async def run() -> None:
        engine = create_engine(get_settings())
        try:
            await upgrade(engine, revision)
        finally:
            await engine.dispose()

    asyncio.run(run())
    console.print(f"Database migrated to {revision}.")


@app.command()
def createsuperuser(
    username: Annotated[str | None, typer.Option(help="User name (prompted when missing)")] = None,
    password: Annotated[str | None, typer.Option(help="Password (prompted when missing)")] = None,
    email: Annotated[str | None, typer.Option(help="E-mail address")] = None,
) -> None:
    """Create a user with the admin role."""
    username = username or typer.prompt("User name")
    if password is None:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    if len(password) < 8:
        console.print("[red]A password has at least 8 characters.[/red]")
        raise typer.Exit(1)

    async def run() -> None:
        engine = create_engine(get_settings())
        try:
            async with session_scope(create_sessionmaker(engine)) as session:
                await auth_service.create_user(
                    session, actor=SYSTEM, username=username, password=password,
                    role=Role.ADMIN, email=email,
                )  # fmt: skip
        finally:
            await engine.dispose()

    try:
        asyncio.run(run())
    except ShelfmarkError as exc:
        console.print(f"[red]{exc.detail}[/red]")
        raise typer.Exit(1) from exc
    console.print(f"Admin user {username!r} created.")


@app.command()
def demo() -> None:
    """Load the demo library (real LoC records, three branches, staff logins) if empty."""

    async def run() -> DemoSummary | None:
        engine = create_engine(get_settings())
        try:
            return await load_demo(create_sessionmaker(engine))
        finally:
            await engine.dispose()

    summary = asyncio.run(run())
    if summary is None:
        console.print("The catalog already has branches: demo data not loaded again.")
        return
    console.print(
        f"Demo library loaded: {summary.catalog.created} titles, {summary.copies} copies at "
        f"MAIN, EAST and WEST. Staff logins: admin / shelfmark-admin, "
        f"librarian / shelfmark-librarian (change them before real use)."
    )


@app.command("import-marc")
def import_marc(
    file: Annotated[Path, typer.Argument(help="Binary MARC21 (UTF-8 or MARC-8) or MARCXML")],
    items: Annotated[
        str | None, typer.Option(help="Branch code: one copy per record that lists none")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a JSON summary as the last line")
    ] = False,
) -> None:
    """Import a MARC file into the catalog; re-importing updates instead of duplicating."""
    progress = Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TextColumn("{task.completed} records"),
        TextColumn("{task.fields[rate]:,.0f} records/s"), TimeElapsedColumn(),
        console=console, transient=as_json,
    )  # fmt: skip

    async def run() -> ImportSummary:
        engine = create_engine(get_settings())
        started = time.perf_counter()
        task = progress.add_task(f"Importing {file.name}", total=None, rate=0.0)

        def on_progress(summary: ImportSummary) -> None:
            rate = summary.read / max(time.perf_counter() - started, 1e-9)
            progress.update(task, completed=summary.read, rate=rate)

        try:
            with progress:
                return await import_file(
                    create_sessionmaker(engine), file, actor=SYSTEM, items_branch=items,
                    on_progress=on_progress,
                )  # fmt: skip
        finally:
            await engine.dispose()

    try:
        summary = asyncio.run(run())
    except (MarcFileError, ShelfmarkError) as exc:
        console.print(f"[red]{getattr(exc, 'detail', exc)}[/red]")
        raise typer.Exit(2) from exc
    for error in summary.errors[:20]:
        console.print(f"record {error['index']} ({error['control_number']}): {error['reason']}")
    console.print(
        f"{summary.read} read: {summary.created} created, {summary.updated} updated, "
        f"{summary.unchanged} unchanged, {len(summary.errors)} errors, "
        f"{summary.items_created} copies created."
    )
    if as_json:
        keys = ("created", "updated", "unchanged", "items_created", "errors", "warnings")
        print(json.dumps({k: getattr(summary, k) for k in keys}, ensure_ascii=False))  # noqa: T201


class ExportFormat(StrEnum):
    MARC = "marc"
    XML = "xml"


@app.command("export-marc")
def export_marc(
    out: Annotated[Path, typer.Argument(help="File to write ('-' for standard output)")],
    fmt: Annotated[ExportFormat, typer.Option("--format", help="marc or xml")] = ExportFormat.MARC,
) -> None:
    """Export the whole catalog as MARC21 or MARCXML, streamed with constant memory."""

    async def run(stream: BinaryIO) -> int:
        engine = create_engine(get_settings())
        try:
            async with create_read_sessionmaker(engine)() as session:
                return await marc_export.export_to(session, stream, fmt.value)
        finally:
            await engine.dispose()

    if str(out) == "-":
        count = asyncio.run(run(sys.stdout.buffer))
    else:
        with out.open("wb") as stream:
            count = asyncio.run(run(stream))
    console.print(f"{count} records exported.")


@app.command()
def reindex() -> None:
    """Rebuild the search index from the catalog, in one transaction."""

    async def run() -> int:
        engine = create_engine(get_settings())
        try:
            async with session_scope(create_sessionmaker(engine)) as session:
                return await reindex_all(session)
        finally:
            await engine.dispose()

    started = time.perf_counter()
    count = asyncio.run(run())
    console.print(
        f"Search index rebuilt: {count} bib records in {time.perf_counter() - started:.1f} s."
    )


@app.command()
def sip2(
    host: Annotated[
        str, typer.Option(help="Address to listen on (self-check machines are remote)")
    ] = "0.0.0.0",  # noqa: S104 - a SIP2 server is for the machines on the library's network
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Port (default: SIP2_PORT, 6001)")
    ] = None,
    institution: Annotated[str, typer.Option(help="Institution id (AO) it answers with")] = (
        "shelfmark"
    ),
    encoding: Annotated[str, typer.Option(help="Text encoding of the SCs' messages")] = "utf-8",
    idle_timeout: Annotated[
        float, typer.Option(min=1, help="Seconds a silent connection stays open")
    ] = 600.0,
) -> None:
    """Serve SIP2 to self-check machines until SIGTERM; they log in as a staff user."""
    settings = get_settings()
    configure_logging(settings)
    try:
        "".encode(encoding)
    except LookupError as exc:
        log.critical("Unknown encoding %r", encoding)
        raise typer.Exit(2) from exc
    config = Sip2Config(institution_id=institution, encoding=encoding, idle_timeout=idle_timeout)
    log.info("SIP2 for self-check machines (database: %s)", _redacted(settings.database_url))
    asyncio.run(
        sip2_server.run(settings, host=host, port=port or settings.sip2_port, config=config)
    )


def main() -> None:
    app()
