"""ISBN-10 and ISBN-13: check digits, normalisation to ISBN-13 without hyphens, and back."""

from __future__ import annotations

import itertools
import operator
import re

_DASHES = "\u2010\u2011\u2012\u2013\u2014"  # the hyphens and dashes text editors put in
_SEPARATORS = re.compile(rf"[\s\-{_DASHES}.]")
_CANDIDATE = re.compile(rf"[0-9][0-9\s\-{_DASHES}.]{{8,16}}[0-9Xx]")


class InvalidISBN(ValueError):
    """The text is not a valid ISBN-10 or ISBN-13."""


# The weighted sums are taken by map (C) rather than a generator (Python, per digit): an
# import checks an ISBN or two per record.
def isbn10_check_digit(first9: str) -> str:
    total = sum(map(operator.mul, range(10, 10 - len(first9), -1), map(int, first9)))
    check = (11 - total % 11) % 11
    return "X" if check == 10 else str(check)


def isbn13_check_digit(first12: str) -> str:
    total = sum(map(operator.mul, itertools.cycle((1, 3)), map(int, first12)))
    return str((10 - total % 10) % 10)


def _compact(text: str) -> str:
    return _SEPARATORS.sub("", text.strip()).upper()


def is_valid(text: str) -> bool:
    try:
        normalize(text)
    except InvalidISBN:
        return False
    return True


def normalize(text: str) -> str:
    """Return the ISBN-13 (digits only) of a valid ISBN-10 or ISBN-13, in any hyphenation.

    Raises InvalidISBN when the length, the characters or the check digit are wrong.
    """
    compact = _compact(text)
    if len(compact) == 10 and compact[:9].isdigit() and (compact[9].isdigit() or compact[9] == "X"):
        if isbn10_check_digit(compact[:9]) != compact[9]:
            raise InvalidISBN(f"{text!r}: wrong ISBN-10 check digit")
        body = "978" + compact[:9]
        return body + isbn13_check_digit(body)
    if len(compact) == 13 and compact.isdigit():
        if not compact.startswith(("978", "979")):
            raise InvalidISBN(f"{text!r}: an ISBN-13 starts with 978 or 979")
        if isbn13_check_digit(compact[:12]) != compact[12]:
            raise InvalidISBN(f"{text!r}: wrong ISBN-13 check digit")
        return compact
    raise InvalidISBN(f"{text!r}: an ISBN has 10 or 13 digits")


def to_isbn10(isbn13: str) -> str | None:
    """The ISBN-10 of a 978 ISBN-13; 979 ISBNs have none."""
    compact = normalize(isbn13)
    if not compact.startswith("978"):
        return None
    body = compact[3:12]
    return body + isbn10_check_digit(body)


def find_in(text: str) -> str | None:
    """The first valid ISBN in free text such as a MARC 020 $a ("0451526538 (pbk.)")."""
    for match in _CANDIDATE.finditer(text):
        try:
            return normalize(match.group())
        except InvalidISBN:
            continue
    return None
