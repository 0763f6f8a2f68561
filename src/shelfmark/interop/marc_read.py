"""Reading a MARC file as a stream of results, one per record, read or explained.

Binary MARC21 is cut into records at the end-of-record mark (0x1D), not by the length in each
leader: pymarc's MARCReader trusts that length and stops at the first record where it is
wrong, losing the rest of the file, while the mark resynchronises after any damage. Each
piece is checked (leader, directory, field boundaries) so that a bad record gets a reason a
librarian can act on, then decoded by pymarc from UTF-8 or MARC-8 into Unicode.

A reader that needs only some fields (an import maps a third of a record's fields) names
their tags, and a record whose own bytes are kept is then decoded with those fields only. As
the checks have shown that such a record is valid UTF-8 with two ASCII indicators on every
data field and ASCII subfield codes, it is decoded here (`_decoded`), to what pymarc would
make of it, at a third of pymarc's cost: pymarc repeats, field by field and subfield by
subfield, checks and conversions that such a record does not need.

MARCXML is recognised by its first non-blank byte, "<", and parsed incrementally; either way
memory stays flat whatever the size of the file.
"""

from __future__ import annotations

import re
import struct
import unicodedata
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final, NamedTuple

import pymarc
from pymarc.exceptions import BadSubfieldCodeWarning

from shelfmark.interop.marc_map import control_number, format_control_number

MAX_RECORD_LENGTH: Final = 99_999  # five digits in leader/00-04
_BLOCK_SIZE: Final = 64 * 1024
_END_OF_RECORD: Final = 0x1D
_END_OF_FIELD: Final = 0x1E
_BETWEEN_RECORDS: Final = b"\r\n\t \x00\x1a"  # line ends, padding, a DOS end-of-file mark
_BOM: Final = b"\xef\xbb\xbf"
_LEADER: Final = re.compile(rb"\d{5}[ -~]{5}\d{7}[ -~]{7}")  # lengths at 00-04, 10-11, 12-16
_ENTRY: Final = re.compile(rb"[0-9A-Za-z]{3}\d{9}")
_DIRECTORY: Final = re.compile(rb"(?:[0-9A-Za-z]{3}\d{9})+")
_DIRECTORY_ENTRY: Final = struct.Struct("3s4s5s")  # tag, field length, offset
_TAG: Final = re.compile(r"[0-9A-Za-z]{3}")
_DELIMITERS: Final = "\x1d\x1e\x1f"
_BAD_SUBFIELD_CODE: Final = re.compile(rb"\x1f[\x80-\xff]")


class MarcFileError(Exception):
    """The file as a whole cannot be read as MARC: missing, empty, or something else."""


@dataclass(frozen=True, slots=True)
class ReadResult:
    index: int  # 1-based position of the record in the file
    record: pymarc.Record | None  # None when the record could not be read
    error: str | None = None  # why it could not, for a person to read
    control_number: str | None = None  # "(003)001", read from the bytes of a broken record too
    warnings: tuple[str, ...] = ()  # what was repaired to read it
    # The record's own bytes when they are already UTF-8 MARC21 that needed no repair: kept as
    # the source record as they are (cheaper and more faithful than writing it again). When
    # iter_marc was given `tags`, `record` then holds only the fields of those tags.
    raw: bytes | None = None

    def marc21(self) -> bytes:
        """The record as UTF-8 MARC21: its own bytes where possible, else written anew."""
        if self.raw is not None:
            return self.raw
        if self.record is None:
            raise ValueError("an unreadable record has no MARC21 form")
        data: bytes = self.record.as_marc()
        return data


def iter_marc(
    source: BinaryIO | Path,
    *,
    select: Callable[[int], bool] | None = None,
    tags: Iterable[str] | None = None,
) -> Iterator[ReadResult]:
    """Every record of a binary MARC21 or MARCXML file, in order, each read or explained.

    Raises MarcFileError, before yielding anything, when the file cannot be opened, is
    empty, or is not MARC: binary whose first record fails and does not start with a
    plausible leader, or XML whose root is not a MARCXML collection or record. After that
    every problem is a result with an `error`, and reading goes on with the next record.

    With `select`, only the records whose 1-based position it accepts are read and yielded;
    the others are skipped unread (so that processes can share a file's records). Whether
    the file is MARC at all is then known only to the one that reads the first record.

    With `tags`, a binary record that is kept as its own bytes (`raw`) is decoded with only
    the fields of those tags (what a mapping reads), for speed; every other record, and
    every MARCXML record, is decoded whole. What is checked and reported is the same.
    """
    keep = frozenset(tag.encode("ascii") for tag in tags) if tags is not None else None
    if isinstance(source, Path):
        try:
            stream = source.open("rb")
        except OSError as exc:
            raise MarcFileError(f"cannot open {source}: {exc.strerror or exc}") from exc
        with stream:
            yield from _iter_stream(stream, select, keep)
    else:
        yield from _iter_stream(source, select, keep)


