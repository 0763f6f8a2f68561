"""Report files: CSV and XLSX, written a batch of rows at a time (blocking: run in a thread).

- CSV: UTF-8 with a byte-order mark (what Excel needs to read accents right; Python's
  `utf-8-sig` and most tools skip it), a header row; days as YYYY-MM-DD, moments as
  "YYYY-MM-DD HH:MM:SS" in UTC, money with two decimals.
- XLSX: openpyxl's write-only mode (rows go to disk as they come, memory stays flat), a bold
  header row that stays in view, days and moments as spreadsheet dates, counts and money as
  numbers.

Text that a spreadsheet would take for a formula (a title or a name starting with "=", say)
stays text: the XLSX cell is typed as a string, and in CSV it is prefixed with an apostrophe
(OWASP's advice against CSV injection).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.styles import Font
from openpyxl.utils import get_column_letter

from shelfmark.reports.queries import Column

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
NUMBER_FORMATS = {"date": "yyyy-mm-dd", "datetime": "yyyy-mm-dd hh:mm", "money": "0.00"}
MONEY = Decimal("0.01")


class ReportWriter(Protocol):
    def write(self, rows: Sequence[Sequence[Any]]) -> None: ...

    def close(self) -> None:
        """Finish the file (an XLSX is only whole once closed)."""


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


def _money(value: Any) -> Decimal:
    return Decimal(value).quantize(MONEY)


class CsvReport:
    def __init__(self, path: Path, columns: Sequence[Column]) -> None:
        self._columns = columns
        self._file = path.open("w", encoding="utf-8-sig", newline="")
        self._csv = csv.writer(self._file)
        self._csv.writerow([column.title for column in columns])

    def write(self, rows: Sequence[Sequence[Any]]) -> None:
        self._csv.writerows(
            [_text(column, value) for column, value in zip(self._columns, row, strict=True)]
            for row in rows
        )

    def close(self) -> None:
        self._file.close()


def _text(column: Column, value: Any) -> str:
    if value is None:
        return ""
    if column.kind == "datetime":
        return f"{_utc(value):%Y-%m-%d %H:%M:%S}"
    if column.kind == "date":
        return value.isoformat() if isinstance(value, date) else str(value)
    if column.kind == "money":
        return str(_money(value))
    text = str(value)
    if column.kind == "text" and text.startswith(FORMULA_START):
        return "'" + text
    return text


class XlsxReport:
    def __init__(self, path: Path, columns: Sequence[Column], title: str) -> None:
        self._path = path
        self._columns = columns
        self._book = Workbook(write_only=True)
        self._sheet = self._book.create_sheet(title[:31])  # Excel's limit on a sheet name
        self._sheet.freeze_panes = "A2"
        for number, column in enumerate(columns, start=1):
            self._sheet.column_dimensions[get_column_letter(number)].width = column.width
        bold = Font(bold=True)
        header = []
        for column in columns:
            cell = WriteOnlyCell(self._sheet, value=column.title)
            cell.font = bold
            header.append(cell)
        self._sheet.append(header)

    def write(self, rows: Sequence[Sequence[Any]]) -> None:
        for row in rows:
            cells = zip(self._columns, row, strict=True)
            self._sheet.append([self._cell(column, value) for column, value in cells])

    def _cell(self, column: Column, value: Any) -> Any:
        if value is None:
            return None
        if column.kind == "int":
            return int(value)
        if column.kind == "text":
            text = str(value)
            if not text.startswith("="):
                return text
            cell = WriteOnlyCell(self._sheet, value=text)
            cell.data_type = "s"  # text, never a formula
            return cell
        if column.kind == "datetime":
            value = _utc(value).replace(tzinfo=None)  # a spreadsheet has no time zones
        elif column.kind == "money":
            value = _money(value)
        cell = WriteOnlyCell(self._sheet, value=value)
        cell.number_format = NUMBER_FORMATS[column.kind]
        return cell

    def close(self) -> None:
        self._book.save(self._path)


def open_writer(path: Path, *, format: str, columns: Sequence[Column], title: str) -> ReportWriter:
    if format == "xlsx":
        return XlsxReport(path, columns, title)
    return CsvReport(path, columns)
