"""Shelfmark: an API-first library management system."""

__version__ = "0.1.0"
