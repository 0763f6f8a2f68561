"""From a MARC21 bibliographic record to Shelfmark's bib and item fields (no database).

Mapping never raises on a record the reader yields: what is missing or malformed comes out as
None or empty, and the one thing a bib cannot lack, a title, is supplied with a warning.
Text comes out in Unicode NFC with single spaces and without the ISBD punctuation that
separates the parts of a catalogue card (see `strip_isbd`).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from json.encoder import encode_basestring
from typing import Final

import pymarc

from shelfmark.catalog import isbn as isbn_rules
from shelfmark.search.text import NOT_A_WORD, NOT_ASCII, ascii_words, unless_combining

UNTITLED: Final = "[untitled]"

# Leader/06 (type of record) → material type. Language material ("a") is a serial when
# leader/07 (bibliographic level) is b, i or s, and a book otherwise.
MATERIAL_TYPES: Final[dict[str, str]] = {
    "a": "book",  # language material
    "c": "score",  # notated music
    "d": "score",  # manuscript notated music
    "e": "map",  # cartographic material
    "f": "map",  # manuscript cartographic material
    "g": "video",  # projected medium: film, video, slides
    "i": "audiobook",  # nonmusical sound recording
    "j": "music",  # musical sound recording
    "k": "image",  # two-dimensional nonprojectable graphic
    "m": "computer_file",  # computer file, electronic resource
    "o": "kit",
    "p": "mixed",  # mixed materials
    "r": "object",  # three-dimensional artifact or naturally occurring object
    "t": "manuscript",  # manuscript language material
}
SERIAL_LEVELS: Final = frozenset("bis")  # serial component part, integrating resource, serial

# $4 relator codes (https://id.loc.gov/vocabulary/relators) → role.
RELATOR_CODES: Final[dict[str, str]] = {
    "aut": "author", "edt": "editor", "ill": "illustrator", "trl": "translator",
    "ctb": "contributor", "cmp": "composer", "prf": "performer", "drt": "director",
    "nrt": "narrator", "pht": "photographer", "com": "compiler", "aui": "author of introduction",
    "cre": "creator", "lbt": "librettist", "lyr": "lyricist", "cnd": "conductor",
    "pbl": "publisher", "prt": "printer", "art": "artist", "bnd": "binder",
    "bdd": "binding designer", "fmo": "former owner", "ivr": "interviewer", "ive": "interviewee",
}  # fmt: skip
# $e terms abbreviated the AACR2 way ("ed.", "tr.", "joint author.") → role.
RELATOR_TERMS: Final[dict[str, str]] = {
    "ed": "editor", "eds": "editor", "joint ed": "editor", "tr": "translator",
    "joint tr": "translator", "ill": "illustrator", "illus": "illustrator",
    "comp": "compiler", "joint comp": "compiler", "joint author": "author", "auth": "author",
    "pub": "publisher", "engr": "engraver", "arr": "arranger", "narr": "narrator",
}  # fmt: skip

# A final "." that ends one of these words is part of the word, not ISBD punctuation.
ABBREVIATIONS: Final = frozenset(
    {
        "bros", "co", "corp", "dept", "dr", "ed", "eds", "esq", "etc", "inc", "jr", "ltd",
        "mr", "mrs", "rev", "sr", "st", "vol", "vols",
        "aufl", "bd", "hrsg", "jh", "verl", "éd", "impr", "réimpr", "reimpr", "izd",
    }
)  # fmt: skip

_TRAILING_SEPARATORS = " \t/:;=,"
_YEAR = re.compile(r"(?<!\d)(1\d{3}|20\d{2})(?!\d)")
_ROLE_SEPARATOR = re.compile(r"\s+(?:and|&)\s+")
_CONTROL_NUMBER = re.compile(r"^\((?P<org>[^()]*)\)(?P<number>.+)$")
_PRICE = re.compile(r"\d[\d.,' ]*")
_MAX_PRICE = Decimal("99999999.99")

_CONTRIBUTOR_TAGS: Final = ("100", "110", "111", "700", "710", "711")
# By the last two digits of the tag.
_NAME_SUBFIELDS: Final = {"00": ("a", "b", "c"), "10": ("a", "b"), "11": ("a",)}
# The fields map_record reads, by tag, in groups that keep the record's order among their tags
# (a 710 between two 700s stays there): one pass over a record's fields finds them all.
_GROUP_OF: Final[dict[str, str]] = {
    "001": "001", "003": "003", "008": "008", "020": "020", "041": "041", "245": "245",
    "250": "250", "520": "520", "260": "publication", "264": "publication",
    **dict.fromkeys(_CONTRIBUTOR_TAGS, "contributors"),
    "650": "subjects", "651": "subjects", "490": "series", "440": "series", "830": "series",
}  # fmt: skip
_HOLDING_TAGS: Final = ("952", "852")
# Every tag that map_record and map_holdings read (with the leader): a reader may leave the
# other fields out of a record that is only mapped (see marc_read.iter_marc's `tags`).
MAPPED_TAGS: Final = frozenset({*_GROUP_OF, *_HOLDING_TAGS})


@dataclass(frozen=True, slots=True)
class Contributor:
    name: str
    role: str


@dataclass(frozen=True, slots=True)
class BibData:
    """The bibliographic fields Shelfmark keeps of a record (the record itself is kept apart)."""

    title: str
    subtitle: str | None = None
    contributors: tuple[Contributor, ...] = ()
    isbns: tuple[str, ...] = ()  # ISBN-13, digits only
    invalid_isbns: tuple[str, ...] = ()  # 020 $z and $a without a valid ISBN, as written
    publisher: str | None = None
    publication_year: int | None = None
    edition: str | None = None
    language: str | None = None  # ISO 639-2/B, lower case
    subjects: tuple[str, ...] = ()
    series: tuple[str, ...] = ()
    description: str | None = None
    material_type: str | None = None  # a value of MATERIAL_TYPES; None when leader/06 is unknown
    control_number: str | None = None  # see format_control_number
    warnings: tuple[str, ...] = ()

    def fingerprint(self) -> str:
        """SHA-256 (hex) of what makes two records the same edition of the same work.

        Title, subtitle, contributor names (as a set, roles ignored: catalogues word them
        differently), year, publisher and edition, each folded: accents removed, case folded,
        punctuation dropped. ISBNs are not part of it; they match on their own.
        """
        # The JSON of {"title": …, "subtitle": …, "contributors": […], "year": …, "publisher":
        # …, "edition": …} with sorted keys, as json.dumps(key, sort_keys=True,
        # ensure_ascii=False) writes it, written here directly at a fifth of the cost.
        contributors = sorted({_fold(c.name) for c in self.contributors} - {""})
        year = self.publication_year
        payload = _FINGERPRINT_KEY % (
            ", ".join(map(_json_string, contributors)),
            _json_string(_fold(self.edition)),
            _json_string(_fold(self.publisher)),
            _json_string(_fold(self.subtitle)),
            _json_string(_fold(self.title)),
            "null" if year is None else int.__repr__(year),
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()


_FINGERPRINT_KEY: Final = (
    '{"contributors": [%s], "edition": %s, "publisher": %s, "subtitle": %s, "title": %s, '
    '"year": %s}'
)


@dataclass(frozen=True, slots=True)
class HoldingData:
    """One copy described in a 952 (Koha) or 852 (MARC holdings) field."""

    barcode: str | None
    branch: str | None  # the branch code as the source system wrote it
    call_number: str | None
    item_type: str | None
    price: Decimal | None


def map_record(record: pymarc.Record) -> BibData:
    """The bib fields of a record; a record without a title gets `UNTITLED` and a warning."""
    fields = _grouped(record)
    warnings: list[str] = []
    title, subtitle = _title(fields)
    if title is None:
        title = UNTITLED
        warnings.append(f"no title in 245 $a; {UNTITLED} used")
    isbns, invalid_isbns = _isbns(fields)
    publisher, year = _publication(fields)
    return BibData(
        title=title,
        subtitle=subtitle,
        contributors=tuple(_contributors(fields)),
        isbns=isbns,
        invalid_isbns=invalid_isbns,
        publisher=publisher,
        publication_year=year,
        edition=_first(clean(v) for v in _subfields(fields, "250", "a")),
        language=_language(fields),
        subjects=_unique(clean(v) for v in _subfields(fields, "subjects", "a")),
        series=_unique(clean(v) for v in _subfields(fields, "series", "a")),
        description=_description(fields),
        material_type=material_type(str(record.leader)),
        control_number=format_control_number(
            _control_data(fields, "001"), _control_data(fields, "003")
        ),
        warnings=tuple(warnings),
    )


def map_holdings(record: pymarc.Record) -> tuple[HoldingData, ...]:
    """Copies from 952 ($p barcode, $a branch, $o call number, $y type, $v or $g price) and
    852 ($p barcode, $b branch, $h and $i call number); fields naming no barcode, branch or
    call number are skipped.
    """
    holdings: list[HoldingData] = []
    for fld in record.get_fields(*_HOLDING_TAGS):
        if fld.tag == "952":
            price_text = _get(fld, "v") or _get(fld, "g")
            holding = HoldingData(
                barcode=_get(fld, "p"),
                branch=_get(fld, "a"),
                call_number=_get(fld, "o"),
                item_type=_get(fld, "y"),
                price=parse_price(price_text) if price_text else None,
            )
        else:
            call_number = " ".join(_plain(v) for v in fld.get_subfields("h", "i")).strip()
            holding = HoldingData(
                barcode=_get(fld, "p"),
                branch=_get(fld, "b"),
                call_number=call_number or None,
                item_type=None,
                price=None,
            )
        if holding.barcode or holding.branch or holding.call_number:
            holdings.append(holding)
    return tuple(holdings)


# --- text rules -------------------------------------------------------------------------


def clean(text: str | None) -> str | None:
    """NFC form, single spaces, no trailing ISBD punctuation; None when nothing is left."""
    if text is None:
        return None
    return strip_isbd(_plain(text)) or None


def strip_isbd(text: str) -> str:
    """Remove trailing ISBD separators (" /", " :", " ;", " =", ",") and a final period.

    The period stays when it ends an abbreviation rather than the element: a single letter
    (an initial, "Smith, John A."), a word with an inner period ("D.C.", "U.S.A.", "..."), or
    a word in `ABBREVIATIONS` ("Jr.", "Inc.", "2nd ed."). Stripping repeats until nothing
    changes, so cleaning a clean text returns it unchanged.
    """
    while True:
        stripped = text.rstrip(_TRAILING_SEPARATORS)
        if stripped.endswith(".") and not _ends_with_abbreviation(stripped):
            stripped = stripped[:-1]
        if stripped == text:
            return text
        text = stripped


def parse_price(text: str) -> Decimal | None:
    """The first amount in text such as "EUR 12,50" or "$1,234.00 (pbk.)", to the cent.

    A "," is the decimal separator when it comes after any "." and one or two digits end
    the amount ("1.234,50"); otherwise "," separates thousands ("1,234.00", "1,234").
    Amounts that do not fit NUMERIC(10, 2) give None.
    """
    match = _PRICE.search(text)
    if match is None:
        return None
    amount = match.group().replace(" ", "").replace("'", "").rstrip(".,")
    if amount.rfind(",") > amount.rfind(".") and re.search(r",\d{1,2}$", amount):
        amount = amount.replace(".", "").replace(",", ".")
    else:
        amount = amount.replace(",", "")
        if amount.count(".") > 1:
            amount = amount.replace(".", "")
    try:
        price = Decimal(amount).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    except InvalidOperation:
        return None
    return price if price <= _MAX_PRICE else None


def material_type(leader: str) -> str | None:
    """The material type of leader/06-07 by `MATERIAL_TYPES`; None for an unknown code."""
    kind = MATERIAL_TYPES.get(leader[6:7])
    if kind == "book" and leader[7:8] in SERIAL_LEVELS:
        return "serial"
    return kind


def format_control_number(number: str | None, organization: str | None) -> str | None:
    """A record's identity: "(003)001", or the bare 001 when there is no 003.

    Both parts lose their surrounding spaces (the Library of Congress pads its 001 like
    "   2016012345 "), giving "(DLC)2016012345": the form MARC itself uses in 035 and in
    linking subfields. `split_control_number` takes it apart again.
    """
    number = (number or "").strip()
    if not number:
        return None
    organization = (organization or "").strip()
    return f"({organization}){number}" if organization else number


def split_control_number(value: str) -> tuple[str, str | None]:
    """The 001 and the 003 (or None) of a control number made by `format_control_number`."""
    match = _CONTROL_NUMBER.match(value.strip())
    if match and match["org"].strip():
        return match["number"].strip(), match["org"].strip()
    return value.strip(), None


def control_number(record: pymarc.Record) -> str | None:
    """The record's 001, prefixed by its 003 (see `format_control_number`)."""
    return format_control_number(_control_field(record, "001"), _control_field(record, "003"))


