from __future__ import annotations

from pathlib import Path

import pytest

from shelfmark.settings import Settings


def test_embedded_defaults(tmp_path: Path) -> None:
    settings = Settings(shelfmark_home=tmp_path)
    assert settings.database_url == f"sqlite+aiosqlite:///{tmp_path / 'shelfmark.db'}"
    assert settings.is_sqlite
    assert settings.redis_url is None


def test_secret_key_is_generated_once_and_kept(tmp_path: Path) -> None:
    first = Settings(shelfmark_home=tmp_path).secret_key
    assert len(first) >= 48
    assert Settings(shelfmark_home=tmp_path).secret_key == first
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("postgresql://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("postgresql+asyncpg://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("sqlite:////tmp/x.db", "sqlite+aiosqlite:////tmp/x.db"),
    ],
)
def test_database_urls_get_the_async_driver(tmp_path: Path, given: str, expected: str) -> None:
    assert Settings(shelfmark_home=tmp_path, database_url=given).database_url == expected


def test_environment_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/3")
    monkeypatch.setenv("SIP2_PORT", "7001")
    monkeypatch.setenv("SMTP_URL", "")
    settings = Settings(shelfmark_home=tmp_path)
    assert settings.redis_url == "redis://127.0.0.1:6379/3"
    assert settings.sip2_port == 7001
    assert settings.smtp_url is None
