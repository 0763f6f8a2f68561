"""Each report against the known library, in both formats, on both databases: the CSV read
back with `csv`, the XLSX with openpyxl (typed cells: days as dates, counts as numbers)."""

from __future__ import annotations

import csv
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from openpyxl import load_workbook
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from reports.conftest import Library, run_report
from shelfmark.db import utcnow
from shelfmark.settings import Settings


def read_csv(path: Path) -> list[list[str]]:
    raw = path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")  # the BOM that lets Excel read UTF-8
    with path.open(encoding="utf-8-sig", newline="") as stream:
        return list(csv.reader(stream))


def read_xlsx(path: Path) -> list[tuple[Any, ...]]:
    book = load_workbook(path, read_only=True)
    try:
        return [tuple(row) for row in book.active.iter_rows(values_only=True)]  # type: ignore[union-attr]
    finally:
        book.close()


def day(text: str) -> datetime:
    """A day as openpyxl reads a date cell back: a datetime at midnight."""
    return datetime.combine(date.fromisoformat(text), datetime.min.time())


class TestLoansPerBranchDay:
    async def test_csv_and_xlsx(
        self, sessionmaker: async_sessionmaker[AsyncSession], settings: Settings,
        library: Library,
    ) -> None:  # fmt: skip
        a, b = library.a, library.b
        job, path = await run_report(sessionmaker, settings, report="loans-per-branch-day")
        assert read_csv(path) == [
            ["Day", "Branch", "Branch name", "Loans"],
            ["2026-03-02", a.code, a.name, "1"],
            ["2026-03-02", b.code, b.name, "1"],
            ["2026-03-03", a.code, a.name, "2"],
            ["2026-03-12", a.code, a.name, "1"],
        ]
        assert job.result is not None
        assert (job.result["rows"], job.result["format"], job.result["file"]) == (
            4, "csv", f"{job.id}.csv",
        )  # fmt: skip
        assert (job.progress_done, job.progress_total) == (4, 4)

        _, path = await run_report(
            sessionmaker, settings, report="loans-per-branch-day", format="xlsx",
            from_date="2026-03-03", to_date="2026-03-12", branch=a.code,
        )  # fmt: skip
        assert read_xlsx(path) == [
            ("Day", "Branch", "Branch name", "Loans"),
            (day("2026-03-03"), a.code, a.name, 2),
            (day("2026-03-12"), a.code, a.name, 1),
        ]
        book = load_workbook(path)
        sheet = book.active
        assert sheet is not None
        assert sheet["A2"].is_date
        assert sheet["A2"].number_format == "yyyy-mm-dd"
        assert sheet["D2"].data_type == "n"
        assert sheet["A1"].font.bold
        assert sheet.freeze_panes == "A2"


class TestOverdue:
    async def test_the_open_loans_past_due_with_whom_to_ask(
        self, sessionmaker: async_sessionmaker[AsyncSession], settings: Settings,
        library: Library,
    ) -> None:  # fmt: skip
        ada, kid = library.ada, library.kid
        out_1, out_2 = library.open_loans
        late = (utcnow().date() - out_1.due_at.date()).days
        _, path = await run_report(sessionmaker, settings, report="overdue")
        rows = read_csv(path)
        assert rows[0][:3] == ["Due (UTC)", "Days overdue", "Item barcode"]
        assert [row[1:8] + row[10:] for row in rows[1:]] == [
            [str(late), out_1.item.barcode, "Alpha", library.a.code, ada.card_number,
             "Zoë Ångström", "zoe@example.org", "0", ""],
            [str(late), out_2.item.barcode, "'=1+2 Puzzles", library.a.code, kid.card_number,
             "'=Kid", "", "0", ""],
        ]  # fmt: skip
        assert rows[1][0] == f"{out_1.due_at:%Y-%m-%d %H:%M:%S}"
        assert rows[2][6] == "'=Kid"
        assert kid.email is None

        _, path = await run_report(sessionmaker, settings, report="overdue", format="xlsx")
        _header, first, second = read_xlsx(path)
        assert first[:7] == (
            out_1.due_at.replace(tzinfo=None), late, out_1.item.barcode, "Alpha",
            library.a.code, ada.card_number, "Zoë Ångström",
        )  # fmt: skip
        assert second[3] == "=1+2 Puzzles"  # text, not a formula
        assert second[9] == out_2.checked_out_at.astimezone(UTC).replace(tzinfo=None)
        sheet = load_workbook(path).active
        assert sheet is not None
        assert sheet["D3"].data_type == "s"

        _, path = await run_report(sessionmaker, settings, report="overdue", branch=library.b.code)
        assert read_csv(path)[1:] == []