def _iter_stream(
    stream: BinaryIO, select: Callable[[int], bool] | None, keep: frozenset[bytes] | None
) -> Iterator[ReadResult]:
    head = stream.read(_BLOCK_SIZE).removeprefix(_BOM).lstrip(_BETWEEN_RECORDS)
    while not head:
        block = stream.read(_BLOCK_SIZE)
        if not block:
            raise MarcFileError("the file is empty")
        head = block.lstrip(_BETWEEN_RECORDS)
    if head.startswith(b"<"):
        yield from _iter_xml(_Prefixed(head, stream), select)
    else:
        yield from _iter_binary(head, stream, select, keep)


# --- binary MARC21 ----------------------------------------------------------------------


def _iter_binary(
    head: bytes,
    stream: BinaryIO,
    select: Callable[[int], bool] | None,
    keep: frozenset[bytes] | None,
) -> Iterator[ReadResult]:
    for index, chunk in enumerate(_split_records(head, stream), start=1):
        if select is not None and not select(index):
            continue
        result = _read_chunk(index, chunk, keep)
        if index == 1 and result.record is None and not _LEADER.match(chunk):
            raise MarcFileError(
                f"not a MARC21 file: it does not start with a leader ({result.error})"
            )
        yield result


def _split_records(head: bytes, stream: BinaryIO) -> Iterator[bytes]:
    """Pieces that each end with 0x1D, except a last one the file cuts short, and except that
    MAX_RECORD_LENGTH bytes without a mark are cut off as a piece of their own.
    """
    buffer = bytearray(head)
    pos = 0
    eof = False
    while True:
        while True:  # skip what some exporters put between records
            while pos < len(buffer) and buffer[pos] in _BETWEEN_RECORDS:
                pos += 1
            if pos < len(buffer) or eof:
                break
            del buffer[:pos]
            pos = 0
            block = stream.read(_BLOCK_SIZE)
            eof = not block
            buffer += block
        if pos >= len(buffer):
            return
        end = buffer.find(_END_OF_RECORD, pos)
        while end < 0 and not eof and len(buffer) - pos <= MAX_RECORD_LENGTH:
            del buffer[:pos]
            searched, pos = len(buffer), 0
            block = stream.read(_BLOCK_SIZE)
            eof = not block
            buffer += block
            end = buffer.find(_END_OF_RECORD, searched)
        if 0 <= end < pos + MAX_RECORD_LENGTH:
            cut = end + 1
        else:
            cut = min(len(buffer), pos + MAX_RECORD_LENGTH)
        yield bytes(buffer[pos:cut])
        pos = cut


def _read_chunk(index: int, chunk: bytes, keep: frozenset[bytes] | None = None) -> ReadResult:
    notes: list[str] = []
    scan = _structure_problem(chunk, notes, keep)
    if scan.problem is not None:
        return ReadResult(index, None, error=scan.problem, control_number=_control_number_in(chunk))
    declared = int(chunk[:5])
    if declared != len(chunk):
        # Some systems count characters instead of bytes; the directory is what matters.
        notes.append(f"the leader gives a length of {declared} bytes, the record has {len(chunk)}")
        chunk = b"%05d" % len(chunk) + chunk[5:]
    force_utf8 = _force_utf8(chunk, notes)
    bad_code = _BAD_SUBFIELD_CODE.search(chunk) is not None
    # Kept as its own bytes (below), the record needs only the fields that `keep` names. Its
    # other fields can make no note (bad subfield codes make one) and, being `decodable`, no
    # error in pymarc: leaving them out changes nothing.
    as_is = not notes and chunk[9:10] == b"a" and not bad_code
    try:
        if scan.kept and as_is and scan.decodable:
            record = _decoded(chunk, scan.kept)
        else:
            record = _decode(chunk, force_utf8=force_utf8, notes=notes, bad_code=bad_code)
    except Exception as exc:  # pymarc raises bare ValueError, TypeError, … on bad bytes
        number = _control_number_in(chunk)
        return ReadResult(index, None, error=_describe(exc), control_number=number)
    raw = chunk if not notes and chunk[9:10] == b"a" else None
    record.leader.coding_scheme = "a"  # the record now holds Unicode, whatever the file had
    return ReadResult(
        index, record, control_number=control_number(record), warnings=tuple(notes), raw=raw
    )


