"""GET /api/v1/notices: staff see every notice, a patron their own; bad input is a problem."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from circulation.conftest import NOW, Desk
from factories import auth, make_patron, make_patron_user, make_user
from notices.conftest import end_of, lend
from shelfmark.auth.roles import Role
from shelfmark.notices import service
from shelfmark.notices.models import Notice
from shelfmark.patrons.models import Patron


async def notices_for(session: AsyncSession, desk: Desk, patron: Patron, count: int) -> list[int]:
    ids = []
    for index in range(count):
        loan = await lend(
            session, desk, due_at=end_of(NOW - timedelta(days=2 + index)), patron=patron
        )
        new = service.NewNotice("overdue", patron.id, loan.id, "email", level=1,
                                due_at=loan.due_at)  # fmt: skip
        ids += await service.write_notices(session, [new], now=NOW)
    return ids


@pytest.fixture
async def two_readers(session: AsyncSession, desk: Desk) -> tuple[Patron, Patron]:
    first = await make_patron(session, category=desk.category, branch=desk.branch)
    second = await make_patron(session, category=desk.category, branch=desk.branch)
    return first, second


class TestListNotices:
    async def test_staff_see_every_notice_newest_first_and_page_through(
        self, client: httpx.AsyncClient, session: AsyncSession, desk: Desk,
        two_readers: tuple[Patron, Patron],
    ) -> None:  # fmt: skip
        first, second = two_readers
        ids = await notices_for(session, desk, first, 2) + await notices_for(
            session, desk, second, 1
        )
        librarian = await make_user(session, Role.LIBRARIAN)
        await session.commit()

        page = await client.get("/api/v1/notices", params={"limit": 2}, headers=auth(librarian))
        assert page.status_code == 200, page.text
        body = page.json()
        assert [n["id"] for n in body["items"]] == [ids[2], ids[1]]
        rest = await client.get(
            "/api/v1/notices", params={"limit": 2, "cursor": body["next_cursor"]},
            headers=auth(librarian),
        )  # fmt: skip
        assert [n["id"] for n in rest.json()["items"]] == [ids[0]]
        assert rest.json()["next_cursor"] is None

        notice = body["items"][1]
        assert notice["kind"] == "overdue"
        assert notice["patron_card"] == first.card_number
        assert (notice["object_type"], notice["level"], notice["status"]) == ("loan", 1, "pending")
        assert notice["message_id"] == f"<notice-{ids[1]}@localhost>"
        assert notice["attempts"] == 0

    async def test_staff_filter_by_patron_card_status_and_kind(
        self, client: httpx.AsyncClient, session: AsyncSession, desk: Desk,
        two_readers: tuple[Patron, Patron],
    ) -> None:  # fmt: skip
        first, second = two_readers
        await notices_for(session, desk, first, 2)
        (sent,) = await notices_for(session, desk, second, 1)
        notice = await session.get(Notice, sent)
        assert notice is not None
        notice.status, notice.sent_at = "sent", NOW
        librarian = await make_user(session, Role.LIBRARIAN)
        await session.commit()
        headers = auth(librarian)

        by_card = await client.get(
            "/api/v1/notices", params={"patron_card": first.card_number}, headers=headers
        )
        assert {n["patron_card"] for n in by_card.json()["items"]} == {first.card_number}
        assert len(by_card.json()["items"]) == 2
        by_status = await client.get("/api/v1/notices", params={"status": "sent"}, headers=headers)
        assert [n["id"] for n in by_status.json()["items"]] == [sent]
        by_kind = await client.get(
            "/api/v1/notices", params={"kind": "hold-ready"}, headers=headers
        )
        assert by_kind.json()["items"] == []

    async def test_a_patron_sees_only_their_own(
        self, client: httpx.AsyncClient, session: AsyncSession, desk: Desk,
        two_readers: tuple[Patron, Patron],
    ) -> None:  # fmt: skip
        first, second = two_readers
        mine = await notices_for(session, desk, first, 2)
        (theirs,) = await notices_for(session, desk, second, 1)
        user = await make_patron_user(session, first)
        await session.commit()

        listed = await client.get("/api/v1/notices", headers=auth(user))
        assert sorted(n["id"] for n in listed.json()["items"]) == sorted(mine)
        # Asking for another card's notices shows nothing of theirs.
        other = await client.get(
            "/api/v1/notices", params={"patron_card": second.card_number}, headers=auth(user)
        )
        assert other.json()["items"] == []
        own = await client.get(f"/api/v1/notices/{mine[0]}", headers=auth(user))
        assert own.status_code == 200
        forbidden = await client.get(f"/api/v1/notices/{theirs}", headers=auth(user))
        assert forbidden.status_code == 403
        assert forbidden.json()["type"] == "/problems/forbidden"

    async def test_a_user_who_is_neither_staff_nor_a_patron_sees_none(
        self, client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        user = await make_user(session, Role.PATRON)
        await session.commit()
        response = await client.get("/api/v1/notices", headers=auth(user))
        assert response.status_code == 403
        assert response.headers["content-type"] == "application/problem+json"

    async def test_anonymous_visitors_must_log_in(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/api/v1/notices")
        assert response.status_code == 401
        assert response.json()["type"] == "/problems/unauthenticated"

    @pytest.mark.parametrize(
        ("params", "field"),
        [
            ({"status": "lost-in-the-post"}, "status"),
            ({"kind": "birthday"}, "kind"),
            ({"limit": 0}, "limit"),
            ({"patron_card": "has space"}, "patron_card"),
            ({"cursor": "not-a-cursor!"}, "cursor"),
        ],
    )
    async def test_bad_input_is_a_422_problem(
        self, client: httpx.AsyncClient, session: AsyncSession, params: dict[str, object],
        field: str,
    ) -> None:  # fmt: skip
        librarian = await make_user(session, Role.LIBRARIAN)
        await session.commit()
        response = await client.get("/api/v1/notices", params=params, headers=auth(librarian))
        assert response.status_code == 422
        problem = response.json()
        assert response.headers["content-type"] == "application/problem+json"
        assert problem["type"] == "/problems/invalid-input"
        assert [e["field"] for e in problem["errors"]] == [field]


class TestGetNotice:
    async def test_an_unknown_notice_is_a_404_problem(
        self, client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        librarian = await make_user(session, Role.LIBRARIAN)
        await session.commit()
        response = await client.get("/api/v1/notices/999999", headers=auth(librarian))
        assert response.status_code == 404
        assert response.json()["type"] == "/problems/notice-not-found"
        bad = await client.get("/api/v1/notices/0", headers=auth(librarian))
        assert bad.status_code == 422
