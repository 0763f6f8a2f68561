"""Catalog search: ranked hits, facet counts and availability, on either backend.

A query that is an ISBN-10 or ISBN-13 (any hyphenation) finds the bibs that carry it; when
none does, and for every other query, the words are searched. Ranking, the same on both
databases: score = title tier + r / (1 + r), where r is the backend's relevance (bm25 with
column weights on SQLite, ts_rank with A-D weights on PostgreSQL) and the title tier is 4
when the query is the title (leading articles ignored), 3 when one is the start of the other
(a title typed partly, or a title followed by more words), 2 when the title contains the
query as a phrase, else 0: exact and near-exact titles first, then the rest by relevance. A
query that finds nothing is tried again, wider (see `backends`).

A request costs one statement whatever the page size (see `statements`), plus a lookup of
typo candidates and a second statement when the exact words found nothing. The cursor is
keyset over (score, bib id) and names the backend stage and a fingerprint of the query, so
that a page never repeats a row of an earlier one and a cursor is refused with another
query. (On SQLite bm25 depends on corpus statistics: a write between two pages may move a
row across the boundary; ts_rank depends on the row only.) Browsing, filters without words,
lists bibs by id.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import astuple, dataclass, fields
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from shelfmark import hotpath
from shelfmark.cache import SEARCH_AVAILABILITY_KEY, SEARCH_CATALOG_KEY, Cache
from shelfmark.errors import InvalidInput
from shelfmark.pagination import decode_cursor, encode_cursor
from shelfmark.search.backends import Plan, backend_for
from shelfmark.search.schemas import (
    BranchAvailability,
    Facets,
    FacetValue,
    SearchHit,
    SearchPage,
)
from shelfmark.search.statements import AVAILABILITY, FACETS, ISBN, Shape, search_statement
from shelfmark.search.text import ParsedQuery, fold, parse_query

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
FACET_LIMIT = 20
BROWSE = 0
ISBN_STAGE = 9  # tried before the backend's stages (1, 2, 3) when the query is an ISBN


@dataclass(frozen=True, slots=True)
class SearchFilters:
    material_type: str | None = None
    language: str | None = None
    year_from: int | None = None
    year_to: int | None = None
    subject: str | None = None  # a main heading, compared folded
    branch: str | None = None  # a branch code holding a copy
    available: bool = False  # a copy is available (at `branch` when given)

    @property
    def given(self) -> frozenset[str]:
        """The names of the filters that are set."""
        return frozenset(f.name for f in fields(self) if getattr(self, f.name) not in (None, False))


@dataclass(frozen=True, slots=True)
class _After:
    stage: int
    score: float
    bib_id: int


def check_search(parsed: ParsedQuery, filters: SearchFilters, limit: int) -> None:
    """Refuse what cannot be answered, with the field at fault."""
    errors: list[dict[str, str]] = []
    if not 1 <= limit <= MAX_LIMIT:
        errors.append({"field": "limit", "message": f"between 1 and {MAX_LIMIT}"})
    if (
        filters.year_from is not None
        and filters.year_to is not None
        and filters.year_from > filters.year_to
    ):
        errors.append({"field": "year_from", "message": "after year_to"})
    if parsed.is_empty and not filters.given:
        errors.append({"field": "q", "message": "no word to search for, and no filter"})
    if errors:
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        raise InvalidInput(f"The search is not valid: {summary}", errors=errors)


async def search(
    session: AsyncSession,
    *,
    q: str | None,
    filters: SearchFilters,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> SearchPage:
    """A page of ranked hits for `q` (empty: browse by filters), with total and facets."""
    parsed = parse_query(q)
    check_search(parsed, filters, limit)
    fingerprint = _fingerprint(parsed, filters)
    after = _decode(cursor, fingerprint)
    dialect = session.get_bind().dialect.name
    params = _params(parsed, filters, limit, after)
    shape = Shape(dialect, None, filters.given, after is not None)
    stage: int = BROWSE
    rows: Sequence[Mapping[str, Any]] = []
    if parsed.is_empty:
        rows = await hotpath.rows(session, search_statement(shape), params)
    else:
        backend = backend_for(dialect)
        stages = (ISBN_STAGE,) * (parsed.isbn is not None) + backend.stages
        for candidate in (after.stage,) if after else stages:
            if candidate == ISBN_STAGE:
                plan: Plan | None = Plan(ISBN, {})
            else:
                plan = await backend.plan(session, parsed, candidate)
            if plan is None:
                continue
            stage = candidate
            shape = Shape(dialect, plan.kind, shape.filters, shape.after)
            rows = await hotpath.rows(session, search_statement(shape), params | plan.params)
            if any(row["kind"] == "hit" for row in rows):
                break
    return _page(rows, limit, stage, fingerprint)


async def cached_search(
    session: AsyncSession,
    cache: Cache,
    *,
    q: str | None,
    filters: SearchFilters,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> bytes:
    """`search` through the cache, as the page's JSON: read from the cache while the catalog
    has not changed.

    A page is cached under the version of the catalog (bumped once a write to a bib or a
    copy commits, see `search.index`) and, when the search filters on availability, of
    the copies' statuses (bumped by every checkout and checkin). A page read from the cache
    gets its copies' availability afresh (one indexed statement for the page's bibs), so a
    checkout never leaves a cached page showing a copy on the shelf; a broad search, whose
    facets count over many thousands of bibs, is then paid for once per catalog change
    rather than once per reader. A failing cache (version -1) is bypassed.
    """
    versions = [await cache.version(SEARCH_CATALOG_KEY)]
    if filters.available:
        versions.append(await cache.version(SEARCH_AVAILABILITY_KEY))
    search_args: dict[str, Any] = {"q": q, "filters": filters, "limit": limit, "cursor": cursor}
    if -1 in versions:
        return (await search(session, **search_args)).model_dump_json().encode()
    text = repr((q or "", astuple(filters), limit, cursor))
    digest = hashlib.blake2b(text.encode(), digest_size=16).hexdigest()
    key = f"search:{digest}@{'.'.join(map(str, versions))}"
    body = await cache.get(key)
    if body is None:
        filling = _FILLING.get(key)
        if filling is not None:  # the same page is being searched: share its answer
            body = await asyncio.shield(filling)
            if body is not None:
                return body
        return await _fill(session, cache, key, **search_args)
    # The page as stored (it was checked when made), with its availability read afresh.
    page = orjson.loads(body)
    if page["items"]:
        copies = await availability(session, [hit["id"] for hit in page["items"]])
        for hit in page["items"]:
            hit["availability"] = copies.get(hit["id"], [])
    return orjson.dumps(page)


# Pages being searched by this process, by versioned key: when a popular page is missing
# (a new catalog version, an expired entry), the requests that want it meanwhile wait for
# the one search rather than each running it (which, for a broad search, would pile up
# seconds of database work at once). A waiter whose search failed searches for itself.
_FILLING: dict[str, asyncio.Future[bytes | None]] = {}


async def _fill(session: AsyncSession, cache: Cache, key: str, **search_args: Any) -> bytes:
    filling: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
    _FILLING[key] = filling
    body = None
    try:
        body = (await search(session, **search_args)).model_dump_json().encode()
        await cache.set(key, body)
        return body
    finally:
        filling.set_result(body)
        if _FILLING.get(key) is filling:
            del _FILLING[key]


async def availability(
    session: AsyncSession, bib_ids: Sequence[int]
) -> dict[int, list[dict[str, Any]]]:
    """Copies held and available per branch (`BranchAvailability` fields) for each of
    `bib_ids`."""
    statement = AVAILABILITY[session.get_bind().dialect.name]
    copies: dict[int, list[dict[str, Any]]] = {}
    for row in await hotpath.rows(session, statement, {"ids": list(bib_ids)}):
        copies.setdefault(row["bib_id"], []).append(
            {"branch": row["code"], "available": row["available"], "total": row["total"]}
        )
    return copies


def _page(
    rows: Sequence[Mapping[str, Any]], limit: int, stage: int, fingerprint: str
) -> SearchPage:
    """The page from the rows of the search statement (hits, facets, copies)."""
    hits = sorted(
        (row for row in rows if row["kind"] == "hit"), key=lambda r: (-r["score"], r["bib_id"])
    )
    copies: dict[int, list[BranchAvailability]] = {}
    for row in sorted((r for r in rows if r["kind"] == "copies"), key=lambda r: r["value"]):
        copies.setdefault(row["bib_id"], []).append(
            BranchAvailability(branch=row["value"], available=row["available"], total=row["count"])
        )
    facet_rows = [row for row in rows if row["kind"] == "facet"]
    next_cursor = None
    if len(hits) > limit:
        last = hits[limit - 1]
        next_cursor = encode_cursor([stage, last["score"], last["bib_id"], fingerprint])
    return SearchPage(
        items=[_hit(row, copies.get(row["bib_id"], [])) for row in hits[:limit]],
        total=next((row["count"] for row in facet_rows if row["facet"] == "total"), 0),
        facets=_facets(facet_rows),
        next_cursor=next_cursor,
    )


def _params(
    parsed: ParsedQuery, filters: SearchFilters, limit: int, after: _After | None
) -> dict[str, Any]:
    """Every value a search statement may be bound with (each uses those it names)."""
    return {
        "limit": limit + 1,  # the extra row tells that another page exists
        "facet_limit": FACET_LIMIT,
        "isbn": parsed.isbn,
        "title_key": parsed.key,
        "title_start": parsed.key + "%",
        "title_phrase": f"% {parsed.phrase}%",
        "material_type": filters.material_type,
        "language": filters.language,
        "year_from": filters.year_from,
        "year_to": filters.year_to,
        "subject": fold(filters.subject) if filters.subject else None,
        "branch": filters.branch,
        "after_score": after.score if after else None,
        "after_id": after.bib_id if after else None,
    }


def _hit(row: Mapping[str, Any], copies: list[BranchAvailability]) -> SearchHit:
    return SearchHit(
        id=row["bib_id"], title=row["title"], subtitle=row["subtitle"],
        contributors=row["contributors"], publication_year=row["publication_year"],
        language=row["language"], material_type=row["material_type"],
        control_number=row["control_number"], isbns=row["isbns"], availability=copies,
    )  # fmt: skip


def _facets(rows: Sequence[Mapping[str, Any]]) -> Facets:
    values: dict[str, list[FacetValue]] = {name: [] for name in FACETS}
    for row in sorted(rows, key=lambda r: (-r["count"], r["value"] or "")):
        name, value = row["facet"], row["value"]
        if name in values:
            values[name].append(
                FacetValue(value=int(value) if name == "year" else value, count=row["count"])
            )
    return Facets(**values)


# --- cursor -----------------------------------------------------------------------------


def _fingerprint(parsed: ParsedQuery, filters: SearchFilters) -> str:
    text = repr((parsed.tokens, parsed.isbn, astuple(filters)))
    return hashlib.blake2s(text.encode(), digest_size=6).hexdigest()


def _decode(cursor: str | None, fingerprint: str) -> _After | None:
    key = decode_cursor(cursor)
    if key is None:
        return None
    match key:
        case [int(stage), int() | float() as score, int(bib_id), str(seen)] if seen == fingerprint:
            return _After(stage, float(score), bib_id)
    raise InvalidInput(
        "The cursor belongs to another search (the query or a filter changed).",
        errors=[{"field": "cursor", "message": "not a cursor of this search"}],
    )
