"""`shelfmark reindex`, run as an operator would, on an embedded SQLite home."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shelfmark.cli import app
from shelfmark.settings import get_settings

runner = CliRunner()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("SHELFMARK_HOME", str(tmp_path))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def matches(database: Path, query: str) -> int:
    with sqlite3.connect(database) as connection:
        row = connection.execute("SELECT count(*) FROM bib_fts WHERE bib_fts MATCH ?", (query,))
        return int(row.fetchone()[0])


def test_reindex_rebuilds_a_lost_index(home: Path, marc_file: Callable[[str], Path]) -> None:
    assert run("migrate")[0] == 0
    code, out = run("import-marc", str(marc_file("marc.dat")))
    assert code == 0, out
    database = home / "shelfmark.db"
    before = matches(database, "python")
    assert before > 0
    with sqlite3.connect(database) as connection:
        connection.execute("DELETE FROM bib_search")
    assert matches(database, "python") == 0

    code, out = run("reindex")
    assert code == 0, out
    assert "Search index rebuilt: 20 bib records" in out
    assert matches(database, "python") == before
    with sqlite3.connect(database) as connection:
        connection.execute("INSERT INTO bib_fts(bib_fts) VALUES ('integrity-check')")
