"""Keyset pagination: `limit` and an opaque `cursor` that names the last row seen.

A cursor pages by a strictly increasing key, so rows inserted while a client pages never
cause duplicates or gaps among the rows that existed when it started.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Generic, TypeVar

import orjson
from fastapi import Depends, Query
from pydantic import BaseModel

from shelfmark.errors import InvalidInput

T = TypeVar("T")

DEFAULT_LIMIT = 50
MAX_LIMIT = 500


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


def encode_cursor(key: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"k": key})).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> Any:
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        return orjson.loads(raw)["k"]
    except (binascii.Error, ValueError, KeyError, TypeError) as exc:
        raise InvalidInput(
            "The cursor is not one this server gave out.",
            errors=[{"field": "cursor", "message": "invalid cursor"}],
        ) from exc


# Integer keys are BIGINT ids: one out of their range is no cursor this server gave out
# (bound as a query parameter, it would fail in the driver, a 500).
MAX_INT_KEY = 2**63 - 1


def decode_int_cursor(cursor: str | None) -> int | None:
    key = decode_cursor(cursor)
    if key is not None and (type(key) is not int or not 0 <= key <= MAX_INT_KEY):
        raise InvalidInput(
            "The cursor is not one this server gave out.",
            errors=[{"field": "cursor", "message": "invalid cursor"}],
        )
    return key


def next_cursor_of(rows: Sequence[Any], limit: int, key: str = "id") -> str | None:
    """Services fetch limit + 1 rows; the extra one tells that there is a next page."""
    if len(rows) <= limit:
        return None
    return encode_cursor(getattr(rows[limit - 1], key))


def next_cursor_of_rows(
    rows: Sequence[Mapping[str, Any]], limit: int, key: str = "id"
) -> str | None:
    """`next_cursor_of` for rows read as mappings."""
    if len(rows) <= limit:
        return None
    return encode_cursor(rows[limit - 1][key])


def page_json(items: bytes, next_cursor: str | None) -> bytes:
    """A page whose items are already JSON (an array): the bytes of the `Page` they make."""
    return b'{"items":' + items + b',"next_cursor":' + orjson.dumps(next_cursor) + b"}"


class PageParams(BaseModel):
    limit: int = DEFAULT_LIMIT
    cursor: str | None = None


async def page_params(  # async: a plain def would be run on the thread pool
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Rows per page")] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(description="`next_cursor` of the previous page")] = None,
) -> PageParams:
    return PageParams(limit=limit, cursor=cursor)


PageDep = Annotated[PageParams, Depends(page_params)]
