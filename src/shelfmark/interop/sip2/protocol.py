"""The SIP2 wire format (3M Standard Interchange Protocol 2.00): messages, checksums, dates.

A message is a two-digit command, fixed-length fields in an order the command defines, then
variable fields, each a two-letter id, a value and `|`. With error detection on, a message
ends with `AY<sequence digit>AZ<checksum>`: the checksum is the two's complement of the 16-bit
sum of every byte before it, `AZ` included, as four hex digits. Messages end with CR.

Only the requests an ACS receives are parsed here and only the responses it sends formatted;
both are checked against the spec's fixed-field layouts, so that a reply can never go out
with a field of the wrong width.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

TERMINATOR = b"\r"
DELIMITER = "|"
PROTOCOL_VERSION = "2.00"

# Fixed-field widths, in order, of each request the SC may send (spec, "Messages").
REQUEST_LAYOUT: Mapping[str, tuple[int, ...]] = {
    "01": (1, 18),  # block patron: card retained, transaction date
    "09": (1, 18, 18),  # checkin: no block, transaction date, return date
    "11": (1, 1, 18, 18),  # checkout: SC renewal policy, no block, date, nb due date
    "15": (1, 18),  # hold: mode, date
    "17": (18,),  # item information
    "19": (18,),  # item status update
    "23": (3, 18),  # patron status: language, date
    "25": (18,),  # patron enable
    "29": (1, 1, 18, 18),  # renew: third party allowed, no block, date, nb due date
    "35": (18,),  # end patron session
    "37": (18, 2, 2, 3),  # fee paid: date, fee type, payment type, currency
    "63": (3, 18, 10),  # patron information: language, date, summary
    "65": (18,),  # renew all
    "93": (1, 1),  # login: UID algorithm, PWD algorithm
    "97": (),  # request ACS resend
    "99": (1, 3, 4),  # SC status: status code, max print width, protocol version
}

# Fixed-field widths of each response the ACS sends.
RESPONSE_LAYOUT: Mapping[str, tuple[int, ...]] = {
    "10": (1, 1, 1, 1, 18),  # ok, resensitize, magnetic media, alert, date
    "12": (1, 1, 1, 1, 18),  # ok, renewal ok, magnetic media, desensitize, date
    "16": (1, 1, 18),  # ok, available, date
    "18": (2, 2, 2, 18),  # circulation status, security marker, fee type, date
    "20": (1, 18),  # item properties ok, date
    "24": (14, 3, 18),  # patron status, language, date
    "26": (14, 3, 18),
    "30": (1, 1, 1, 1, 18),  # ok, renewal ok, magnetic media, desensitize, date
    "36": (1, 18),  # end session, date
    "38": (1, 18),  # payment accepted, date
    "64": (14, 3, 18, 4, 4, 4, 4, 4, 4),  # status, language, date, six item counts
    "66": (1, 4, 4, 18),  # ok, renewed count, unrenewed count, date
    "94": (1,),  # ok
    "96": (),  # request SC resend
    "98": (1, 1, 1, 1, 1, 1, 3, 3, 18, 4),  # on-line … date/time sync, protocol version
}


class Sip2Error(Exception):
    """A message that cannot be taken as it is."""

    def __init__(
        self, reason: str, *, command: str | None = None, sequence: str | None = None,
        checksummed: bool = False,
    ) -> None:  # fmt: skip
        super().__init__(reason)
        self.reason = reason
        self.command = command
        self.sequence = sequence
        self.checksummed = checksummed


class BadChecksum(Sip2Error):
    """The AZ checksum does not match: the message was damaged on the way (answer 96)."""


class UnknownMessage(Sip2Error):
    """Not a request an ACS receives: nothing to answer it with but 96."""


class MalformedMessage(Sip2Error):
    """A known request whose fields are wrong: it gets its own negative answer."""


def checksum(data: bytes) -> str:
    """The AZ value for `data`: everything sent before it, up to and including `AZ`."""
    return format(-sum(data) & 0xFFFF, "04X")


def format_datetime(at: datetime) -> str:
    """`YYYYMMDDZZZZHHMMSS` in UTC: the zone is three blanks and `Z`."""
    at = at.astimezone(UTC)
    return f"{at:%Y%m%d}   Z{at:%H%M%S}"


def parse_datetime(text: str) -> datetime | None:
    """A SIP2 date: UTC when its zone ends in `Z`, the server's local time when the zone is
    blank; None when it is not a date (blank dates are common in optional fields)."""
    if len(text) != 18 or not (text[:8].isdigit() and text[12:].isdigit()):
        return None
    zone = text[8:12]
    try:
        naive = datetime.strptime(text[:8] + text[12:], "%Y%m%d%H%M%S")  # noqa: DTZ007
    except ValueError:
        return None
    if zone == "   Z":
        return naive.replace(tzinfo=UTC)
    if zone.strip() == "":
        return naive.astimezone(UTC)  # a naive datetime is taken as local time
    return None


@dataclass(frozen=True, slots=True)
class Message:
    """A request, parsed: its fixed fields in order and its variable fields by id (an id may
    repeat). `sequence` and `checksummed` say how the SC used error detection, so that the
    answer uses it the same way."""

    command: str
    fixed: tuple[str, ...] = ()
    fields: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    sequence: str | None = None
    checksummed: bool = False

    def get(self, field_id: str) -> str | None:
        """The first value of a variable field, stripped; None if it is absent."""
        values = self.fields.get(field_id)
        return values[0].strip() if values else None

    def flag(self, index: int) -> bool:
        """A Y/N fixed field: True only for Y."""
        return self.fixed[index] == "Y"


def _split_trailer(line: bytes) -> tuple[bytes, str | None, bool]:
    """(body, sequence number, whether a valid checksum was present)."""
    body, checksummed = line, False
    if len(body) >= 6 and body[-6:-4] == b"AZ":
        given = body[-4:].decode("ascii", errors="replace").upper()
        if given != checksum(body[:-4]):
            sequence = chr(body[-7]) if body[-9:-7] == b"AY" else None
            raise BadChecksum("checksum mismatch", sequence=sequence, checksummed=True)
        body, checksummed = body[:-6], True
    sequence = None
    if len(body) >= 3 and body[-3:-1] == b"AY" and body[-1:].isdigit():
        body, sequence = body[:-3], chr(body[-1])
    return body, sequence, checksummed


def parse(line: bytes, *, encoding: str = "utf-8") -> Message:
    """A request from the bytes of one line (without its terminator).

    Raises `BadChecksum`, `UnknownMessage` or `MalformedMessage`, each carrying what could
    be read of the error detection, so that even a refusal answers in kind.
    """
    body, sequence, checksummed = _split_trailer(line)
    text = body.decode(encoding, errors="replace")
    command = text[:2]
    layout = REQUEST_LAYOUT.get(command)
    if layout is None:
        raise UnknownMessage(
            f"unknown message {command!r}", sequence=sequence, checksummed=checksummed
        )

    def malformed(reason: str) -> MalformedMessage:
        return MalformedMessage(reason, command=command, sequence=sequence, checksummed=checksummed)

    end = 2 + sum(layout)
    if len(text) < end:
        raise malformed(f"message {command} is too short")
    fixed, start = [], 2
    for width in layout:
        fixed.append(text[start : start + width])
        start += width
    fields: dict[str, list[str]] = {}
    for piece in text[end:].split(DELIMITER):
        if not piece:
            continue
        field_id = piece[:2]
        if len(field_id) < 2 or not (field_id.isascii() and field_id.isalnum()):
            raise malformed(f"bad field {piece[:10]!r} in message {command}")
        fields.setdefault(field_id, []).append(piece[2:])
    return Message(
        command=command, fixed=tuple(fixed), fields={k: tuple(v) for k, v in fields.items()},
        sequence=sequence, checksummed=checksummed,
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Reply:
    """A response: fixed fields in the spec's order, then (id, value) pairs, where a None
    value leaves the field out."""

    command: str
    fixed: tuple[str, ...] = ()
    fields: tuple[tuple[str, str | None], ...] = ()


def _clean(value: str) -> str:
    # A value must never end the field or the message early.
    return value.replace(DELIMITER, "/").replace("\r", " ").replace("\n", " ")


def format_reply(reply: Reply) -> str:
    """The reply's text, without error detection or terminator."""
    layout = RESPONSE_LAYOUT[reply.command]
    widths = tuple(len(value) for value in reply.fixed)
    if widths != layout:
        raise ValueError(f"reply {reply.command}: fixed widths {widths}, the spec says {layout}")
    variable = "".join(
        f"{field_id}{_clean(value)}{DELIMITER}"
        for field_id, value in reply.fields
        if value is not None
    )
    return reply.command + "".join(reply.fixed) + variable


def encode(
    reply: Reply, *, sequence: str | None, checksummed: bool, encoding: str = "utf-8"
) -> bytes:
    """The reply as sent: with `AY` if the request had a sequence number, `AZ` and its
    checksum if the request carried one, and the terminator."""
    text = format_reply(reply)
    if sequence is not None:
        text += f"AY{sequence}"
    data = text.encode(encoding, errors="replace")
    if checksummed:
        data += b"AZ"
        data += checksum(data).encode("ascii")
    return data + TERMINATOR


def count(value: int) -> str:
    """A four-digit count field (the spec has no room for more)."""
    return f"{min(max(value, 0), 9999):04d}"


def flag(value: bool) -> str:
    return "Y" if value else "N"


def bit(value: bool) -> str:
    """The ok fields of checkout, checkin and renew are 1/0, not Y/N."""
    return "1" if value else "0"


def repeated(field_id: str, values: Sequence[str]) -> tuple[tuple[str, str | None], ...]:
    return tuple((field_id, value) for value in values)