class _Scan(NamedTuple):
    problem: str | None  # what makes the record unreadable, if anything
    # Whether pymarc can decode every field of a UTF-8 record: a data field's indicators must
    # be ASCII, and a control field's data UTF-8 of its own (pymarc raises otherwise).
    decodable: bool = True
    # Where the fields of the tags asked for are: (tag, start, end), the end mark left out.
    kept: list[tuple[bytes, int, int]] | None = None


def _structure_problem(
    chunk: bytes, notes: list[str], keep: frozenset[bytes] | None = None
) -> _Scan:
    """What makes the bytes unreadable as a record: leader, directory or field boundaries.

    For a readable record, notes the data fields without exactly two indicators, which
    pymarc pads or cuts to two, and finds the fields of the tags in `keep` (one pass over
    the directory does all three).
    """
    if chunk[-1] != _END_OF_RECORD:
        return _Scan(
            "the record has no end-of-record mark (0x1D): "
            "the file ends in the middle of it, or it is longer than 99,999 bytes"
        )
    if len(chunk) < 26:
        return _Scan(f"the record is too short to hold a leader and a field ({len(chunk)} bytes)")
    if not chunk[:5].isdigit():
        return _Scan(f"the record length (leader/00-04) is not a number: {chunk[:5]!r}")
    if not chunk[12:17].isdigit():
        return _Scan(f"the base address (leader/12-16) is not a number: {chunk[12:17]!r}")
    directory_end = chunk.find(_END_OF_FIELD, 24)
    if directory_end < 0:
        return _Scan("the directory has no end mark (0x1E)")
    base = int(chunk[12:17])
    if base != directory_end + 1:
        return _Scan(
            f"the base address (leader/12-16) is {base}, the directory says {directory_end + 1}"
        )
    directory = chunk[24:directory_end]
    if not directory:
        return _Scan("the record has no fields")
    if len(directory) % 12:
        return _Scan(f"the directory is {len(directory)} bytes long, not a multiple of 12")
    return _field_problem(chunk, base, directory, notes, keep)


def _field_problem(
    chunk: bytes, base: int, directory: bytes, notes: list[str], keep: frozenset[bytes] | None
) -> _Scan:
    """The first malformed directory entry or misplaced field end; else no problem, the data
    fields without two indicators noted, whether pymarc can decode every field, and where
    the fields of the tags in `keep` are."""
    if _DIRECTORY.fullmatch(directory) is None:
        for start in range(0, len(directory), 12):
            entry = directory[start : start + 12]
            if not _ENTRY.fullmatch(entry):
                return _Scan(f"directory entry {start // 12 + 1} is malformed: {entry!r}")
    last = len(chunk) - 1
    check_ascii = not chunk.isascii()
    decodable = True
    found: list[str] = []
    kept: list[tuple[bytes, int, int]] = []
    for tag, length, offset in _DIRECTORY_ENTRY.iter_unpack(directory):
        begin = base + int(offset)
        end = begin + int(length)
        if end > last or chunk[end - 1] != _END_OF_FIELD:
            return _Scan(
                f"field {tag.decode('ascii')} does not end where the directory says (byte {end})"
            )
        if keep is not None and tag in keep:
            kept.append((tag, begin, end - 1))
        if tag < b"010" and tag.isdigit():  # a control field, without indicators
            if check_ascii and not chunk[begin : end - 1].isascii():
                decodable = decodable and _is_utf8(chunk[begin : end - 1])
            continue
        delimiter = chunk.find(b"\x1f", begin, end - 1)
        count = delimiter - begin if delimiter >= 0 else max(end - begin - 1, 0)
        if count != 2:
            found.append(f"field {tag.decode()} has {count} indicators instead of 2")
        elif check_ascii and not chunk[begin : begin + 2].isascii():
            decodable = False
    notes.extend(found)
    return _Scan(None, decodable, kept if keep is not None else None)


