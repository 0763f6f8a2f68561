"""The OPAC results page: hits, facets that narrow, paging, all without JavaScript."""

from __future__ import annotations

import re

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from factories import make_bib, make_branch, make_item

HTML = {"accept": "text/html"}


async def test_results_facets_and_availability(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    branch = await make_branch(session, code="OPACSRCH")
    german = await make_bib(
        session, title="Görlitz und die Oberlausitz", language="ger", publication_year=1999,
        subjects=["Görlitz (Germany)"],
    )  # fmt: skip
    await make_item(session, bib=german, branch=branch)
    await make_bib(session, title="Görlitz in old photographs", language="eng")
    await session.commit()

    page = await client.get("/search", params={"q": "gorlitz"}, headers=HTML)
    assert page.status_code == 200
    assert "2 titles" in page.text
    assert f'href="/bibs/{german.id}"' in page.text
    assert "OPACSRCH: 1 of 1 available" in page.text
    narrowed_url = re.search(r'href="(/search\?[^"]*language=ger[^"]*)"', page.text)
    assert narrowed_url
    narrowed = await client.get(narrowed_url.group(1).replace("&amp;", "&"), headers=HTML)
    assert "1 title" in narrowed.text
    assert "language: ger" in narrowed.text


async def test_paging(client: httpx.AsyncClient, session: AsyncSession) -> None:
    for n in range(25):
        await make_bib(session, title=f"Zymurgy handbook volume {n}")
    await session.commit()
    first = await client.get("/search", params={"q": "zymurgy"}, headers=HTML)
    assert "25 titles" in first.text
    next_url = re.search(r'href="([^"]+)" rel="next"', first.text)
    assert next_url
    second = await client.get(next_url.group(1).replace("&amp;", "&"), headers=HTML)
    ids_first = set(re.findall(r'href="/bibs/(\d+)"', first.text))
    ids_second = set(re.findall(r'href="/bibs/(\d+)"', second.text))
    assert len(ids_first) == 20
    assert len(ids_second) == 5
    assert not ids_first & ids_second


async def test_titles_are_escaped(client: httpx.AsyncClient, session: AsyncSession) -> None:
    await make_bib(session, title="<script>alert('x')</script> quokka")
    await session.commit()
    page = await client.get("/search", params={"q": "quokka"}, headers=HTML)
    assert "<script>alert" not in page.text
    assert "&lt;script&gt;" in page.text


async def test_nothing_to_search_is_explained(client: httpx.AsyncClient) -> None:
    page = await client.get("/search", params={"q": "  "}, headers=HTML)
    assert page.status_code == 200
    assert 'role="alert"' in page.text
    assert 'role="searchbox"' in page.text
