"""Search fixtures, and the judged set's hits@1 / hits@5 printed at the end of the run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

import conftest

# database -> {query: rank of the expected record, or None when it is not in the top 20}
JUDGED_RANKS = pytest.StashKey[dict[str, dict[str, int | None]]]()


@pytest.fixture
def judged_ranks(request: pytest.FixtureRequest) -> dict[str, dict[str, int | None]]:
    return request.config.stash.setdefault(JUDGED_RANKS, {})


@pytest.fixture(scope="session")
def marc_file() -> Callable[[str], Path]:
    return conftest.marc_file


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    ranks = config.stash.get(JUDGED_RANKS, {})
    if not ranks:
        return
    terminalreporter.section("search: judged queries over the LoC 10k sample")
    for database, by_query in sorted(ranks.items()):
        count = len(by_query)
        at1 = sum(1 for rank in by_query.values() if rank == 1)
        at5 = sum(1 for rank in by_query.values() if rank is not None and rank <= 5)
        terminalreporter.write_line(
            f"{database:10} hits@1 = {at1}/{count} ({at1 / count:.0%})   "
            f"hits@5 = {at5}/{count} ({at5 / count:.0%})"
        )
