"""The SQL of a search: one statement per shape, built once, run by the hot-read path.

A shape is what changes the SQL of a search: the kind of match (a backend's, "isbn", or
browsing), which filters are given, and whether a cursor continues an earlier page.
Everything else — the query text, the title compared, the filter values, the cursor, the
limit — is a named bound value. So each shape's statement is built and compiled once per
process (`hotpath.rows` runs it on the driver's connection on PostgreSQL), and constants
are written as SQL literals, never as anonymous bound values.

One statement (one round trip) answers a search whatever its page size: a UNION ALL of
rows of three kinds, told apart by `kind` — "hit": a bib of the ranked page with its fields;
"facet": the total (facet "total") and each facet's most frequent values, counted once over
the matched ids; "copies": copies held and available per branch for each bib of the page.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import cache
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Float,
    Integer,
    String,
    Text,
    and_,
    any_,
    bindparam,
    case,
    cast,
    distinct,
    exists,
    func,
    literal_column,
    null,
    or_,
    select,
    union_all,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.selectable import Join

from shelfmark.catalog.models import Bib, BibIsbn, Branch, Item
from shelfmark.db import JSONType
from shelfmark.search.backends import AnySelect, Match, backend_for
from shelfmark.search.models import BibSearch, BibSearchSubject

FACETS = ("language", "material_type", "year", "subject", "branch")


def _sql(text: str, type_: Any = Integer) -> ColumnElement[Any]:
    return literal_column(text, type_)


ZERO, ONE = _sql("0", Float), _sql("1.0", Float)
_HELD = and_(Item.status != _sql("'withdrawn'", String), Item.status != _sql("'lost'", String))
_AVAILABLE = Item.status == _sql("'available'", String)


@dataclass(frozen=True, slots=True)
class Shape:
    dialect: str
    kind: str | None  # the backend's match kind, or ISBN; None when browsing
    filters: frozenset[str]  # the names of the filters given (`SearchFilters.given`)
    after: bool


@cache
def search_statement(shape: Shape) -> AnySelect:
    match: Match | None = None
    if shape.kind == ISBN:
        match = _ISBN_MATCH
    elif shape.kind is not None:
        match = backend_for(shape.dialect).match(shape.kind)
    top = _top_page(match, shape)
    return select(union_all(_hit_rows(top), *_facet_rows(match, shape), _copy_rows(top)).subquery())


# Every row of the statement has these columns; a kind leaves the others NULL.
COLUMNS: tuple[tuple[str, Any], ...] = (
    ("bib_id", BigInteger), ("score", Float), ("title", Text), ("subtitle", Text),
    ("contributors", JSONType), ("publication_year", Integer), ("language", String),
    ("material_type", String), ("control_number", String), ("isbns", JSONType),
    ("facet", String), ("value", String), ("count", BigInteger), ("available", BigInteger),
)  # fmt: skip


def _row(kind: str, **given: Any) -> list[ColumnElement[Any]]:
    columns: list[ColumnElement[Any]] = [_sql(f"'{kind}'", String).label("kind")]
    for name, type_ in COLUMNS:
        columns.append(given.pop(name, cast(null(), type_)).label(name))
    assert not given, given
    return columns


def _isbn_match() -> Match:
    """The bibs that carry the ISBN `isbn` (normalised to ISBN-13 like `bib_isbns`)."""
    isbn = BibIsbn.isbn == bindparam("isbn", type_=String)
    return Match(
        ids=select(BibIsbn.bib_id).where(isbn),
        ranked=select(BibIsbn.bib_id, ZERO.label("relevance"), BibSearch.title_key,
                      BibSearch.title_text)
        .join(BibSearch, BibSearch.bib_id == BibIsbn.bib_id)
        .where(isbn),
    )  # fmt: skip


ISBN = "isbn"
_ISBN_MATCH = _isbn_match()


def _title_tier(title_key: Any, title_text: Any) -> ColumnElement[Any]:
    """4: the query is the title (leading articles ignored); 3: one starts the other; 2: the
    title holds the query as a phrase; else 0."""
    key = bindparam("title_key", type_=String)
    return case(
        (title_key == key, _sql("4")),
        (
            or_(
                title_key.like(bindparam("title_start", type_=String)),
                key.like(title_key + _sql("' %'", String)),
            ),
            _sql("3"),
        ),
        (
            (_sql("' '", String) + title_text).like(bindparam("title_phrase", type_=String)),
            _sql("2"),
        ),
        else_=_sql("0"),
    )


def _filter_clauses(given: frozenset[str]) -> list[ColumnElement[bool]]:
    """Conditions on `BibSearch` (joined by the caller) for the filters given."""
    clauses: list[ColumnElement[bool]] = []
    if "material_type" in given:
        clauses.append(BibSearch.material_type == bindparam("material_type", type_=String))
    if "language" in given:
        clauses.append(BibSearch.language == bindparam("language", type_=String))
    if "year_from" in given:
        clauses.append(BibSearch.publication_year >= bindparam("year_from", type_=Integer))
    if "year_to" in given:
        clauses.append(BibSearch.publication_year <= bindparam("year_to", type_=Integer))
    if "subject" in given:
        subject = BibSearchSubject.key == bindparam("subject", type_=String)
        clauses.append(exists().where(BibSearchSubject.bib_id == BibSearch.bib_id, subject))
    if "branch" in given or "available" in given:
        copies = _copy_clauses(branch="branch" in given, available="available" in given)
        clauses.append(exists().where(Item.bib_id == BibSearch.bib_id, *copies))
    return clauses


def _copy_clauses(*, branch: bool, available: bool) -> list[ColumnElement[bool]]:
    """A copy held (neither withdrawn nor lost); available; at the branch `branch`."""
    clauses: list[ColumnElement[bool]] = [_AVAILABLE if available else _HELD]
    if branch:
        code = bindparam("branch", type_=String)
        clauses.append(
            Item.branch_id == select(Branch.id).where(Branch.code == code).scalar_subquery()
        )
    return clauses


def _ranked(match: Match | None, shape: Shape) -> AnySelect:
    clauses = _filter_clauses(shape.filters)
    if match is None:
        return select(BibSearch.bib_id, ZERO.label("score")).where(*clauses)
    hits = match.ranked.cte("hits").prefix_with("MATERIALIZED")
    relevance = hits.c.relevance
    score = _title_tier(hits.c.title_key, hits.c.title_text) + relevance / (ONE + relevance)
    ranked = select(hits.c.bib_id, cast(score, Float).label("score"))
    if clauses:
        ranked = ranked.join(BibSearch, BibSearch.bib_id == hits.c.bib_id).where(*clauses)
    return ranked


def _top_page(match: Match | None, shape: Shape) -> Any:
    """Up to `limit` hits after the cursor's (score, bib id), best first."""
    ranked = _ranked(match, shape).subquery("ranked")
    page = select(ranked.c.bib_id, ranked.c.score)
    if shape.after:
        score = bindparam("after_score", type_=Float)
        after_id = bindparam("after_id", type_=BigInteger)
        page = page.where(
            or_(ranked.c.score < score, and_(ranked.c.score == score, ranked.c.bib_id > after_id))
        )
    limit = bindparam("limit", type_=Integer)
    ordered = page.order_by(ranked.c.score.desc(), ranked.c.bib_id).limit(limit)
    return ordered.cte("top").prefix_with("MATERIALIZED")