# --- fields -----------------------------------------------------------------------------

_Fields = dict[str, list[pymarc.Field]]


def _grouped(record: pymarc.Record) -> _Fields:
    """The fields that map_record reads, by `_GROUP_OF` group, in record order."""
    groups: _Fields = {}
    group_of = _GROUP_OF
    for fld in record.fields:
        group = group_of.get(fld.tag)
        if group is None:
            continue
        if group in groups:
            groups[group].append(fld)
        else:
            groups[group] = [fld]
    return groups


def _title(fields: _Fields) -> tuple[str | None, str | None]:
    """245 $a with its part number and name ($n, $p) joined by ". ", and $b."""
    found = fields.get("245")
    if not found or found[0].control_field:
        return None, None
    subfields = found[0].subfields
    parts = [part for c, v in subfields if c in ("a", "n", "p") and (part := clean(v))]
    return (". ".join(parts) or None), _first(clean(v) for c, v in subfields if c == "b")


def _contributors(fields: _Fields) -> Iterator[Contributor]:
    seen: set[Contributor] = set()
    for fld in fields.get("contributors", ()):
        if fld.control_field:
            continue
        tag = fld.tag
        codes = _NAME_SUBFIELDS[tag[1:]]
        name = clean(" ".join([v for c, v in fld.subfields if c in codes]))
        if name is None:
            continue
        default_role = "author" if tag.startswith("1") else "contributor"
        # Meetings (X11) put the relator term in $j, as their $e is a subordinate unit.
        term_code = "j" if tag.endswith("11") else "e"
        subfields = fld.subfields
        roles = [role for c, v in subfields if c == term_code for role in _roles_of_term(v)]
        roles += [_role_of_code(v) for c, v in subfields if c == "4"]
        for role in [r for r in roles if r] or [default_role]:
            contributor = Contributor(name=name, role=role)
            if contributor not in seen:
                seen.add(contributor)
                yield contributor