class TestBorrowedTitles:
    async def test_most_and_least_over_a_period_and_a_branch(
        self, sessionmaker: async_sessionmaker[AsyncSession], settings: Settings,
        library: Library,
    ) -> None:  # fmt: skip
        lib = library

        def short(rows: list[list[str]]) -> list[tuple[str, ...]]:
            return [(row[1], row[5], row[6]) for row in rows[1:]]  # title, copies, loans

        _, path = await run_report(sessionmaker, settings, report="most-borrowed")
        rows = read_csv(path)
        assert rows[0] == ["Title id", "Title", "Material type", "Language", "Year", "Copies",
                           "Loans", "Last loan (UTC)"]  # fmt: skip
        assert rows[1] == [str(lib.alpha.id), "Alpha", "book", "eng", "1999", "2", "3",
                           "2026-03-12 10:00:00"]  # fmt: skip
        assert short(rows) == [("Alpha", "2", "3"), ("Zoë's Ångström", "1", "1"),
                               ("'=1+2 Puzzles", "1", "1")]  # fmt: skip

        _, path = await run_report(sessionmaker, settings, report="most-borrowed", limit=1,
                                   from_date="2026-03-03", to_date="2026-03-03")  # fmt: skip
        assert short(read_csv(path)) == [("Alpha", "2", "1")]

        _, path = await run_report(sessionmaker, settings, report="least-borrowed")
        assert short(read_csv(path)) == [
            ("Never borrowed", "1", "0"), ("Zoë's Ångström", "1", "1"),
            ("'=1+2 Puzzles", "1", "1"), ("Alpha", "2", "3"),
        ]  # fmt: skip

        _, path = await run_report(sessionmaker, settings, report="least-borrowed",
                                   format="xlsx", branch=lib.a.code)  # fmt: skip
        _header, *rows_a = read_xlsx(path)
        assert [(r[1], r[5], r[6], r[7]) for r in rows_a] == [
            ("=1+2 Puzzles", 1, 1, datetime(2026, 3, 3, 15, 0)),
            ("Alpha", 2, 3, datetime(2026, 3, 12, 10, 0)),
        ]


class TestCollection:
    async def test_by_material_type_and_language(
        self, sessionmaker: async_sessionmaker[AsyncSession], settings: Settings,
        library: Library,
    ) -> None:  # fmt: skip
        _, path = await run_report(sessionmaker, settings, report="collection", format="xlsx")
        assert read_xlsx(path) == [
            ("Material type", "Language", "Titles", "Copies", "Available", "On loan",
             "Lost or missing"),
            ("book", None, 1, 1, 1, 0, 0),  # the withdrawn copy does not count
            ("book", "eng", 1, 2, 1, 1, 0),
            ("book", "fre", 1, 1, 1, 0, 0),
            ("video", "eng", 1, 1, 0, 1, 0),
        ]  # fmt: skip

        _, path = await run_report(sessionmaker, settings, report="collection",
                                   branch=library.b.code)  # fmt: skip
        assert read_csv(path)[1:] == [["book", "", "1", "1", "1", "0", "0"],
                                      ["book", "fre", "1", "1", "1", "0", "0"]]  # fmt: skip


class TestPatronsByCategory:
    async def test_counts_and_money_owed(
        self, sessionmaker: async_sessionmaker[AsyncSession], settings: Settings,
        library: Library,
    ) -> None:  # fmt: skip
        adults, children, nobody = library.adults, library.children, library.nobody
        _, path = await run_report(sessionmaker, settings, report="patrons-by-category")
        assert read_csv(path) == [
            ["Category", "Category name", "Patrons", "Expired", "With loans", "Loans out",
             "Owing", "Owed"],
            [adults.code, "Adults", "2", "1", "1", "1", "1", "5.50"],
            [children.code, "Children", "1", "0", "1", "1", "0", "0.00"],
            [nobody.code, "Nobody yet", "0", "0", "0", "0", "0", "0.00"],
        ]  # fmt: skip

        _, path = await run_report(sessionmaker, settings, report="patrons-by-category",
                                   format="xlsx", branch=library.b.code)  # fmt: skip
        _header, *rows = read_xlsx(path)
        assert rows == [
            (adults.code, "Adults", 1, 1, 0, 0, 0, 0),
            (children.code, "Children", 0, 0, 0, 0, 0, 0),
            (nobody.code, "Nobody yet", 0, 0, 0, 0, 0, 0),
        ]
        sheet = load_workbook(path).active
        assert sheet is not None
        assert sheet["H2"].number_format == "0.00"


class TestFailures:
    async def test_an_unknown_branch_fails_the_job_saying_so(
        self, sessionmaker: async_sessionmaker[AsyncSession], settings: Settings,
        library: Library,
    ) -> None:  # fmt: skip
        with pytest.raises(AssertionError, match="There is no branch with code 'NOPE'"):
            await run_report(sessionmaker, settings, report="collection", branch="NOPE")
        assert not list((settings.shelfmark_home / "reports").glob(".partial-*"))
