"""metric_totals and webhook_minutes: counters added up over every process

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 08:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "metric_totals",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("labels", sa.String(length=400), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name", "labels", name=op.f("pk_metric_totals")),
    )
    op.create_table(
        "webhook_minutes",
        sa.Column("minute", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("minute", "outcome", name=op.f("pk_webhook_minutes")),
    )


def downgrade() -> None:
    op.drop_table("webhook_minutes")
    op.drop_table("metric_totals")
