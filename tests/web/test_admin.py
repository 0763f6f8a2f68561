"""/admin: admins only, same login as the web, every change audited."""

from __future__ import annotations

from html.parser import HTMLParser

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from factories import make_bib, make_branch, make_item, make_user
from shelfmark.audit.models import AuditEvent
from shelfmark.auth.roles import Role
from web.test_pages import HTML, log_in


async def test_anonymous_visitors_are_sent_to_the_login_page(client: httpx.AsyncClient) -> None:
    response = await client.get("/admin/", headers=HTML)
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=/admin"


async def test_a_librarian_or_patron_cannot_open_it(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    patron = await make_user(session, Role.PATRON)
    await session.commit()
    await log_in(client, patron.username)
    response = await client.get("/admin/", headers=HTML)
    assert response.status_code == 403
    assert "admin role" in response.text


async def test_logout_from_the_admin_ends_the_session(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    admin = await make_user(session, Role.ADMIN)
    await session.commit()
    await log_in(client, admin.username)
    assert (await client.get("/admin/", headers=HTML)).status_code == 200
    logged_out = await client.get("/admin/logout", headers=HTML)
    assert logged_out.status_code in {302, 303}
    again = await client.get("/admin/", headers=HTML)
    assert again.status_code == 303
    assert again.headers["location"] == "/login?next=/admin"


async def test_an_admin_edits_a_branch_and_it_is_audited(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    admin = await make_user(session, Role.ADMIN)
    branch = await make_branch(session, name="Old name")
    await session.commit()
    await log_in(client, admin.username)
    listing = await client.get("/admin/branch/list", headers=HTML)
    assert listing.status_code == 200
    assert branch.code in listing.text
    policy = listing.headers["content-security-policy"]
    assert "script-src 'self' 'sha256-" in policy
    assert "unsafe-inline" not in policy.split("script-src", 1)[1].split(";", 1)[0]
    edited = await client.post(
        f"/admin/branch/edit/{branch.id}",
        data={"code": branch.code, "name": "New name", "address": "", "opening_hours": "{}"},
        headers=HTML,
    )
    assert edited.status_code in {200, 302, 303}, edited.text[:500]
    await session.refresh(branch)
    assert branch.name == "New name"
    events = (
        await session.scalars(
            select(AuditEvent).where(
                AuditEvent.action == "admin.update", AuditEvent.object_id == str(branch.id)
            )
        )
    ).all()
    assert len(events) == 1
    assert events[0].actor_name == admin.username


async def test_password_hashes_are_never_shown(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    admin = await make_user(session, Role.ADMIN)
    await session.commit()
    await log_in(client, admin.username)
    details = await client.get(f"/admin/user/details/{admin.id}", headers=HTML)
    assert details.status_code == 200
    assert "argon2" not in details.text


class _FormValues(HTMLParser):
    """The values an edit form would post as it stands: inputs, selected options, text."""

    def __init__(self) -> None:
        super().__init__()
        self.values: dict[str, str] = {}
        self._select: str | None = None
        self._textarea: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        name = found.get("name")
        if tag == "input" and name and found.get("type") not in {"submit", "checkbox"}:
            self.values[name] = found.get("value") or ""
        elif tag == "input" and name and "checked" in found:
            self.values[name] = found.get("value") or "y"
        elif tag == "select" and name:
            self._select = name
        elif tag == "option" and self._select and "selected" in found:
            self.values[self._select] = found.get("value") or ""
        elif tag == "textarea" and name:
            self._textarea = name
            self.values[name] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "select":
            self._select = None
        elif tag == "textarea":
            self._textarea = None

    def handle_data(self, data: str) -> None:
        if self._textarea:
            self.values[self._textarea] += data


async def _form_values(client: httpx.AsyncClient, url: str) -> dict[str, str]:
    """What an edit form at `url` would post unchanged."""
    form = await client.get(url, headers=HTML)
    assert form.status_code == 200
    parser = _FormValues()
    parser.feed(form.text)
    return parser.values


async def _edit(client: httpx.AsyncClient, url: str, **changes: str) -> None:
    values = await _form_values(client, url)
    edited = await client.post(url, data=values | changes, headers=HTML)
    assert edited.status_code in {302, 303}, edited.text[:2000]


async def test_catalog_edits_reach_the_search_index_and_the_cache(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    """sqladmin writes bibs and copies itself, not through the catalog service: the index
    and the cache must hear of it all the same."""
    admin = await make_user(session, Role.ADMIN)
    bib = await make_bib(session, title="Zephyrine meadows")
    item = await make_item(session, bib=bib)
    await session.commit()
    await log_in(client, admin.username)
    assert (await client.get(f"/api/v1/bibs/{bib.id}")).json()["title"] == "Zephyrine meadows"
    item_url = f"/api/v1/items/{item.id}"
    assert (await client.get(item_url)).json()["status"] == "available"

    await _edit(client, f"/admin/bib/edit/{bib.id}", title="Quillwort marshes")
    assert (await client.get(f"/api/v1/bibs/{bib.id}")).json()["title"] == "Quillwort marshes"
    found = (await client.get("/api/v1/search", params={"q": "quillwort"})).json()
    assert [hit["id"] for hit in found["items"]] == [bib.id]
    gone = (await client.get("/api/v1/search", params={"q": "zephyrine"})).json()
    assert gone["items"] == []

    await _edit(client, f"/admin/item/edit/{item.id}", status="missing")
    assert (await client.get(item_url)).json()["status"] == "missing"


async def test_a_bib_edit_is_checked_by_the_api_s_rules(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    """The API sends a record as stored: sqladmin's JSON fields must not store what the API
    would refuse. A refused edit changes nothing; an accepted one is normalised (ISBN-13,
    a contributor's default role) and the ISBN lookup follows it."""
    admin = await make_user(session, Role.ADMIN)
    bib = await make_bib(session, title="Saxifrage")
    await session.commit()
    await log_in(client, admin.username)
    url = f"/admin/bib/edit/{bib.id}"
    values = await _form_values(client, url)

    refused = await client.post(
        url, data=values | {"contributors": '[{"role": "author"}]'}, headers=HTML
    )
    assert refused.status_code == 400
    assert "contributors.0.name" in refused.text
    assert (await client.get(f"/api/v1/bibs/{bib.id}")).json()["contributors"] == []

    changes = {"contributors": '[{"name": "Gray, Asa"}]', "isbns": '["0-441-47812-3"]'}
    await _edit(client, url, **changes)
    record = (await client.get(f"/api/v1/bibs/{bib.id}")).json()
    assert record["contributors"] == [{"name": "Gray, Asa", "role": "author"}]
    assert record["isbns"] == ["9780441478125"]
    found = (await client.get("/api/v1/bibs", params={"isbn": "0441478123"})).json()
    assert [hit["id"] for hit in found["items"]] == [bib.id]


async def test_circulation_statuses_are_not_set_or_cleared_by_an_item_edit(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    """As through the API: "on loan" with no loan (or a loan whose copy says "available")
    would leave circulation and the catalog disagreeing."""
    admin = await make_user(session, Role.ADMIN)
    item = await make_item(session)
    await session.commit()
    await log_in(client, admin.username)
    url = f"/admin/item/edit/{item.id}"
    values = await _form_values(client, url)

    refused = await client.post(url, data=values | {"status": "on_loan"}, headers=HTML)
    assert refused.status_code == 400
    assert "is set by checkouts, checkins and holds" in refused.text
    assert (await client.get(f"/api/v1/items/{item.id}")).json()["status"] == "available"

    await _edit(client, url, status="withdrawn", shelfmark="X 123")
    read = (await client.get(f"/api/v1/items/{item.id}")).json()
    assert (read["status"], read["shelfmark"]) == ("withdrawn", "X 123")

    item.status = "on_loan"  # as a checkout leaves it: its other fields stay editable
    await session.commit()
    await _edit(client, url, shelfmark="X 124")
    read = (await client.get(f"/api/v1/items/{item.id}")).json()
    assert (read["status"], read["shelfmark"]) == ("on_loan", "X 124")
