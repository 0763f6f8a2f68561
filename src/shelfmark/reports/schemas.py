"""What a report job is asked for: which report, in which format, with which filters."""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import Field, model_validator

from shelfmark.catalog.schemas import Code, Strict

REPORT_KIND = "report"
ReportName = Literal[
    "loans-per-branch-day",
    "overdue",
    "most-borrowed",
    "least-borrowed",
    "collection",
    "patrons-by-category",
]
ReportFormat = Literal["csv", "xlsx"]
DEFAULT_LIMIT = 100

# The filters each report understands; any other is refused rather than silently ignored.
FILTERS: dict[str, frozenset[str]] = {
    "loans-per-branch-day": frozenset({"from_date", "to_date", "branch"}),
    "overdue": frozenset({"branch"}),
    "most-borrowed": frozenset({"from_date", "to_date", "branch", "limit"}),
    "least-borrowed": frozenset({"from_date", "to_date", "branch", "limit"}),
    "collection": frozenset({"branch"}),
    "patrons-by-category": frozenset({"branch"}),
}


class ReportParams(Strict):
    report: ReportName = Field(
        description="loans-per-branch-day, overdue (the open loans past due today), "
        "most-borrowed and least-borrowed titles, collection (copies by material type and "
        "language), patrons-by-category"
    )
    format: ReportFormat = Field(default="csv", description="csv (UTF-8) or xlsx")
    from_date: date | None = Field(default=None, description="First day of loans counted (UTC)")
    to_date: date | None = Field(default=None, description="Last day of loans counted (UTC)")
    branch: Code | None = Field(
        default=None,
        description="Branch code: loans made there, copies or patrons (home branch) of it",
    )
    limit: int | None = Field(
        default=None, ge=1, le=10_000,
        description=f"Titles listed by most- and least-borrowed (default {DEFAULT_LIMIT})",
    )  # fmt: skip

    @model_validator(mode="after")
    def _filters_fit(self) -> ReportParams:
        given = {name for name in ("from_date", "to_date", "branch", "limit")
                 if getattr(self, name) is not None}  # fmt: skip
        if unknown := sorted(given - FILTERS[self.report]):
            raise ValueError(f"the {self.report} report takes no {', '.join(unknown)}")
        if self.from_date and self.to_date and self.from_date > self.to_date:
            raise ValueError("from_date is after to_date")
        return self
