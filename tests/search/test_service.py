"""The search service on both databases: relevance, filters, facets, availability, paging.

Every record here carries a made-up word ("zorblax", "quillon"...) so that a test sees its
own records only, whatever else the database holds.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from factories import make_bib, make_branch, make_item
from shelfmark.catalog.models import Bib
from shelfmark.errors import InvalidInput
from shelfmark.search import service
from shelfmark.search.schemas import SearchPage
from shelfmark.search.service import SearchFilters


async def search(session: AsyncSession, q: str | None, **kwargs: Any) -> SearchPage:
    limit = kwargs.pop("limit", service.DEFAULT_LIMIT)
    cursor = kwargs.pop("cursor", None)
    return await service.search(
        session, q=q, filters=SearchFilters(**kwargs), limit=limit, cursor=cursor
    )


def ids(page: SearchPage) -> list[int]:
    return [hit.id for hit in page.items]


class TestRelevance:
    async def test_the_exact_title_comes_first(self, session: AsyncSession) -> None:
        about = await make_bib(
            session, title="Zorblax history", subtitle="the zorblax harbour and its trade",
            subjects=["Zorblax harbour"], description="All about the zorblax harbour.",
        )  # fmt: skip
        longer = await make_bib(session, title="The zorblax harbour and the sea")
        exact = await make_bib(session, title="The Zorblax Harbour")
        page = await search(session, "zorblax harbour")
        assert ids(page) == [exact.id, longer.id, about.id]

    async def test_words_in_any_order_across_title_and_names(self, session: AsyncSession) -> None:
        bib = await make_bib(
            session, title="Gardens of quillon", contributors=[{"name": "Mérovée, Anselm"}]
        )
        await make_bib(session, title="Quillon roads", contributors=[{"name": "Other, A."}])
        assert ids(await search(session, "merovee quillon gardens")) == [bib.id]
        assert ids(await search(session, "anselm quillon"))[0] == bib.id

    @pytest.mark.parametrize(
        "query", ["9780441478125", "978-0-441-47812-5", "0441478123", "0-441-47812-3"]
    )
    async def test_an_isbn_finds_its_book_first(self, session: AsyncSession, query: str) -> None:
        # a record whose text holds the digits too, to be outranked
        await make_bib(session, title="Catalogue 0441478123", description="9780441478125")
        bib = await make_bib(session, title="The left hand of darkness", isbns=["0441478123"])
        assert ids(await search(session, query))[0] == bib.id

    async def test_an_unknown_isbn_searches_the_words(self, session: AsyncSession) -> None:
        bib = await make_bib(session, title="Catalogue 0441478123")
        assert ids(await search(session, "0441478123")) == [bib.id]

    async def test_diacritics_fold_both_ways(self, session: AsyncSession) -> None:
        accented = await make_bib(session, title="Wendezeit in Görlitz")
        plain = await make_bib(session, title="Wandern um Gorlitz")
        assert set(ids(await search(session, "gorlitz"))) == {accented.id, plain.id}
        assert set(ids(await search(session, "GÖRLITZ"))) == {accented.id, plain.id}

    async def test_one_typo_per_word(self, session: AsyncSession) -> None:
        bib = await make_bib(
            session, title="Principles of quillonography", contributors=[{"name": "Hartwell"}]
        )
        assert ids(await search(session, "quillonogrpahy")) == [bib.id]  # transposed
        assert ids(await search(session, "principls quillonography")) == [bib.id]  # dropped
        assert ids(await search(session, "hartwel quillonographyy")) == [bib.id]

    async def test_stop_words_do_not_break_a_title(self, session: AsyncSession) -> None:
        bib = await make_bib(session, title="The lord of the zorblax")
        await make_bib(session, title="Zorblax lords")
        assert ids(await search(session, "the lord of the zorblax"))[0] == bib.id
        assert ids(await search(session, "a lord of zorblax"))[0] == bib.id

    async def test_the_last_word_is_a_prefix(self, session: AsyncSession) -> None:
        bib = await make_bib(session, title="Quillonic engineering handbook")
        assert ids(await search(session, "quillonic engin")) == [bib.id]
        assert ids(await search(session, "engineering quillonic")) == [bib.id]
        assert ids(await search(session, "quillo")) == [bib.id]

    async def test_nothing_found(self, session: AsyncSession) -> None:
        page = await search(session, "xqzvvw")
        assert (page.items, page.total, page.next_cursor) == ([], 0, None)
        assert page.facets.language == []

    @pytest.mark.postgres_only  # pg_trgm similarity is the PostgreSQL backend's last stage
    async def test_trigram_fallback_on_postgresql(self, session: AsyncSession) -> None:
        bib = await make_bib(session, title="The left hand of zorblaxia")
        # run-together words: no single-word edit mends "lefthand"
        assert ids(await search(session, "lefthand of zorblaxia")) == [bib.id]


async def _shelves(session: AsyncSession) -> dict[str, Bib]:
    """Four quillon records in three languages at two branches."""
    main = await make_branch(session, code="QMAIN")
    east = await make_branch(session, code="QEAST")
    bibs = {
        "eng_old": await make_bib(
            session, title="Quillon tales", language="eng", publication_year=1901,
            subjects=["Quillons -- History.", "Folklore"],
        ),
        "eng_new": await make_bib(
            session, title="Quillon stories", language="eng", publication_year=2001,
            subjects=["Quillons -- Juvenile fiction."], material_type="book",
        ),
        "ger": await make_bib(
            session, title="Quillon Geschichten", language="ger", publication_year=2001,
            subjects=["Folklore -- Germany."], material_type="audiobook",
        ),
        "fre": await make_bib(session, title="Contes de quillon", language="fre"),
    }  # fmt: skip
    await make_item(session, bib=bibs["eng_old"], branch=main)
    await make_item(session, bib=bibs["eng_old"], branch=main, status="missing")
    await make_item(session, bib=bibs["eng_old"], branch=east, status="missing")
    await make_item(session, bib=bibs["eng_new"], branch=east)
    await make_item(session, bib=bibs["eng_new"], branch=east, status="withdrawn")
    await make_item(session, bib=bibs["ger"], branch=main, status="missing")
    return bibs


class TestFiltersAndFacets:
    async def test_facet_counts(self, session: AsyncSession) -> None:
        await _shelves(session)
        page = await search(session, "quillon")
        assert page.total == 4
        facets = page.facets.model_dump()
        assert facets["language"] == [
            {"value": "eng", "count": 2}, {"value": "fre", "count": 1},
            {"value": "ger", "count": 1},
        ]  # fmt: skip
        assert facets["material_type"] == [
            {"value": "book", "count": 3}, {"value": "audiobook", "count": 1},
        ]  # fmt: skip
        assert facets["year"] == [{"value": 2001, "count": 2}, {"value": 1901, "count": 1}]
        assert facets["subject"] == [
            {"value": "Folklore", "count": 2}, {"value": "Quillons", "count": 2},
        ]  # fmt: skip
        assert facets["branch"] == [
            {"value": "QEAST", "count": 2}, {"value": "QMAIN", "count": 2},
        ]  # fmt: skip

    @pytest.mark.parametrize(
        ("filters", "expected"),
        [
            ({"language": "eng"}, {"eng_old", "eng_new"}),
            ({"material_type": "audiobook"}, {"ger"}),
            ({"year_from": 2000}, {"eng_new", "ger"}),
            ({"year_to": 1950}, {"eng_old"}),
            ({"year_from": 1901, "year_to": 1901}, {"eng_old"}),
            ({"subject": "Folklore"}, {"eng_old", "ger"}),
            ({"subject": "quillons"}, {"eng_old", "eng_new"}),  # compared folded
            ({"branch": "QEAST"}, {"eng_old", "eng_new"}),
            ({"available": True}, {"eng_old", "eng_new"}),
            ({"available": True, "branch": "QMAIN"}, {"eng_old"}),
            ({"branch": "QMAIN", "language": "ger"}, {"ger"}),
            ({"branch": "NOWHERE"}, set()),
        ],
    )
    async def test_filters(
        self, session: AsyncSession, filters: dict[str, Any], expected: set[str]
    ) -> None:
        bibs = await _shelves(session)
        page = await search(session, "quillon", **filters)
        assert set(ids(page)) == {bibs[name].id for name in expected}
        assert page.total == len(expected)

    async def test_facets_count_within_the_filters(self, session: AsyncSession) -> None:
        await _shelves(session)
        page = await search(session, "quillon", available=True)
        assert page.facets.model_dump()["branch"] == [
            {"value": "QEAST", "count": 1}, {"value": "QMAIN", "count": 1},
        ]  # fmt: skip
        assert [f.value for f in page.facets.language] == ["eng"]

    async def test_browse_with_filters_only(self, session: AsyncSession) -> None:
        bibs = await _shelves(session)
        page = await search(session, None, branch="QMAIN")
        assert ids(page) == sorted([bibs["eng_old"].id, bibs["ger"].id])
        assert page.total == 2

    async def test_availability_per_branch(self, session: AsyncSession) -> None:
        bibs = await _shelves(session)
        page = await search(session, "quillon")
        availability = {hit.id: hit.model_dump()["availability"] for hit in page.items}
        assert availability[bibs["eng_old"].id] == [
            {"branch": "QEAST", "available": 0, "total": 1},
            {"branch": "QMAIN", "available": 1, "total": 2},
        ]
        # a withdrawn copy is held nowhere
        assert availability[bibs["eng_new"].id] == [{"branch": "QEAST", "available": 1, "total": 1}]
        assert availability[bibs["fre"].id] == []

    async def test_hit_fields(self, session: AsyncSession) -> None:
        bib = await make_bib(
            session, title="Quillon atlas", subtitle="maps", isbns=["0441478123"],
            contributors=[{"name": "Mapper, M.", "role": "editor"}], publication_year=1999,
            control_number="Q-1",
        )  # fmt: skip
        hit = (await search(session, "quillon atlas")).items[0].model_dump()
        assert hit == {
            "id": bib.id, "title": "Quillon atlas", "subtitle": "maps",
            "contributors": [{"name": "Mapper, M.", "role": "editor"}],
            "publication_year": 1999, "language": None, "material_type": "book",
            "control_number": "Q-1", "isbns": ["9780441478125"], "availability": [],
        }  # fmt: skip


class TestPaging:
    async def test_pages_cover_every_hit_once(self, session: AsyncSession) -> None:
        made = {(await make_bib(session, title=f"Zorblax volume {n}")).id for n in range(7)}
        made.add((await make_bib(session, title="Zorblax")).id)  # an exact title, ranked apart
        seen: list[int] = []
        cursor = None
        for _ in range(10):
            page = await search(session, "zorblax", limit=3, cursor=cursor)
            assert page.total == 8
            seen += ids(page)
            cursor = page.next_cursor
            if cursor is None:
                break
        assert len(seen) == len(set(seen)) == 8
        assert set(seen) == made

    async def test_browse_pages(self, session: AsyncSession) -> None:
        bibs = [await make_bib(session, title=f"Quillon {n}", language="qqq") for n in range(5)]
        first = await search(session, None, language="qqq", limit=2)
        second = await search(session, None, language="qqq", limit=2, cursor=first.next_cursor)
        third = await search(session, None, language="qqq", limit=2, cursor=second.next_cursor)
        assert ids(first) + ids(second) + ids(third) == [b.id for b in bibs]
        assert third.next_cursor is None

    async def test_a_cursor_of_another_search_is_refused(self, session: AsyncSession) -> None:
        for n in range(3):
            await make_bib(session, title=f"Zorblax {n}")
        page = await search(session, "zorblax", limit=1)
        with pytest.raises(InvalidInput) as raised:
            await search(session, "zorblax", limit=1, cursor=page.next_cursor, language="eng")
        assert raised.value.errors == [
            {"field": "cursor", "message": "not a cursor of this search"}
        ]
        with pytest.raises(InvalidInput):
            await search(session, "zorblax", cursor="not-a-cursor")


class TestCheckSearch:
    @pytest.mark.parametrize(
        ("q", "kwargs", "field"),
        [
            ("x", {"limit": 0}, "limit"),
            ("x", {"limit": service.MAX_LIMIT + 1}, "limit"),
            ("x", {"year_from": 2000, "year_to": 1999}, "year_from"),
            ("?!", {}, "q"),
            (None, {}, "q"),
            ("", {"available": False}, "q"),
        ],
    )
    async def test_refused(
        self, session: AsyncSession, q: str | None, kwargs: dict[str, Any], field: str
    ) -> None:
        with pytest.raises(InvalidInput) as raised:
            await search(session, q, **kwargs)
        assert [e["field"] for e in raised.value.errors or []] == [field]
