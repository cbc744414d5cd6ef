"""schedules: template schedules' state, and one row per due time dealt with

``schedules`` keeps per schedule (key ``WORKFLOW:ID``) its next due time, the cron and time
zone it was computed from (``spec_hash``), whether it is paused, and its last due time's
outcome. ``schedule_fires`` has one row per due time that was fired, skipped or failed; its
primary key (schedule_key, due_at) is what lets any number of schedulers race for a due time
with exactly one of them firing it (the row is inserted in the transaction that admits the
fire's jobs).

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

Time = sa.Float(precision=53)


def upgrade() -> None:
    op.create_table(
        "schedules",
        sa.Column("key", sa.String(length=140), nullable=False),
        sa.Column("workflow_id", sa.String(length=64), nullable=False),
        sa.Column("schedule_id", sa.String(length=64), nullable=False),
        sa.Column("spec_hash", sa.String(length=16), nullable=False),
        sa.Column("next_due_at", Time, nullable=True),
        sa.Column("paused_at", Time, nullable=True),
        sa.Column("paused_by", sa.String(length=100), nullable=True),
        sa.Column("last_due_at", Time, nullable=True),
        sa.Column("last_fired_at", Time, nullable=True),
        sa.Column("last_outcome", sa.String(length=16), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", Time, nullable=False),
        sa.Column("updated_at", Time, nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_index("ix_schedules_next_due", "schedules", ["next_due_at"])
    op.create_table(
        "schedule_fires",
        sa.Column("schedule_key", sa.String(length=140), nullable=False),
        sa.Column("due_at", Time, nullable=False),
        sa.Column("fired_at", Time, nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("service_id", sa.String(length=40), nullable=True),
        sa.Column("created", sa.Integer(), server_default="0", nullable=False),
        sa.Column("replayed", sa.Integer(), server_default="0", nullable=False),
        sa.Column("refused", sa.Integer(), server_default="0", nullable=False),
        sa.Column("missed", sa.Integer(), server_default="0", nullable=False),
        sa.Column("job_ids", sa.JSON(), nullable=True),
        sa.Column("errors", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("schedule_key", "due_at"),
    )


def downgrade() -> None:
    op.drop_table("schedule_fires")
    op.drop_index("ix_schedules_next_due", table_name="schedules")
    op.drop_table("schedules")
