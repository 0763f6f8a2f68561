"""Keeping the search index current: in the transaction of every write, and all at once.

Writers call `index_bibs` after their rows are flushed; whatever they changed is indexed in
a few batched statements whether they wrote one bib or a batch of 500. A deleted bib takes
its index rows with it (ON DELETE CASCADE, and on SQLite the FTS triggers of the cascade).

Cached search pages (`search.service.cached_search`) are read under versions that are bumped
once a write commits: here for every bib indexed, and by `_catalog_changed` for every bib
or copy added, removed or changed through the ORM, whichever code path did it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from typing import Any, cast

import orjson
from sqlalchemy import ARRAY, String, Table, bindparam, delete, event, func, inspect, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session, UOWTransaction

from shelfmark import hotpath
from shelfmark.cache import SEARCH_AVAILABILITY_KEY, SEARCH_CATALOG_KEY, invalidate
from shelfmark.catalog.models import Bib, Item
from shelfmark.db import insert_rows, session_scope
from shelfmark.search.models import (
    PG_SEARCH_INDEXES,
    SQLITE_FTS_TRIGGERS,
    BibSearch,
    BibSearchSubject,
    bib_search_terms,
)  # fmt: skip
from shelfmark.search.text import IndexRow, index_row, index_terms

REINDEX_BATCH = 2_000
# FTS5's `automerge` while a bulk write runs (its largest; the default is 4): see bulk_indexing.
BULK_AUTOMERGE = 16
_FTS_DEFAULT_AUTOMERGE = 4
KNOWN_TERMS_LIMIT = 500_000  # words an import remembers as indexed (about 40 MB)
# An import of at least REBUILD_MIN_BIBS records into a catalog that has at most one
# indexed bib for every REBUILD_RATIO of them builds the full-text index afresh at its end
# (see bulk_indexing).
REBUILD_MIN_BIBS = 5_000
REBUILD_RATIO = 2.5
# pg_advisory_xact_lock(SEARCH_INDEX_LOCK, n) is held while index n is built: two builds of
# one index (two imports ending at once) would otherwise both pass IF NOT EXISTS.
SEARCH_INDEX_LOCK = int.from_bytes(b"SMIX", "big")
log = logging.getLogger(__name__)
_BIB_SEARCH = cast(Table, BibSearch.__table__)
_BIB_SEARCH_SUBJECTS = cast(Table, BibSearchSubject.__table__)
_DOCUMENT_COLUMNS = (
    "title_key", "title_text", "contributors_text", "subjects_text", "description_text",
    "language", "material_type", "publication_year",
)  # fmt: skip
_SOURCE = (Bib.id, Bib.title, Bib.subtitle, Bib.contributors, Bib.subjects, Bib.series,
           Bib.description, Bib.language, Bib.material_type, Bib.publication_year)  # fmt: skip


async def index_bibs(session: AsyncSession, bib_ids: Collection[int]) -> None:
    """(Re)write the index rows of `bib_ids` from their stored fields; ids of bibs that no
    longer exist are dropped."""
    if not bib_ids:
        return
    invalidate(session, [SEARCH_CATALOG_KEY])
    ids = sorted(set(bib_ids))
    rows = (await session.execute(select(*_SOURCE).where(Bib.id.in_(ids)))).mappings().all()
    await session.execute(delete(BibSearch).where(BibSearch.bib_id.in_(ids)))
    await session.execute(delete(BibSearchSubject).where(BibSearchSubject.bib_id.in_(ids)))
    await _insert(session, rows)


async def _insert(
    session: AsyncSession, rows: Sequence[Mapping[Any, Any]], known_terms: set[str] | None = None
) -> None:
    await index_prepared(
        session, [(row["id"], index_row(row)) for row in rows], known_terms=known_terms
    )


async def index_prepared(
    session: AsyncSession,
    rows: Sequence[tuple[int, IndexRow]],
    *,
    known_terms: set[str] | None = None,
) -> None:
    """Write the index rows of new bibs whose `index_row` was made beforehand (the MARC
    import makes them in its reader process), by the database's bulk path (`insert_rows`).

    `known_terms`, kept by a caller that indexes batch after batch, holds the words already
    in `bib_search_terms`: only the others are looked up, and it learns the new ones.
    """
    invalidate(session, [SEARCH_CATALOG_KEY])
    documents: list[tuple[Any, ...]] = []
    subjects: list[tuple[int, str, str]] = []
    terms: set[str] = set()
    for bib_id, indexed in rows:
        values = indexed.values
        terms |= index_terms(values)
        documents.append((bib_id, *[values[name] for name in _DOCUMENT_COLUMNS]))
        subjects.extend((bib_id, key, heading) for key, heading in indexed.headings.items())
    await insert_rows(session, _BIB_SEARCH, ("bib_id", *_DOCUMENT_COLUMNS), documents)
    await insert_rows(session, _BIB_SEARCH_SUBJECTS, ("bib_id", "key", "heading"), subjects)
    if known_terms is None:
        await _remember_terms(session, terms)
        return
    if len(known_terms) > KNOWN_TERMS_LIMIT:
        known_terms.clear()  # memory stays bounded; the words are looked up again
    await _remember_terms(session, terms - known_terms)
    known_terms |= terms


async def _remember_terms(session: AsyncSession, terms: set[str]) -> None:
    """Add the words of `terms` that `bib_search_terms` lacks, in one statement whose one
    parameter holds them all (an IN list of thousands of parameters costs more to render
    than to run)."""
    if not terms:
        return
    wanted = sorted(terms)
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(_ADD_TERMS_PG, {"terms": wanted})
    else:
        await session.execute(_ADD_TERMS_SQLITE, {"terms": orjson.dumps(wanted).decode()})


_ADD_TERMS = """INSERT INTO bib_search_terms (term) SELECT word FROM {words}
    WHERE NOT EXISTS (SELECT 1 FROM bib_search_terms WHERE bib_search_terms.term = word)"""
_ADD_TERMS_PG = text(
    _ADD_TERMS.format(words="unnest(CAST(:terms AS varchar[])) AS words(word)")
).bindparams(bindparam("terms", type_=ARRAY(String)))
_ADD_TERMS_SQLITE = text(_ADD_TERMS.format(words="(SELECT value AS word FROM json_each(:terms))"))


async def reindex_all(session: AsyncSession, *, batch_size: int = REINDEX_BATCH) -> int:
    """Rebuild the whole index from the catalog in the session's transaction (readers see
    the old index until it commits). Returns the number of bibs indexed."""
    invalidate(session, [SEARCH_CATALOG_KEY])
    await session.execute(delete(bib_search_terms))
    await session.execute(delete(BibSearchSubject))
    await session.execute(delete(BibSearch))
    count, after = 0, 0
    known_terms: set[str] = set()  # the table was emptied: it holds what was added since
    while True:
        query = select(*_SOURCE).where(Bib.id > after).order_by(Bib.id).limit(batch_size)
        rows = (await session.execute(query)).mappings().all()
        if not rows:
            break
        await _insert(session, rows, known_terms)
        count += len(rows)
        after = rows[-1]["id"]
    if session.get_bind().dialect.name == "sqlite":
        # Rebuilt from bib_search itself, so that an FTS index that had drifted (a restored
        # file, a bug, an import stopped while its triggers were dropped) is made whole
        # again and not only appended to.
        await _restore_fts(session)
    else:
        for name in await _missing_gin_indexes(session):
            await _create_index(session, name)
    return count


@contextlib.asynccontextmanager
async def bulk_indexing(
    maker: async_sessionmaker[AsyncSession], *, expected: int = 0
) -> AsyncIterator[None]:
    """While a bulk write (an import of about `expected` records) indexes batch after
    batch, each its own transaction.

    On SQLite, FTS5 writes each transaction's words as a new segment and merges segments
    `automerge` at a time (4 by default) as they pile up, so that an import's words were
    rewritten once per level: at 250,000 bibs that merging cost as much as the tokenising.
    Merged 16 at a time there are half as many levels; searches read a few more segments
    (as they are merged later by ordinary writes). What the index holds is the same, so
    every search finds what it found; the setting is put back afterwards.

    A full-text index built at once from all its rows costs less than one added to batch by
    batch (measured a record: PostgreSQL's GIN indexes 45 µs added to, 30 built, the build
    spread over three connections; SQLite's FTS5 40 µs, 13 built). When the import is
    large and the catalog small (REBUILD_MIN_BIBS, REBUILD_RATIO), PostgreSQL's GIN indexes
    are dropped, and SQLite's triggers that keep `bib_fts` in step (all three: the delete
    of a row that was never indexed corrupts FTS5's counts); both are built again at the
    end. Meanwhile, searches on PostgreSQL find the same bibs, more slowly; on SQLite the
    bibs written meanwhile (the import's, and any other changed) are found once it ends. At
    the end, whatever is missing is built, whether this import dropped it or one that was
    stopped did (`shelfmark reindex` and `shelfmark migrate` build it too).

    Both are undone also when the import fails (or is cancelled); if that fails too, the
    import's own error is raised and this one logged. After a bulk write that succeeded, a
    failure to build is logged, not raised: what was written stays written.
    """
    async with session_scope(maker) as session:
        dialect = session.get_bind().dialect.name
        previous = None
        if dialect == "sqlite":
            stored = await session.scalar(_FTS_AUTOMERGE)
            previous = _FTS_DEFAULT_AUTOMERGE if stored is None else int(stored)
            if previous == BULK_AUTOMERGE:  # another import's (running, or killed): not ours
                previous = _FTS_DEFAULT_AUTOMERGE
            await session.execute(_SET_FTS_AUTOMERGE, {"value": BULK_AUTOMERGE})
            if await _worth_rebuilding(session, expected):
                for name in SQLITE_FTS_TRIGGERS:  # all: a delete of a row never indexed
                    await session.execute(text(f"DROP TRIGGER IF EXISTS {name}"))
        elif dialect == "postgresql" and await _worth_rebuilding(session, expected):
            for name in PG_SEARCH_INDEXES:
                await session.execute(text(f"DROP INDEX IF EXISTS {name}"))

    async def done() -> None:
        if previous is not None:
            async with session_scope(maker) as session:
                await session.execute(_SET_FTS_AUTOMERGE, {"value": previous})
        await build_missing_indexes(maker)

    try:
        yield
    except BaseException:
        try:
            await done()
        except Exception:
            log.exception("After a failed bulk write, the search index could not be restored")
        raise
    try:
        await done()
    except Exception:
        # What was written stays written: an error here would have a job run it all again.
        log.exception(
            "The search index could not be built after a bulk write; the next import, "
            "`shelfmark reindex` or `shelfmark migrate` builds it"
        )


async def _worth_rebuilding(session: AsyncSession, expected: int) -> bool:
    """Whether an import of `expected` records is large enough, and the catalog small
    enough (at most one indexed bib for every REBUILD_RATIO records), that building the
    full-text index afresh costs less than adding to it."""
    if expected < REBUILD_MIN_BIBS:
        return False
    most = int(expected / REBUILD_RATIO)
    indexed = await session.scalar(_INDEXED_UP_TO, {"most": most + 1})
    return (indexed or 0) <= most


async def build_missing_indexes(maker: async_sessionmaker[AsyncSession]) -> list[str]:
    """Build what indexes `bib_search` where it is missing, and return what was missing.

    PostgreSQL: the GIN indexes, side by side (one connection each, unless `maker` is
    bound to one connection). Each build holds the table's SHARE lock: writes to
    `bib_search` wait for it (5.5 s for 250,000 bibs). SQLite: the triggers that keep
    `bib_fts` in step, and `bib_fts` rebuilt from all of `bib_search`, in one transaction
    that holds the write lock throughout (0.8 s for 62,000 bibs). Before migration 0004
    there is nothing to build."""
    async with session_scope(maker) as session:
        dialect = session.get_bind().dialect.name
        if dialect == "sqlite":
            missing = await _missing_fts_triggers(session)
        elif dialect == "postgresql":
            missing = await _missing_gin_indexes(session)
        else:
            missing = []
    if not missing:
        return []
    if dialect == "sqlite":
        log.info("Building the search index bib_fts")
        async with session_scope(maker) as session:
            # Written to at once, so that no other writer comes between the check and it.
            await session.connection(execution_options={"sqlite_begin": "IMMEDIATE"})
            await _restore_fts(session)
        return ["bib_fts"]
    log.info("Building the search indexes %s", ", ".join(missing))
    if isinstance(maker.kw.get("bind"), AsyncConnection):  # sessions that take turns
        for name in missing:
            await _build_index(maker, name)
        return missing
    results = await asyncio.gather(
        *(_build_index(maker, name) for name in missing), return_exceptions=True
    )
    failed = [result for result in results if isinstance(result, BaseException)]
    for error in failed[1:]:
        log.error("Building a search index failed too", exc_info=error)
    if failed:
        raise failed[0]
    return missing


async def _missing_fts_triggers(session: AsyncSession) -> list[str]:
    if not await session.scalar(_HAS_FTS):
        return []
    present = set((await session.scalars(_PRESENT_TRIGGERS)).all())
    return [name for name in SQLITE_FTS_TRIGGERS if name not in present]


async def _restore_fts(session: AsyncSession) -> None:
    """The missing FTS triggers made, and `bib_fts` rebuilt from `bib_search`."""
    for name in await _missing_fts_triggers(session):
        await session.execute(text(SQLITE_FTS_TRIGGERS[name]))
    await session.execute(_REBUILD_FTS)
    invalidate(session, [SEARCH_CATALOG_KEY])  # bibs left out are found from now on


async def _missing_gin_indexes(session: AsyncSession) -> list[str]:
    if not await session.scalar(_HAS_DOCUMENT):
        return []
    present = set((await session.scalars(_PRESENT_INDEXES)).all())
    return [name for name in PG_SEARCH_INDEXES if name not in present]


async def _build_index(maker: async_sessionmaker[AsyncSession], name: str) -> None:
    async with session_scope(maker) as session:
        await _create_index(session, name)


async def _create_index(session: AsyncSession, name: str) -> None:
    number = list(PG_SEARCH_INDEXES).index(name)
    await session.execute(select(func.pg_advisory_xact_lock(SEARCH_INDEX_LOCK, number)))
    await session.execute(
        text(f"CREATE INDEX IF NOT EXISTS {name} ON bib_search USING {PG_SEARCH_INDEXES[name]}")
    )


_FTS_AUTOMERGE = text("SELECT v FROM bib_fts_config WHERE k = 'automerge'")
_SET_FTS_AUTOMERGE = text("INSERT INTO bib_fts(bib_fts, rank) VALUES ('automerge', :value)")
_INDEXED_UP_TO = text("SELECT count(*) FROM (SELECT 1 FROM bib_search LIMIT :most) AS indexed")
_HAS_FTS = text("SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'bib_fts')")
_PRESENT_TRIGGERS = text("SELECT name FROM sqlite_master WHERE type = 'trigger'")
_REBUILD_FTS = text("INSERT INTO bib_fts(bib_fts) VALUES ('rebuild')")
_HAS_DOCUMENT = text(
    "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('bib_search') "
    "AND attname = 'document' AND NOT attisdropped)"
)
_PRESENT_INDEXES = text(
    "SELECT indexname FROM pg_indexes WHERE tablename = 'bib_search' "
    "AND schemaname = current_schema()"
)


# Statuses a copy moves between as it circulates; it is held (and counted in the branch
# facet) in each of them, so a move between two of them changes only availability.
_CIRCULATING = frozenset({"available", "on_loan", "on_hold_shelf", "in_transit"})


@event.listens_for(Session, "after_flush")
def _catalog_changed(session: Session, context: UOWTransaction) -> None:
    """Cached search pages go stale once a flushed change to a bib or a copy commits. A bib
    added, changed or deleted bumps the catalog's version; a copy added or removed both
    versions, a changed one as `_copy_keys` says. The flush's own lists and attribute
    histories still hold what it wrote."""
    keys: set[str] = set()
    for obj in (*session.new, *session.deleted):
        if isinstance(obj, Item):
            keys |= {SEARCH_CATALOG_KEY, SEARCH_AVAILABILITY_KEY}
        elif isinstance(obj, Bib):
            keys.add(SEARCH_CATALOG_KEY)  # a deleted bib's index rows go by cascade
    for obj in session.dirty:
        if isinstance(obj, Bib):
            keys.add(SEARCH_CATALOG_KEY)
        if not isinstance(obj, Item):
            continue
        state = inspect(obj)
        changed = {attr.key for attr in state.attrs if attr.history.has_changes()}
        status = state.attrs.status.history
        keys |= _copy_keys(changed, {*status.deleted, *status.added})
    if keys:
        invalidate(session, sorted(keys))


def _copy_written(session: AsyncSession, item: object, changes: Mapping[str, Any]) -> None:
    """The same for a copy written by the desk's hot path (`hotpath.write`)."""
    statuses = set(changes["status"]) if "status" in changes else set()
    if keys := _copy_keys(set(changes), statuses):
        invalidate(session, sorted(keys))


hotpath.on_update(cast(Table, Item.__table__), _copy_written)


def _copy_keys(changed: set[str], statuses: set[str]) -> set[str]:
    """A checkout or checkin (a status moved between circulating statuses, `statuses` being
    the old and new) bumps the availability version only; anything else about a copy
    (moved, lost, withdrawn) the catalog's too."""
    keys: set[str] = set()
    if "status" in changed:
        keys.add(SEARCH_AVAILABILITY_KEY)
        if not statuses <= _CIRCULATING:
            keys.add(SEARCH_CATALOG_KEY)
    if changed & {"bib_id", "branch_id"}:
        keys |= {SEARCH_CATALOG_KEY, SEARCH_AVAILABILITY_KEY}
    return keys
