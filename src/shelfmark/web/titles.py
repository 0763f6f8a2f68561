"""Titles to show next to loans and holds, for many records in one query."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from shelfmark.catalog.models import Bib


async def titles_of(session: AsyncSession, bib_ids: Iterable[int]) -> dict[int, str]:
    """Bib id -> title, for the ids given (one query, however many)."""
    wanted = sorted(set(bib_ids))
    if not wanted:
        return {}
    rows = await session.execute(select(Bib.id, Bib.title).where(Bib.id.in_(wanted)))
    return {row.id: row.title for row in rows}
