"""Every ORM model, imported once so that the metadata is complete (Alembic, tests)."""

from shelfmark.audit.models import AuditEvent
from shelfmark.auth.models import User
from shelfmark.catalog.models import Bib, BibIsbn, Branch, Item
from shelfmark.circulation.models import CirculationRule, ClosedDay, Fee, Hold, Loan, Payment
from shelfmark.db import Base
from shelfmark.idempotency import IdempotencyRecord
from shelfmark.jobs.models import Job
from shelfmark.notices.models import Notice, NoticeTemplate
from shelfmark.patrons.models import Patron, PatronBlock, PatronCategory
from shelfmark.search.models import BibSearch, BibSearchSubject

__all__ = [
    "AuditEvent",
    "Base",
    "Bib",
    "BibIsbn",
    "BibSearch",
    "BibSearchSubject",
    "Branch",
    "CirculationRule",
    "ClosedDay",
    "Fee",
    "Hold",
    "IdempotencyRecord",
    "Item",
    "Job",
    "Loan",
    "Notice",
    "NoticeTemplate",
    "Patron",
    "PatronBlock",
    "PatronCategory",
    "Payment",
    "User",
]