def _decoded(chunk: bytes, fields: Sequence[tuple[bytes, int, int]]) -> pymarc.Record:
    """The record of `chunk` with only `fields` (tag, start, end): pymarc's reading of them,
    for a record that the checks found to be valid UTF-8 throughout, with two ASCII
    indicators on every data field and an ASCII code after every subfield delimiter.

    A field is decoded whole and then split at the delimiters, where pymarc decodes each
    subfield: the same text, as an ASCII delimiter or code never falls inside a character.
    As pymarc does, a control field (tag below 010) is its data, and empty subfields are
    left out."""
    record = pymarc.Record()
    record.leader = pymarc.Leader(chunk[:24].decode("ascii"))
    decoded = record.fields
    for raw_tag, start, end in fields:
        tag = raw_tag.decode("ascii")
        text = chunk[start:end].decode("utf-8")
        if tag < "010" and tag.isdigit():
            decoded.append(pymarc.Field(tag=tag, data=text))
            continue
        indicators, *subfields = text.split("\x1f")
        decoded.append(
            pymarc.Field(
                tag=tag,
                indicators=pymarc.Indicators(indicators[0], indicators[1]),
                subfields=[pymarc.Subfield(part[0], part[1:]) for part in subfields if part],
            )
        )
    return record


def _force_utf8(chunk: bytes, notes: list[str]) -> bool:
    """Whether to read a record as UTF-8 although leader/09 does not say so.

    Leader/09 "a" means UTF-8 (invalid bytes become U+FFFD, with a note); blank means
    MARC-8. MARC-8 text is almost never valid UTF-8 (its diacritics precede an ASCII letter),
    so a record marked MARC-8 whose bytes are valid, non-ASCII UTF-8 is read as UTF-8.
    """
    data = chunk[24:]
    scheme = chunk[9:10]
    if scheme == b"a":
        if not _is_utf8(data):
            notes.append("invalid UTF-8 replaced by U+FFFD")
        return False
    if not data.isascii() and _is_utf8(data):
        notes.append(f"leader/09 is {scheme.decode('latin-1')!r} (MARC-8), but the record is UTF-8")
        return True
    if scheme != b" ":
        notes.append(
            f"leader/09 is {scheme.decode('latin-1')!r}, neither ' ' nor 'a'; read as MARC-8"
        )
    return False


def _decode(chunk: bytes, *, force_utf8: bool, notes: list[str], bad_code: bool) -> pymarc.Record:
    if not bad_code:
        return _record(chunk, force_utf8=force_utf8)
    # pymarc warns about a non-ASCII subfield code. Only these rare records pay for
    # catch_warnings, which changes process-wide state.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", BadSubfieldCodeWarning)
        record = _record(chunk, force_utf8=force_utf8)
    notes.extend(
        _repair_subfield_code(record, bytes(getattr(warning.message, "subf", b"")))
        for warning in caught
    )
    return record


def _repair_subfield_code(record: pymarc.Record, raw: bytes) -> str:
    """Undo pymarc's reading of a subfield whose code is a stray character before the code.

    pymarc takes the code from the ASCII form of the text after the delimiter, and skips
    one character. "á" gives code "a" and skips it, which is right; but a character with
    no ASCII form, such as U+FFFD, gives the code of the next character (U+FFFD then "bName"
    is code "b") and leaves that letter in the value ("bName"), which is removed here.
    """
    text = raw.decode("utf-8", "replace")
    stray, rest = text[:1], text[1:]
    name = f"U+{ord(stray):04X}" if stray else "an empty code"
    ascii_form = unicodedata.normalize("NFKD", stray).encode("ascii", "ignore").decode()
    if ascii_form:
        return f"subfield code {name} ({stray}) is not ASCII; read as {ascii_form[0]!r}"
    if not rest or not rest[0].isascii():
        return f"subfield code {name} is not ASCII; the subfield was kept as pymarc read it"
    for fld in record.fields:
        for position, subfield in enumerate(fld.subfields):
            if subfield.code == rest[0] and subfield.value == rest:
                fld.subfields[position] = pymarc.Subfield(subfield.code, rest[1:])
                return f"field {fld.tag}: stray {name} before subfield code {rest[0]!r} dropped"
    return f"stray {name} before subfield code {rest[0]!r}"


def _record(chunk: bytes, *, force_utf8: bool) -> pymarc.Record:
    return pymarc.Record(
        chunk,
        to_unicode=True,
        force_utf8=force_utf8,
        hide_utf8_warnings=True,  # else MARC-8 characters it cannot map go to stderr
        utf8_handling="replace",
    )


