"""What an operator relies on when Shelfmark runs on a database server: the API refuses to
start without a shared SECRET_KEY, and migrations started at once run one after the other."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from conftest import postgres_database
from shelfmark.db import create_engine
from shelfmark.migrate import upgrade
from shelfmark.settings import MissingSecretKey, Settings

SERVER_URL = "postgresql://postgres@127.0.0.1:5432/not_even_reached"


class TestSecretKey:
    def test_off_sqlite_none_is_generated(self, tmp_path: Path) -> None:
        settings = Settings(shelfmark_home=tmp_path, database_url=SERVER_URL)
        assert settings.secret_key == ""
        assert not (tmp_path / "secret_key").exists()
        with pytest.raises(MissingSecretKey, match="SECRET_KEY is not set"):
            settings.require_secret_key()

    def test_given_it_is_used(self, tmp_path: Path) -> None:
        settings = Settings(shelfmark_home=tmp_path, database_url=SERVER_URL, secret_key="k" * 48)
        assert settings.require_secret_key() == "k" * 48

    @pytest.mark.parametrize("log_format", ["text", "json"])
    def test_serve_refuses_to_start_and_says_why(self, tmp_path: Path, log_format: str) -> None:
        env = {
            name: value
            for name, value in os.environ.items()
            if name not in {"SECRET_KEY", "REDIS_URL", "BROKER_URL"}
        }
        env |= {
            "SHELFMARK_HOME": str(tmp_path), "DATABASE_URL": SERVER_URL, "LOG_FORMAT": log_format,
        }  # fmt: skip
        done = subprocess.run(
            [sys.executable, "-m", "shelfmark", "serve", "--no-worker", "--port", "1"],
            env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 2
        output = done.stdout + done.stderr
        assert "SECRET_KEY is not set" in output
        if log_format == "json":
            (line,) = [line for line in output.splitlines() if line.strip()]
            entry = json.loads(line)
            assert entry["level"] == "critical"
            assert entry["message"].startswith("SECRET_KEY is not set")


@pytest.fixture
def fresh_postgres(request: pytest.FixtureRequest) -> Iterator[str]:
    yield from postgres_database(request)


async def _version(url: str, home: Path) -> list[str]:
    engine = create_engine(Settings(shelfmark_home=home, database_url=url, secret_key="x"))
    try:
        async with engine.connect() as connection:
            return list(await connection.scalars(text("SELECT version_num FROM alembic_version")))
    finally:
        await engine.dispose()


async def _migrate_at_once(url: str, home: Path, how_many: int) -> None:
    engines = [
        create_engine(Settings(shelfmark_home=home, database_url=url, secret_key="x"))
        for _ in range(how_many)
    ]
    try:
        # Without the lock they can also deadlock on each other's tables: bounded here.
        await asyncio.wait_for(asyncio.gather(*(upgrade(engine) for engine in engines)), 120)
    finally:
        for engine in engines:
            await engine.dispose()


class TestMigrationsStartedAtOnce:
    """Without the lock, the second would create the tables the first is creating and fail
    (or, on SQLite, find the database locked)."""

    async def test_on_postgresql(self, fresh_postgres: str, tmp_path: Path) -> None:
        await _migrate_at_once(fresh_postgres, tmp_path, 3)
        assert len(await _version(fresh_postgres, tmp_path)) == 1

    async def test_on_sqlite(self, tmp_path: Path) -> None:
        url = f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
        await _migrate_at_once(url, tmp_path, 3)
        assert len(await _version(url, tmp_path)) == 1

    def test_as_processes_on_postgresql(self, fresh_postgres: str, tmp_path: Path) -> None:
        """As the Kubernetes Job and an operator's `shelfmark migrate` would."""
        env = {**os.environ, "SHELFMARK_HOME": str(tmp_path), "DATABASE_URL": fresh_postgres}
        command = [sys.executable, "-m", "shelfmark", "migrate"]
        runs = [
            subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            for _ in range(2)
        ]
        outputs = [run.communicate(timeout=120)[0].decode(errors="replace") for run in runs]
        assert [run.returncode for run in runs] == [0, 0], outputs
