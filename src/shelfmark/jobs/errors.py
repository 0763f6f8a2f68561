from __future__ import annotations

from shelfmark.errors import Conflict, InvalidInput, NotFound


class JobNotFound(NotFound):
    code = "job-not-found"
    title = "Job not found"


class UnknownJobKind(InvalidInput):
    code = "unknown-job-kind"
    title = "Unknown job kind"


class JobNotRetryable(Conflict):
    code = "job-not-retryable"
    title = "Only a failed job can be retried"


class UploadNotFound(NotFound):
    code = "upload-not-found"
    title = "Upload not found"


class UnreadableMarc(InvalidInput):
    code = "unreadable-marc"
    title = "The file cannot be read as MARC"
