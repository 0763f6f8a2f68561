from __future__ import annotations

from shelfmark.errors import Conflict, InvalidInput, NotFound


class BranchNotFound(NotFound):
    code = "branch-not-found"
    title = "Branch not found"


class BibNotFound(NotFound):
    code = "bib-not-found"
    title = "Bib record not found"


class ItemNotFound(NotFound):
    code = "item-not-found"
    title = "Item not found"


class BarcodeTaken(Conflict):
    code = "barcode-taken"
    title = "Barcode already in use"


class BranchCodeTaken(Conflict):
    code = "branch-code-taken"
    title = "Branch code already in use"


class ControlNumberTaken(Conflict):
    code = "control-number-taken"
    title = "Control number already in use"


class StillReferenced(Conflict):
    code = "still-referenced"
    title = "Still in use"


class InvalidISBNQuery(InvalidInput):
    code = "invalid-isbn"
    title = "Invalid ISBN"


class ItemInCirculation(Conflict):
    code = "item-in-circulation"
    title = "The item's status belongs to circulation"
