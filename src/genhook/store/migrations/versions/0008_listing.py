"""listing: the job listing's indexes, and retries linked to the job they retry

``GET /v1/jobs`` reads a service's jobs newest first, a page at a time from a keyset cursor
(created_at, id): one index per way of filtering it, each ending in (created_at DESC, id DESC)
so that a page at any depth is an index range read of ``limit`` rows, never a sort or a scan.
``ix_jobs_service_created`` (every job of a service), ``ix_jobs_service_status_created`` (by
status), ``ix_jobs_service_workflow_created`` (by workflow). jobs gain ``retry_of``: the ended
job that ``POST /v1/jobs/{job_id}/retry`` made this one from (NULL for a trigger's job), with a
partial index so that a job lists its retries without a scan.

(A sandbox service's flag is ``services.sandbox``, from 0005: nothing to add for it here.)

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

NEWEST_FIRST = [sa.text("created_at DESC"), sa.text("id DESC")]


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("retry_of", sa.String(length=40), nullable=True))
    op.create_index("ix_jobs_service_created", "jobs", ["service_id", *NEWEST_FIRST])
    op.create_index(
        "ix_jobs_service_status_created", "jobs", ["service_id", "status", *NEWEST_FIRST]
    )
    op.create_index(
        "ix_jobs_service_workflow_created", "jobs", ["service_id", "workflow_id", *NEWEST_FIRST]
    )
    op.create_index(
        "ix_jobs_retry_of",
        "jobs",
        ["retry_of"],
        sqlite_where=sa.text("retry_of IS NOT NULL"),
        postgresql_where=sa.text("retry_of IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_retry_of", table_name="jobs")
    op.drop_index("ix_jobs_service_workflow_created", table_name="jobs")
    op.drop_index("ix_jobs_service_status_created", table_name="jobs")
    op.drop_index("ix_jobs_service_created", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("retry_of")
