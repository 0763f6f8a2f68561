"""Notice routes: HTTP in, one service call out. Staff see every notice; a patron their own."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from shelfmark.deps import ActorDep, SessionDep, SettingsDep
from shelfmark.deps import PathId as Id
from shelfmark.notices import service
from shelfmark.notices.mail import message_id
from shelfmark.notices.models import Notice
from shelfmark.notices.schemas import NoticeKind, NoticeRead, NoticeStatus
from shelfmark.pagination import Page, PageDep, decode_int_cursor, next_cursor_of
from shelfmark.patrons.schemas import CardNumber

router = APIRouter(tags=["notices"])


def notice_read(notice: Notice, card: str, *, sender: str) -> NoticeRead:
    return NoticeRead(
        id=notice.id, kind=notice.kind, patron_id=notice.patron_id, patron_card=card,
        object_type=notice.object_type, object_id=notice.object_id, level=notice.level,
        due_at=notice.due_at, channel=notice.channel, status=notice.status,
        attempts=notice.attempts, last_error=notice.last_error, reason=notice.reason,
        message_id=message_id(notice.id, sender), created_at=notice.created_at,
        sent_at=notice.sent_at,
    )  # fmt: skip


@router.get("/notices", response_model=Page[NoticeRead])
async def list_notices(
    session: SessionDep,
    actor: ActorDep,
    settings: SettingsDep,
    page: PageDep,
    patron_card: Annotated[CardNumber | None, Query()] = None,
    status: Annotated[NoticeStatus | None, Query()] = None,
    kind: Annotated[NoticeKind | None, Query()] = None,
) -> Page[NoticeRead]:
    """Notices, newest first: staff see all (filter by `patron_card`), a patron their own."""
    filters = service.NoticeFilters(patron_card=patron_card, status=status, kind=kind)
    rows = await service.list_notices(
        session, actor=actor, filters=filters, limit=page.limit,
        before_id=decode_int_cursor(page.cursor),
    )  # fmt: skip
    return Page(
        items=[notice_read(n, card, sender=settings.notice_from) for n, card in rows[: page.limit]],
        next_cursor=next_cursor_of([n for n, _ in rows], page.limit),
    )


@router.get("/notices/{notice_id}", response_model=NoticeRead)
async def get_notice(
    session: SessionDep, actor: ActorDep, settings: SettingsDep, notice_id: Id
) -> NoticeRead:
    notice, card = await service.access_notice(session, actor=actor, notice_id=notice_id)
    return notice_read(notice, card, sender=settings.notice_from)
