"""Importing and exporting MARC against both databases, with the real test files."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import pymarc
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from conftest import marc_file
from factories import make_bib, make_branch
from shelfmark.auth.roles import SYSTEM
from shelfmark.catalog.models import Bib, Item
from shelfmark.interop import marc_export
from shelfmark.interop.marc_import import import_file
from shelfmark.interop.marc_read import MarcFileError, iter_marc

DEMO = Path(__file__).resolve().parents[2] / "src" / "shelfmark" / "demo" / "loc-demo.mrc"


async def count(session: AsyncSession, model: type) -> int:
    return await session.scalar(select(func.count()).select_from(model)) or 0


class TestImportFile:
    async def test_bad_records_import_the_good_one_and_report_the_rest(
        self, sessionmaker: async_sessionmaker[AsyncSession], session: AsyncSession
    ) -> None:
        before = await count(session, Bib)
        summary = await import_file(sessionmaker, marc_file("bad_records.mrc"), actor=SYSTEM)
        assert summary.created == 1
        assert summary.unchanged == 1  # the good record appears twice
        assert len(summary.errors) == 7
        assert [e["index"] for e in summary.errors] == [2, 3, 4, 5, 6, 7, 9]
        assert all(e["reason"] for e in summary.errors)
        assert await count(session, Bib) == before + 1

    async def test_invalid_utf8_imports_with_a_warning(
        self, sessionmaker: async_sessionmaker[AsyncSession], session: AsyncSession
    ) -> None:
        summary = await import_file(sessionmaker, marc_file("utf8_invalid.mrc"), actor=SYSTEM)
        assert summary.created == 1
        assert summary.errors == []
        assert summary.warnings
        assert summary.warnings[0]["control_number"] == "144917"

    async def test_marc8_diacritics_export_as_utf8(
        self, sessionmaker: async_sessionmaker[AsyncSession], session: AsyncSession
    ) -> None:
        await import_file(sessionmaker, marc_file("marc8.dat"), actor=SYSTEM)
        bib = await session.scalar(select(Bib).where(Bib.control_number == "2"))
        assert bib is not None
        exported = marc_export.export_one(
            await marc_export.require_bib_with_source(session, bib.id), "marc"
        )
        assert exported[9:10] == b"a"  # leader/09: UTF-8
        text = exported.decode("utf-8")
        assert "à" in text

    async def test_marcxml_and_reimport_does_not_duplicate(
        self, sessionmaker: async_sessionmaker[AsyncSession], session: AsyncSession
    ) -> None:
        first = await import_file(sessionmaker, marc_file("batch.xml"), actor=SYSTEM)
        assert (first.created, first.updated, first.unchanged) == (2, 0, 0)
        again = await import_file(sessionmaker, marc_file("batch.xml"), actor=SYSTEM)
        assert (again.created, again.updated, again.unchanged) == (0, 0, 2)

    async def test_a_changed_record_updates_its_bib(
        self, sessionmaker: async_sessionmaker[AsyncSession], session: AsyncSession
    ) -> None:
        source = marc_file("marc.dat").read_bytes()
        await import_file(sessionmaker, io.BytesIO(source), actor=SYSTEM)
        record = next(iter_marc(io.BytesIO(source))).record
        assert record is not None
        record["245"]["a"] = "A retitled record /"
        summary = await import_file(sessionmaker, io.BytesIO(record.as_marc()), actor=SYSTEM)
        assert (summary.created, summary.updated) == (0, 1)
        control = record["001"].data
        bib = await session.scalar(select(Bib).where(Bib.control_number == control))
        assert bib is not None
        await session.refresh(bib)
        assert bib.title == "A retitled record"

    async def test_isbn_matches_a_record_without_control_number(
        self, sessionmaker: async_sessionmaker[AsyncSession], session: AsyncSession
    ) -> None:
        record = next(iter_marc(marc_file("marc.dat"))).record
        assert record is not None
        isbn = record["020"]["a"]
        record.remove_fields("001", "003")
        first = await import_file(sessionmaker, io.BytesIO(record.as_marc()), actor=SYSTEM)
        assert first.created == 1
        record["245"]["a"] = "Same book, new title /"
        second = await import_file(sessionmaker, io.BytesIO(record.as_marc()), actor=SYSTEM)
        assert (second.created, second.updated) == (0, 1), isbn

    async def test_items_are_generated_at_a_branch(
        self, sessionmaker: async_sessionmaker[AsyncSession], session: AsyncSession
    ) -> None:
        branch = await make_branch(session)
        await session.commit()
        summary = await import_file(
            sessionmaker, marc_file("marc.dat"), actor=SYSTEM, items_branch=branch.code
        )
        assert summary.items_created == 20
        again = await import_file(
            sessionmaker, marc_file("marc.dat"), actor=SYSTEM, items_branch=branch.code
        )
        assert again.items_created == 0
        items = await session.scalar(
            select(func.count()).select_from(Item).where(Item.branch_id == branch.id)
        )
        assert items == 20

    async def test_koha_holdings_become_items(
        self, sessionmaker: async_sessionmaker[AsyncSession], session: AsyncSession
    ) -> None:
        branch = await make_branch(session)
        await session.commit()
        record = next(iter_marc(marc_file("marc.dat"))).record
        assert record is not None
        record.add_field(
            pymarc.Field(
                tag="952", indicators=[" ", " "],
                subfields=[pymarc.Subfield("p", "KOHA-0001"), pymarc.Subfield("a", branch.code),
                           pymarc.Subfield("o", "005.1 PRO"), pymarc.Subfield("y", "BK"),
                           pymarc.Subfield("v", "24.50")],
            ),
            pymarc.Field(
                tag="952", indicators=[" ", " "],
                subfields=[pymarc.Subfield("p", "KOHA-0002"), pymarc.Subfield("a", "NOWHERE")],
            ),
        )  # fmt: skip
        summary = await import_file(sessionmaker, io.BytesIO(record.as_marc()), actor=SYSTEM)
        assert summary.items_created == 1
        assert any("NOWHERE" in w["reason"] for w in summary.warnings)
        item = await session.scalar(select(Item).where(Item.barcode == "KOHA-0001"))
        assert item is not None
        assert (item.shelfmark, item.item_type, str(item.price)) == ("005.1 PRO", "BK", "24.50")

    async def test_a_file_that_is_not_marc_writes_nothing(
        self, sessionmaker: async_sessionmaker[AsyncSession], session: AsyncSession
    ) -> None:
        before = await count(session, Bib)
        with pytest.raises(MarcFileError):
            await import_file(sessionmaker, io.BytesIO(b"hello, this is not MARC\n" * 40),
                              actor=SYSTEM)  # fmt: skip
        with pytest.raises(MarcFileError):
            await import_file(sessionmaker, Path("/nonexistent/file.mrc"), actor=SYSTEM)
        assert await count(session, Bib) == before


class TestRoundTrip:
    async def test_demo_catalog_exports_and_reimports_unchanged(
        self, sessionmaker: async_sessionmaker[AsyncSession], session: AsyncSession
    ) -> None:
        first = await import_file(sessionmaker, DEMO, actor=SYSTEM)
        assert first.created > 300
        assert first.errors == []
        out = io.BytesIO()
        exported = await marc_export.export_to(session, out, "marc")
        assert exported >= first.created
        again = await import_file(sessionmaker, io.BytesIO(out.getvalue()), actor=SYSTEM)
        assert (again.created, again.updated) == (0, 0)
        assert again.unchanged == first.created
        xml = io.BytesIO()
        await marc_export.export_to(session, xml, "xml")
        from_xml = await import_file(sessionmaker, io.BytesIO(xml.getvalue()), actor=SYSTEM)
        assert (from_xml.created, from_xml.updated) == (0, 0)

    @pytest.mark.slow
    async def test_loc_sample_round_trip(
        self, sessionmaker: async_sessionmaker[AsyncSession], session: AsyncSession
    ) -> None:
        first = await import_file(
            sessionmaker, marc_file("loc-books-2016-sample-10k.mrc"), actor=SYSTEM
        )
        assert first.read == 10_000
        assert first.created + first.unchanged == 10_000 - len(first.errors)
        out = io.BytesIO()
        await marc_export.export_to(session, out, "marc")
        again = await import_file(sessionmaker, io.BytesIO(out.getvalue()), actor=SYSTEM)
        assert (again.created, again.updated) == (0, 0)


class TestExportApi:
    async def test_api_bib_exports_valid_marc_and_xml(
        self, client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        bib = await make_bib(
            session, title="Entered by hand", subtitle="a test", isbns=["0441478123"],
            contributors=[{"name": "Doe, Jane", "role": "author"}], publication_year=2020,
            language="eng", subjects=["Testing"],
        )  # fmt: skip
        await session.commit()
        response = await client.get(f"/api/v1/bibs/{bib.id}.mrc")
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/marc"
        record = next(iter_marc(io.BytesIO(response.content))).record
        assert record is not None
        assert record["245"]["a"] == "Entered by hand"
        assert record["020"]["a"] == "9780441478125"
        xml = await client.get(f"/api/v1/bibs/{bib.id}.xml")
        assert xml.status_code == 200
        assert b"Entered by hand" in xml.content
        assert (await client.get("/api/v1/bibs/999999.mrc")).status_code == 404

    async def test_an_edit_after_import_is_exported(
        self, sessionmaker: async_sessionmaker[AsyncSession], session: AsyncSession,
        client: httpx.AsyncClient,
    ) -> None:  # fmt: skip
        await import_file(sessionmaker, marc_file("diacritic.dat"), actor=SYSTEM)
        bib = await session.scalar(select(Bib).where(Bib.control_number == "17091269"))
        assert bib is not None
        stored = await marc_export.require_bib_with_source(session, bib.id)
        assert stored.marc is not None
        source_tags = {f.tag for f in pymarc.Record(data=stored.marc, force_utf8=True).fields}
        bib.title = "Edited in Shelfmark"
        await session.commit()
        response = await client.get(f"/api/v1/bibs/{bib.id}.mrc")
        record = next(iter_marc(io.BytesIO(response.content))).record
        assert record is not None
        assert record["245"]["a"] == "Edited in Shelfmark"
        # Unmapped fields survive the edit; mapped ones are written from the current values.
        unmapped = source_tags - marc_export.MAPPED_TAGS
        assert {f.tag for f in record.fields} >= unmapped
        assert "500" in unmapped or "040" in unmapped
