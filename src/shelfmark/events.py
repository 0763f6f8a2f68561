"""Domain events: what happened, told to whoever listens, and only once it has happened.

`publish(session, event)` queues the event on the session; it is delivered after the
transaction commits (`shelfmark.db.after_commit`, run by `session_scope`) and dropped if the
transaction rolls back, so no listener hears of a checkout that did not happen.

Delivery is in-process: `subscribe()` registers a handler for one event name, or for every
event with `"*"`. A failing handler is logged and does not stop the others, nor the request
whose commit it follows. The Redis fan-out (live desk updates) will be one more subscriber.
"""

from __future__ import annotations

import inspect
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from shelfmark.db import after_commit

log = logging.getLogger(__name__)

ALL = "*"


@dataclass(frozen=True, slots=True)
class Event:
    """`name` is `<thing>.<what happened>` (`loan.created`); `payload` holds JSON values only,
    among them the code of the branch where it happened (`branch`)."""

    name: str
    at: datetime
    payload: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "at": self.at.isoformat(), "payload": dict(self.payload)}


Handler = Callable[[Event], Awaitable[None] | None]


class Bus:
    """An in-process registry of handlers by event name."""

    def __init__(self) -> None:
        self._handlers: defaultdict[str, list[Handler]] = defaultdict(list)

    def subscribe(self, name: str, handler: Handler) -> Callable[[], None]:
        """Call `handler` for each delivered event named `name` (or every event, for "*");
        returns the function that unsubscribes it."""
        self._handlers[name].append(handler)

        def unsubscribe() -> None:
            if handler in self._handlers[name]:
                self._handlers[name].remove(handler)

        return unsubscribe

    async def deliver(self, event: Event) -> None:
        for handler in [*self._handlers.get(event.name, ()), *self._handlers.get(ALL, ())]:
            try:
                result = handler(event)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("event handler %r failed on %s", handler, event.name)


bus = Bus()


def subscribe(name: str, handler: Handler) -> Callable[[], None]:
    return bus.subscribe(name, handler)


def publish(session: AsyncSession, event: Event) -> None:
    """Deliver `event` once the session's transaction has committed; never if it rolls back."""
    after_commit(session, partial(bus.deliver, event))