def _roles_of_term(term: str) -> list[str]:
    """ "ed. and tr." → ["editor", "translator"]; an unknown term is kept, folded."""
    roles = []
    for part in _ROLE_SEPARATOR.split(_plain(term).casefold()):
        word = part.strip(" .,;:/")
        if word:
            roles.append(RELATOR_TERMS.get(word, word))
    return roles


def _role_of_code(code: str) -> str:
    """A $4 relator code, or the URI of one, as a role; an unknown code is kept as it is."""
    code = code.strip().rstrip("/").rsplit("/", 1)[-1].lower()
    return RELATOR_CODES.get(code, code)


def _isbns(fields: _Fields) -> tuple[tuple[str, ...], tuple[str, ...]]:
    valid: list[str] = []
    invalid: list[str] = []
    for fld in fields.get("020", ()):
        for code, value in fld.subfields:
            text = _plain(value)
            if code == "a" and (isbn := isbn_rules.find_in(text)):
                valid.append(isbn)
            elif code in ("a", "z") and text:
                invalid.append(text)
    return _unique(valid), _unique(invalid)


def _publication(fields: _Fields) -> tuple[str | None, int | None]:
    """Publisher and year from 264 (second indicator 1: publication) before 260, before the
    other 264s (production, distribution, manufacture, copyright); the year falls back to
    008/07-10.
    """
    found = fields.get("publication", ())
    ordered = (
        [f for f in found if f.tag == "264" and f.indicator2 == "1"]
        + [f for f in found if f.tag == "260"]
        + [f for f in found if f.tag == "264" and f.indicator2 != "1"]
    )
    publisher = _first(clean(v) for f in ordered for c, v in f.subfields if c == "b")
    years = (
        m.group() for f in ordered for c, v in f.subfields if c == "c" and (m := _YEAR.search(v))
    )
    year = _first(years)
    if year is None:
        date1 = (_control_data(fields, "008") or "")[7:11]
        year = date1 if _YEAR.fullmatch(date1) else None
    return publisher, int(year) if year else None


