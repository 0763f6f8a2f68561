"""GET /api/v1/search: public, problem+json on bad input, and current with every write."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from factories import auth, make_bib, make_branch, make_item, make_user


class TestSearchRoute:
    async def test_public_page_with_facets_and_availability(
        self, client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        branch = await make_branch(session, code="ZMAIN")
        bib = await make_bib(session, title="Zorblax for beginners", language="eng")
        await make_item(session, bib=bib, branch=branch)
        await session.commit()  # a savepoint of the test's transaction
        response = await client.get("/api/v1/search", params={"q": "zorblax beginners"})
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"items", "total", "facets", "next_cursor"}
        assert body["total"] == 1
        assert body["items"][0]["id"] == bib.id
        assert body["items"][0]["availability"] == [{"branch": "ZMAIN", "available": 1, "total": 1}]
        assert set(body["facets"]) == {"language", "material_type", "subject", "year", "branch"}
        assert body["facets"]["branch"] == [{"value": "ZMAIN", "count": 1}]

    async def test_pages_through_next_cursor(
        self, client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        made = {(await make_bib(session, title=f"Zorblax part {n}")).id for n in range(5)}
        await session.commit()
        seen: list[int] = []
        params = {"q": "zorblax", "limit": "2"}
        while True:
            body = (await client.get("/api/v1/search", params=params)).json()
            seen += [item["id"] for item in body["items"]]
            if body["next_cursor"] is None:
                break
            params["cursor"] = body["next_cursor"]
        assert sorted(seen) == sorted(made)

    @pytest.mark.parametrize(
        ("params", "field"),
        [
            ({"q": "x", "limit": "0"}, "limit"),
            ({"q": "x", "limit": "101"}, "limit"),
            ({"q": "x", "year_from": "2001", "year_to": "2000"}, "year_from"),
            ({"q": "!!!"}, "q"),
            ({}, "q"),
            ({"q": "x", "language": "english"}, "language"),
            ({"q": "x", "material_type": "dvd"}, "material_type"),
            ({"q": "x", "cursor": "garbage"}, "cursor"),
            ({"q": "x", "available": "perhaps"}, "available"),
        ],
    )
    async def test_invalid_input_is_a_422_problem(
        self, client: httpx.AsyncClient, params: dict[str, str], field: str
    ) -> None:
        response = await client.get("/api/v1/search", params=params)
        assert response.status_code == 422
        assert response.headers["content-type"].startswith("application/problem+json")
        problem = response.json()
        assert problem["type"] == "/problems/invalid-input"
        assert field in [error["field"] for error in problem["errors"]]

    async def test_browse_with_a_filter(
        self, client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        bib = await make_bib(session, title="Anything", language="qqz")
        await session.commit()
        body = (await client.get("/api/v1/search", params={"language": "qqz"})).json()
        assert [item["id"] for item in body["items"]] == [bib.id]


class TestWritesThroughTheApi:
    async def test_create_update_delete_show_in_search(
        self, client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        headers = auth(await make_user(session))
        await session.commit()

        async def hits(q: str) -> list[int]:
            body = (await client.get("/api/v1/search", params={"q": q})).json()
            return [item["id"] for item in body["items"]]

        created = await client.post(
            "/api/v1/bibs", json={"title": "Zorblax weather"}, headers=headers
        )
        assert created.status_code == 201, created.text
        bib_id = created.json()["id"]
        assert await hits("zorblax weather") == [bib_id]

        patched = await client.patch(
            f"/api/v1/bibs/{bib_id}", json={"title": "Quillon weather"}, headers=headers
        )
        assert patched.status_code == 200
        assert await hits("quillon weather") == [bib_id]
        assert await hits("zorblax weather") == []

        deleted = await client.delete(f"/api/v1/bibs/{bib_id}", headers=headers)
        assert deleted.status_code == 204
        assert await hits("quillon weather") == []
