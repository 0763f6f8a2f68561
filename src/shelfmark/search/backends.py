"""The two full-text backends behind one interface: which bibs match, and how well.

A backend plans a parsed query at a stage (which words, as what query text) and gives the
SQL of a kind of match: the ids that match, and the same with a relevance (≥ 0, higher is
better) and the title columns that the title tiers compare. The SQL of a kind never changes;
the query text is a bound value, so each statement is built and compiled once. The stages
widen a query that found nothing:

1. every required word (the last one as a prefix);
2. each word of `TYPO_MIN_LENGTH` letters or more may also be any indexed word one edit
   away (typo tolerance), and shorter words are left out; skipped when nothing changes;
3. PostgreSQL only: trigram similarity of the whole query to titles and names (pg_trgm),
   for what per-word edits cannot mend (run-together words, several typos in one word).

Query texts (a tsquery, an FTS5 MATCH expression) are built from folded words, which hold
letters and digits only, and are bound, never spliced into SQL.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Float,
    Select,
    String,
    any_,
    bindparam,
    cast,
    column,
    func,
    literal_column,
    or_,
)
from sqlalchemy import select as select_
from sqlalchemy import table as table_
from sqlalchemy.dialects.postgresql import ARRAY, TSVECTOR
from sqlalchemy.ext.asyncio import AsyncSession

from shelfmark import hotpath
from shelfmark.search.models import bib_search_terms
from shelfmark.search.text import TYPO_MIN_LENGTH, ParsedQuery, can_have_typo, edits1

EXACT, TYPOS, TRIGRAMS = 1, 2, 3
AnySelect = Select[*tuple[Any, ...]]


@dataclass(frozen=True, slots=True)
class Group:
    """One required word: the hit must contain one of `words` (the first as a prefix when
    `prefix` is set)."""

    words: tuple[str, ...]
    prefix: bool = False


@dataclass(frozen=True, slots=True)
class Plan:
    kind: str  # which SQL (`Backend.match(kind)`)
    params: dict[str, Any]  # the values it is bound with


@dataclass(frozen=True, slots=True)
class Match:
    ids: AnySelect  # bib_id
    ranked: AnySelect  # bib_id, relevance, title_key, title_text (for the title tiers)


class Backend(Protocol):
    stages: tuple[int, ...]

    async def plan(self, session: AsyncSession, parsed: ParsedQuery, stage: int) -> Plan | None:
        """How to run `parsed` at `stage`, or None when the stage has nothing to add."""
        ...

    def match(self, kind: str) -> Match: ...


def exact_groups(parsed: ParsedQuery) -> list[Group]:
    last = len(parsed.required) - 1
    return [
        Group((word,), prefix=parsed.prefix and i == last) for i, word in enumerate(parsed.required)
    ]


async def _groups(
    session: AsyncSession, parsed: ParsedQuery, stage: int, known: KnownWords
) -> list[Group] | None:
    groups = exact_groups(parsed)
    return groups if stage == EXACT else await _with_typos(session, groups, known)


class KnownWords(Protocol):
    async def __call__(self, session: AsyncSession, words: list[str]) -> set[str]: ...


async def _with_typos(
    session: AsyncSession, groups: list[Group], known_words: KnownWords
) -> list[Group] | None:
    """Each word that may carry a typo, with the indexed words one edit away from it (looked
    up in `bib_search_terms`). Shorter words are left out at this stage: a mistyped short
    word ("teh") cannot be mended and must not sink the others. None when nothing changes."""
    candidates = {g.words[0]: edits1(g.words[0]) for g in groups if can_have_typo(g.words[0])}
    wanted = sorted(set().union(*candidates.values())) if candidates else []
    if not wanted:
        return None
    known = await known_words(session, wanted)
    widened = [
        Group((g.words[0], *sorted(candidates.get(g.words[0], set()) & known)), g.prefix)
        for g in groups
        if len(g.words[0]) >= TYPO_MIN_LENGTH
    ]
    return widened if widened and widened != groups else None


# --- PostgreSQL -------------------------------------------------------------------------

_pg = table_(
    "bib_search",
    column("bib_id"), column("document", TSVECTOR), column("title_key"), column("title_text"),
    column("contributors_text"),
)  # fmt: skip
_SIMPLE: ColumnElement[Any] = literal_column("'simple'::regconfig")
# ts_rank weights in the order D, C, B, A: description, subjects, contributors, title.
_PG_WEIGHTS: ColumnElement[Any] = literal_column("'{0.05, 0.2, 0.5, 1.0}'::float4[]")
# Normalization 1 divides by 1 + log(document length): short, to-the-point records first.
_PG_NORMALIZATION: ColumnElement[Any] = literal_column("1")
_term = bib_search_terms.c.term
_PG_KNOWN = select_(_term).distinct().where(_term == any_(bindparam("terms", type_=ARRAY(String))))


def _tsquery(groups: Sequence[Group]) -> str:
    def term(word: str, prefix: bool) -> str:
        return f"'{word}'" + (":*" if prefix else "")

    parts = []
    for group in groups:
        alternatives = [term(w, group.prefix and i == 0) for i, w in enumerate(group.words)]
        parts.append("(" + " | ".join(alternatives) + ")")
    return " & ".join(parts)


def _pg_match(where: ColumnElement[bool], relevance: ColumnElement[Any]) -> Match:
    return Match(
        ids=select_(_pg.c.bib_id).where(where),
        ranked=select_(
            _pg.c.bib_id, cast(relevance, Float).label("relevance"), _pg.c.title_key,
            _pg.c.title_text,
        ).where(where),
    )  # fmt: skip


def _pg_tsquery() -> Match:
    query = func.to_tsquery(_SIMPLE, bindparam("match", type_=String))
    rank = func.ts_rank(_PG_WEIGHTS, _pg.c.document, query, _PG_NORMALIZATION)
    return _pg_match(_pg.c.document.bool_op("@@")(query), rank)


def _pg_trigrams() -> Match:
    """Titles or names that hold a stretch like the whole query (`<%`: pg_trgm's word
    similarity over its threshold, 0.6 by default; served by the trigram indexes)."""
    text: BindParameter[str] = bindparam("trigram_phrase", type_=String)
    where = or_(text.bool_op("<%")(_pg.c.title_text), text.bool_op("<%")(_pg.c.contributors_text))
    similarity = func.greatest(
        func.word_similarity(text, _pg.c.title_text),
        func.word_similarity(text, _pg.c.contributors_text),
    )
    return _pg_match(where, similarity)


async def _pg_known(session: AsyncSession, words: list[str]) -> set[str]:
    return {row["term"] for row in await hotpath.rows(session, _PG_KNOWN, {"terms": words})}


class PostgresBackend:
    stages: tuple[int, ...] = (EXACT, TYPOS, TRIGRAMS)
    _matches = {"tsquery": _pg_tsquery(), "trigrams": _pg_trigrams()}

    async def plan(self, session: AsyncSession, parsed: ParsedQuery, stage: int) -> Plan | None:
        if stage == TRIGRAMS:
            return Plan("trigrams", {"trigram_phrase": parsed.phrase}) if parsed.phrase else None
        groups = await _groups(session, parsed, stage, _pg_known)
        return None if groups is None else Plan("tsquery", {"match": _tsquery(groups)})

    def match(self, kind: str) -> Match:
        return self._matches[kind]


# --- SQLite -----------------------------------------------------------------------------

_fts = table_("bib_fts", column("rowid"), column("bib_fts"))
_sqlite = table_("bib_search", column("bib_id"), column("title_key"), column("title_text"))
# bm25 weights per FTS5 column: title, contributors, subjects and series, description.
_BM25 = func.bm25(literal_column("bib_fts"), *(literal_column(w) for w in ("10", "5", "2", "1")))
_SQLITE_KNOWN = select_(_term).distinct().where(_term.in_(bindparam("terms", expanding=True)))


def _fts_query(groups: Sequence[Group]) -> str:
    parts = []
    for group in groups:
        alternatives = [
            f'"{w}"' + ("*" if group.prefix and i == 0 else "") for i, w in enumerate(group.words)
        ]
        parts.append("(" + " OR ".join(alternatives) + ")")
    return " AND ".join(parts)


def _sqlite_fts() -> Match:
    where = _fts.c.bib_fts.match(bindparam("match", type_=String))
    bib_id = _fts.c.rowid.label("bib_id")
    relevance = cast(-_BM25, Float).label("relevance")
    # bm25 is only defined in the query that scans the FTS table, so the title columns come
    # from a join by rowid (an integer primary key lookup).
    ranked = (
        select_(bib_id, relevance, _sqlite.c.title_key, _sqlite.c.title_text)
        .select_from(_fts.join(_sqlite, _sqlite.c.bib_id == _fts.c.rowid))
        .where(where)
    )
    return Match(ids=select_(bib_id).where(where), ranked=ranked)


async def _sqlite_known(session: AsyncSession, words: list[str]) -> set[str]:
    return set((await session.scalars(_SQLITE_KNOWN, {"terms": words})).all())


class SqliteBackend:
    stages: tuple[int, ...] = (EXACT, TYPOS)
    _matches = {"fts": _sqlite_fts()}

    async def plan(self, session: AsyncSession, parsed: ParsedQuery, stage: int) -> Plan | None:
        groups = await _groups(session, parsed, stage, _sqlite_known)
        return None if groups is None else Plan("fts", {"match": _fts_query(groups)})

    def match(self, kind: str) -> Match:
        return self._matches[kind]


_BACKENDS: dict[str, Backend] = {"postgresql": PostgresBackend(), "sqlite": SqliteBackend()}


def backend_for(dialect: str) -> Backend:
    return _BACKENDS[dialect]