def _language(fields: _Fields) -> str | None:
    """008/35-37, else the first code in 041 $a; None when blank or "no attempt to code"."""
    candidates = [(_control_data(fields, "008") or "")[35:38]]
    candidates += [value.strip()[:3] for value in _subfields(fields, "041", "a")]
    for code in candidates:
        if len(code) == 3 and code.isascii() and code.isalpha():
            return code.lower()
    return None


def _description(fields: _Fields) -> str | None:
    """Every 520 $a, one paragraph each; sentences keep their final period."""
    paragraphs = [text for v in _subfields(fields, "520", "a") if (text := _plain(v))]
    return "\n\n".join(paragraphs) or None


# --- helpers ----------------------------------------------------------------------------


def _plain(text: str) -> str:
    # split() splits where the regular expression \s matches (both ask str.isspace), and
    # costs a third of _WHITESPACE.sub(" ", text).strip().
    return " ".join(unicodedata.normalize("NFC", text).split())


def _ends_with_abbreviation(text: str) -> bool:
    word = text[:-1].rsplit(" ", 1)[-1].lstrip("([\"'")
    if "." in word:
        return True
    if len(word) == 1 and word.isalpha():
        return True
    return word.casefold() in ABBREVIATIONS


def _json_string(text: str) -> str:
    """`text` as a JSON string, as json.dumps(text, ensure_ascii=False) writes it."""
    encoded: str = encode_basestring(text)
    return encoded


