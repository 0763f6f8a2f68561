"""Export the catalog as MARC21 or MARCXML, streamed in batches with constant memory.

An imported bib exports its source record with every original field. A bib edited in
Shelfmark since its import exports the source with the fields Shelfmark maps replaced by
the current values (unmapped fields kept); a bib entered through the API is built from its
fields alone.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, BinaryIO, Literal

import pymarc
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import undefer

from shelfmark.catalog.errors import BibNotFound
from shelfmark.catalog.models import Bib
from shelfmark.interop.marc_map import map_record
from shelfmark.interop.marc_prepare import bib_values
from shelfmark.interop.marc_write import record_from_bib, to_marc21

Format = Literal["marc", "xml"]
EXPORT_BATCH = 500
# The tags `record_from_bib` writes: replaced by current values when a bib was edited.
MAPPED_TAGS = frozenset(
    {"020", "100", "110", "111", "245", "250", "260", "264", "440", "490", "520", "650", "651",
     "700", "710", "711", "830"}
)  # fmt: skip
_COMPARED = ("title", "subtitle", "contributors", "isbns", "publisher", "publication_year",
             "edition", "language", "subjects", "series", "description")  # fmt: skip
XML_HEAD = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<collection xmlns="http://www.loc.gov/MARC21/slim">\n'
)
XML_TAIL = b"</collection>\n"


def record_of(bib: Bib) -> pymarc.Record:
    """The MARC record of a bib: its source, the source with current values, or built."""
    if not bib.marc:
        return _built(bib)
    source = _source(bib.marc)
    return source if _unedited(source, bib) else _merged(source, bib)


def _source(data: bytes) -> pymarc.Record:
    return pymarc.Record(data=data, to_unicode=True, force_utf8=True)


def _built(bib: Bib) -> pymarc.Record:
    return record_from_bib(_Fields(bib), entered=bib.created_at.date())


def _unedited(source: pymarc.Record, bib: Bib) -> bool:
    mapped = bib_values(map_record(source), None)
    return all(mapped[name] == getattr(bib, name) for name in _COMPARED)


def _merged(source: pymarc.Record, bib: Bib) -> pymarc.Record:
    merged = pymarc.Record()
    merged.leader = source.leader
    kept = [f for f in source.fields if f.tag not in MAPPED_TAGS]
    fresh = [f for f in _built(bib).fields if f.tag in MAPPED_TAGS]
    merged.fields.extend(sorted(kept + fresh, key=lambda f: f.tag))
    return merged


class _Fields:
    """A bib row seen through the `BibFields` protocol of marc_write."""

    def __init__(self, bib: Bib) -> None:
        self._bib = bib
        self.contributors = [_Contributor(c["name"], c["role"]) for c in bib.contributors]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._bib, name)


class _Contributor:
    def __init__(self, name: str, role: str) -> None:
        self.name = name
        self.role = role


def encode(record: pymarc.Record, fmt: Format) -> bytes:
    if fmt == "xml":
        xml: bytes = pymarc.record_to_xml(record, namespace=False)  # type: ignore[no-untyped-call]
        return xml + b"\n"
    return to_marc21([record])


def _encoded(bib: Bib, fmt: Format) -> bytes:
    if bib.marc is None:
        return encode(_built(bib), fmt)
    source = _source(bib.marc)
    if not _unedited(source, bib):
        return encode(_merged(source, bib), fmt)
    return bib.marc if fmt == "marc" else encode(source, fmt)  # the source, byte for byte


async def require_bib_with_source(session: AsyncSession, bib_id: int) -> Bib:
    query = (
        select(Bib)
        .options(undefer(Bib.marc))
        .where(Bib.id == bib_id)
        .execution_options(populate_existing=True)
    )
    bib = await session.scalar(query)
    if bib is None:
        raise BibNotFound(f"There is no bib record with id {bib_id}.")
    return bib


def export_one(bib: Bib, fmt: Format) -> bytes:
    body = _encoded(bib, fmt)
    return XML_HEAD + body + XML_TAIL if fmt == "xml" else body


async def iter_export(session: AsyncSession, fmt: Format) -> AsyncIterator[bytes]:
    """The whole catalog, record by record, in id order, read `EXPORT_BATCH` rows at a time."""
    if fmt == "xml":
        yield XML_HEAD
    query = select(Bib).options(undefer(Bib.marc)).order_by(Bib.id)
    stream = await session.stream_scalars(query.execution_options(yield_per=EXPORT_BATCH))
    async for bib in stream:
        yield _encoded(bib, fmt)
        session.expunge(bib)  # constant memory: nothing accumulates in the identity map
    if fmt == "xml":
        yield XML_TAIL


async def export_to(session: AsyncSession, out: BinaryIO, fmt: Format) -> int:
    count = 0
    async for chunk in iter_export(session, fmt):
        out.write(chunk)
        count += chunk not in {XML_HEAD, XML_TAIL}
    return count
