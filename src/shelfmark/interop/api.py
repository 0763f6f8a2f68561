"""MARC export routes. Included before the catalog router: `/bibs/{id}.mrc` must win over
`/bibs/{id}`."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from shelfmark.deps import PathId as Id
from shelfmark.deps import ReadSessionDep
from shelfmark.interop import marc_export

router = APIRouter(tags=["marc"])


@router.get(
    "/bibs/{bib_id}.mrc",
    response_class=Response,
    responses={200: {"content": {"application/marc": {}}, "description": "MARC21 record"}},
)
async def export_bib_marc(session: ReadSessionDep, bib_id: Id) -> Response:
    """The bib as a binary MARC21 record (UTF-8), with every field of its source record."""
    bib = await marc_export.require_bib_with_source(session, bib_id)
    return Response(marc_export.export_one(bib, "marc"), media_type="application/marc")


@router.get(
    "/bibs/{bib_id}.xml",
    response_class=Response,
    responses={200: {"content": {"application/marcxml+xml": {}}, "description": "MARCXML"}},
)
async def export_bib_xml(session: ReadSessionDep, bib_id: Id) -> Response:
    """The bib as a MARCXML collection of one record."""
    bib = await marc_export.require_bib_with_source(session, bib_id)
    return Response(marc_export.export_one(bib, "xml"), media_type="application/marcxml+xml")
