"""The audit trail: every staff write is recorded in the same transaction as the write."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any, cast

from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncSession

from shelfmark import hotpath
from shelfmark.audit.models import AuditEvent
from shelfmark.auth.roles import Actor, require_admin
from shelfmark.db import utcnow


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def diff(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """{field: [old, new]} for the fields whose value changed."""
    return {
        key: [_jsonable(before.get(key)), _jsonable(value)]
        for key, value in after.items()
        if before.get(key) != value
    }


def _values(
    *, actor: Actor, action: str, object_type: str, object_id: int | str | hotpath.KeyOf | None,
    changes: Mapping[str, Any] | None, now: datetime | None,
) -> dict[str, Any]:  # fmt: skip
    return {
        "at": now or utcnow(),
        "actor_id": actor.user_id,
        "actor_name": actor.username,
        "action": action,
        "object_type": object_type,
        "object_id": object_id
        if object_id is None or isinstance(object_id, hotpath.KeyOf)
        else str(object_id),
        "changes": _jsonable(dict(changes or {})),
    }


async def record(
    session: AsyncSession,
    *,
    actor: Actor,
    action: str,
    object_type: str,
    object_id: int | str | None,
    changes: Mapping[str, Any] | None = None,
    now: datetime | None = None,
) -> AuditEvent:
    """Added to the session: written by its next flush, with the writes it records."""
    values = _values(
        actor=actor, action=action, object_type=object_type, object_id=object_id,
        changes=changes, now=now,
    )  # fmt: skip
    event = AuditEvent(**values)
    session.add(event)
    return event


_EVENTS = cast(Table, AuditEvent.__table__)


def event_row(
    *,
    actor: Actor,
    action: str,
    object_type: str,
    object_id: int | str | hotpath.KeyOf | None,
    changes: Mapping[str, Any] | None = None,
    now: datetime | None = None,
) -> hotpath.Write:
    """As `record`, but as a row for `hotpath.write` to insert along with the writes it
    records (the desk's hot paths: checkout, checkin); the object may be a row inserted by
    the same `write` (a `KeyOf` it). The actor's user must be in the database already."""
    values = _values(
        actor=actor, action=action, object_type=object_type, object_id=object_id,
        changes=changes, now=now,
    )  # fmt: skip
    return hotpath.inserting(_EVENTS, values)


@dataclass(frozen=True, slots=True)
class AuditFilters:
    object_type: str | None = None
    object_id: str | None = None
    actor: str | None = None
    action: str | None = None


async def list_events(
    session: AsyncSession,
    *,
    actor: Actor,
    filters: AuditFilters,
    limit: int,
    after_id: int | None,
) -> Sequence[AuditEvent]:
    """Newest first; admins only. Returns up to limit + 1 rows (the extra tells more exist)."""
    require_admin(actor)
    query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit + 1)
    if after_id is not None:
        query = query.where(AuditEvent.id < after_id)
    if filters.object_type:
        query = query.where(AuditEvent.object_type == filters.object_type)
    if filters.object_id:
        query = query.where(AuditEvent.object_id == filters.object_id)
    if filters.actor:
        query = query.where(AuditEvent.actor_name == filters.actor)
    if filters.action:
        query = query.where(AuditEvent.action == filters.action)
    return (await session.scalars(query)).all()
