"""Indexes for the console: events by status and by time, runs by state and listener

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 15:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("webhook_events") as batch:
        batch.create_index("ix_webhook_events_status_id", ["status", "id"])
        batch.create_index("ix_webhook_events_received_at", ["received_at"])
    with op.batch_alter_table("listener_runs") as batch:
        batch.create_index(
            "ix_listener_runs_state_listener_finished_at", ["state", "listener", "finished_at"]
        )


def downgrade() -> None:
    with op.batch_alter_table("listener_runs") as batch:
        batch.drop_index("ix_listener_runs_state_listener_finished_at")
    with op.batch_alter_table("webhook_events") as batch:
        batch.drop_index("ix_webhook_events_received_at")
        batch.drop_index("ix_webhook_events_status_id")
