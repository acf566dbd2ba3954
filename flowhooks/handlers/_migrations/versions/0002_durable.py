"""Durable runs: heartbeats and targets of runs, run consumers, the outbox, suspended runs.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Add the run columns of the crash sweep and resume, and the durable tables."""
    op.add_column("flowhooks_runs", sa.Column("heartbeat_at", _TS))
    op.add_column("flowhooks_runs", sa.Column("last_seq", sa.Integer()))
    op.add_column("flowhooks_runs", sa.Column("workflow_target", sa.String()))
    op.add_column("flowhooks_runs", sa.Column("resumed_from", sa.String()))
    op.create_index(
        "ix_flowhooks_runs_status_heartbeat", "flowhooks_runs", ["status", "heartbeat_at"]
    )
    op.create_table(
        "flowhooks_run_consumers",
        sa.Column("run_id", sa.String(), primary_key=True),
        sa.Column("consumer", sa.String(), primary_key=True),
        sa.Column("event_types", sa.String(), nullable=False),
    )
    op.create_table(
        "flowhooks_outbox",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("consumer", sa.String(), nullable=False),
        sa.Column("event_id", sa.String(), nullable=False),
        sa.Column("run_id", sa.String(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("event_type", sa.String(), nullable=False),
        sa.Column("event", sa.Text(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("due_at", sa.Float(), nullable=False),
        sa.Column("lease_until", sa.Float()),
        sa.Column("worker", sa.String()),
        sa.Column("delivered_at", sa.Float()),
        sa.Column("last_error", sa.Text()),
        sa.UniqueConstraint("consumer", "event_id", name="uq_flowhooks_outbox_consumer_event"),
    )
    op.create_index("ix_flowhooks_outbox_due", "flowhooks_outbox", ["consumer", "status", "due_at"])
    op.create_index(
        "ix_flowhooks_outbox_run", "flowhooks_outbox", ["consumer", "run_id", "status", "seq"]
    )
    op.create_table(
        "flowhooks_suspended_runs",
        sa.Column("run_id", sa.String(), primary_key=True),
        sa.Column("workflow_name", sa.String(), nullable=False),
        sa.Column("workflow_target", sa.String()),
        sa.Column("node_id", sa.String()),
        sa.Column("reason", sa.Text()),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("suspended_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float()),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("resumed_by", sa.String()),
        sa.Column("lease_until", sa.Float()),
    )
    op.create_index(
        "ix_flowhooks_suspended_status", "flowhooks_suspended_runs", ["status", "expires_at"]
    )


def downgrade() -> None:
    """Drop the durable tables and the run columns added here."""
    op.drop_table("flowhooks_suspended_runs")
    op.drop_table("flowhooks_outbox")
    op.drop_table("flowhooks_run_consumers")
    op.drop_index("ix_flowhooks_runs_status_heartbeat", table_name="flowhooks_runs")
    with op.batch_alter_table("flowhooks_runs") as batch:
        for column in ("resumed_from", "workflow_target", "last_seq", "heartbeat_at"):
            batch.drop_column(column)
