"""media.version and media_clock: the live stream's cursor

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 03:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "media_clock",
        sa.Column(
            "user_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=False,
            nullable=False,
        ),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_media_clock")),
    )
    with op.batch_alter_table("media") as batch:
        batch.add_column(sa.Column("version", sa.BigInteger(), server_default="0", nullable=False))
        batch.create_index(op.f("ix_media_user_id_version"), ["user_id", "version"])


def downgrade() -> None:
    with op.batch_alter_table("media") as batch:
        batch.drop_index(op.f("ix_media_user_id_version"))
        batch.drop_column("version")
    op.drop_table("media_clock")
