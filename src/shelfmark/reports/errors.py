from __future__ import annotations

from shelfmark.errors import Conflict, NotFound


class ReportFileNotFound(NotFound):
    code = "report-file-not-found"
    title = "No file for this job"


class ReportNotReady(Conflict):
    code = "report-not-ready"
    title = "The report has not succeeded"
