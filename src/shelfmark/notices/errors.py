from __future__ import annotations

from shelfmark.errors import InvalidInput, NotFound


class NoticeNotFound(NotFound):
    code = "notice-not-found"
    title = "Notice not found"


class InvalidSmtpUrl(InvalidInput):
    code = "invalid-smtp-url"
    title = "SMTP_URL is not valid"


class InvalidNoticeTemplate(InvalidInput):
    code = "invalid-notice-template"
    title = "The notice template cannot be used"
