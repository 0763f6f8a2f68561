"""The ASGI entry point for servers: `shelfmark.asgi:app`."""

from shelfmark.app import create_app

app = create_app()
