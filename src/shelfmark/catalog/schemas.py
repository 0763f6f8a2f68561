from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.config import JsonDict

from shelfmark.catalog import isbn as isbn_rules

ItemStatus = Literal[
    "available", "on_loan", "on_hold_shelf", "in_transit", "lost", "missing", "withdrawn"
]
MaterialType = Literal[
    "book", "serial", "map", "score", "music", "audiobook", "video", "image",
    "computer_file", "kit", "mixed", "manuscript", "object",
]  # fmt: skip
LanguageCode = Annotated[str, Field(pattern=r"^[a-z]{3}$", description="ISO 639-2 code")]
Code = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_.-]+$")]
Year = Annotated[int, Field(ge=0, le=2200)]
Text200 = Annotated[str, Field(min_length=1, max_length=200)]
OpeningHours = dict[
    Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
    list[Annotated[list[Annotated[str, Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")]],
                   Field(min_length=2, max_length=2)]],
]  # fmt: skip


def _normalize_isbns(values: list[str] | None) -> list[str] | None:
    if values is None:
        return None
    result: list[str] = []
    for index, value in enumerate(values):
        try:
            normalized = isbn_rules.normalize(value)
        except isbn_rules.InvalidISBN as exc:
            raise ValueError(f"isbns[{index}]: {exc}") from None
        if normalized not in result:
            result.append(normalized)
    return result


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


# --- branches ---------------------------------------------------------------------------


class BranchCreate(Strict):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "code": "MAIN",
                    "name": "Main Library",
                    "address": "1 Library Square, Springfield",
                    "opening_hours": {"mon": [["09:00", "18:00"]], "sat": [["10:00", "14:00"]]},
                }
            ]
        }
    )

    code: Code
    name: Text200
    address: str | None = None
    opening_hours: OpeningHours = Field(default_factory=dict)


class BranchUpdate(Strict):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"name": "Main Library (renovated)"}]}
    )

    code: Code | None = None
    name: Text200 | None = None
    address: str | None = None
    opening_hours: OpeningHours | None = None


class BranchRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    code: str
    name: str
    address: str | None
    opening_hours: dict[str, list[list[str]]]
    created_at: datetime
    updated_at: datetime


# --- bibs -------------------------------------------------------------------------------


class Contributor(Strict):
    name: Annotated[str, Field(min_length=1, max_length=500)]
    role: Annotated[str, Field(min_length=1, max_length=64)] = "author"


class _BibFields(Strict):
    subtitle: str | None = None
    contributors: list[Contributor] | None = None
    isbns: list[str] | None = Field(
        default=None, description="ISBN-10 or ISBN-13, any hyphenation; stored as ISBN-13"
    )
    publisher: str | None = None
    publication_year: Year | None = None
    edition: str | None = None
    language: LanguageCode | None = None
    subjects: list[Annotated[str, Field(min_length=1)]] | None = None
    series: list[Annotated[str, Field(min_length=1)]] | None = None
    description: str | None = None
    material_type: MaterialType | None = None
    control_number: Annotated[str, Field(min_length=1, max_length=64)] | None = None

    @field_validator("isbns")
    @classmethod
    def _valid_isbns(cls, values: list[str] | None) -> list[str] | None:
        return _normalize_isbns(values)


_BIB_EXAMPLE: JsonDict = {
    "title": "The left hand of darkness",
    "subtitle": "a novel",
    "contributors": [{"name": "Le Guin, Ursula K.", "role": "author"}],
    "isbns": ["0-441-47812-3"],
    "publisher": "Ace Books",
    "publication_year": 1969,
    "language": "eng",
    "subjects": ["Science fiction"],
    "material_type": "book",
}


class BibCreate(_BibFields):
    model_config = ConfigDict(json_schema_extra={"examples": [_BIB_EXAMPLE]})

    title: Annotated[str, Field(min_length=1, max_length=2000)]


class BibUpdate(_BibFields):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"edition": "2nd ed.", "subjects": ["Gender"]}]}
    )

    title: Annotated[str, Field(min_length=1, max_length=2000)] | None = None


class BibRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    title: str
    subtitle: str | None
    contributors: list[Contributor]
    isbns: list[str]
    publisher: str | None
    publication_year: int | None
    edition: str | None
    language: str | None
    subjects: list[str]
    series: list[str]
    description: str | None
    material_type: str
    control_number: str | None
    created_at: datetime
    updated_at: datetime


# --- items ------------------------------------------------------------------------------

Barcode = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[!-~]+$")]
Price = Annotated[Decimal, Field(ge=0, max_digits=10, decimal_places=2)]


class ItemCreate(Strict):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "bib_id": 1,
                    "barcode": "31234000012345",
                    "branch": "MAIN",
                    "shelfmark": "FIC LEG",
                    "item_type": "book",
                    "price": "18.99",
                }
            ]
        }
    )

    bib_id: int
    barcode: Barcode
    branch: Code = Field(description="Branch code")
    shelfmark: str | None = None
    item_type: Code = "book"
    status: ItemStatus = "available"
    price: Price | None = None


class ItemUpdate(Strict):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"status": "missing"}, {"branch": "EAST"}]}
    )

    bib_id: int | None = None
    barcode: Barcode | None = None
    branch: Code | None = None
    shelfmark: str | None = None
    item_type: Code | None = None
    status: ItemStatus | None = None
    price: Price | None = None


class ItemRead(BaseModel):
    id: int
    bib_id: int
    barcode: str
    branch: str
    shelfmark: str | None
    item_type: str
    status: str
    price: Decimal | None
    last_seen_at: datetime | None
    created_at: datetime
    updated_at: datetime
