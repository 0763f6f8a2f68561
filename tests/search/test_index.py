"""The index follows every write, in the writer's transaction; `reindex_all` rebuilds it."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import delete, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from factories import make_bib
from shelfmark.auth.roles import SYSTEM
from shelfmark.catalog import service as catalog_service
from shelfmark.catalog.schemas import BibUpdate
from shelfmark.interop.marc_import import import_file
from shelfmark.interop.marc_read import MarcFileError, iter_marc
from shelfmark.search import index, service
from shelfmark.search.index import (
    BULK_AUTOMERGE,
    REBUILD_MIN_BIBS,
    build_missing_indexes,
    bulk_indexing,
    index_bibs,
    reindex_all,
)  # fmt: skip
from shelfmark.search.models import (
    PG_SEARCH_INDEXES,
    SQLITE_FTS_TRIGGERS,
    BibSearch,
    BibSearchSubject,
    bib_search_terms,
)


async def full_text_index(session: AsyncSession) -> dict[str, str]:
    """What indexes bib_search as it is written, by name: on PostgreSQL the GIN indexes, on
    SQLite the triggers that keep bib_fts in step; their definitions."""
    if session.get_bind().dialect.name == "sqlite":
        query = text(
            "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'bib_search'"
        )
    else:
        query = text(
            "SELECT indexname, indexdef FROM pg_indexes "
            "WHERE tablename = 'bib_search' AND indexname <> 'pk_bib_search'"
        )
    return dict((await session.execute(query)).all())


async def assert_fts_in_step(session: AsyncSession) -> None:
    """On SQLite, bib_fts holds all of bib_search and nothing else (FTS5 raises if not)."""
    if session.get_bind().dialect.name == "sqlite":
        check = "INSERT INTO bib_fts(bib_fts, rank) VALUES ('integrity-check', 1)"
        await session.execute(text(check))


async def found(session: AsyncSession, q: str) -> list[int]:
    page = await service.search(session, q=q, filters=service.SearchFilters())
    return [hit.id for hit in page.items]


class TestIndexBibs:
    async def test_create_update_delete_in_the_same_transaction(
        self, session: AsyncSession
    ) -> None:
        bib = await make_bib(session, title="Zorblax almanac", subjects=["Zorblaxes"])
        assert await found(session, "zorblax almanac") == [bib.id]

        data = BibUpdate(title="Quillon almanac", contributors=[{"name": "Ößwald, Jürgen"}])
        await catalog_service.update_bib(session, actor=SYSTEM, bib=bib, data=data)
        assert await found(session, "quillon almanac") == [bib.id]
        assert await found(session, "osswald jurgen") == [bib.id]
        assert await found(session, "zorblax almanac") == []
        assert await found(session, "zorblaxes") == [bib.id]  # subjects kept

        await catalog_service.delete_bib(session, actor=SYSTEM, bib=bib)
        assert await found(session, "quillon almanac") == []
        left = await session.scalar(
            select(func.count())
            .select_from(BibSearchSubject)
            .where(BibSearchSubject.bib_id == bib.id)
        )
        assert left == 0
        assert await session.get(BibSearch, bib.id) is None

    async def test_a_rolled_back_write_leaves_no_trace(self, session: AsyncSession) -> None:
        kept = await make_bib(session, title="Zorblax kept")
        savepoint = await session.begin_nested()
        await make_bib(session, title="Zorblax dropped")
        await savepoint.rollback()
        assert await found(session, "zorblax") == [kept.id]

    async def test_a_batch_in_one_call(self, session: AsyncSession) -> None:
        bibs = [await make_bib(session, title=f"Zorblax {n}") for n in range(3)]
        await session.execute(delete(BibSearch))
        assert await found(session, "zorblax") == []
        await index_bibs(session, [b.id for b in bibs] + [-1])  # an unknown id is ignored
        assert sorted(await found(session, "zorblax")) == [b.id for b in bibs]

    async def test_words_are_remembered_for_typos(self, session: AsyncSession) -> None:
        await make_bib(session, title="Quillonography")
        terms = await session.scalars(
            select(bib_search_terms.c.term).where(bib_search_terms.c.term == "quillonography")
        )
        assert terms.all() == ["quillonography"]


class TestBulkIndexing:
    async def test_sqlite_fts_merges_more_at_a_time_only_while_it_runs(
        self, sessionmaker: async_sessionmaker[AsyncSession]
    ) -> None:
        """On PostgreSQL (no FTS5) it changes nothing, and a failure goes through as well."""
        async with sessionmaker() as session:
            sqlite = session.get_bind().dialect.name == "sqlite"

        async def automerge() -> int | None:
            if not sqlite:
                return None
            async with sessionmaker() as session:
                query = text("SELECT v FROM bib_fts_config WHERE k = 'automerge'")
                value = await session.scalar(query)
                return 4 if value is None else int(value)  # FTS5's default

        during = []

        async def failing_import() -> None:
            async with bulk_indexing(sessionmaker):
                during.append(await automerge())
                raise RuntimeError("the import failed")

        with pytest.raises(RuntimeError, match="failed"):
            await failing_import()
        assert during == [BULK_AUTOMERGE if sqlite else None]
        assert await automerge() == (4 if sqlite else None)

    async def test_a_large_import_builds_the_full_text_index_afresh(
        self, sessionmaker: async_sessionmaker[AsyncSession], session: AsyncSession
    ) -> None:
        before = await full_text_index(session)
        assert set(before) in (set(SQLITE_FTS_TRIGGERS), set(PG_SEARCH_INDEXES))
        async with bulk_indexing(sessionmaker, expected=REBUILD_MIN_BIBS):
            during = await full_text_index(session)
        assert during == {}
        assert await full_text_index(session) == before

    async def test_a_small_import_keeps_it(
        self, sessionmaker: async_sessionmaker[AsyncSession], session: AsyncSession
    ) -> None:
        before = await full_text_index(session)
        async with bulk_indexing(sessionmaker, expected=REBUILD_MIN_BIBS - 1):
            assert await full_text_index(session) == before

    async def test_an_import_into_a_catalog_not_much_smaller_keeps_it(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        session: AsyncSession,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        monkeypatch.setattr(index, "REBUILD_MIN_BIBS", 10)
        await session.execute(delete(BibSearch))
        for number in range(5):
            await make_bib(session, title=f"Zorblax volume {number}")
        await session.commit()
        before = await full_text_index(session)
        async with bulk_indexing(sessionmaker, expected=12):  # 5 indexed > 12 / 2.5
            assert await full_text_index(session) == before
        async with bulk_indexing(sessionmaker, expected=13):  # 5 indexed <= 13 / 2.5
            assert await full_text_index(session) == {}
            await make_bib(session, title="Zorblax volume 5")  # written meanwhile
            await session.commit()
        assert await full_text_index(session) == before
        assert len(await found(session, "zorblax volume")) == 6

    async def test_bibs_written_while_it_is_dropped_are_found_after(
        self, sessionmaker: async_sessionmaker[AsyncSession], session: AsyncSession
    ) -> None:
        """Created, changed and deleted meanwhile (an import's update, a librarian's edit):
        on SQLite a deleted row that FTS5 never indexed must not reach it."""
        await session.execute(delete(BibSearch))
        await session.commit()
        async with bulk_indexing(sessionmaker, expected=REBUILD_MIN_BIBS):
            kept = await make_bib(session, title="Zorblax kept")
            changed = await make_bib(session, title="Zorblax draft")
            gone = await make_bib(session, title="Zorblax gone")
            await session.commit()
            data = BibUpdate(title="Zorblax final")
            await catalog_service.update_bib(session, actor=SYSTEM, bib=changed, data=data)
            await catalog_service.delete_bib(session, actor=SYSTEM, bib=gone)
            await session.commit()
        assert sorted(await found(session, "zorblax")) == sorted([kept.id, changed.id])
        assert await found(session, "zorblax final") == [changed.id]
        assert await found(session, "zorblax draft") == []
        await assert_fts_in_step(session)

    async def test_a_file_that_is_not_marc_leaves_it_alone(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        session: AsyncSession,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        monkeypatch.setattr(index, "REBUILD_MIN_BIBS", 1)
        path = tmp_path / "letter.mrc"
        path.write_bytes(b"Dear librarian, this is a letter, not a catalogue.\n" * 100)
        before = await full_text_index(session)
        with caplog.at_level("INFO", logger=index.__name__), pytest.raises(MarcFileError):
            await import_file(sessionmaker, path, actor=SYSTEM)
        assert "Building the search index" not in caplog.text  # it was never dropped
        assert await full_text_index(session) == before

    async def test_a_failed_import_builds_it_again(
        self, sessionmaker: async_sessionmaker[AsyncSession], session: AsyncSession
    ) -> None:
        before = await full_text_index(session)
        with pytest.raises(RuntimeError, match="failed"):
            async with bulk_indexing(sessionmaker, expected=REBUILD_MIN_BIBS):
                raise RuntimeError("the import failed")
        assert await full_text_index(session) == before

    async def test_what_a_stopped_import_left_out_is_built_by_the_next(
        self, sessionmaker: async_sessionmaker[AsyncSession], session: AsyncSession
    ) -> None:
        before = await full_text_index(session)
        sqlite = session.get_bind().dialect.name == "sqlite"
        left_out = "bib_search_ai" if sqlite else "ix_bib_search_title_text_trgm"
        await session.execute(text(f"DROP {'TRIGGER' if sqlite else 'INDEX'} {left_out}"))
        bib = await make_bib(session, title="Zorblax written meanwhile")
        await session.commit()
        async with bulk_indexing(sessionmaker):
            assert set(await full_text_index(session)) == set(before) - {left_out}
        assert await full_text_index(session) == before
        assert await found(session, "zorblax meanwhile") == [bib.id]

    async def test_with_every_index_there_nothing_is_built(
        self, sessionmaker: async_sessionmaker[AsyncSession]
    ) -> None:
        assert await build_missing_indexes(sessionmaker) == []


class TestImport:
    async def test_a_large_import_into_an_empty_catalog_is_searchable(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        session: AsyncSession,
        marc_file: Callable[[str], Path],
        monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        await session.execute(delete(BibSearch))
        await session.commit()
        before = await full_text_index(session)
        monkeypatch.setattr(index, "REBUILD_MIN_BIBS", 1)  # marc.dat, about 19 records
        with caplog.at_level("INFO", logger=index.__name__):
            summary = await import_file(sessionmaker, marc_file("marc.dat"), actor=SYSTEM)
        assert summary.created == 20
        assert "Building the search index" in caplog.text
        assert await full_text_index(session) == before
        page = await service.search(session, q="python", filters=service.SearchFilters())
        assert page.total > 0
        await assert_fts_in_step(session)

    async def test_each_batch_is_indexed(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        session: AsyncSession,
        marc_file: Callable[[str], Path],
    ) -> None:
        summary = await import_file(sessionmaker, marc_file("marc.dat"), actor=SYSTEM, batch_size=7)
        assert summary.created == 20
        indexed = await session.scalar(select(func.count()).select_from(BibSearch))
        assert indexed == 20
        page = await service.search(session, q="python", filters=service.SearchFilters())
        assert page.total > 0

    async def test_an_updated_record_is_reindexed(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        session: AsyncSession,
        marc_file: Callable[[str], Path],
    ) -> None:
        record = next(iter_marc(marc_file("marc.dat"))).record
        assert record is not None
        await import_file(sessionmaker, io.BytesIO(record.as_marc()), actor=SYSTEM)
        record["245"]["a"] = "Zorblax retitled /"
        summary = await import_file(sessionmaker, io.BytesIO(record.as_marc()), actor=SYSTEM)
        assert summary.updated == 1
        assert len(await found(session, "zorblax retitled")) == 1


class TestReindexAll:
    async def test_builds_what_a_stopped_import_left_out(self, session: AsyncSession) -> None:
        before = await full_text_index(session)
        sqlite = session.get_bind().dialect.name == "sqlite"
        for name in before:
            await session.execute(text(f"DROP {'TRIGGER' if sqlite else 'INDEX'} {name}"))
        bib = await make_bib(session, title="Zorblax left out")
        await reindex_all(session)
        assert await full_text_index(session) == before
        assert await found(session, "zorblax left out") == [bib.id]

    async def test_rebuilds_a_lost_index(self, session: AsyncSession) -> None:
        bib = await make_bib(session, title="Zorblax rebuilt", subjects=["Quillons"])
        await session.execute(delete(BibSearchSubject))
        await session.execute(delete(BibSearch))
        await session.execute(delete(bib_search_terms))
        assert await found(session, "zorblax") == []
        count = await reindex_all(session)
        assert count >= 1
        assert await found(session, "zorblax rebuilt") == [bib.id]
        assert await found(session, "zorblx rebuilt") == [bib.id]  # the vocabulary is back
        page = await service.search(session, q="zorblax", filters=service.SearchFilters())
        assert [f.value for f in page.facets.subject] == ["Quillons"]