def _hit_rows(top: Any) -> AnySelect:
    fields = {name: getattr(Bib, name) for name in _HIT_FIELDS}
    return select(*_row("hit", bib_id=top.c.bib_id, score=top.c.score, **fields)).join(
        Bib, Bib.id == top.c.bib_id
    )


_HIT_FIELDS = ("title", "subtitle", "contributors", "publication_year", "language",
               "material_type", "control_number", "isbns")  # fmt: skip


def _copy_rows(top: Any) -> AnySelect:
    """Copies held and available per branch, for each bib of the page."""
    available = func.sum(case((_AVAILABLE, _sql("1")), else_=_sql("0")))
    columns = _row(
        "copies", bib_id=Item.bib_id, value=Branch.code, count=func.count(), available=available
    )
    return (
        select(*columns)
        .select_from(top.join(Item, Item.bib_id == top.c.bib_id))
        .join(Branch, Branch.id == Item.branch_id)
        .where(_HELD)
        .group_by(Item.bib_id, Branch.code)
    )


def _availability(ids: ColumnElement[bool]) -> AnySelect:
    available = func.sum(case((_AVAILABLE, _sql("1")), else_=_sql("0"))).label("available")
    return (
        select(Item.bib_id, Branch.code, func.count().label("total"), available)
        .join(Branch, Branch.id == Item.branch_id)
        .where(ids, _HELD)
        .group_by(Item.bib_id, Branch.code)
        .order_by(Item.bib_id, Branch.code)
    )


