"""Schema migrations: Alembic scripts shipped inside the package (pipeline/migrations),
run by `pipeline db upgrade`; `alembic revision --autogenerate` finds them through
pyproject.toml's [tool.alembic]."""

from __future__ import annotations

from alembic import command
from alembic.config import Config

SCRIPT_LOCATION = "pipeline:migrations"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    config.attributes["database_url"] = database_url
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Bring the database at `database_url` up to `revision`."""
    command.upgrade(alembic_config(database_url), revision)
