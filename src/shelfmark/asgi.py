"""The ASGI entry point for servers: `shelfmark.asgi:app`."""

from shelfmark.app import create_asgi_app

app = create_asgi_app()
