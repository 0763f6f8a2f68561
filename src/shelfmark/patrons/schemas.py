from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from shelfmark.catalog.schemas import Code, LanguageCode, Strict, Text200

NoticeChannel = Literal["email", "sms", "print", "none"]
CardNumber = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[!-~]+$")]
Pin = Annotated[str, Field(min_length=4, max_length=12, pattern=r"^\d+$")]
Money = Annotated[Decimal, Field(ge=0, max_digits=10, decimal_places=2)]
Email = Annotated[str, Field(max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")]
Phone = Annotated[str, Field(min_length=3, max_length=40)]

# --- categories -------------------------------------------------------------------------


class CategoryCreate(Strict):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"code": "ADULT", "name": "Adult", "fee_block_threshold": "10.00"}]
        }
    )

    code: Code
    name: Text200
    fee_block_threshold: Money | None = Field(
        default=None,
        description="Open fees above this amount block checkouts, renewals and holds; "
        "null never blocks",
    )


class CategoryUpdate(Strict):
    model_config = ConfigDict(json_schema_extra={"examples": [{"fee_block_threshold": "5.00"}]})

    name: Text200 | None = None
    fee_block_threshold: Money | None = None


class CategoryRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    code: str
    name: str
    fee_block_threshold: Decimal | None
    created_at: datetime
    updated_at: datetime


# --- patrons ----------------------------------------------------------------------------

# What a patron may change on their own record; the rest is the library's to set.
SELF_SERVICE_FIELDS = frozenset(
    {"email", "phone", "pin", "notice_channel", "language", "keep_reading_history"}
)
KEEP_READING_HISTORY = (
    "Keep the patron's closed loans as a reading history they can see; off (the default), "
    "a loan forgets its patron LOAN_RETENTION_DAYS after its return"
)


class PatronCreate(Strict):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "card_number": "21234000056789",
                    "name": "Ada Lovelace",
                    "email": "ada@example.org",
                    "category": "ADULT",
                    "home_branch": "MAIN",
                    "expires_on": "2030-12-31",
                    "pin": "1234",
                    "notice_channel": "email",
                    "language": "eng",
                }
            ]
        }
    )

    card_number: CardNumber
    name: Text200
    email: Email | None = None
    phone: Phone | None = None
    category: Code = Field(description="Patron category code")
    home_branch: Code = Field(description="Branch code")
    expires_on: date
    pin: Pin | None = Field(default=None, description="4 to 12 digits; stored hashed")
    notice_channel: NoticeChannel = "email"
    language: LanguageCode | None = None
    keep_reading_history: bool = Field(default=False, description=KEEP_READING_HISTORY)


class PatronUpdate(Strict):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"phone": "+44 20 7946 0000"}, {"expires_on": "2031-12-31"}]
        }
    )

    card_number: CardNumber | None = None
    name: Text200 | None = None
    email: Email | None = None
    phone: Phone | None = None
    category: Code | None = None
    home_branch: Code | None = None
    expires_on: date | None = None
    pin: Pin | None = None
    notice_channel: NoticeChannel | None = None
    language: LanguageCode | None = None
    keep_reading_history: bool | None = Field(default=None, description=KEEP_READING_HISTORY)


class BlockCreate(Strict):
    model_config = ConfigDict(json_schema_extra={"examples": [{"reason": "Card reported stolen"}]})

    reason: Annotated[str, Field(min_length=1, max_length=2000)]


class BlockRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    reason: str
    created_at: datetime
    created_by: str
    lifted_at: datetime | None
    lifted_by: str | None


class PatronRead(BaseModel):
    id: int
    card_number: str
    name: str
    email: str | None
    phone: str | None
    category: str
    home_branch: str
    expires_on: date
    has_pin: bool
    notice_channel: str
    language: str | None
    keep_reading_history: bool
    blocks: list[BlockRead] = Field(description="Active manual blocks")
    created_at: datetime
    updated_at: datetime
