from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from shelfmark.catalog.schemas import Contributor


class BranchAvailability(BaseModel):
    branch: str  # branch code
    available: int
    total: int  # copies held: every copy but withdrawn and lost ones


class SearchHit(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    title: str
    subtitle: str | None
    contributors: list[Contributor]
    publication_year: int | None
    language: str | None
    material_type: str
    control_number: str | None
    isbns: list[str]
    availability: list[BranchAvailability]


class FacetValue(BaseModel):
    value: str | int
    count: int


class Facets(BaseModel):
    language: list[FacetValue]
    material_type: list[FacetValue]
    subject: list[FacetValue]
    year: list[FacetValue]
    branch: list[FacetValue]


class SearchPage(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "items": [
                        {
                            "id": 42,
                            "title": "The left hand of darkness",
                            "subtitle": None,
                            "contributors": [{"name": "Le Guin, Ursula K.", "role": "author"}],
                            "publication_year": 1969,
                            "language": "eng",
                            "material_type": "book",
                            "control_number": "69011459 DLC",
                            "isbns": ["9780441478125"],
                            "availability": [{"branch": "MAIN", "available": 1, "total": 2}],
                        }
                    ],
                    "total": 1,
                    "facets": {
                        "language": [{"value": "eng", "count": 1}],
                        "material_type": [{"value": "book", "count": 1}],
                        "subject": [{"value": "Science fiction", "count": 1}],
                        "year": [{"value": 1969, "count": 1}],
                        "branch": [{"value": "MAIN", "count": 1}],
                    },
                    "next_cursor": None,
                }
            ]
        }
    )

    items: list[SearchHit]
    total: int
    facets: Facets
    next_cursor: str | None = None