# Copies held and available per branch for the bibs `ids` (a cached page's availability,
# read afresh). One statement per dialect: PostgreSQL binds the ids as one array, so that
# the SQL never changes; SQLite expands a list.
AVAILABILITY: dict[str, AnySelect] = {
    "postgresql": _availability(Item.bib_id == any_(bindparam("ids", type_=ARRAY(BigInteger)))),
    "sqlite": _availability(Item.bib_id.in_(bindparam("ids", expanding=True))),
}


def _facet_rows(match: Match | None, shape: Shape) -> list[AnySelect]:
    """The matched ids with the columns that facets count, once; then the total and one
    arm per facet, each its FACET_LIMIT most frequent values."""
    facet_columns = (BibSearch.language, BibSearch.material_type, BibSearch.publication_year)
    if match is None:
        matched = select(BibSearch.bib_id, *facet_columns)
    else:
        hits = match.ids.subquery("hits")
        matched = select(hits.c.bib_id, *facet_columns).join(
            BibSearch, BibSearch.bib_id == hits.c.bib_id
        )
    m = matched.where(*_filter_clauses(shape.filters)).cte("matched").prefix_with("MATERIALIZED")
    count = func.count().label("count")
    arms: list[AnySelect] = [
        select(_facet("total"), cast(null(), String).label("value"), count).select_from(m)
    ]
    for name, value in (
        ("language", m.c.language),
        ("material_type", m.c.material_type),
        ("year", cast(m.c.publication_year, String)),
    ):
        arm = select(_facet(name), value, count).where(value.is_not(None))
        arms.append(_top(arm.group_by(value)))
    subjects = DrivenBy(m, BibSearchSubject, BibSearchSubject.bib_id == m.c.bib_id)
    heading = func.min(BibSearchSubject.heading)
    arms.append(
        _top(
            select(_facet("subject"), heading, count)
            .select_from(subjects)
            .group_by(BibSearchSubject.key)
        )
    )
    copies = m.join(Item, Item.bib_id == m.c.bib_id).join(Branch, Branch.id == Item.branch_id)
    bibs = func.count(distinct(Item.bib_id)).label("count")
    arms.append(
        _top(
            select(_facet("branch"), Branch.code, bibs)
            .select_from(copies)
            .where(*_copy_clauses(branch=False, available="available" in shape.filters))
            .group_by(Branch.code)
        )
    )
    rows = []
    for arm in arms:
        sub = arm.subquery()
        facet, value, total = sub.c
        rows.append(select(*_row("facet", facet=facet, value=value, count=total)))
    return rows


class DrivenBy(Join):
    """An inner join whose left side is the outer loop, whatever the planner estimates.

    SQLite knows nothing of a materialised CTE's size: for the subject facet it chose to scan
    every heading in key order (to group without sorting) and look each up in the matched
    bibs, 37 ms on 250,000 bibs for an ISBN search that matched one, against 0.4 ms the
    other way round. CROSS JOIN is how SQLite is told the order; PostgreSQL plans this join
    well and gets an ordinary JOIN.
    """

    inherit_cache = True


@compiles(DrivenBy, "sqlite")
def _cross_join(join: DrivenBy, compiler: SQLCompiler, **kw: Any) -> str:
    kw.pop("asfrom", None)
    from_linter = kw.get("from_linter")
    if from_linter is not None:  # the join connects its sides (no cartesian warning)
        from_linter.edges.update(
            itertools.product(join.left._from_objects, join.right._from_objects)
        )
    left = join.left._compiler_dispatch(compiler, asfrom=True, **kw)
    right = join.right._compiler_dispatch(compiler, asfrom=True, **kw)
    assert join.onclause is not None
    return f"{left} CROSS JOIN {right} ON {join.onclause._compiler_dispatch(compiler, **kw)}"


def _facet(name: str) -> ColumnElement[Any]:
    return _sql(f"'{name}'", String).label("facet")


def _top(arm: AnySelect) -> AnySelect:
    """The most frequent values of one facet."""
    value, count = arm.selected_columns[1], arm.selected_columns[2]
    return arm.order_by(count.desc(), value).limit(bindparam("facet_limit", type_=Integer))
