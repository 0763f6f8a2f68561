"""A bib record's JSON as the hot reads send it, from the row as the driver reads it
(`bib_json`): the bytes `BibRead` gives, field order and all."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from pydantic import TypeAdapter
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from factories import make_bib
from shelfmark.catalog import api as catalog_api
from shelfmark.catalog import service
from shelfmark.catalog.errors import BibNotFound
from shelfmark.catalog.models import Bib
from shelfmark.catalog.schemas import BibRead
from shelfmark.db import SessionReads
from shelfmark.pagination import Page, decode_int_cursor

PAGE = TypeAdapter(Page[BibRead])
CONTROL = "".join(chr(code) for code in range(1, 32))  # every escaped control character
ODD = f'a{CONTROL}b "quoted" back\\slash / \x7f \u2028\u2029 </script> ", " ": " }}, {{ end'

# Records that take each branch of the JSON: nulls, empty and full lists, texts that need
# escaping (in columns and inside JSONB), non-ASCII of every UTF-8 length, numbers at their
# bounds; and their times (created, updated) with and without microseconds.
EDGE_CASES: list[tuple[dict[str, Any], datetime, datetime]] = [
    (
        {"title": "Minimal edge"},
        datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
        datetime(2024, 1, 2, 3, 4, 5, 120, tzinfo=UTC),
    ),
    (
        {
            "title": f"Œuvres — « tome 1 » 漢字 😀 edge {ODD}",
            "subtitle": ODD,
            "contributors": [
                {"name": f"Éluard, {ODD}"},
                {"name": "Man Ray", "role": 'illus"\\\ttrator'},
                {"name": "null", "role": "author"},
            ],
            "isbns": ["0-441-47812-3", "9780306406157"],
            "publisher": "Gallimard\nParis",
            "publication_year": 0,
            "edition": "2e éd.",
            "language": "fre",
            "subjects": [ODD, "Poésie", ", ", "\\", '"'],
            "series": ["\U0001d50a\U0001d52c", "[]", "{}"],  # 4-byte UTF-8 (Fraktur "Go")
            "description": "x" * 3000 + ODD,
            "material_type": "computer_file",
            "control_number": "ctl-é",
        },
        datetime(999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2200, 1, 1, tzinfo=UTC),
    ),
    (
        {"title": "Empty lists edge", "contributors": [], "subjects": [], "publication_year": 2200},
        datetime(2025, 6, 30, 12, 0, 0, 100000, tzinfo=UTC),
        datetime(2025, 6, 30, 12, 0, 0, 1, tzinfo=UTC),
    ),
]


@pytest.fixture
async def edge_bibs(session: AsyncSession) -> list[Bib]:
    bibs = []
    for fields, created_at, updated_at in EDGE_CASES:
        bib = await make_bib(session, **fields)
        bib.created_at, bib.updated_at = created_at, updated_at
        bibs.append(bib)
    await session.commit()
    return bibs


async def read_bib_json(reads: SessionReads, bib_id: int) -> bytes:
    return catalog_api.bib_json(await service.read_bib(reads, bib_id))


async def list_bibs_json(
    reads: SessionReads, *, filters: service.BibFilters, limit: int, after_id: int | None
) -> bytes:
    rows = await service.list_bibs(reads, filters=filters, limit=limit, after_id=after_id)
    return catalog_api.bib_page_json(rows, limit)


def as_bib_read(body: bytes) -> bytes:
    return BibRead.model_validate_json(body).model_dump_json().encode()


class TestReadBibJson:
    async def test_is_the_row_s_json_byte_for_byte(
        self, sessionmaker: async_sessionmaker[AsyncSession], edge_bibs: list[Bib]
    ) -> None:
        reads = SessionReads(sessionmaker)
        for bib in edge_bibs:
            sent = await read_bib_json(reads, bib.id)
            assert sent == catalog_api.bib_json(await service.read_bib(reads, bib.id))
            assert sent == as_bib_read(sent)
        times = [orjson.loads(await read_bib_json(reads, b.id)) for b in edge_bibs]
        assert [(t["created_at"], t["updated_at"]) for t in times] == [
            ("2024-01-02T03:04:05Z", "2024-01-02T03:04:05.000120Z"),
            ("0999-12-31T23:59:59.999999Z", "2200-01-01T00:00:00Z"),
            ("2025-06-30T12:00:00.100000Z", "2025-06-30T12:00:00.000001Z"),
        ]

    async def test_a_missing_bib_is_not_found(
        self, sessionmaker: async_sessionmaker[AsyncSession]
    ) -> None:
        with pytest.raises(BibNotFound):
            await read_bib_json(SessionReads(sessionmaker), 999_999_999)


class TestListBibsJson:
    @pytest.mark.parametrize("filters", [service.NO_FILTERS, service.BibFilters(title="EDGE")])
    async def test_pages_are_the_schema_s_bytes(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        edge_bibs: list[Bib],
        filters: service.BibFilters,
    ) -> None:
        """Pages of two, then the last one: the items `BibRead` would send, and a cursor to
        the next page while there is one (the unfiltered pages take the hot statement)."""
        reads = SessionReads(sessionmaker)
        after_id: int | None = edge_bibs[0].id - 1
        pages = []
        while True:
            page = await list_bibs_json(reads, filters=filters, limit=2, after_id=after_id)
            assert page == PAGE.dump_json(PAGE.validate_json(page))
            pages.append(orjson.loads(page))
            after_id = decode_int_cursor(pages[-1]["next_cursor"])
            if after_id is None:
                break
        ids = [item["id"] for page in pages for item in page["items"]]
        assert ids == [bib.id for bib in edge_bibs]
        assert [len(page["items"]) for page in pages] == [2, 1]
        for page in pages:
            for item in page["items"]:
                assert orjson.dumps(item) == await read_bib_json(reads, item["id"])

    async def test_an_empty_page(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        page = await list_bibs_json(
            SessionReads(sessionmaker), filters=service.NO_FILTERS, limit=5, after_id=2**62
        )
        assert page == b'{"items":[],"next_cursor":null}'
