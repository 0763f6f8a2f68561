"""Celery tasks of the notices domain: thin — take ids, run the delivery on the process's loop."""

from __future__ import annotations

from typing import Any

from shelfmark.notices import delivery
from shelfmark.worker import (
    DELIVER_NOTICES,
    MAX_RETRIES,
    RETRY_BACKOFF,
    RETRY_BACKOFF_MAX,
    TRANSIENT_ERRORS,
    celery_app,
    run,
    runtime,
)


@celery_app.task(
    name=DELIVER_NOTICES, autoretry_for=TRANSIENT_ERRORS, retry_backoff=RETRY_BACKOFF,
    retry_backoff_max=RETRY_BACKOFF_MAX, retry_jitter=True, max_retries=MAX_RETRIES,
)  # fmt: skip
def deliver_notices(notice_ids: list[int] | None = None) -> dict[str, Any]:
    """Deliver `notice_ids` (those just written by a request), or every pending notice.

    SMTP down: retried with backoff; once the retries are spent the notices stay pending for
    the next scheduled run, their tries counted.
    """
    current = runtime()
    summary = run(
        delivery.deliver_pending(
            current.sessionmaker, settings=current.settings, only_ids=notice_ids
        )
    )
    return summary.as_dict()
