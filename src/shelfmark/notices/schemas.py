from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

NoticeKind = Literal["due-soon", "overdue", "hold-ready", "hold-expired", "fee-charged"]
NoticeStatus = Literal["pending", "sending", "sent", "cancelled", "skipped", "failed"]


class NoticeRead(BaseModel):
    id: int
    kind: NoticeKind
    patron_id: int
    patron_card: str
    object_type: Literal["loan", "hold", "fee"] = Field(description="What `object_id` names")
    object_id: int
    level: int | None = Field(description="Overdue notices: 1st, 2nd or 3rd")
    due_at: datetime | None = Field(description="Loan notices: the due date they speak of")
    channel: str = Field(description="The patron's notice channel when it was written")
    status: NoticeStatus
    attempts: int = Field(description="Delivery runs that took it up")
    last_error: str | None
    reason: str | None = Field(description="Why it was cancelled or skipped, or why it waits")
    message_id: str = Field(description="Its Message-ID, the same on every try")
    created_at: datetime
    sent_at: datetime | None
