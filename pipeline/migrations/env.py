"""Alembic environment: the URL comes from the caller (`pipeline db upgrade`) or from
DATABASE_URL (`alembic revision --autogenerate` in a checkout)."""

from typing import Any

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy import TypeDecorator

from pipeline.db import make_engine
from pipeline.models import Base
from pipeline.settings import Settings


def render_item(kind: str, obj: Any, autogen: AutogenContext) -> str | bool:
    """Our column types as the plain SQLAlchemy types they store, so that a migration
    never imports pipeline.models (which keeps changing after it is written)."""
    if kind == "type" and isinstance(obj, TypeDecorator):
        return f"sa.{obj.impl!r}"
    return False


config = context.config
url = config.attributes.get("database_url") or Settings.from_env().database_url
engine = make_engine(url)

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        render_item=render_item,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
