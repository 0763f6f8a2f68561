"""Every knob of Shelfmark, read from the environment once, with embedded defaults.

Nothing else in the code base reads the environment: call `get_settings()`.
"""

from __future__ import annotations

import secrets
from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore", case_sensitive=False)

    shelfmark_home: Path = Field(default=Path("./var"), description="Data folder")
    database_url: str = Field(default="", description="Default: SQLite in SHELFMARK_HOME")
    redis_url: str | None = None
    broker_url: str | None = None
    smtp_url: str | None = None
    secret_key: str = Field(default="", description="Default: generated, kept in SHELFMARK_HOME")
    sip2_port: int = 6001
    log_format: str = "text"
    secure_cookies: bool = Field(default=False, description="Send cookies over HTTPS only")
    access_token_minutes: int = 60 * 12
    db_pool_size: int = 10
    db_max_overflow: int = 10
    db_echo: bool = False
    # Background jobs. A running job reports progress at least this often; one silent for
    # longer is presumed dead (its worker was killed) and is queued again by the sweep.
    job_stale_seconds: int = Field(default=300, ge=1)
    # How many times a job may be started (worker deaths, transient errors) before it fails.
    job_max_attempts: int = Field(default=3, ge=1)
    upload_max_bytes: int = Field(default=512 * 1024 * 1024, ge=1, description="Largest upload")
    jobs_queue: str = Field(
        default="shelfmark",
        min_length=1,
        description="Queue name: several Shelfmarks may share a broker",
    )

    @field_validator("redis_url", "broker_url", "smtp_url", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @model_validator(mode="after")
    def _embedded_defaults(self) -> Settings:
        self.shelfmark_home = self.shelfmark_home.resolve()
        if not self.database_url:
            self.database_url = f"sqlite+aiosqlite:///{self.shelfmark_home / 'shelfmark.db'}"
        self.database_url = _async_driver(self.database_url)
        if not self.secret_key:
            self.secret_key = _kept_secret(self.shelfmark_home / "secret_key")
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def _async_driver(url: str) -> str:
    """Accept the URLs operators write (postgres://, postgresql://) and pick the async driver."""
    for prefix in ("postgres://", "postgresql://", "postgresql+psycopg://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url.removeprefix(prefix)
    if url.startswith("sqlite://"):
        return "sqlite+aiosqlite://" + url.removeprefix("sqlite://")
    return url


def _kept_secret(path: Path) -> str:
    """A secret generated on first use and kept, so that tokens survive a restart."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    path.touch(mode=0o600)
    path.write_text(key)
    return key


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
