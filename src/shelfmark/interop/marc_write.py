"""Writing MARC21: records for bibs entered through the API, and files for export.

A bib imported from MARC keeps its source record as MARC-in-JSON and is exported from it
unchanged (`record_from_source`); a bib entered through the API has none and gets a minimal
record built from its fields (`record_from_bib`) that maps back to the same fields.
Both files are written in UTF-8, with leader/09 "a".
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import date
from typing import Final, Protocol

import pymarc

from shelfmark.interop.marc_map import split_control_number

MAX_RECORD_LENGTH: Final = 99_999

# Material type → leader/06-07 (type of record, bibliographic level); see MATERIAL_TYPES.
LEADER_TYPES: Final[dict[str, str]] = {
    "book": "am", "serial": "as", "score": "cm", "map": "em", "video": "gm",
    "audiobook": "im", "music": "jm", "image": "km", "computer_file": "mm", "kit": "om",
    "mixed": "pc", "object": "rm", "manuscript": "tm",
}  # fmt: skip

_NOT_IN_MARC = re.compile(r"[\x00-\x1f\x7f]+")  # delimiters and other controls


class MarcWriteError(Exception):
    """A record cannot be written as MARC21."""


class MarcSourceError(ValueError):
    """A stored source record is not MARC-in-JSON."""


class ContributorFields(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def role(self) -> str: ...


class BibFields(Protocol):
    """What `record_from_bib` reads: a BibData or an API schema such as BibRead."""

    @property
    def title(self) -> str: ...
    @property
    def subtitle(self) -> str | None: ...
    @property
    def contributors(self) -> Sequence[ContributorFields]: ...
    @property
    def isbns(self) -> Sequence[str]: ...
    @property
    def publisher(self) -> str | None: ...
    @property
    def publication_year(self) -> int | None: ...
    @property
    def edition(self) -> str | None: ...
    @property
    def language(self) -> str | None: ...
    @property
    def subjects(self) -> Sequence[str]: ...
    @property
    def series(self) -> Sequence[str]: ...
    @property
    def description(self) -> str | None: ...
    @property
    def material_type(self) -> str | None: ...
    @property
    def control_number(self) -> str | None: ...


def record_from_bib(data: BibFields, *, entered: date) -> pymarc.Record:
    """A MARC21 record of the bib's fields, which `map_record` maps back to the same values.

    Written without ISBD punctuation (leader/18 "c") at minimal level (leader/17 "7"). The
    first contributor goes to 100 when an author, every other one to 700 with its role in
    $e; all names are written as personal names. `entered` is 008/00-05, the date the bib
    was created; the rest of 008 holds the year (or "no date"), the language (or "|||", not
    coded), and fill characters where Shelfmark knows nothing.
    """
    kind = data.material_type or "book"
    if kind not in LEADER_TYPES:
        raise MarcWriteError(f"unknown material type {kind!r}")
    record = pymarc.Record()
    record.leader = pymarc.Leader(f"00000n{LEADER_TYPES[kind]} a22000007c 4500")
    fields = record.fields
    if data.control_number:
        number, organization = split_control_number(data.control_number)
        fields.append(pymarc.Field(tag="001", data=_text(number)))
        if organization:
            fields.append(pymarc.Field(tag="003", data=_text(organization)))
    fields.append(pymarc.Field(tag="008", data=_field_008(data, entered)))
    fields += [_field("020", "  ", a=isbn) for isbn in data.isbns]
    contributors = list(data.contributors)
    main = contributors.pop(0) if contributors and contributors[0].role == "author" else None
    if main is not None:
        fields.append(_field("100", _name_indicator(main.name) + " ", a=main.name, e=main.role))
    fields.append(_field("245", ("1" if main else "0") + "0", a=data.title, b=data.subtitle))
    if data.edition:
        fields.append(_field("250", "  ", a=data.edition))
    if data.publisher or data.publication_year is not None:
        year = None if data.publication_year is None else str(data.publication_year)
        fields.append(_field("264", " 1", b=data.publisher, c=year))
    fields += [_field("490", "0 ", a=series) for series in data.series]
    paragraphs = (data.description or "").split("\n\n")
    fields += [_field("520", "  ", a=text) for text in paragraphs if text.strip()]
    fields += [_field("650", " 4", a=subject) for subject in data.subjects]
    fields += [
        _field("700", _name_indicator(c.name) + " ", a=c.name, e=c.role) for c in contributors
    ]
    return record


def record_from_source(source: Mapping[str, object]) -> pymarc.Record:
    """The record stored as MARC-in-JSON by `map_record` (pymarc's `Record.as_dict`).

    Raises MarcSourceError when the document does not have that shape.
    """
    leader = source.get("leader")
    fields = source.get("fields")
    if not isinstance(leader, str) or len(leader) != 24:
        raise MarcSourceError("the leader must be a string of 24 characters")
    if not isinstance(fields, list):
        raise MarcSourceError("'fields' must be a list")
    record = pymarc.Record()
    record.leader = pymarc.Leader(leader)
    record.fields.extend(_field_from_json(position, entry) for position, entry in enumerate(fields))
    return record


def to_marc21(records: Iterable[pymarc.Record]) -> bytes:
    """The records as one MARC21 file in UTF-8.

    Raises MarcWriteError for a record longer than the 99,999 bytes its leader can state.
    """
    out = io.BytesIO()
    for record in records:
        record.leader.coding_scheme = "a"
        data = record.as_marc()
        if len(data) > MAX_RECORD_LENGTH:
            number = record.get("001")
            name = number.data if number is not None else "without a 001"
            raise MarcWriteError(f"record {name} is {len(data)} bytes long; MARC21 allows 99,999")
        out.write(data)
    return out.getvalue()


def to_marcxml(records: Iterable[pymarc.Record]) -> bytes:
    """The records as one MARCXML collection in UTF-8."""
    out = io.BytesIO()
    writer = pymarc.XMLWriter(out)
    for record in records:
        record.leader.coding_scheme = "a"
        writer.write(record)
    writer.close(close_fh=False)
    return out.getvalue()


def _field_008(data: BibFields, entered: date) -> str:
    year = data.publication_year
    dates = f"s{year:04d}    " if year is not None and 0 <= year <= 9999 else "nuuuuuuuu"
    language = data.language if data.language and len(data.language) == 3 else "|||"
    # 15-17 place unknown ("xx "), 18-34 not coded ("|"), 38 not modified, 39 other source
    return f"{entered:%y%m%d}{dates}xx {'|' * 17}{language} d"


def _field(tag: str, indicators: str, **subfields: str | None) -> pymarc.Field:
    return pymarc.Field(
        tag=tag,
        indicators=pymarc.Indicators(indicators[0], indicators[1]),
        subfields=[
            pymarc.Subfield(code=code, value=_text(value))
            for code, value in subfields.items()
            if value is not None and _text(value)
        ],
    )


def _field_from_json(position: int, entry: object) -> pymarc.Field:
    if not isinstance(entry, Mapping) or len(entry) != 1:
        raise MarcSourceError(f"fields[{position}] must be an object with one tag")
    ((tag, value),) = entry.items()
    if not isinstance(tag, str):
        raise MarcSourceError(f"fields[{position}]: the tag must be a string")
    if value is None or isinstance(value, str):
        return pymarc.Field(tag=tag, data=value or "")
    if not isinstance(value, Mapping) or not isinstance(value.get("subfields"), list):
        raise MarcSourceError(f"fields[{position}] ({tag}) must be a string or have subfields")
    subfields = []
    for sub in value["subfields"]:
        if not isinstance(sub, Mapping) or len(sub) != 1:
            raise MarcSourceError(f"fields[{position}] ({tag}): a subfield must have one code")
        ((code, text),) = sub.items()
        if not isinstance(code, str) or not isinstance(text, str):
            raise MarcSourceError(f"fields[{position}] ({tag}): subfields map a code to text")
        subfields.append(pymarc.Subfield(code=code, value=text))
    indicators = pymarc.Indicators(str(value.get("ind1", " ")), str(value.get("ind2", " ")))
    return pymarc.Field(tag=tag, indicators=indicators, subfields=subfields)


def _name_indicator(name: str) -> str:
    """First indicator of a personal name: "1" for "Surname, Forename", "0" for a forename."""
    return "1" if "," in name else "0"


def _text(value: str) -> str:
    return _NOT_IN_MARC.sub(" ", value).strip()
