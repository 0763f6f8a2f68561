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
    # Where notices are mailed. None (the embedded default): notices are written and stay
    # pending, saying so, until it is set. The scheme says how the connection is secured:
    #   smtp://[user[:password]@]host[:port]            plain (port 25); add ?starttls=true
    #                                                    to require STARTTLS
    #   smtp+starttls://[user[:password]@]host[:port]   STARTTLS (port 587)
    #   smtps://[user[:password]@]host[:port]           implicit TLS (port 465)
    # User and password are percent-encoded; given, they log in (AUTH) once per connection.
    # Certificates are checked against the system's CAs (or SSL_CERT_FILE).
    smtp_url: str | None = Field(
        default=None, description="smtp://, smtp+starttls:// or smtps:// URL; none: hold notices"
    )
    notice_from: str = Field(
        default="Shelfmark <library@localhost>",
        description="From address of notices; its domain also names their Message-IDs",
    )
    # A notice is tried this many times (SMTP down, a server saying "try later") before it
    # is failed with its last error; a permanent refusal fails it at once.
    notice_max_attempts: int = Field(default=8, ge=1)
    # A notice claimed by a delivery run that fell silent this long ago is claimed again
    # (it was provably not handed over: see shelfmark.notices.delivery).
    notice_claim_seconds: int = Field(default=300, ge=1)
    # SMTP connections a delivery run sends over at once (each also holds a database
    # connection); mail servers often allow a client a few, rarely many.
    notice_connections: int = Field(default=8, ge=1, le=32)
    secret_key: str = Field(
        default="", description="Required off SQLite; embedded: generated, kept in SHELFMARK_HOME"
    )
    sip2_port: int = 6001
    # Searches (API and OPAC) one address may make per minute: a brake on scrapers. Behind a
    # shared address (a school's NAT) raise it; 0 turns the limit off (the benches do).
    search_per_minute: int = Field(default=600, ge=0, description="0: no limit")
    log_format: str = "text"
    access_log: bool = Field(default=False, description="Log every HTTP request")
    secure_cookies: bool = Field(default=False, description="Send cookies over HTTPS only")
    access_token_minutes: int = 60 * 12
    # Connections kept open per process (opened as needed, so an idle library holds few).
    # Size it to the requests one process has in flight at its busiest: past it, each extra
    # request opens an overflow connection and closes it on return, and a new PostgreSQL
    # connection costs milliseconds of setup. With 10, sixteen concurrent cached searches
    # (bench/search.py) had p99 ~90 ms for a p50 of 12 ms; with 24, p99 52 ms and 26 % more
    # requests/s. Waiting for a pooled connection instead (no overflow) was worse still.
    db_pool_size: int = 32
    db_max_overflow: int = 8
    db_echo: bool = False
    # Background jobs. A running job reports progress at least this often; one silent for
    # longer is presumed dead (its worker was killed) and is queued again by the sweep.
    job_stale_seconds: int = Field(default=300, ge=1)
    # How many times a job may be started (worker deaths, transient errors) before it fails.
    job_max_attempts: int = Field(default=3, ge=1)
    upload_max_bytes: int = Field(default=512 * 1024 * 1024, ge=1, description="Largest upload")
    # Reading privacy: the nightly anonymise job makes a returned loan forget its patron this
    # many days after the return, unless the patron chose to keep a reading history. Fees
    # keep their patron whatever this says (money owed is not history).
    loan_retention_days: int = Field(
        default=30, ge=0, description="Days a returned loan keeps naming its patron"
    )
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
        if not self.secret_key and self.is_sqlite:
            # Embedded, one process signs and checks everything: a key of its own will do.
            # On a database server several replicas may serve, and each would generate a
            # different key, so tokens and sessions of one would fail on the others.
            self.secret_key = _kept_secret(self.shelfmark_home / "secret_key")
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def require_secret_key(self) -> str:
        """The key that signs tokens and sessions, for the commands that sign (the API)."""
        if not self.secret_key:
            raise MissingSecretKey
        return self.secret_key


class MissingSecretKey(RuntimeError):
    """A command that signs tokens or sessions was started off SQLite without SECRET_KEY."""

    def __init__(self) -> None:
        super().__init__(
            "SECRET_KEY is not set: with DATABASE_URL on a database server every API replica "
            "must share one key (it signs tokens and sessions); generate one with "
            "`python3 -c 'import secrets; print(secrets.token_urlsafe(48))'` and set it in "
            "the environment."
        )


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
