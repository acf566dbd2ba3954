"""The history tables of flowhooks 1.x: runs, node attempts, errors, events.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)
_JSON = sa.JSON(none_as_null=True)


def upgrade() -> None:
    """Create the four history tables and their indexes."""
    op.create_table(
        "flowhooks_runs",
        sa.Column("run_id", sa.String(), primary_key=True),
        sa.Column("workflow_name", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("started_at", _TS),
        sa.Column("ended_at", _TS),
        sa.Column("duration", sa.Float()),
        sa.Column("parent_run_id", sa.String()),
        sa.Column("resource_id", sa.String()),
        sa.Column("run_metadata", _JSON),
        sa.Column("inputs", _JSON),
        sa.Column("outputs", _JSON),
        sa.Column("final_node", sa.String()),
        sa.Column("cancel_reason", sa.String()),
        sa.Column("error_type", sa.String()),
        sa.Column("error_message", sa.Text()),
    )
    op.create_index(
        "ix_flowhooks_runs_workflow_started", "flowhooks_runs", ["workflow_name", "started_at"]
    )
    op.create_index("ix_flowhooks_runs_status", "flowhooks_runs", ["status"])
    op.create_index("ix_flowhooks_runs_started_at", "flowhooks_runs", ["started_at"])
    op.create_index("ix_flowhooks_runs_parent", "flowhooks_runs", ["parent_run_id"])
    op.create_table(
        "flowhooks_node_executions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(), nullable=False),
        sa.Column("node_id", sa.String(), nullable=False),
        sa.Column("attempt", sa.Integer()),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("started_at", _TS),
        sa.Column("ended_at", _TS),
        sa.Column("duration", sa.Float()),
        sa.Column("input_data", _JSON),
        sa.Column("output_data", _JSON),
        sa.Column("error_type", sa.String()),
        sa.Column("error_message", sa.Text()),
    )
    op.create_index(
        "ix_flowhooks_nodes_run_node",
        "flowhooks_node_executions",
        ["run_id", "node_id", "attempt"],
    )
    op.create_index("ix_flowhooks_nodes_status", "flowhooks_node_executions", ["status"])
    op.create_index("ix_flowhooks_nodes_started_at", "flowhooks_node_executions", ["started_at"])
    op.create_table(
        "flowhooks_errors",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(), nullable=False, unique=True),
        sa.Column("run_id", sa.String(), nullable=False),
        sa.Column("workflow_name", sa.String(), nullable=False),
        sa.Column("node_id", sa.String()),
        sa.Column("attempt", sa.Integer()),
        sa.Column("type", sa.String(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("stack_trace", sa.Text()),
        sa.Column("severity", sa.String(), nullable=False),
        sa.Column("will_retry", sa.Boolean(), nullable=False),
        sa.Column("timestamp", _TS),
    )
    op.create_index("ix_flowhooks_errors_run", "flowhooks_errors", ["run_id"])
    op.create_index("ix_flowhooks_errors_severity", "flowhooks_errors", ["severity"])
    op.create_index("ix_flowhooks_errors_timestamp", "flowhooks_errors", ["timestamp"])
    op.create_table(
        "flowhooks_events",
        sa.Column("event_id", sa.String(), primary_key=True),
        sa.Column("run_id", sa.String(), nullable=False),
        sa.Column("type", sa.String(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("timestamp", _TS),
    )
    op.create_index("ix_flowhooks_events_run", "flowhooks_events", ["run_id", "seq"])


def downgrade() -> None:
    """Drop the four history tables."""
    for table in (
        "flowhooks_events",
        "flowhooks_errors",
        "flowhooks_node_executions",
        "flowhooks_runs",
    ):
        op.drop_table(table)
