"""Text rules of search, shared by the index, the queries and the migration's backfill.

Everything that is searched is folded by `fold` in Python, once, and stored folded; a query is
folded by the same function. So the two databases compare the same words, and neither needs
`unaccent` nor a language configuration: "Görlitz", "GORLITZ" and "gorlitz" are one word.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shelfmark.catalog import isbn as isbn_rules

NOT_A_WORD = re.compile(r"[\W_]+")  # [\W_] is exactly what str.isalnum rejects
# Dropped without a space: transliteration marks (ayn, hamza, soft sign: the spacing modifier
# letters, U+02B0-U+02FF) and the brackets of cataloguers' interpolations
# ("Kapitalmark[t]recht"), which sit inside words.
_DROPPED = re.compile(r"[\u02b0-\u02ff\[\]]")
# Letters that NFKD leaves whole although readers treat them as a base letter plus a mark.
_LETTERS = str.maketrans(
    {"ø": "o", "ł": "l", "đ": "d", "ð": "d", "ħ": "h", "þ": "th", "æ": "ae", "œ": "oe",
     "\u0131": "i"}  # dotless i
)  # fmt: skip

# Words that a title query may carry without the record having them ("a history of the
# world" for "History of the world"): they are not required to match, but they still count
# when the query is compared with titles. A query of nothing else requires them all.
STOP_WORDS = frozenset((
    "a", "an", "and", "at", "by", "for", "from", "in", "of", "on", "or", "the", "to", "with",
    "l", "le", "la", "les", "un", "une", "de", "du", "des", "et", "d",
    "der", "die", "das", "den", "dem", "ein", "eine", "einer", "und", "von", "zu", "im",
    "el", "los", "las", "lo", "y", "del", "en", "al",
    "il", "gli", "i", "di", "della", "e",
))  # fmt: skip
# Leading articles ignored when a query is compared with a whole title.
_ARTICLES = frozenset(
    ("the", "a", "an", "l", "le", "la", "les", "der", "die", "das", "el", "los", "las", "il",
     "lo", "gli")
)  # fmt: skip

TYPO_MIN_LENGTH = 4  # shorter words have too many neighbours one edit away
TERM_MAX_LENGTH = 64
PREFIX_MIN_LENGTH = 2
MAX_QUERY_TOKENS = 16


# ASCII letters and digits as they are, every other byte a space: what `NOT_A_WORD` does to
# ASCII text, done by bytes.translate (with split and join for the runs) at a third of the cost.
ASCII_WORDS = bytes(c if chr(c).isalnum() else 32 for c in range(128)) + b" " * 128
NOT_ASCII = re.compile(r"[^\x00-\x7f]")


def ascii_words(text: str, delete: bytes = b"") -> str:
    """ASCII `text`'s letters and digits, every other run (and what `delete` names, left
    out) one space between words: `NOT_A_WORD` -> " " by bytes.translate."""
    return " ".join(text.encode("ascii").translate(ASCII_WORDS, delete).decode("ascii").split())


def fold(text: str | None) -> str:
    """Casefold, drop diacritics (NFKD, combining marks removed) and transliteration marks,
    and turn every run of punctuation or space into one space."""
    if not text:
        return ""
    if text.isascii():  # no marks, no special letters, nothing for NFC to compose
        return ascii_words(text.casefold(), b"[]")
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    # Only the characters that are not ASCII can be combining marks.
    bare = NOT_ASCII.sub(unless_combining, decomposed).translate(_LETTERS)
    bare = _DROPPED.sub("", bare)
    # NFC puts back together what NFKD took apart without a mark (Hangul syllables).
    composed = unicodedata.normalize("NFC", bare)
    # Not casefolded again: NFKD may have made capitals (U+210C, black-letter H, is "H").
    if composed.isascii():
        return ascii_words(composed)
    return NOT_A_WORD.sub(" ", composed).strip()


def unless_combining(match: re.Match[str]) -> str:
    """For `NOT_ASCII.sub`: a character matched, or nothing if it is a combining mark."""
    character = match.group()
    return "" if unicodedata.combining(character) else character


def without_article(folded: str) -> str:
    first, _, rest = folded.partition(" ")
    return rest if rest and first in _ARTICLES else folded


def main_heading(subject: str) -> str:
    """The main heading of a subject string ("Science fiction -- History." → "Science
    fiction"): what the subject facet counts and filters on."""
    return subject.split("--", 1)[0].strip().rstrip(".").strip()


SEARCHED = ("title_text", "contributors_text", "subjects_text", "description_text")


@dataclass(frozen=True, slots=True)
class IndexRow:
    values: dict[str, Any]
    headings: dict[str, str]  # folded key -> the heading as first written


def index_row(bib: Mapping[Any, Any]) -> IndexRow:
    """The `bib_search` row (without `bib_id`) and main headings of a bib's fields."""
    names = " ".join(c.get("name", "") for c in bib.get("contributors") or ())
    subjects: Sequence[str] = bib.get("subjects") or ()
    headings: dict[str, str] = {}
    for subject in subjects:
        heading = main_heading(subject)
        key = fold(heading)[:500]
        if key:
            headings.setdefault(key, heading[:500])
    title = fold(bib.get("title"))
    values = {
        "title_key": without_article(title),
        "title_text": f"{title} {fold(bib.get('subtitle'))}".strip(),
        "contributors_text": fold(names),
        "subjects_text": fold(" ".join([*subjects, *(bib.get("series") or ())])),
        "description_text": fold(bib.get("description")),
        "language": bib.get("language"),
        "material_type": bib.get("material_type") or "book",
        "publication_year": bib.get("publication_year"),
    }
    return IndexRow(values, headings)


def index_terms(values: Mapping[str, Any]) -> set[str]:
    """The words of an index row that a typo could be one edit away from."""
    words = " ".join(values[name] for name in SEARCHED).split()
    return {
        w for w in words if TYPO_MIN_LENGTH - 1 <= len(w) <= TERM_MAX_LENGTH and not w.isdigit()
    }


# --- queries ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ParsedQuery:
    """A query as the backends need it.

    `required` are the words every hit must contain (stop words are dropped from it unless
    the query has nothing else); the last of them matches as a prefix when `prefix` is set.
    `phrase` (all words) and `key` (the phrase without a leading article) are compared with
    titles; `isbn` is set when the whole query is a valid ISBN-10 or ISBN-13.
    """

    tokens: tuple[str, ...]
    required: tuple[str, ...]
    prefix: bool
    phrase: str
    key: str
    isbn: str | None

    @property
    def is_empty(self) -> bool:
        return not self.tokens and self.isbn is None


def parse_query(text: str | None) -> ParsedQuery:
    raw = (text or "").strip()
    isbn: str | None = None
    if raw and isbn_rules.is_valid(raw):
        isbn = isbn_rules.normalize(raw)
    folded = fold(raw)
    tokens = tuple(folded.split()[:MAX_QUERY_TOKENS])
    phrase = " ".join(tokens)
    content = tuple(t for t in tokens if t not in STOP_WORDS)
    required = tuple(dict.fromkeys(content or tokens))
    prefix = bool(required and tokens[-1] == required[-1] and len(tokens[-1]) >= PREFIX_MIN_LENGTH)
    return ParsedQuery(tokens, required, prefix, phrase, without_article(phrase), isbn)


def can_have_typo(token: str) -> bool:
    return len(token) >= TYPO_MIN_LENGTH and not token.isdigit()


def edits1(token: str) -> set[str]:
    """Every word one deletion, transposition, substitution or insertion away from `token`.

    Substitutions and insertions draw on a-z and 0-9 for Latin words, and on the word's own
    letters otherwise (enough for doubled and swapped letters in any script).
    """
    alphabet: Iterable[str] = (
        string.ascii_lowercase + string.digits if token.isascii() else sorted(set(token))
    )
    letters = tuple(alphabet)
    splits = [(token[:i], token[i:]) for i in range(len(token) + 1)]
    deletes = {a + b[1:] for a, b in splits if b}
    transposes = {a + b[1] + b[0] + b[2:] for a, b in splits if len(b) > 1}
    replaces = {a + c + b[1:] for a, b in splits if b for c in letters}
    inserts = {a + c + b for a, b in splits for c in letters}
    return (deletes | transposes | replaces | inserts) - {token, ""}
