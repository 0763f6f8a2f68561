"""Jobs are sent to the embedded broker of the test home, where `broker.take()` reads them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from background import Broker
from factories import make_user
from shelfmark.auth.models import User
from shelfmark.auth.roles import Role
from shelfmark.settings import Settings
from shelfmark.worker import configure


@pytest.fixture(autouse=True)
def _own_broker(settings: Settings) -> None:
    """Whatever a test here sends goes to its home's embedded broker, nowhere else."""
    configure(settings)


@pytest.fixture
def broker(settings: Settings) -> Iterator[Broker]:
    broker = Broker(settings.jobs_queue)
    broker.take()  # what earlier tests left there
    yield broker
    broker.take()


@pytest.fixture
async def librarian(session: AsyncSession) -> User:
    user = await make_user(session, Role.LIBRARIAN)
    await session.commit()
    return user
