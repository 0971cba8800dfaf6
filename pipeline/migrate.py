"""Schema migrations (Alembic, scripts in migrations/), run by `pipeline db upgrade`."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from pipeline.errors import ConfigError

# Beside the package in a checkout (editable install); else the app's working directory.
_CANDIDATES = (Path(__file__).resolve().parent.parent / "migrations", Path.cwd() / "migrations")


def migrations_dir() -> Path:
    for candidate in _CANDIDATES:
        if (candidate / "env.py").exists():
            return candidate
    raise ConfigError("no migrations/ directory: run from the project's checkout")


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.attributes["database_url"] = database_url
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Bring the database at `database_url` up to `revision`."""
    command.upgrade(alembic_config(database_url), revision)
