from __future__ import annotations

import json

import httpx
import pytest
from pydantic import TypeAdapter
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from factories import auth, make_bib, make_branch, make_item, make_user
from shelfmark.audit.models import AuditEvent
from shelfmark.auth.models import User
from shelfmark.auth.roles import Role
from shelfmark.catalog.models import Item
from shelfmark.catalog.schemas import BibRead
from shelfmark.pagination import Page, encode_cursor


@pytest.fixture
async def librarian(session: AsyncSession) -> User:
    user = await make_user(session, Role.LIBRARIAN)
    await session.commit()
    return user


class TestBranches:
    async def test_create_read_update_delete(
        self, client: httpx.AsyncClient, librarian: User
    ) -> None:
        body = {
            "code": "MAIN",
            "name": "Main Library",
            "address": "1 Square",
            "opening_hours": {"mon": [["09:00", "18:00"]]},
        }
        created = await client.post("/api/v1/branches", json=body, headers=auth(librarian))
        assert created.status_code == 201, created.text
        branch = created.json()
        assert branch["opening_hours"] == {"mon": [["09:00", "18:00"]]}
        read = await client.get(f"/api/v1/branches/{branch['id']}")
        assert read.json()["name"] == "Main Library"
        patched = await client.patch(
            f"/api/v1/branches/{branch['id']}", json={"name": "Central"}, headers=auth(librarian)
        )
        assert patched.json()["name"] == "Central"
        assert patched.json()["code"] == "MAIN"
        deleted = await client.delete(f"/api/v1/branches/{branch['id']}", headers=auth(librarian))
        assert deleted.status_code == 204
        assert (await client.get(f"/api/v1/branches/{branch['id']}")).status_code == 404

    async def test_bad_opening_hours_are_422(
        self, client: httpx.AsyncClient, librarian: User
    ) -> None:
        body = {"code": "B", "name": "B", "opening_hours": {"mon": [["25:00", "18:00"]]}}
        response = await client.post("/api/v1/branches", json=body, headers=auth(librarian))
        assert response.status_code == 422
        assert response.json()["errors"][0]["field"].startswith("opening_hours.mon")

    async def test_branch_with_items_cannot_be_deleted(
        self, client: httpx.AsyncClient, session: AsyncSession, librarian: User
    ) -> None:
        item = await make_item(session)
        await session.commit()
        response = await client.delete(
            f"/api/v1/branches/{item.branch_id}", headers=auth(librarian)
        )
        assert response.status_code == 409
        assert response.json()["type"] == "/problems/still-referenced"