def _fold(text: str | None) -> str:
    """Accents removed, case folded, anything but letters and digits turned into one space."""
    if not text:
        return ""
    if text.isascii():  # most of a catalogue: no marks to remove, and a simpler alphabet
        return ascii_words(text.casefold())
    # Only the characters that are not ASCII are looked at one by one: a combining mark
    # (after NFKD) is dropped.
    decomposed = NOT_ASCII.sub(unless_combining, unicodedata.normalize("NFKD", text))
    return NOT_A_WORD.sub(" ", decomposed.casefold()).strip()


def _control_field(record: pymarc.Record, tag: str) -> str | None:
    fld = record.get(tag)
    return fld.data if fld is not None and fld.control_field else None


def _control_data(fields: _Fields, tag: str) -> str | None:
    """The data of the first field of `tag` (a group of one tag), if a control field."""
    found = fields.get(tag)
    return found[0].data if found and found[0].control_field else None


def _subfields(fields: _Fields, group: str, code: str) -> list[str]:
    return [v for fld in fields.get(group, ()) for c, v in fld.subfields if c == code]


def _get(fld: pymarc.Field, code: str) -> str | None:
    return _first(text for v in fld.get_subfields(code) if (text := _plain(v)))


def _first(values: Iterable[str | None]) -> str | None:
    return next((v for v in values if v), None)


def _unique(values: Iterable[str | None]) -> tuple[str, ...]:
    """The values in order, without blanks and without repeats that differ only in case."""
    seen: set[str] = set()
    result: list[str] = []
    for value in values:
        if value and (key := value.casefold()) not in seen:
            seen.add(key)
            result.append(value)
    return tuple(result)
