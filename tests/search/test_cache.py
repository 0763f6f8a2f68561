"""Search pages through the cache: served again without searching, never stale.

A page is cached under the catalog's version (and, when it filters on availability, the
copies' statuses'); a cached page gets its availability afresh on every read.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import httpx
import orjson
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from factories import auth, make_bib, make_branch, make_item, make_patron, make_user
from shelfmark.cache import MemoryCache, RedisCache
from shelfmark.search import service

Q = {"q": "zorblax weather"}
EMPTY_FACETS = service.Facets(language=[], material_type=[], subject=[], year=[], branch=[])


@pytest.fixture
def searches(monkeypatch: pytest.MonkeyPatch) -> list[str | None]:
    """The searches that reached the database (the queries given to `service.search`)."""
    seen: list[str | None] = []
    search = service.search

    async def counted(session: AsyncSession, **kwargs: Any) -> service.SearchPage:
        seen.append(kwargs["q"])
        return await search(session, **kwargs)

    monkeypatch.setattr(service, "search", counted)
    return seen


async def _search(client: httpx.AsyncClient, **params: str) -> dict[str, Any]:
    response = await client.get("/api/v1/search", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


class TestCachedSearch:
    async def test_the_same_search_is_answered_from_the_cache(
        self, client: httpx.AsyncClient, session: AsyncSession, searches: list[str | None]
    ) -> None:
        await make_item(session, bib=await make_bib(session, title="Zorblax weather"))
        await session.commit()
        first = await _search(client, **Q)
        again = await _search(client, **Q)
        assert again == first
        assert first["total"] == 1
        assert searches == ["zorblax weather"]
        # Another page size, query or filter is another page.
        await _search(client, **Q, limit="5")
        await _search(client, **Q, language="eng")
        assert len(searches) == 3

    async def test_a_checkout_shows_on_a_cached_page_and_in_the_available_filter(
        self, client: httpx.AsyncClient, session: AsyncSession, searches: list[str | None]
    ) -> None:
        librarian = await make_user(session)
        branch = await make_branch(session, code="ZMAIN")
        item = await make_item(
            session, bib=await make_bib(session, title="Zorblax weather"), branch=branch
        )
        patron = await make_patron(session, branch=branch)
        await session.commit()
        page = await _search(client, **Q)
        on_shelf = await _search(client, **Q, available="true")
        assert page["items"][0]["availability"] == [{"branch": "ZMAIN", "available": 1, "total": 1}]
        assert on_shelf["total"] == 1

        body = {"item_barcode": item.barcode, "patron_card": patron.card_number}
        checkout = await client.post("/api/v1/checkouts", json=body, headers=auth(librarian))
        assert checkout.status_code == 201, checkout.text

        searched = len(searches)
        page = await _search(client, **Q)
        assert page["items"][0]["availability"] == [{"branch": "ZMAIN", "available": 0, "total": 1}]
        assert len(searches) == searched  # from the cache, its availability read afresh
        assert (await _search(client, **Q, available="true"))["total"] == 0
        assert len(searches) == searched + 1  # filtered on availability: searched again

    async def test_a_copy_added_changes_the_facets(
        self, client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        librarian = await make_user(session)
        bib = await make_bib(session, title="Zorblax weather")
        await make_item(session, bib=bib, branch=await make_branch(session, code="ZMAIN"))
        await make_branch(session, code="ZEAST")
        await session.commit()
        before = await _search(client, **Q)
        assert before["facets"]["branch"] == [{"value": "ZMAIN", "count": 1}]
        added = await client.post(
            "/api/v1/items", json={"bib_id": bib.id, "branch": "ZEAST", "barcode": "Z-2"},
            headers=auth(librarian),
        )  # fmt: skip
        assert added.status_code == 201, added.text
        after = await _search(client, **Q)
        assert after["facets"]["branch"] == [
            {"value": "ZEAST", "count": 1}, {"value": "ZMAIN", "count": 1}
        ]  # fmt: skip

    async def test_a_refused_write_keeps_the_cached_page(
        self, client: httpx.AsyncClient, session: AsyncSession, searches: list[str | None]
    ) -> None:
        librarian = await make_user(session)
        await make_bib(session, title="Zorblax weather", control_number="CN-1")
        other = await make_bib(session, title="Quillon", control_number="CN-2")
        await session.commit()
        await _search(client, **Q)
        refused = await client.patch(
            f"/api/v1/bibs/{other.id}", json={"control_number": "CN-1"}, headers=auth(librarian)
        )
        assert refused.status_code == 409
        await _search(client, **Q)
        assert searches == ["zorblax weather"]

    async def test_opac_results_page_uses_the_cache(
        self, client: httpx.AsyncClient, session: AsyncSession, searches: list[str | None]
    ) -> None:
        await make_bib(session, title="Zorblax weather")
        await session.commit()
        for _ in range(2):
            response = await client.get("/search", params=Q)
            assert response.status_code == 200
            assert "Zorblax weather" in response.text
        assert searches == ["zorblax weather"]

    @pytest.mark.parametrize("kind", ["memory", "redis-down"])
    async def test_a_failing_cache_searches_every_time(
        self, app: FastAPI, client: httpx.AsyncClient, session: AsyncSession,
        searches: list[str | None], kind: str,
    ) -> None:  # fmt: skip
        if kind == "redis-down":
            app.state.cache = RedisCache("redis://127.0.0.1:9/0")  # nothing listens there
        else:
            assert isinstance(app.state.cache, MemoryCache)
        await make_bib(session, title="Zorblax weather")
        await session.commit()
        assert (await _search(client, **Q))["total"] == 1
        assert (await _search(client, **Q))["total"] == 1
        assert len(searches) == (2 if kind == "redis-down" else 1)


class TestOneSearchPerMissingPage:
    async def test_concurrent_misses_of_a_page_share_one_search(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        calls: list[str | None] = []
        release = asyncio.Event()

        async def slow(session: AsyncSession, **kwargs: Any) -> service.SearchPage:
            calls.append(kwargs["q"])
            await release.wait()
            return service.SearchPage(items=[], total=7, facets=EMPTY_FACETS)

        monkeypatch.setattr(service, "search", slow)
        cache = MemoryCache()
        session: Any = None  # never reached: the search is replaced, no page has a hit
        filters = service.SearchFilters()
        waiting = [
            asyncio.create_task(service.cached_search(session, cache, q="x", filters=filters))
            for _ in range(5)
        ]
        await asyncio.sleep(0.01)
        release.set()
        pages = await asyncio.gather(*waiting)
        assert [orjson.loads(page)["total"] for page in pages] == [7] * 5
        assert calls == ["x"]
        assert service._FILLING == {}

    async def test_a_failed_search_lets_the_waiters_search_for_themselves(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        calls: list[str | None] = []
        release = asyncio.Event()

        async def first_fails(session: AsyncSession, **kwargs: Any) -> service.SearchPage:
            calls.append(kwargs["q"])
            if len(calls) == 1:
                await release.wait()
                raise RuntimeError("database went away")
            return service.SearchPage(items=[], total=3, facets=EMPTY_FACETS)

        monkeypatch.setattr(service, "search", first_fails)
        cache, session, filters = MemoryCache(), cast(Any, None), service.SearchFilters()
        leader = asyncio.create_task(service.cached_search(session, cache, q="x", filters=filters))
        await asyncio.sleep(0.01)
        follower = asyncio.create_task(
            service.cached_search(session, cache, q="x", filters=filters)
        )
        await asyncio.sleep(0.01)
        release.set()
        with pytest.raises(RuntimeError):
            await leader
        assert orjson.loads(await follower)["total"] == 3
        assert len(calls) == 2
