"""The SQL of each report: its columns and one SELECT that does the counting in the database.

Every report is an aggregate or a filtered list computed by the database and streamed out
row by row; nothing is loaded whole into Python. Days are UTC days on both databases.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal

from sqlalchemy import Date, Select, case, func, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement

from shelfmark.catalog.models import Bib, Branch, Item
from shelfmark.circulation.models import Fee, Loan
from shelfmark.patrons.models import Patron, PatronCategory
from shelfmark.reports.schemas import DEFAULT_LIMIT, ReportParams

Kind = Literal["text", "int", "date", "datetime", "money"]
AnySelect = Select[*tuple[Any, ...]]


@dataclass(frozen=True, slots=True)
class Column:
    title: str
    kind: Kind
    width: int = 14  # in characters, for the spreadsheet


@dataclass(frozen=True, slots=True)
class Report:
    title: str
    columns: tuple[Column, ...]
    statement: AnySelect
    # A row as the file shows it, when that is more than the row itself (a derived column).
    shape: Callable[[Sequence[Any]], Sequence[Any]] = tuple


@dataclass(frozen=True, slots=True)
class Scope:
    """The filters, resolved: a branch id rather than its code, a moment for "today"."""

    params: ReportParams
    branch_id: int | None
    now: datetime


class utc_day(FunctionElement[date]):  # noqa: N801 - named like the SQL function it stands for
    """The UTC calendar day of a timestamp column."""

    type = Date()
    inherit_cache = True


@compiles(utc_day, "postgresql")
def _utc_day_postgresql(element: utc_day, compiler: SQLCompiler, **kw: Any) -> str:
    return f"CAST(timezone('UTC', {compiler.process(element.clauses, **kw)}) AS DATE)"


@compiles(utc_day, "sqlite")
def _utc_day_sqlite(element: utc_day, compiler: SQLCompiler, **kw: Any) -> str:
    # UTCDateTime keeps UTC as text on SQLite: date() reads the day from it.
    return f"date({compiler.process(element.clauses, **kw)})"


def _start(day: date) -> datetime:
    return datetime.combine(day, time.min, UTC)


def _loans_in(scope: Scope) -> list[ColumnElement[bool]]:
    """Loans made in the date range, at the branch."""
    params, conditions = scope.params, []
    if params.from_date is not None:
        conditions.append(Loan.checked_out_at >= _start(params.from_date))
    if params.to_date is not None:
        conditions.append(Loan.checked_out_at < _start(params.to_date + timedelta(days=1)))
    if scope.branch_id is not None:
        conditions.append(Loan.branch_id == scope.branch_id)
    return conditions


def loans_per_branch_day(scope: Scope) -> Report:
    day = utc_day(Loan.checked_out_at).label("day")
    statement = (
        select(day, Branch.code, Branch.name, func.count(Loan.id))
        .join(Branch, Branch.id == Loan.branch_id)
        .where(*_loans_in(scope))
        .group_by(day, Branch.code, Branch.name)
        .order_by(day, Branch.code)
    )
    columns = (Column("Day", "date", 12), Column("Branch", "text", 10),
               Column("Branch name", "text", 30), Column("Loans", "int", 8))  # fmt: skip
    return Report("Loans per branch and day", columns, statement)


def overdue(scope: Scope) -> Report:
    statement = (
        select(
            Loan.due_at,
            Item.barcode,
            Bib.title,
            Branch.code,
            Patron.card_number,
            Patron.name,
            Patron.email,
            Patron.phone,
            Loan.checked_out_at,
            Loan.renewals,
            Loan.lost_at,
        )
        .join(Item, Item.id == Loan.item_id)
        .join(Bib, Bib.id == Item.bib_id)
        .join(Branch, Branch.id == Loan.branch_id)
        .join(Patron, Patron.id == Loan.patron_id)  # an open loan always names its patron
        .where(Loan.returned_at.is_(None), Loan.due_at < scope.now)
        .order_by(Loan.due_at, Loan.id)
    )
    if scope.branch_id is not None:
        statement = statement.where(Loan.branch_id == scope.branch_id)
    today = scope.now.date()

    def shape(row: Sequence[Any]) -> Sequence[Any]:
        due: datetime = row[0]
        return (due, (today - due.date()).days, *row[1:])

    columns = (
        Column("Due (UTC)", "datetime", 17), Column("Days overdue", "int", 8),
        Column("Item barcode", "text", 16), Column("Title", "text", 40),
        Column("Branch", "text", 10), Column("Patron card", "text", 16),
        Column("Patron", "text", 24), Column("E-mail", "text", 28), Column("Phone", "text", 16),
        Column("Checked out (UTC)", "datetime", 17), Column("Renewals", "int", 8),
        Column("Declared lost (UTC)", "datetime", 17),
    )  # fmt: skip
    return Report("Overdue loans", columns, statement, shape)


def _copies(scope: Scope) -> ColumnElement[int]:
    """Copies of the title in the collection (at the branch), for each row's title."""
    query = select(func.count(Item.id)).where(Item.bib_id == Bib.id, Item.status != "withdrawn")
    if scope.branch_id is not None:
        query = query.where(Item.branch_id == scope.branch_id)
    return query.correlate(Bib).scalar_subquery()


