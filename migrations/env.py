"""Alembic environment: the URL comes from pipeline settings (or the caller)."""

from alembic import context

from pipeline.db import make_engine
from pipeline.models import Base
from pipeline.settings import Settings

config = context.config
url = config.attributes.get("database_url") or Settings.from_env().database_url
engine = make_engine(url)

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
