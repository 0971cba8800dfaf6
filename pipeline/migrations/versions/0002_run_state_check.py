"""listener_runs.state holds only the states of RunState

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 21:40:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written out, not imported: a migration keeps meaning what it meant when it was written.
STATES = ("pending", "running", "retrying", "succeeded", "failed", "skipped")


def upgrade() -> None:
    with op.batch_alter_table("listener_runs") as batch:  # SQLite rebuilds the table
        batch.create_check_constraint(
            op.f("ck_listener_runs_state"), "state IN (" + ", ".join(f"'{s}'" for s in STATES) + ")"
        )


def downgrade() -> None:
    with op.batch_alter_table("listener_runs") as batch:
        batch.drop_constraint(op.f("ck_listener_runs_state"), type_="check")
