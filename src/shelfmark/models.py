"""Every ORM model, imported once so that the metadata is complete (Alembic, tests)."""

from shelfmark.audit.models import AuditEvent
from shelfmark.auth.models import User
from shelfmark.catalog.models import Bib, BibIsbn, Branch, Item
from shelfmark.db import Base

__all__ = ["AuditEvent", "Base", "Bib", "BibIsbn", "Branch", "Item", "User"]