class TestBibs:
    async def test_create_normalises_isbns_and_reads_back(
        self, client: httpx.AsyncClient, librarian: User
    ) -> None:
        body = {
            "title": "The left hand of darkness",
            "contributors": [{"name": "Le Guin, Ursula K.", "role": "author"}],
            "isbns": ["0-441-47812-3", "978-0-441-47812-5"],
            "publication_year": 1969,
            "language": "eng",
            "subjects": ["Science fiction"],
        }
        created = await client.post("/api/v1/bibs", json=body, headers=auth(librarian))
        assert created.status_code == 201, created.text
        bib = created.json()
        assert bib["isbns"] == ["9780441478125"]
        assert bib["material_type"] == "book"
        read = await client.get(f"/api/v1/bibs/{bib['id']}")
        assert read.status_code == 200
        assert read.json() == bib

    async def test_invalid_isbn_is_422_with_field(
        self, client: httpx.AsyncClient, librarian: User
    ) -> None:
        response = await client.post(
            "/api/v1/bibs", json={"title": "T", "isbns": ["0-441-47812-4"]}, headers=auth(librarian)
        )
        assert response.status_code == 422
        assert response.json()["errors"][0]["field"] == "isbns"
        assert "check digit" in response.json()["errors"][0]["message"]

    async def test_unknown_field_is_refused(
        self, client: httpx.AsyncClient, librarian: User
    ) -> None:
        response = await client.post(
            "/api/v1/bibs", json={"title": "T", "colour": "red"}, headers=auth(librarian)
        )
        assert response.status_code == 422
        assert response.json()["errors"][0]["field"] == "colour"

    async def test_filters(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        branch = await make_branch(session)
        wanted = await make_bib(
            session, title="Görlitz im Wandel", isbns=["0441478123"], publication_year=1999,
            language="ger", contributors=[{"name": "Müller, Jürgen", "role": "author"}],
        )  # fmt: skip
        await make_item(session, bib=wanted, branch=branch)
        await make_bib(session, title="Something else", publication_year=2005, language="eng")
        await session.commit()

        async def ids(**params: object) -> list[int]:
            response = await client.get("/api/v1/bibs", params=params)
            assert response.status_code == 200, response.text
            return [b["id"] for b in response.json()["items"]]

        assert await ids(isbn="978-0-441-47812-5") == [wanted.id]
        assert await ids(isbn="0441478123") == [wanted.id]
        assert wanted.id in await ids(title="WANDEL")
        assert wanted.id in await ids(contributor="Müller")
        assert wanted.id in await ids(year_from=1990, year_to=2000, language="ger")
        assert wanted.id not in await ids(year_from=2000)
        assert await ids(branch=branch.code) == [wanted.id]
        bad = await client.get("/api/v1/bibs", params={"isbn": "123"})
        assert bad.status_code == 422
        assert bad.json()["type"] == "/problems/invalid-isbn"

    async def test_update_changes_only_given_fields(
        self, client: httpx.AsyncClient, session: AsyncSession, librarian: User
    ) -> None:
        bib = await make_bib(session, title="Old", subtitle="keep me")
        await session.commit()
        response = await client.patch(
            f"/api/v1/bibs/{bib.id}", json={"title": "New"}, headers=auth(librarian)
        )
        assert response.status_code == 200
        assert response.json()["title"] == "New"
        assert response.json()["subtitle"] == "keep me"

    async def test_records_are_sent_as_the_schema_renders_them(
        self, client: httpx.AsyncClient, librarian: User
    ) -> None:
        """A bib by id and the pages of bibs are sent as stored (`bib_json`), not through
        `BibRead`: the bytes must be those `BibRead` would give, field order and all
        (tests/catalog/test_bib_json.py has the harder cases)."""
        bodies = [
            {"title": "Minimal"},
            {"title": "Œuvres complètes — « tome 1 »",
             "subtitle": "漢字 \"quoted\" \\ and\nnewline",
             "contributors": [{"name": "Éluard, Paul"}, {"name": "Man Ray", "role": "illustrator"}],
             "isbns": ["0-441-47812-3"], "publisher": "Gallimard", "publication_year": 1968,
             "edition": "2e éd.", "language": "fre", "subjects": ["Poésie", "Surréalisme"],
             "series": ["Bibliothèque de la Pléiade"], "description": "x" * 3000,
             "material_type": "book", "control_number": "ctl-1"},
        ]  # fmt: skip
        ids = []
        for body in bodies:
            created = await client.post("/api/v1/bibs", json=body, headers=auth(librarian))
            assert created.status_code == 201, created.text
            ids.append(created.json()["id"])
        # A contributor's default role is stored by a partial update as by a create.
        patched = await client.patch(
            f"/api/v1/bibs/{ids[0]}", json={"contributors": [{"name": "Solo"}]},
            headers=auth(librarian),
        )  # fmt: skip
        assert patched.json()["contributors"] == [{"name": "Solo", "role": "author"}]
        for bib_id in ids:
            for _ in range(2):  # read from the database, then from the cache
                sent = (await client.get(f"/api/v1/bibs/{bib_id}")).content
                assert sent == BibRead.model_validate_json(sent).model_dump_json().encode()
        page = (await client.get("/api/v1/bibs", params={"limit": 1})).content
        assert page == TypeAdapter(Page[BibRead]).dump_json(
            TypeAdapter(Page[BibRead]).validate_json(page)
        )
        assert json.loads(page)["next_cursor"]
        filtered = (await client.get("/api/v1/bibs", params={"language": "fre"})).json()
        assert [bib["id"] for bib in filtered["items"]] == [ids[1]]
        assert filtered["items"][0]["contributors"][0] == {"name": "Éluard, Paul", "role": "author"}

    async def test_missing_bib_is_404_problem(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/api/v1/bibs/999999")
        assert response.status_code == 404
        assert response.json()["type"] == "/problems/bib-not-found"


class TestItems:
    async def test_duplicate_barcode_is_409_and_writes_nothing(
        self, client: httpx.AsyncClient, session: AsyncSession, librarian: User
    ) -> None:
        existing = await make_item(session)
        bib = await make_bib(session)
        await session.commit()
        audit_before = await session.scalar(select(func.count()).select_from(AuditEvent))
        items_before = await session.scalar(select(func.count()).select_from(Item))
        response = await client.post(
            "/api/v1/items",
            json={"bib_id": bib.id, "barcode": existing.barcode, "branch": existing.branch.code},
            headers=auth(librarian),
        )
        assert response.status_code == 409
        assert response.json()["type"] == "/problems/barcode-taken"
        assert await session.scalar(select(func.count()).select_from(Item)) == items_before
        assert await session.scalar(select(func.count()).select_from(AuditEvent)) == audit_before

    async def test_create_with_unknown_branch_is_404(
        self, client: httpx.AsyncClient, session: AsyncSession, librarian: User
    ) -> None:
        bib = await make_bib(session)
        await session.commit()
        response = await client.post(
            "/api/v1/items",
            json={"bib_id": bib.id, "barcode": "X1", "branch": "NOWHERE"},
            headers=auth(librarian),
        )
        assert response.status_code == 404
        assert response.json()["type"] == "/problems/branch-not-found"

    async def test_move_and_filter(
        self, client: httpx.AsyncClient, session: AsyncSession, librarian: User
    ) -> None:
        item = await make_item(session, price="12.50")
        other = await make_branch(session)
        await session.commit()
        moved = await client.patch(
            f"/api/v1/items/{item.id}",
            json={"branch": other.code, "status": "missing"},
            headers=auth(librarian),
        )
        assert moved.status_code == 200, moved.text
        assert moved.json()["branch"] == other.code
        assert moved.json()["price"] == "12.50"
        listed = await client.get(
            "/api/v1/items", params={"branch": other.code, "status": "missing"}
        )
        assert [i["id"] for i in listed.json()["items"]] == [item.id]
        by_barcode = await client.get("/api/v1/items", params={"barcode": item.barcode})
        assert by_barcode.json()["items"][0]["branch"] == other.code

    async def test_circulation_statuses_cannot_be_edited(
        self, client: httpx.AsyncClient, session: AsyncSession, librarian: User
    ) -> None:
        item = await make_item(session)
        await session.commit()
        url = f"/api/v1/items/{item.id}"
        refused = await client.patch(url, json={"status": "on_loan"}, headers=auth(librarian))
        assert refused.status_code == 409
        assert refused.json()["type"] == "/problems/item-in-circulation"
        missing = await client.patch(url, json={"status": "missing"}, headers=auth(librarian))
        assert missing.json()["status"] == "missing"
        item.status = "on_loan"  # as a checkout leaves it
        await session.commit()
        back = await client.patch(url, json={"status": "available"}, headers=auth(librarian))
        assert back.status_code == 409
        created = await client.post(
            "/api/v1/items",
            json={"bib_id": item.bib_id, "barcode": "NEW-ON-LOAN", "branch": item.branch.code,
                  "status": "on_hold_shelf"},
            headers=auth(librarian),
        )  # fmt: skip
        assert created.status_code == 409

    async def test_negative_price_is_422(
        self, client: httpx.AsyncClient, session: AsyncSession, librarian: User
    ) -> None:
        bib = await make_bib(session)
        branch = await make_branch(session)
        await session.commit()
        response = await client.post(
            "/api/v1/items",
            json={"bib_id": bib.id, "barcode": "NEG1", "branch": branch.code, "price": "-1"},
            headers=auth(librarian),
        )
        assert response.status_code == 422


class TestPagination:
    async def test_pages_have_no_duplicates_or_gaps_while_rows_are_inserted(
        self, client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        first = [await make_bib(session, title=f"Paged {n}") for n in range(23)]
        await session.commit()
        expected = {b.id for b in first}
        seen: list[int] = []
        cursor = None
        inserted = 0
        while True:
            params: dict[str, object] = {"limit": 5, "title": "Paged"}
            if cursor:
                params["cursor"] = cursor
            response = await client.get("/api/v1/bibs", params=params)
            assert response.status_code == 200
            page = response.json()
            seen.extend(b["id"] for b in page["items"])
            # Someone catalogues a title between two page reads.
            await make_bib(session, title=f"Paged late {inserted}")
            await session.commit()
            inserted += 1
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert len(seen) == len(set(seen)), "a row was served twice"
        assert expected <= set(seen), "a row that existed from the start was skipped"
        assert seen == sorted(seen)

    async def test_garbage_cursor_is_422(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/api/v1/bibs", params={"cursor": "!!!"})
        assert response.status_code == 422
        assert response.json()["errors"][0]["field"] == "cursor"

    @pytest.mark.parametrize("key", [2**63, -1, "1", True, 1.5])
    async def test_a_cursor_of_no_id_is_422(self, client: httpx.AsyncClient, key: object) -> None:
        """Well-formed but of no id a bib can have (ids are BIGINTs): refused, never a
        database error."""
        response = await client.get("/api/v1/bibs", params={"cursor": encode_cursor(key)})
        assert response.status_code == 422
        assert response.json()["errors"][0]["field"] == "cursor"
        largest = await client.get("/api/v1/bibs", params={"cursor": encode_cursor(2**63 - 1)})
        assert largest.json() == {"items": [], "next_cursor": None}

    async def test_limit_is_bounded(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/api/v1/bibs", params={"limit": 100000})
        assert response.status_code == 422

    async def test_the_bib_list_reads_its_own_query_as_fastapi_would(
        self, client: httpx.AsyncClient
    ) -> None:
        """`GET /bibs` reads its query string itself (`query_of`): the same 422 problem,
        and the same parameters in the OpenAPI document."""
        bad = await client.get("/api/v1/bibs", params={"limit": "x", "language": "EN"})
        assert bad.status_code == 422
        assert bad.headers["content-type"] == "application/problem+json"
        problem = bad.json()
        assert problem["type"] == "/problems/invalid-input"
        assert {e["field"] for e in problem["errors"]} == {"limit", "language"}
        spec = (await client.get("/openapi.json")).json()
        parameters = spec["paths"]["/api/v1/bibs"]["get"]["parameters"]
        assert [p["name"] for p in parameters][:3] == ["limit", "cursor", "title"]
        assert all(p["in"] == "query" and not p["required"] for p in parameters)
        assert parameters[0]["schema"]["maximum"] == 500


class TestDocs:
    async def test_docs_are_served_without_a_cdn(self, client: httpx.AsyncClient) -> None:
        for path in ("/docs", "/redoc"):
            page = await client.get(path)
            assert page.status_code == 200
            assert "cdn" not in page.text.lower()
            assert "fonts.googleapis" not in page.text
        assert (await client.get("/static/docs/swagger-ui-bundle.js")).status_code == 200
        assert (await client.get("/static/docs/redoc.standalone.js")).status_code == 200

    async def test_every_request_body_has_an_example(self, client: httpx.AsyncClient) -> None:
        spec = (await client.get("/openapi.json")).json()
        schemas = spec["components"]["schemas"]
        missing = []
        for path, operations in spec["paths"].items():
            for method, operation in operations.items():
                body = operation.get("requestBody")
                if not body:
                    continue
                for media in body["content"].values():
                    ref = media["schema"].get("$ref", "")
                    schema = schemas.get(ref.rsplit("/", 1)[-1], media["schema"])
                    if "examples" not in schema and "example" not in media:
                        missing.append(f"{method.upper()} {path}")
        assert missing == []
