from __future__ import annotations

from shelfmark.errors import Conflict, NotFound


class PatronNotFound(NotFound):
    code = "patron-not-found"
    title = "Patron not found"


class CategoryNotFound(NotFound):
    code = "patron-category-not-found"
    title = "Patron category not found"


class BlockNotFound(NotFound):
    code = "patron-block-not-found"
    title = "Patron block not found"


class CardNumberTaken(Conflict):
    code = "card-number-taken"
    title = "Card number already in use"


class CategoryCodeTaken(Conflict):
    code = "patron-category-code-taken"
    title = "Patron category code already in use"
