from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict

from shelfmark.audit import service
from shelfmark.deps import ActorDep, SessionDep
from shelfmark.pagination import Page, PageParams, decode_int_cursor, next_cursor_of, page_params

router = APIRouter(tags=["audit"])


class AuditEventRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    at: datetime
    actor_id: int | None
    actor_name: str
    action: str
    object_type: str
    object_id: str | None
    changes: dict[str, Any]


@router.get("/audit", response_model=Page[AuditEventRead])
async def list_audit_events(
    session: SessionDep,
    actor: ActorDep,
    page: Annotated[PageParams, Depends(page_params)],
    object_type: Annotated[str | None, Query()] = None,
    object_id: Annotated[str | None, Query()] = None,
    actor_name: Annotated[str | None, Query(alias="actor")] = None,
    action: Annotated[str | None, Query()] = None,
) -> Page[AuditEventRead]:
    """The audit trail, newest first (admins only)."""
    filters = service.AuditFilters(
        object_type=object_type, object_id=object_id, actor=actor_name, action=action
    )
    rows = await service.list_events(
        session, actor=actor, filters=filters, limit=page.limit,
        after_id=decode_int_cursor(page.cursor),
    )  # fmt: skip
    return Page(
        items=[AuditEventRead.model_validate(r) for r in rows[: page.limit]],
        next_cursor=next_cursor_of(rows, page.limit),
    )
