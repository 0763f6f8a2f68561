"""The live server of the web tests serves the live-event tests too."""

from web.conftest import live_server

__all__ = ["live_server"]
