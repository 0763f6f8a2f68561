"""What Shelfmark's values are called in SIP2, and the negative answer to each request.

Every request the ACS supports has a negative answer of its own response type: a refusal,
a malformed message of a known type and a message sent before login all get one, so that
the SC always hears back in the form it waits for. Only what cannot be recognised at all
(or arrived damaged) gets 96, "request SC resend".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime

from shelfmark.interop.sip2.protocol import Message, Reply, format_datetime

# Which messages the ACS supports, in the order of the 98 message's BX field: patron status,
# checkout, checkin, block patron, SC/ACS status, resend, login, patron information, end
# patron session, fee paid, item information, item status update, patron enable, hold,
# renew, renew all.
SUPPORTED_MESSAGES = "YYYYYYYYYYYNNNYY"

# Patron status: 14 flags; the first four are charge, renewal, recall and hold privileges
# denied (see `patron_status`).
DENIED = "YYYY" + " " * 10
UNKNOWN_LANGUAGE = "000"

# Circulation status (item information, 18) by item status.
CIRCULATION_STATUS: Mapping[str, str] = {
    "available": "03",
    "on_loan": "04",
    "on_hold_shelf": "08",
    "in_transit": "10",
    "lost": "12",
    "missing": "13",
    "withdrawn": "01",  # "other": out of circulation
}
OTHER_STATUS = "01"
SECURITY_MARKER_OTHER = "00"
FEE_TYPE_OTHER = "01"

# Media type (CK) by item type; anything else is "000" (other).
MEDIA_TYPE: Mapping[str, str] = {
    "book": "001",
    "magazine": "002",
    "journal": "003",
    "audiotape": "004",
    "cassette": "004",
    "videotape": "005",
    "vhs": "005",
    "cd": "006",
    "cdrom": "006",
    "dvd": "006",
    "bluray": "006",
    "diskette": "007",
}
MAGNETIC_MEDIA = frozenset({"004", "005", "007"})

# Alert type (CV) of a checkin: the copy goes to this branch's hold shelf, to another
# branch for a hold, or home to another branch.
ALERT_HOLD_HERE = "01"
ALERT_HOLD_ELSEWHERE = "02"
ALERT_SEND_HOME = "04"
ALERT_OTHER = "99"

# SIP2 language codes by ISO 639-2 (the patron's `language`).
LANGUAGES: Mapping[str, str] = {
    "eng": "001", "fre": "002", "fra": "002", "ger": "003", "deu": "003", "ita": "004",
    "dut": "005", "nld": "005", "swe": "006", "fin": "007", "spa": "008", "dan": "009",
    "por": "010", "nor": "012", "nob": "012", "nno": "012", "heb": "013", "jpn": "014",
    "rus": "015", "ara": "016", "pol": "017", "gre": "018", "ell": "018", "chi": "019",
    "zho": "019", "kor": "020", "tam": "022", "may": "023", "msa": "023", "ice": "025",
    "isl": "025",
}  # fmt: skip

# Payment type (fee paid, 37) to Shelfmark's payment method.
PAYMENT_METHODS: Mapping[str, str] = {"00": "cash", "01": "card", "02": "card"}


def media_type(item_type: str) -> str:
    return MEDIA_TYPE.get(item_type.casefold(), "000")


def language(code: str | None) -> str:
    return LANGUAGES.get((code or "").casefold(), UNKNOWN_LANGUAGE)


def _echo(message: Message | None, field_id: str) -> str:
    value = message.get(field_id) if message is not None else None
    return value or ""


Negative = Callable[[Message | None, str, str, str], Reply]


def _patron(command: str) -> Negative:
    def answer(message: Message | None, reason: str, date: str, institution: str) -> Reply:
        return Reply(
            command, (DENIED, UNKNOWN_LANGUAGE, date),
            (("AO", institution), ("AA", _echo(message, "AA")), ("AE", ""), ("BL", "N"),
             ("AF", reason)),
        )  # fmt: skip

    return answer


def _patron_information(message: Message | None, reason: str, date: str, institution: str) -> Reply:
    return Reply(
        "64", (DENIED, UNKNOWN_LANGUAGE, date, *(["0000"] * 6)),
        (("AO", institution), ("AA", _echo(message, "AA")), ("AE", ""), ("BL", "N"),
         ("AF", reason)),
    )  # fmt: skip


def _loan(command: str) -> Negative:
    def answer(message: Message | None, reason: str, date: str, institution: str) -> Reply:
        return Reply(
            command, ("0", "N", "U", "N", date),
            (("AO", institution), ("AA", _echo(message, "AA")), ("AB", _echo(message, "AB")),
             ("AJ", ""), ("AH", ""), ("AF", reason)),
        )  # fmt: skip

    return answer


def _checkin(message: Message | None, reason: str, date: str, institution: str) -> Reply:
    # Alert: the copy in the return slot needs a person to look at it.
    return Reply(
        "10", ("0", "N", "U", "Y", date),
        (("AO", institution), ("AB", _echo(message, "AB")), ("AQ", ""), ("AF", reason),
         ("CV", ALERT_OTHER)),
    )  # fmt: skip


def _renew_all(message: Message | None, reason: str, date: str, institution: str) -> Reply:
    return Reply("66", ("0", "0000", "0000", date), (("AO", institution), ("AF", reason)))


def _item_information(message: Message | None, reason: str, date: str, institution: str) -> Reply:
    return Reply(
        "18", (OTHER_STATUS, SECURITY_MARKER_OTHER, FEE_TYPE_OTHER, date),
        (("AB", _echo(message, "AB")), ("AJ", ""), ("AF", reason)),
    )  # fmt: skip


def _yes_no(command: str) -> Negative:
    def answer(message: Message | None, reason: str, date: str, institution: str) -> Reply:
        extra = (("BK", _echo(message, "BK") or None),) if command == "38" else ()
        return Reply(
            command, ("N", date),
            (("AO", institution), ("AA", _echo(message, "AA")), *extra, ("AF", reason)),
        )  # fmt: skip

    return answer


def _hold(message: Message | None, reason: str, date: str, institution: str) -> Reply:
    return Reply(
        "16", ("0", "N", date),
        (("AO", institution), ("AA", _echo(message, "AA")), ("AF", reason)),
    )  # fmt: skip


def _item_status_update(message: Message | None, reason: str, date: str, institution: str) -> Reply:
    return Reply("20", ("0", date), (("AB", _echo(message, "AB")), ("AF", reason)))


def _login(message: Message | None, reason: str, date: str, institution: str) -> Reply:
    return Reply("94", ("0",))


NEGATIVE: Mapping[str, Negative] = {
    "01": _patron("24"),
    "09": _checkin,
    "11": _loan("12"),
    "15": _hold,
    "17": _item_information,
    "19": _item_status_update,
    "23": _patron("24"),
    "25": _patron("26"),
    "29": _loan("30"),
    "35": _yes_no("36"),
    "37": _yes_no("38"),
    "63": _patron_information,
    "65": _renew_all,
    "93": _login,
}


def negative(
    command: str, reason: str, *, message: Message | None, now: datetime, institution: str
) -> Reply | None:
    """The refusal of a `command` request, in its own response type; None for a command
    that has none (only 96 answers it)."""
    answer = NEGATIVE.get(command)
    if answer is None:
        return None
    institution = _echo(message, "AO") or institution
    return answer(message, reason, format_datetime(now), institution)
