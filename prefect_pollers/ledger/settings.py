"""Where the ledger lives: one setting, ``PREFECT_POLLERS_LEDGER_URL``.

Read like Prefect's own settings (the environment, then a ``.env`` file). Unset, the
ledger is a SQLite file under ``PREFECT_HOME``, safe across the processes of one
machine; set it to a PostgreSQL URL (``postgresql://user@host/db``) for several.
"""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

LEDGER_FILE = "pollers-ledger.db"


class LedgerSettings(BaseSettings):
    """The ledger's settings.

    Attributes:
        ledger_url: A SQLAlchemy URL; ``sqlite://`` and ``postgresql://`` get their
            async drivers (aiosqlite, asyncpg). None: SQLite under ``PREFECT_HOME``.
    """

    model_config = SettingsConfigDict(
        env_prefix="PREFECT_POLLERS_", env_file=".env", extra="ignore"
    )

    ledger_url: str | None = None


def ledger_url() -> str:
    """The async SQLAlchemy URL of the ledger, from the settings."""
    url = LedgerSettings().ledger_url
    if not url:
        from prefect.settings import get_current_settings

        home = Path(get_current_settings().home).expanduser()
        home.mkdir(parents=True, exist_ok=True)
        return f"sqlite+aiosqlite:///{home / LEDGER_FILE}"
    return async_url(url)


def async_url(url: str) -> str:
    """``url`` with the async driver of its database (aiosqlite, asyncpg)."""
    scheme, sep, rest = url.partition("://")
    if scheme in ("sqlite", "sqlite+pysqlite"):
        return f"sqlite+aiosqlite{sep}{rest}"
    if scheme in ("postgresql", "postgres", "postgresql+psycopg2", "postgresql+psycopg"):
        return f"postgresql+asyncpg{sep}{rest}"
    return url


def is_machine_local(url: str) -> bool:
    """Whether a ledger at ``url`` is seen by this machine only (SQLite)."""
    return url.startswith("sqlite")