def _control_number_in(chunk: bytes) -> str | None:
    """001 and 003 read from the directory, so that a record pymarc rejects can be named."""
    directory_end = chunk.find(_END_OF_FIELD, 24)
    values: dict[bytes, str] = {}
    for start in range(24, directory_end - 11, 12):
        entry = chunk[start : start + 12]
        if entry[:3] in (b"001", b"003") and entry[3:].isdigit():
            begin = directory_end + 1 + int(entry[7:12])
            data = chunk[begin : begin + int(entry[3:7])].split(b"\x1e", 1)[0]
            values.setdefault(entry[:3], data.decode("ascii", "replace"))
    return format_control_number(values.get(b"001"), values.get(b"003"))


def _describe(exc: Exception) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return f"bytes that are not {exc.encoding} where the record needs them ({exc.reason})"
    if isinstance(exc, pymarc.PymarcException):
        return f"pymarc cannot read the record: {exc}"
    return f"the record cannot be decoded: {type(exc).__name__}: {exc}"


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# --- MARCXML ----------------------------------------------------------------------------


class _Prefixed:
    """A binary stream with the bytes already read to sniff it put back in front."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self._head = head
        self._rest = rest

    def read(self, size: int = -1) -> bytes:
        if not self._head:
            return self._rest.read(size)
        if size < 0:
            data, self._head = self._head + self._rest.read(), b""
            return data
        data, self._head = self._head[:size], self._head[size:]
        return data


def _iter_xml(stream: _Prefixed, select: Callable[[int], bool] | None) -> Iterator[ReadResult]:
    index = 0
    root: ET.Element | None = None
    # The standard library's expat neither fetches external entities nor expands entities
    # without bounds (expat >= 2.4), the two attacks defusedxml guards against.
    events = ET.iterparse(stream, events=("start", "end"))  # noqa: S314
    try:
        for event, element in events:
            if root is None:
                root = element
                if _local(root.tag) not in ("collection", "record"):
                    raise MarcFileError(f"not MARCXML: the root element is <{_local(root.tag)}>")
            if event != "end" or _local(element.tag) != "record":
                continue
            index += 1
            if select is None or select(index):
                yield _read_xml_record(index, element)
            if element is not root:
                root.clear()  # drop the records already read
    except (ET.ParseError, LookupError) as exc:  # LookupError: an unknown encoding is declared
        if index == 0:
            raise MarcFileError(f"not well-formed XML: {exc}") from exc
        if select is None or select(index + 1):
            yield ReadResult(index + 1, None, error=f"the XML stops being well-formed: {exc}")
        return
    if index == 0:
        raise MarcFileError("the MARCXML holds no records")


def _read_xml_record(index: int, element: ET.Element) -> ReadResult:
    record = pymarc.Record()
    notes: list[str] = []
    leader: str | None = None
    for child in element:
        name = _local(child.tag)
        tag = (child.get("tag") or "").strip()
        if name == "leader":
            leader = child.text or ""
        elif name in ("controlfield", "datafield") and not _TAG.fullmatch(tag):
            notes.append(f"a <{name}> with the tag {tag!r} was left out")
        elif name == "controlfield":
            record.fields.append(pymarc.Field(tag=tag, data=child.text or ""))
        elif name == "datafield":
            record.fields.append(_xml_datafield(tag, child, notes))
    number = control_number(record)
    if leader is None:
        notes.append("the record has no leader; a blank one was used")
    elif len(leader) != 24 or not leader.isascii():
        error = f"the leader is not 24 ASCII characters: {leader!r}"
        return ReadResult(index, None, error=error, control_number=number)
    else:
        record.leader = pymarc.Leader(leader)
    record.leader.coding_scheme = "a"
    return ReadResult(index, record, control_number=number, warnings=tuple(notes))


def _xml_datafield(tag: str, element: ET.Element, notes: list[str]) -> pymarc.Field:
    subfields = []
    for sub in element:
        code = sub.get("code") or ""
        if _local(sub.tag) != "subfield":
            continue
        if len(code) != 1 or code in _DELIMITERS:
            notes.append(f"field {tag}: a subfield with the code {code!r} was left out")
            continue
        subfields.append(pymarc.Subfield(code=code, value=sub.text or ""))
    indicators = pymarc.Indicators(_indicator(element.get("ind1")), _indicator(element.get("ind2")))
    return pymarc.Field(tag=tag, indicators=indicators, subfields=subfields)


def _indicator(value: str | None) -> str:
    return value if value is not None and len(value) == 1 and value not in _DELIMITERS else " "


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]