_BORROWED_COLUMNS = (
    Column("Title id", "int", 9), Column("Title", "text", 40), Column("Material type", "text", 12),
    Column("Language", "text", 9), Column("Year", "int", 6), Column("Copies", "int", 7),
    Column("Loans", "int", 7), Column("Last loan (UTC)", "datetime", 17),
)  # fmt: skip


def _loans_per_title(scope: Scope) -> Any:
    return (
        select(
            Item.bib_id,
            func.count(Loan.id).label("loans"),
            func.max(Loan.checked_out_at).label("last"),
        )
        .join(Item, Item.id == Loan.item_id)
        .where(*_loans_in(scope))
        .group_by(Item.bib_id)
        .subquery()
    )


def most_borrowed(scope: Scope) -> Report:
    counts = _loans_per_title(scope)
    statement = (
        select(
            Bib.id,
            Bib.title,
            Bib.material_type,
            Bib.language,
            Bib.publication_year,
            _copies(scope),
            counts.c.loans,
            counts.c.last,
        )
        .join(counts, counts.c.bib_id == Bib.id)
        .order_by(counts.c.loans.desc(), Bib.id)
        .limit(scope.params.limit or DEFAULT_LIMIT)
    )
    return Report("Most borrowed titles", _BORROWED_COLUMNS, statement)


def least_borrowed(scope: Scope) -> Report:
    """Titles with copies in the collection (at the branch), fewest loans first — never
    borrowed in the period counts as 0."""
    counts = _loans_per_title(scope)
    copies = _copies(scope)
    loans = func.coalesce(counts.c.loans, 0)
    statement = (
        select(
            Bib.id,
            Bib.title,
            Bib.material_type,
            Bib.language,
            Bib.publication_year,
            copies,
            loans,
            counts.c.last,
        )
        .outerjoin(counts, counts.c.bib_id == Bib.id)
        .where(copies > 0)
        .order_by(loans, Bib.id)
        .limit(scope.params.limit or DEFAULT_LIMIT)
    )
    return Report("Least borrowed titles", _BORROWED_COLUMNS, statement)


def _count_if(condition: ColumnElement[bool]) -> ColumnElement[int]:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


def collection(scope: Scope) -> Report:
    language = func.coalesce(Bib.language, "")
    statement = (
        select(
            Bib.material_type,
            language,
            func.count(func.distinct(Bib.id)),
            func.count(Item.id),
            _count_if(Item.status == "available"),
            _count_if(Item.status == "on_loan"),
            _count_if(Item.status.in_(("lost", "missing"))),
        )
        .join(Bib, Bib.id == Item.bib_id)
        .where(Item.status != "withdrawn")
        .group_by(Bib.material_type, language)
        .order_by(Bib.material_type, language)
    )
    if scope.branch_id is not None:
        statement = statement.where(Item.branch_id == scope.branch_id)
    columns = (
        Column("Material type", "text", 14), Column("Language", "text", 9),
        Column("Titles", "int", 8), Column("Copies", "int", 8), Column("Available", "int", 9),
        Column("On loan", "int", 8), Column("Lost or missing", "int", 9),
    )  # fmt: skip
    return Report("Collection by material type and language", columns, statement)


def patrons_by_category(scope: Scope) -> Report:
    owed = (
        select(Fee.patron_id, func.sum(Fee.outstanding).label("owed"))
        .where(Fee.status == "open")
        .group_by(Fee.patron_id)
        .subquery()
    )
    lent = (
        select(Loan.patron_id, func.count(Loan.id).label("loans"))
        .where(Loan.returned_at.is_(None))
        .group_by(Loan.patron_id)
        .subquery()
    )
    joined = Patron.category_id == PatronCategory.id
    if scope.branch_id is not None:
        joined = joined & (Patron.home_branch_id == scope.branch_id)
    statement = (
        select(
            PatronCategory.code,
            PatronCategory.name,
            func.count(Patron.id),
            _count_if(Patron.expires_on < scope.now.date()),
            func.count(lent.c.patron_id),
            func.coalesce(func.sum(lent.c.loans), 0),
            func.count(owed.c.patron_id),
            func.coalesce(func.sum(owed.c.owed), 0),
        )
        .select_from(PatronCategory)
        .outerjoin(Patron, joined)  # categories without patrons show, with 0
        .outerjoin(lent, lent.c.patron_id == Patron.id)
        .outerjoin(owed, owed.c.patron_id == Patron.id)
        .group_by(PatronCategory.id, PatronCategory.code, PatronCategory.name)
        .order_by(PatronCategory.code)
    )
    columns = (
        Column("Category", "text", 10), Column("Category name", "text", 24),
        Column("Patrons", "int", 8), Column("Expired", "int", 8),
        Column("With loans", "int", 8), Column("Loans out", "int", 8),
        Column("Owing", "int", 8), Column("Owed", "money", 10),
    )  # fmt: skip
    return Report("Patrons by category", columns, statement)


REPORTS: dict[str, Callable[[Scope], Report]] = {
    "loans-per-branch-day": loans_per_branch_day,
    "overdue": overdue,
    "most-borrowed": most_borrowed,
    "least-borrowed": least_borrowed,
    "collection": collection,
    "patrons-by-category": patrons_by_category,
}
