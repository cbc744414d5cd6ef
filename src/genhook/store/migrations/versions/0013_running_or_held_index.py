"""jobs: a partial index of the live jobs that are not claimable (running, awaiting_review)

The metrics' read of live jobs counts claimable ones through ``ix_jobs_service_claimable``; the
running jobs and the jobs held for review were counted by status, which on SQLite (a bound
status value matches no partial index) scanned the job listing's index, every job ever made.
``ix_jobs_running_or_held`` (service_id, workflow_id) holds only those, so the read costs what
is live, not what is kept.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

RUNNING_OR_HELD = "status IN ('running', 'awaiting_review')"


def upgrade() -> None:
    op.create_index(
        "ix_jobs_running_or_held",
        "jobs",
        ["service_id", "workflow_id"],
        sqlite_where=sa.text(RUNNING_OR_HELD),
        postgresql_where=sa.text(RUNNING_OR_HELD),
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_running_or_held", table_name="jobs")
