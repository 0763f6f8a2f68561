"""The `shelfmark` command: thin adapters over the services, one per operator task."""

from __future__ import annotations

import asyncio
import getpass
from enum import StrEnum
from typing import Annotated

import typer
from rich.console import Console

from shelfmark.auth import service as auth_service
from shelfmark.auth.roles import SYSTEM, Role
from shelfmark.db import create_engine, create_sessionmaker, session_scope
from shelfmark.errors import ShelfmarkError
from shelfmark.migrate import upgrade
from shelfmark.settings import get_settings

app = typer.Typer(help="Shelfmark, a library management system.", no_args_is_help=True)
console = Console(stderr=True)


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
) -> None:
    """Serve the API, the OPAC and the staff desk."""
    settings = get_settings()
    console.print(
        f"Shelfmark on http://{host}:{port} (database: {_redacted(settings.database_url)})"
    )
    if server is Server.GRANIAN:
        from granian import Granian  # noqa: PLC0415 - only the chosen server is loaded
        from granian.constants import Interfaces  # noqa: PLC0415

        Granian(
            "shelfmark.asgi:app", address=host, port=port, interface=Interfaces.ASGI,
            workers=workers, reload=reload, log_access=False,
        ).serve()  # fmt: skip
    else:
        import uvicorn  # noqa: PLC0415

        uvicorn.run(
            "shelfmark.asgi:app", host=host, port=port, workers=workers, reload=reload,
            proxy_headers=True, timeout_graceful_shutdown=25, access_log=False,
        )  # fmt: skip


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
        password = getpass.getpass("Password: ")
        if getpass.getpass("Password (again): ") != password:
            console.print("[red]The passwords differ.[/red]")
            raise typer.Exit(1)
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


def main() -> None:
    app()
