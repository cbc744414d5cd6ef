"""envelope: the trigger's deadline as a column, and expired jobs in the roll-ups

jobs gain ``deadline`` (epoch seconds; NULL: none), copied from the envelope when the trigger is
accepted, so that the claim never starts a job past it and the expiry sweep finds the waiting
jobs past theirs through ``ix_jobs_deadline`` (deadline, partial on the claimable statuses, as
the claim's own indexes: ended and running jobs are not in it). Existing jobs keep theirs in the
envelope only: before this revision no deadline was acted on. ``job_rollups`` gain ``expired``,
the jobs of the hour that ended ``expired`` (metrics and the ops summary count them).

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

Time = sa.Float(precision=53)
CLAIMABLE = "status IN ('queued', 'retrying')"


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("deadline", Time, nullable=True))
    op.create_index(
        "ix_jobs_deadline",
        "jobs",
        ["deadline"],
        sqlite_where=sa.text(CLAIMABLE),
        postgresql_where=sa.text(CLAIMABLE),
    )
    with op.batch_alter_table("job_rollups") as batch:
        batch.add_column(sa.Column("expired", sa.Integer(), server_default="0", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("job_rollups") as batch:
        batch.drop_column("expired")
    op.drop_index("ix_jobs_deadline", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("deadline")
